"""The baselines of Table 2: specs of the fine-tuned recognisers (``training/stage_spec.py``).

    pretrain_arcface   the paper's baseline, part 1: a recogniser of the student's
                       size (ResNet-18 ArcFace) pretrained on clean faces
    finetune_arcface   the paper's baseline (Sec. 4.2, "Distillation vs
                       Fine-tune"): that network (or a converted recogniser the
                       config names) fine-tuned with ArcFace on completed faces
    finetune_teacher   an extra row: the teacher itself fine-tuned the same way

Both fine-tunings train by ``config.finetune_arcface`` alone, every field of it
written out in the config; of the network fine-tuned only the architecture of an
ArcFace network trained here (:data:`ARCHITECTURE`) is read from it: its weights
fix it (:func:`finetune_section`).
"""

from __future__ import annotations

from typing import Any

from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.errors import ConfigError
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import factories, trained_models
from deocc_jax.teachers import api
from deocc_jax.training import finetune_stage, teacher_stage
from deocc_jax.training.stage_spec import Plan, StageSpec, resolved, train_stage

FINETUNE_KINDS = ("arcface", "converted")
FINETUNE_STAGES = ("finetune_arcface", "finetune_teacher")
FINETUNE_INITS = ("pretrain_arcface", "converted")
# an ArcFace network's own fields, fixed by its weights: read from the network
# fine-tuned (its artefact's section, or config.teacher), not chosen by the recipe
ARCHITECTURE = ("width", "small_input_stem", "embed_dim")


def pretrain_plan(config: ConfigDict, workdir: str, source: Any, mesh: Any) -> Plan:
  """The paper's baseline, part 1: a student-sized ArcFace recogniser trained
  on clean faces of the training identities (``config.pretrain_arcface``; its
  own stage key: not the teacher)."""
  p = resolved(config, require(config, "pretrain_arcface"), source)
  res = int(config.data.resolution)
  init_fn, step_fn = teacher_stage.make_fns(p, source.num_classes, res)
  spec = trained_models.arcface_spec(
      p, source.num_classes, res, factories.data_facts(config, workdir)
  )
  return Plan(p, init_fn, step_fn, spec)


PRETRAIN_ARCFACE = StageSpec("pretrain_arcface", 10, ("clean", "identity"), pretrain_plan)


def finetune_start(config: ConfigDict, workdir: str, stage: str, teacher=None):
  """(kind, network, its architecture's section, identity) a fine-tuning stage
  starts from: 'finetune_teacher' the teacher ('arcface' trained here, or
  'converted'); 'finetune_arcface' ``config.finetune_arcface.init``: the
  student-sized ArcFace of stage 'pretrain_arcface', or a converted recogniser
  at ``config.finetune_arcface.path``. The section (an ArcFace network's:
  config.teacher, or the one its artefact records; None for a converted one)
  gives only :data:`ARCHITECTURE`. ``identity`` is recorded in the fine-tuned
  artefact (which network it started from)."""
  f = require(config, "finetune_arcface")
  if stage == "finetune_teacher":
    kind = str(require(config, "teacher.kind"))
    if kind not in FINETUNE_KINDS:
      raise ConfigError(
          f"stage 'finetune_teacher' fine-tunes the ArcFace teacher trained here or a "
          f"converted teacher; config.teacher.kind is {kind!r}"
      )
    teacher = teacher or factories.load_teacher(config, workdir)
    section = config.teacher if kind == "arcface" else None
    return kind, teacher, section, trained_models.teacher_identity(config, teacher)
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
    return "converted", network, None, ident
  raise ConfigError(f"config.finetune_arcface.init must be one of {FINETUNE_INITS}, got {init!r}")


def finetune_section(f: ConfigDict, network_section: ConfigDict | None) -> ConfigDict:
  """The fine-tuning's section: ``f`` (``config.finetune_arcface``) as written,
  plus, for an ArcFace network trained here (``network_section`` not None),
  that network's :data:`ARCHITECTURE` (its weights fix it). A converted
  network needs none (it runs as converted)."""
  cfg = f.copy_and_resolve_references()
  if network_section is not None:
    with cfg.unlocked():
      for key in ARCHITECTURE:
        cfg[key] = require(network_section, key)
  return cfg


def finetune_fns(
    config: ConfigDict,
    workdir: str,
    stage: str = "finetune_arcface",
    teacher=None,
    generator=None,
    source=None,
):
  """(section, init_fn, step_fn, frozen, artefact spec) of a fine-tuned
  recogniser (Table 2): the network ``finetune_start`` names, fine-tuned with
  ArcFace on completed (or masked) faces by ``config.finetune_arcface``
  (:func:`finetune_section`). Completed faces come from the de-occlusion stage
  ``config.finetune_arcface.generator`` names (default 'deocclusion'; recorded
  in the artefact's facts). ``teacher`` / ``generator`` (G's parameters,
  already at hand) and ``source`` (the training split) are loaded when not
  given."""
  f = require(config, "finetune_arcface")
  kind, network, own, ident = finetune_start(config, workdir, stage, teacher)
  cfg = finetune_section(f, own)
  res = int(config.data.resolution)
  source = factories.make_source(config, "train") if source is None else source
  num_classes = source.num_classes
  cfg = resolved(config, cfg, source)
  inp = str(f.input)
  facts = {}
  if inp == "completed":
    g_params, complete, facts["generator"] = factories.generator_completion(
        config, workdir, str(f.generator), "finetune_arcface.generator"
    )
    frozen = {"generator": g_params if generator is None else generator}

    def input_fn(fz, batch):
      return complete(fz["generator"], batch["masked"], batch["mask"])

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
    spec = trained_models.finetuned_spec(config, ident, network, num_classes, arrays, **facts)
    return cfg, init_fn, step_fn, frozen, spec
  p = network.params
  init_from = {"params": {"backbone": p["backbone"]}, "batch_stats": p["batch_stats"]}
  if network.num_classes == num_classes:  # same identities: keep the network's head
    init_from["params"]["head"] = p["head"]
  init_fn, step_fn = teacher_stage.make_fns(
      cfg, num_classes, res, init_from=init_from, input_fn=input_fn
  )
  spec = trained_models.arcface_spec(cfg, num_classes, res, arrays, teacher=ident, **facts)
  return cfg, init_fn, step_fn, frozen, spec


def finetune_plan(stage: str):
  def plan(config: ConfigDict, workdir: str, source: Any, mesh: Any) -> Plan:
    """A fine-tuned baseline (``finetune_fns``)."""
    cfg, init_fn, step_fn, frozen, spec = finetune_fns(config, workdir, stage, source=source)
    return Plan(cfg, init_fn, step_fn, spec, frozen=frozen)

  return plan


FINETUNE_KEYS = ("masked", "mask", "clean", "identity")
FINETUNE_ARCFACE = StageSpec(
    "finetune_arcface", 11, FINETUNE_KEYS, finetune_plan("finetune_arcface")
)
FINETUNE_TEACHER = StageSpec(
    "finetune_teacher", 9, FINETUNE_KEYS, finetune_plan("finetune_teacher")
)


def run_finetune_teacher(config: ConfigDict, workdir: str) -> None:
  """Trains the fine-tuned teacher; skipped (said) for a teacher that cannot be fine-tuned."""
  if str(require(config, "teacher.kind")) not in FINETUNE_KINDS:
    print(
        f"teacher.kind={config.teacher.kind!r}: fine-tuning the teacher needs the ArcFace "
        "teacher trained here or a converted teacher; skipped"
    )
    return
  train_stage(config, workdir, FINETUNE_TEACHER)
