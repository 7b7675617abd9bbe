"""The training stages' runners and restorers (the table: ``training/registry.py``).

Each stage reads its config section, builds its data stream and its pure
``init_fn`` / ``step_fn``, and runs the shared loop (``training/loop.py``)
under ``<workdir>/<stage>/``; later stages restore what earlier ones wrote.

    render_data        contact sheets + statistics of the synthetic set
    teacher            ArcFace pre-training of the teacher (synthetic default)
    teacher_embeddings offline teacher job: train-split embeddings + centroids (Eq. 18)
    deocclusion        stage 1: generator + global / local critics
    deocclusion_noca   the same G without contextual attention (Table 2's "GA w/o attention")
    distill_hard       stage 2: student with the hard instance loss (Eq. 12)
    distill_soft       stage 2: student with the soft instance loss (Eq. 17)
    joint              end-to-end (Eq. 6): generator and student together (optional)
    segmentation       occlusion-mask predictor for blind de-occlusion

The fine-tuned baselines (``pretrain_arcface``, ``finetune_arcface``,
``finetune_teacher``) run from ``training/baseline_stages.py``. The evaluation stages (``evaluate``: the paper's tables; ``ablation``: Fig. 5)
live in ``deocc_jax/evaluation/``, above this module, and are run from the
registry.
"""

from __future__ import annotations

import os
from typing import Any

from absl import flags
from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.data import pipeline as pipe
from deocc_jax.errors import ConfigError
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import trained_models
from deocc_jax.runs.factories import (
    data_facts,
    generator_params,
    load_teacher,
    make_mesh,
    make_source,
    mask_config,
    teacher_source,
)
from deocc_jax.teachers import api, extract
from deocc_jax.training import (
    deocclusion_stage,
    distillation_stage,
    joint_stage,
    loop,
    occluder_stream,
    optim,
    registry,
    segmentation_stage,
    teacher_stage,
)

TEACHER_KINDS = ("arcface", "dlib", "converted")


# ---------------------------------------------------------------- data


def make_batches(
    config: ConfigDict,
    section: ConfigDict,
    stage: str,
    split: str = "train",
    source=None,
    shard_options=None,
):
  """A checkpointable grain iterator of host batches, plus its source
  (``source`` replaces ``make_source(config, split)``; ``shard_options``, a
  ``grain.ShardOptions``, replaces this process's shard). With
  ``config.data.occluders='device'`` the iterator carries its device half
  (``training/occluder_stream.py``): the loop draws the occluders there."""
  if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
    flags.FLAGS.mark_as_parsed()
  source = make_source(config, split) if source is None else source
  p = require(config, "pipeline")
  pcfg = pipe.PipelineConfig(
      batch_size=int(section.batch_size),
      seed=int(config.seed) * 1000 + registry.get(stage).seed_offset,
      worker_count=int(p.worker_count),
      read_threads=int(p.read_threads),
      flip=bool(p.flip),
      max_shift_px=int(p.max_shift_px),
  )
  if occluder_stream.mode(config) == "device":
    return occluder_stream.device_batches(config, source, pcfg, stage, shard_options), source
  return iter(pipe.make_loader(source, pcfg, mask_config(config), shard_options)), source


def resolved(config: ConfigDict, section: ConfigDict | str, source=None) -> ConfigDict:
  """A stage section with its schedule in steps (``optim.resolve_schedule``):
  ``epochs`` / ``decay_every_epochs`` over the training source's size and the
  section's global batch, lr scaled from ``base_batch_size``."""
  sec = require(config, section) if isinstance(section, str) else section
  needs_size = float(sec.epochs) > 0 or any(
      float(o.decay_every_epochs) > 0 or float(o.warmup_epochs) > 0
      for o in optim.optimizer_sections(sec)
  )
  size = len(source if source is not None else make_source(config, "train")) if needs_size else 0
  return optim.resolve_schedule(sec, size)


def loop_config(section: ConfigDict, keys: tuple[str, ...], config: ConfigDict) -> loop.LoopConfig:
  return loop.LoopConfig(
      num_steps=int(section.num_steps),
      log_every=int(section.log_every),
      checkpoint_every=int(section.checkpoint_every),
      keep_checkpoints=int(config.checkpoint.keep),
      async_checkpoints=bool(config.checkpoint.async_save),
      **loop.best_args(section),
      fsdp=bool(config.mesh.fsdp),
      sample_every=int(section.sample_every),
      batch_keys=keys,
      progress=bool(config.progress),
  )


# -------------------------------------------------------------- teachers


def run_teacher(config: ConfigDict, workdir: str) -> None:
  t = require(config, "teacher")
  if str(t.kind) not in TEACHER_KINDS:
    raise ConfigError(
        f"config.teacher.kind must be 'arcface', 'dlib' or 'converted', " f"got {t.kind!r}"
    )
  if str(t.kind) != "arcface":
    teacher = api.load_teacher(str(t.kind), str(t.path) or None)
    teacher = trained_models.pretrained_in_frame(
        config, teacher, lambda: data_facts(config, workdir)
    )
    art.write(workdir, "teacher", 0, trained_models.pretrained_teacher_spec(config, teacher), {})
    how = teacher.metadata.get("input_protocol", {}).get("template", "the whole crop resized")
    print(f"teacher.kind={t.kind!r}: nothing to train (a pretrained teacher, input: {how})")
    return
  batches, source = make_batches(config, t, "teacher", source=teacher_source(config))
  t = resolved(config, t, source)
  res = int(config.data.resolution)
  init_fn, step_fn = teacher_stage.make_fns(t, source.num_classes, res)
  spec = trained_models.arcface_spec(t, source.num_classes, res, data_facts(config, workdir))
  loop.run(
      "teacher",
      workdir,
      init_fn,
      step_fn,
      batches,
      registry.stage_key(config, "teacher"),
      make_mesh(config),
      loop_config(t, ("clean", "identity"), config),
      artefact=spec,
  )


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


