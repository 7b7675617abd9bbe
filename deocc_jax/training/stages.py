"""The training stages' specs (``training/stage_spec.py``; the table:
``training/registry.py``).

Each spec's ``plan`` reads its config section and builds its pure ``init_fn``
/ ``step_fn``, the frozen inputs and the artefact it writes; the generic
runner ``stage_spec.train_stage`` builds the data stream once and runs the
shared loop (``training/loop.py``) under ``<workdir>/<stage>/``; later stages
restore what earlier ones wrote (``runs/``).

    teacher            ArcFace pre-training of the teacher (synthetic default)
    teacher_embeddings offline teacher job: train-split embeddings + centroids (Eq. 18)
    deocclusion        stage 1: generator + global / local critics
    deocclusion_noca   the same G without contextual attention (Table 2's "GA w/o attention")
    segmentation       occlusion-mask predictor for blind de-occlusion
    distill_hard       stage 2: student with the hard instance loss (Eq. 12)
    distill_soft       stage 2: student with the soft instance loss (Eq. 17)
    joint              end-to-end (Eq. 6): generator and student together (optional)

The fine-tuned baselines (``pretrain_arcface``, ``finetune_arcface``,
``finetune_teacher``) are in ``training/baseline_stages.py``, the student
distilled on AR in ``training/ar_distillation_stage.py``, Table 2's other
completion methods (GFC, IDGAN) and the recognisers retrained on each method's
completions in ``training/completion_stages.py``.
"""

from __future__ import annotations

import os
from typing import Any

from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.data import pipeline as pipe
from deocc_jax.errors import ConfigError
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import trained_models
from deocc_jax.runs.factories import (
    data_facts,
    generator_completion,
    load_teacher,
    make_mesh,
    make_source,
    teacher_source,
)
from deocc_jax.teachers import api, extract
from deocc_jax.training import (
    deocclusion_stage,
    distillation_stage,
    joint_stage,
    loop,
    segmentation_stage,
    teacher_stage,
)
from deocc_jax.training.stage_spec import Plan, StageSpec, resolved, train_stage

TEACHER_KINDS = ("arcface", "dlib", "converted")
DISTILL_KEYS = ("masked", "mask", "clean", "identity")


# -------------------------------------------------------------- teachers


def teacher_plan(config: ConfigDict, workdir: str, source: Any, mesh: Any) -> Plan:
  """The ArcFace teacher trained here, on ``teacher_source`` (Sec. 4.1's VGGFace2 analogue)."""
  t = resolved(config, require(config, "teacher"), source)
  res = int(config.data.resolution)
  init_fn, step_fn = teacher_stage.make_fns(t, source.num_classes, res)
  spec = trained_models.arcface_spec(t, source.num_classes, res, data_facts(config, workdir))
  return Plan(t, init_fn, step_fn, spec)


TEACHER = StageSpec("teacher", 1, ("clean", "identity"), teacher_plan, teacher_source)


def run_teacher(config: ConfigDict, workdir: str) -> None:
  """Trains the ArcFace teacher; a pretrained one (``teacher.kind`` 'dlib' /
  'converted') has nothing to train: its artefact records it."""
  t = require(config, "teacher")
  if str(t.kind) not in TEACHER_KINDS:
    raise ConfigError(
        f"config.teacher.kind must be 'arcface', 'dlib' or 'converted', " f"got {t.kind!r}"
    )
  if str(t.kind) == "arcface":
    train_stage(config, workdir, TEACHER)
    return
  teacher = api.load_teacher(str(t.kind), str(t.path) or None)
  teacher = trained_models.pretrained_in_frame(config, teacher, lambda: data_facts(config, workdir))
  art.write(workdir, "teacher", 0, trained_models.pretrained_teacher_spec(config, teacher), {})
  how = teacher.metadata.get("input_protocol", {}).get("template", "the whole crop resized")
  print(f"teacher.kind={t.kind!r}: nothing to train (a pretrained teacher, input: {how})")


