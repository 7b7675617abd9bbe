"""One trained stage = one spec; one generic runner trains any of them.

A :class:`StageSpec` names a stage, its seed offset (its random key and data
order: ``seed * 1000 + offset``), the batch keys its step reads, where its
training faces come from, and its ``plan``: (config, workdir, source, mesh)
-> a :class:`Plan` (the resolved config section, ``init_fn`` / ``step_fn``,
the frozen inputs, the artefact spec). :func:`train_stage` builds the source
once, asks the spec for its plan, makes the batches and runs the shared loop
(``training/loop.py``) under ``<workdir>/<stage>/``. What the artefact holds
and how it is restored is the trained-run table, ``runs/kinds.py``; the specs
of a run are listed in ``training/registry.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
from absl import flags
from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.data import pipeline as pipe
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import factories
from deocc_jax.training import loop, occluder_stream, optim


@dataclasses.dataclass(frozen=True)
class Plan:
  """What one trained stage runs, made from the config by its spec's ``plan``."""

  section: ConfigDict  # the stage's config section, schedule resolved to steps
  init_fn: Callable[[jax.Array], Any]
  step_fn: Callable[..., tuple[Any, dict]]
  artefact: art.Spec | None  # the trained model the loop writes (None: nothing later uses it)
  frozen: Any = None  # the step's third argument (teacher, generator, centroids)
  sample_fn: Callable[[Any, dict], Any] | None = None
  batches: Iterator[dict] | None = None  # None: :func:`make_batches` over the source


def train_source(config: ConfigDict) -> Any:
  """The faces most stages train on: the run's training split."""
  return factories.make_source(config, "train")


PlanFn = Callable[[ConfigDict, str, Any, Any], Plan]


@dataclasses.dataclass(frozen=True)
class StageSpec:
  name: str
  seed_offset: int  # key = seed * 1000 + offset
  batch_keys: tuple[str, ...]  # the batch fields the step reads (sharded by the loop)
  plan: PlanFn  # (config, workdir, source, mesh) -> Plan
  # config -> the training faces, built once per run of the stage (None: the
  # plan reads its own data and gives its batches)
  source: Callable[[ConfigDict], Any] | None = train_source
  # the stage whose batch stream it shares ('' = its own): a paired stage (same
  # seed offset) names its base so the device occluders match too (their key
  # folds in the stream's name; the pipeline seed is the offset's)
  stream: str = ""

  def seed(self, config: ConfigDict) -> int:
    return int(config.seed) * 1000 + self.seed_offset

  def key(self, config: ConfigDict) -> jax.Array:
    """The stage's root random key (model init; its data seeds derive alike)."""
    return jax.random.key(self.seed(config))


def make_batches(
    config: ConfigDict,
    section: ConfigDict,
    spec: StageSpec,
    source: Any = None,
    shard_options: Any = None,
) -> tuple[Iterator[dict], Any]:
  """A checkpointable grain iterator of host batches of ``spec``'s stage, plus
  its source (``source`` replaces the spec's; ``shard_options``, a
  ``grain.ShardOptions``, replaces this process's shard). With
  ``config.data.occluders='device'`` the iterator carries its device half
  (``training/occluder_stream.py``): the loop draws the occluders there."""
  if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
    flags.FLAGS.mark_as_parsed()
  source = spec.source(config) if source is None else source
  p = require(config, "pipeline")
  pcfg = pipe.PipelineConfig(
      batch_size=int(section.batch_size),
      seed=spec.seed(config),
      worker_count=int(p.worker_count),
      read_threads=int(p.read_threads),
      flip=bool(p.flip),
      max_shift_px=int(p.max_shift_px),
  )
  if occluder_stream.mode(config) == "device":
    stream = spec.stream or spec.name
    return occluder_stream.device_batches(config, source, pcfg, stream, shard_options), source
  mask_cfg = factories.mask_config(config)
  return iter(pipe.make_loader(source, pcfg, mask_cfg, shard_options)), source


def resolved(config: ConfigDict, section: ConfigDict | str, source: Any = None) -> ConfigDict:
  """A stage section with its schedule in steps (``optim.resolve_schedule``):
  ``epochs`` / ``decay_every_epochs`` over the training source's size and the
  section's global batch, lr scaled from ``base_batch_size``."""
  sec = require(config, section) if isinstance(section, str) else section
  needs_size = float(sec.epochs) > 0 or any(
      float(o.decay_every_epochs) > 0 or float(o.warmup_epochs) > 0
      for o in optim.optimizer_sections(sec)
  )
  if not needs_size:
    return optim.resolve_schedule(sec, 0)
  return optim.resolve_schedule(sec, len(source if source is not None else train_source(config)))


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


def train_stage(config: ConfigDict, workdir: str, spec: StageSpec, name: str | None = None) -> Any:
  """Trains ``spec``'s stage under ``<workdir>/<name>/`` (``name``: the spec's
  unless given, e.g. a study's variant of a stage; its key and batches stay
  the spec's), resuming from its last checkpoint; returns the final state."""
  mesh = factories.make_mesh(config)
  source = spec.source(config) if spec.source is not None else None
  plan = spec.plan(config, workdir, source, mesh)
  batches = plan.batches
  if batches is None:
    batches, _ = make_batches(config, plan.section, spec, source=source)
  return loop.run(
      name or spec.name,
      workdir,
      plan.init_fn,
      plan.step_fn,
      batches,
      spec.key(config),
      mesh,
      loop_config(plan.section, spec.batch_keys, config),
      sample_fn=plan.sample_fn,
      frozen=plan.frozen,
      artefact=plan.artefact,
  )