def run_deocclusion(config: ConfigDict, workdir: str, stage: str = "deocclusion") -> None:
  """Trains G (+ critics) under ``<workdir>/<stage>/``."""
  c = deocclusion_section(config, stage)
  batches, source = make_batches(config, c, stage)
  c = resolved(config, c, source)
  res = int(config.data.resolution)
  init_fn, step_fn = deocclusion_stage.make_fns(c, res)
  loop.run(
      stage,
      workdir,
      init_fn,
      step_fn,
      batches,
      registry.stage_key(config, stage),
      make_mesh(config),
      loop_config(c, ("masked", "mask", "clean"), config),
      sample_fn=deocclusion_stage.sample_grid(c),
      artefact=trained_models.generator_spec(c, res, data_facts(config, workdir)),
  )


# ----------------------------------------------------------- segmentation


def run_segmentation(config: ConfigDict, workdir: str) -> None:
  c = require(config, "segmentation")
  batches, source = make_batches(config, c, "segmentation")
  c = resolved(config, c, source)
  res = int(config.data.resolution)
  init_fn, step_fn = segmentation_stage.make_fns(c, res)
  loop.run(
      "segmentation",
      workdir,
      init_fn,
      step_fn,
      batches,
      registry.stage_key(config, "segmentation"),
      make_mesh(config),
      loop_config(c, ("masked", "mask"), config),
      artefact=trained_models.segmenter_spec(c, res, data_facts(config, workdir)),
  )


# ----------------------------------------------------------- distillation


def distill_fns(
    config: ConfigDict,
    workdir: str,
    stage: str,
    mesh,
    overrides: dict[str, Any] | None = None,
    teacher=None,
    generator=None,
):
  """(config, teacher, source, init_fn, step_fn, frozen) of a distillation
  stage; ``overrides`` replace ``config.distillation`` fields (the loss
  ablation); ``teacher`` / ``generator`` (G's parameters, already at hand)
  are loaded when not given. ``frozen`` = {'teacher', 'generator',
  'centroids'?}: the step's third argument."""
  c = require(config, "distillation").copy_and_resolve_references()
  with c.unlocked():
    if stage in ("distill_hard", "distill_soft"):
      c.instance = stage[len("distill_") :]
    c.update(overrides or {})
  teacher = teacher or load_teacher(config, workdir)
  source = make_source(config, "train")
  if "num_steps" in (overrides or {}):  # e.g. the ablation's own length
    with c.unlocked():
      c.epochs = 0
  c = resolved(config, c, source)
  frozen = {
      "teacher": teacher.params,
      "generator": generator_params(config, workdir) if generator is None else generator,
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
  )
  return c, teacher, source, init_fn, step_fn, frozen


def run_distill(config: ConfigDict, workdir: str, stage: str) -> None:
  """Trains the student of ``stage`` ('distill_hard' / 'distill_soft')."""
  mesh = make_mesh(config)
  c, teacher, source, init_fn, step_fn, frozen = distill_fns(config, workdir, stage, mesh)
  batches, _ = make_batches(config, c, stage)
  spec = trained_models.student_spec(
      c, config, teacher, source.num_classes, data_facts(config, workdir)
  )
  loop.run(
      stage,
      workdir,
      init_fn,
      step_fn,
      batches,
      registry.stage_key(config, stage),
      mesh,
      loop_config(c, ("masked", "mask", "clean", "identity"), config),
      frozen=frozen,
      artefact=spec,
  )


# ------------------------------------------------------------------ joint


def run_joint(config: ConfigDict, workdir: str) -> None:
  j = require(config, "joint")
  mesh = make_mesh(config)
  teacher = load_teacher(config, workdir)
  source = make_source(config, "train")
  frozen = {"teacher": teacher.params}
  if str(j.instance) == "soft":
    frozen["centroids"] = extract.load_teacher_outputs(os.path.join(workdir, "teacher_embeddings"))[
        "centroids"
    ]
  init_from = None
  if bool(j.init_from_stages):
    d_init, _ = deocclusion_stage.make_fns(config.deocclusion, int(config.data.resolution))
    _, gan = loop.restore_state(
        workdir, "deocclusion", d_init, registry.stage_key(config, "deocclusion"), mesh
    )
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
  batches, _ = make_batches(config, j, "joint")
  loop.run(
      "joint",
      workdir,
      init_fn,
      step_fn,
      batches,
      registry.stage_key(config, "joint"),
      mesh,
      loop_config(j, ("masked", "mask", "clean", "identity"), config),
      frozen=frozen,
  )