def run_teacher_embeddings(config: ConfigDict, workdir: str) -> None:
  teacher = load_teacher(config, workdir)
  source = make_source(config, "train")

  class _Clean:

    def __len__(self):
      return len(source)

    def __getitem__(self, i):
      r = source[i]
      return {"image": pipe.to_unit_range(r["image"]), "identity": r["identity"]}

  mesh = make_mesh(config)
  bs = int(config.teacher_embeddings.batch_size)
  emb, labels = extract.extract_embeddings(
      lambda x: teacher.apply(teacher.params, x)["embedding"], _Clean(), bs, mesh
  )
  meta = extract.write_teacher_outputs(
      os.path.join(workdir, "teacher_embeddings"),
      emb,
      labels,
      {"teacher": teacher.name, "split": "train", "data_source": str(config.data.source)},
      num_classes=source.num_classes,
  )
  if meta:
    print(
        f"teacher embeddings: {meta['num_records']} x {meta['embedding_dim']}, "
        f"{meta['num_classes']} identity centroids (Eq. 18)"
    )


# ----------------------------------------------------------- de-occlusion

DEOCCLUSION_STAGES = ("deocclusion", "deocclusion_noca")


def deocclusion_section(config: ConfigDict, stage: str = "deocclusion") -> ConfigDict:
  """``config.deocclusion`` for stage 'deocclusion'; for 'deocclusion_noca'
  (Table 2's "GA w/o attention") the same G and objective with
  ``contextual_attention=False``."""
  c = require(config, "deocclusion")
  if stage == "deocclusion_noca":
    c = c.copy_and_resolve_references()
    with c.unlocked():
      c.contextual_attention = False
  elif stage != "deocclusion":
    raise ConfigError(f"unknown de-occlusion stage {stage!r}; choose from {DEOCCLUSION_STAGES}")
  return c


def deocclusion_plan(stage: str):
  def plan(config: ConfigDict, workdir: str, source: Any, mesh: Any) -> Plan:
    """G (+ critics) of ``stage``."""
    c = resolved(config, deocclusion_section(config, stage), source)
    res = int(config.data.resolution)
    init_fn, step_fn = deocclusion_stage.make_fns(c, res)
    spec = trained_models.generator_spec(c, res, data_facts(config, workdir))
    return Plan(c, init_fn, step_fn, spec, sample_fn=deocclusion_stage.sample_grid(c))

  return plan


DEOCCLUSION = StageSpec(
    "deocclusion", 2, ("masked", "mask", "clean"), deocclusion_plan("deocclusion")
)
# Table 2's "GA w/o attention": the same batches and key as 'deocclusion' (paired).
DEOCCLUSION_NOCA = StageSpec(
    "deocclusion_noca",
    2,
    ("masked", "mask", "clean"),
    deocclusion_plan("deocclusion_noca"),
    stream="deocclusion",
)


# ----------------------------------------------------------- segmentation


def segmentation_plan(config: ConfigDict, workdir: str, source: Any, mesh: Any) -> Plan:
  c = resolved(config, require(config, "segmentation"), source)
  res = int(config.data.resolution)
  init_fn, step_fn = segmentation_stage.make_fns(c, res)
  return Plan(
      c, init_fn, step_fn, trained_models.segmenter_spec(c, res, data_facts(config, workdir))
  )


SEGMENTATION = StageSpec("segmentation", 8, ("masked", "mask"), segmentation_plan)


# ----------------------------------------------------------- distillation


