"""The baselines of Table 2: runners of the fine-tuned recognisers.

    pretrain_arcface   the paper's baseline, part 1: a recogniser of the student's
                       size (ResNet-18 ArcFace) pretrained on clean faces
    finetune_arcface   the paper's baseline (Sec. 4.2, "Distillation vs
                       Fine-tune"): that network (or a converted recogniser the
                       config names) fine-tuned with ArcFace on completed faces
    finetune_teacher   an extra row: the teacher itself fine-tuned the same way

Both fine-tunings follow ``config.finetune_arcface``'s recipe; the network's own
fields (width, embedding size, ArcFace s and m) come from the network fine-tuned.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.errors import ConfigError
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import builders, factories, trained_models
from deocc_jax.teachers import api
from deocc_jax.training import (
    finetune_stage,
    loop,
    registry,
    stages,
    teacher_stage,
)

FINETUNE_KINDS = ("arcface", "converted")
FINETUNE_STAGES = ("finetune_arcface", "finetune_teacher")
FINETUNE_INITS = ("pretrain_arcface", "converted")
FINETUNE_OWN = ("init", "path", "input_protocol")  # fields choosing the network, not the recipe


def run_pretrain_arcface(config: ConfigDict, workdir: str) -> None:
  """The paper's baseline, part 1: a student-sized ArcFace recogniser trained
  on clean faces of the training identities (``config.pretrain_arcface``; its
  own stage key: not the teacher)."""
  p = require(config, "pretrain_arcface")
  batches, source = stages.make_batches(config, p, "pretrain_arcface")
  p = stages.resolved(config, p, source)
  res = int(config.data.resolution)
  init_fn, step_fn = teacher_stage.make_fns(p, source.num_classes, res)
  loop.run(
      "pretrain_arcface",
      workdir,
      init_fn,
      step_fn,
      batches,
      registry.stage_key(config, "pretrain_arcface"),
      factories.make_mesh(config),
      stages.loop_config(p, ("clean", "identity"), config),
      artefact=trained_models.arcface_spec(
          p, source.num_classes, res, factories.data_facts(config, workdir)
      ),
  )


def finetune_start(config: ConfigDict, workdir: str, stage: str, teacher=None):
  """(kind, network, its config section, identity) a fine-tuning stage starts
  from: 'finetune_teacher' the teacher ('arcface' trained here, or
  'converted'); 'finetune_arcface' ``config.finetune_arcface.init``: the
  student-sized ArcFace of stage 'pretrain_arcface', or a converted recogniser
  at ``config.finetune_arcface.path``. ``identity`` is recorded in the
  fine-tuned artefact (which network it started from)."""
  f = require(config, "finetune_arcface")
  if stage == "finetune_teacher":
    kind = str(require(config, "teacher.kind"))
    if kind not in FINETUNE_KINDS:
      raise ConfigError(
          f"stage 'finetune_teacher' fine-tunes the ArcFace teacher trained here or a "
          f"converted teacher; config.teacher.kind is {kind!r}"
      )
    teacher = teacher or factories.load_teacher(config, workdir)
    return kind, teacher, config.teacher, trained_models.teacher_identity(config, teacher)
  if stage != "finetune_arcface":
    raise ConfigError(f"unknown fine-tuning stage {stage!r}; choose from {FINETUNE_STAGES}")
  init = str(f.init)
  if init == "pretrain_arcface":
    a = art.read(workdir, "pretrain_arcface")
    ident = {"kind": "arcface", "name": "arcface", "stage": "pretrain_arcface", "step": a.step}
    return "arcface", trained_models.teacher_from(a), ConfigDict(a.facts["config"]), ident
  if init == "converted":
    if not str(f.path):
      raise ConfigError(
          "config.finetune_arcface.path must name a converted recogniser's directory "
          "(python -m deocc_jax.convert) when config.finetune_arcface.init='converted'"
      )
    network = api.load_teacher("converted", str(f.path))
    network = trained_models.pretrained_in_frame(
        config,
        network,
        lambda: factories.data_facts(config, workdir),
        field="finetune_arcface.input_protocol",
    )
    ident = trained_models.network_identity("converted", str(f.path), network)
    return "converted", network, config.teacher, ident
  raise ConfigError(f"config.finetune_arcface.init must be one of {FINETUNE_INITS}, got {init!r}")


def finetune_fns(
    config: ConfigDict, workdir: str, stage: str = "finetune_arcface", teacher=None, generator=None
):
  """(merged config, init_fn, step_fn, frozen, artefact spec) of a fine-tuned
  recogniser (Table 2): the network ``finetune_start`` names, fine-tuned with
  ArcFace on completed (or masked) faces by ``config.finetune_arcface``'s
  recipe. ``teacher`` / ``generator`` (G's parameters, already at hand) are
  loaded when not given."""
  f = require(config, "finetune_arcface")
  kind, network, base, ident = finetune_start(config, workdir, stage, teacher)
  cfg = base.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.update({k: v for k, v in f.copy_and_resolve_references().items() if k not in FINETUNE_OWN})
  res = int(config.data.resolution)
  source = factories.make_source(config, "train")
  num_classes = source.num_classes
  cfg = stages.resolved(config, cfg, source)
  inp = str(f.input)
  if inp == "completed":
    frozen = {
        "generator": factories.generator_params(config, workdir) if generator is None else generator
    }

    def input_fn(fz, batch):
      complete = builders.complete_fn(config.deocclusion, fz["generator"])
      return complete(batch["masked"], batch["mask"])

  elif inp == "masked":
    frozen = None

    def input_fn(fz, batch):
      return batch["masked"]

  else:
    raise ConfigError(
        f"config.finetune_arcface.input must be 'completed' or 'masked', " f"got {inp!r}"
    )
  arrays = factories.data_facts(config, workdir)
  if kind == "converted":
    init_fn, step_fn = finetune_stage.make_fns(cfg, network, num_classes, input_fn)
    spec = trained_models.finetuned_spec(config, ident, network, num_classes, arrays)
    return cfg, init_fn, step_fn, frozen, spec
  p = network.params
  init_from = {"params": {"backbone": p["backbone"]}, "batch_stats": p["batch_stats"]}
  if network.num_classes == num_classes:  # same identities: keep the network's head
    init_from["params"]["head"] = p["head"]
  init_fn, step_fn = teacher_stage.make_fns(
      cfg, num_classes, res, init_from=init_from, input_fn=input_fn
  )
  spec = trained_models.arcface_spec(cfg, num_classes, res, arrays, teacher=ident)
  return cfg, init_fn, step_fn, frozen, spec


def run_finetune(config: ConfigDict, workdir: str, stage: str = "finetune_arcface") -> None:
  """Trains a fine-tuned baseline (``finetune_fns``) under ``<workdir>/<stage>/``."""
  if stage == "finetune_teacher" and str(require(config, "teacher.kind")) not in FINETUNE_KINDS:
    print(
        f"teacher.kind={config.teacher.kind!r}: fine-tuning the teacher needs the ArcFace "
        "teacher trained here or a converted teacher; skipped"
    )
    return
  cfg, init_fn, step_fn, frozen, spec = finetune_fns(config, workdir, stage)
  batches, _ = stages.make_batches(config, cfg, stage)
  loop.run(
      stage,
      workdir,
      init_fn,
      step_fn,
      batches,
      registry.stage_key(config, stage),
      factories.make_mesh(config),
      stages.loop_config(cfg, ("masked", "mask", "clean", "identity"), config),
      frozen=frozen,
      artefact=spec,
  )