def distill_fns(
    config: ConfigDict,
    workdir: str,
    stage: str,
    mesh,
    overrides: dict[str, Any] | None = None,
    teacher=None,
    generator=None,
    source=None,
):
  """(config, teacher, source, init_fn, step_fn, frozen, generator facts) of a
  distillation stage; ``overrides`` replace ``config.distillation`` fields
  (the loss ablation); ``teacher`` / ``generator`` (G's parameters, already at
  hand) and ``source`` (the training split) are loaded when not given. The
  faces are completed by the de-occlusion stage ``config.distillation.generator``
  names (default 'deocclusion'; its artefact gives the network, and the facts:
  stage, step, architecture). ``frozen`` = {'teacher', 'generator',
  'centroids'?}: the step's third argument."""
  c = require(config, "distillation").copy_and_resolve_references()
  with c.unlocked():
    if stage in ("distill_hard", "distill_soft"):
      c.instance = stage[len("distill_") :]
    c.update(overrides or {})
  g_params, complete, used = generator_completion(
      config, workdir, str(c.generator), "distillation.generator"
  )
  teacher = teacher or load_teacher(config, workdir)
  source = make_source(config, "train") if source is None else source
  if "num_steps" in (overrides or {}):  # e.g. the ablation's own length
    with c.unlocked():
      c.epochs = 0
  c = resolved(config, c, source)
  frozen = {
      "teacher": teacher.params,
      "generator": g_params if generator is None else generator,
  }
  if c.instance == "soft":
    out = extract.load_teacher_outputs(os.path.join(workdir, "teacher_embeddings"))
    frozen["centroids"] = out["centroids"]
  init_fn, step_fn = distillation_stage.make_fns(
      c,
      config.deocclusion,
      teacher.apply,
      teacher.embed_dim,
      source.num_classes,
      int(config.data.resolution),
      mesh,
      teacher_num_classes=teacher.num_classes,
      teacher_name=f"teacher '{teacher.name}' (config.teacher.kind={config.teacher.kind!r})",
      complete=complete,
  )
  return c, teacher, source, init_fn, step_fn, frozen, used


def distill_plan(stage: str):
  def plan(config: ConfigDict, workdir: str, source: Any, mesh: Any) -> Plan:
    """The student of ``stage`` ('distill_hard' / 'distill_soft')."""
    c, teacher, source, init_fn, step_fn, frozen, used = distill_fns(
        config, workdir, stage, mesh, source=source
    )
    spec = trained_models.student_spec(
        c, config, teacher, source.num_classes, data_facts(config, workdir), generator=used
    )
    return Plan(c, init_fn, step_fn, spec, frozen=frozen)

  return plan


DISTILL_HARD = StageSpec("distill_hard", 3, DISTILL_KEYS, distill_plan("distill_hard"))
DISTILL_SOFT = StageSpec("distill_soft", 4, DISTILL_KEYS, distill_plan("distill_soft"))


# ------------------------------------------------------------------ joint


def joint_plan(config: ConfigDict, workdir: str, source: Any, mesh: Any) -> Plan:
  """G and the student together (Eq. 6), optionally from the two stages' states."""
  j = require(config, "joint")
  teacher = load_teacher(config, workdir)
  frozen = {"teacher": teacher.params}
  if str(j.instance) == "soft":
    frozen["centroids"] = extract.load_teacher_outputs(os.path.join(workdir, "teacher_embeddings"))[
        "centroids"
    ]
  init_from = None
  if bool(j.init_from_stages):
    d_init, _ = deocclusion_stage.make_fns(config.deocclusion, int(config.data.resolution))
    _, gan = loop.restore_state(workdir, "deocclusion", d_init, DEOCCLUSION.key(config), mesh)
    student = art.read(workdir, f"distill_{j.instance}").variables
    init_from = {"g": gan["g"], "d": gan["d"], "student": student}
  init_fn, step_fn = joint_stage.make_fns(
      j,
      config.deocclusion,
      config.distillation,
      teacher.apply,
      teacher.embed_dim,
      source.num_classes,
      int(config.data.resolution),
      init_from,
      teacher_num_classes=teacher.num_classes,
  )
  return Plan(j, init_fn, step_fn, None, frozen=frozen)


JOINT = StageSpec("joint", 5, DISTILL_KEYS, joint_plan)
