"""The generic training loop shared by every stage.

A stage supplies pure functions::

    init_fn(key) -> state                         # a pytree of arrays
    step_fn(state, batch) -> (state, metrics)     # one optimisation step
    step_fn(state, batch, frozen) -> (state, metrics)   # with frozen models

and a grain iterator of host batches. Frozen models (a distillation's
teacher and generator, the centroids) are jit *arguments*, placed on the mesh
once, never part of the state or its checkpoints (as big_vision's distill
trainer does); an ``artefacts.Spec`` names the trained model the loop writes
beside every checkpoint (``runs/artefacts.py``). The loop jit-compiles ``step_fn`` once
over the device mesh (state replicated or FSDP-sharded, batch sharded along
``'data'``, the state buffers donated), resumes from the latest checkpoint in
its directory (state *and* each process's data-iterator position, so a
killed run continues exactly on the same process count; see
:func:`restore_data_position` for another count), logs every term,
gradient norms, examples/s and step time, writes PNG sample grids, saves
checkpoints, and stops with a clear error on a non-finite loss while keeping
the last good checkpoint. On SIGTERM (a scheduler's preemption) every process
agrees on a step, saves it and raises :class:`preemption.Preempted` (exit
status 143); rerunning the command resumes there (``training/preemption.py``).

A batch stream may carry its device half (:class:`PreparedBatches`, e.g. the
occluders drawn on the accelerator): ``prepare.fn(batch, step, args)``, jitted
once, runs on each sharded global batch right before the step; it depends on
the batch and the step only, so a resumed run stays bitwise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from tqdm import tqdm

from deocc_jax import errors
from deocc_jax.runs import artefacts as artefacts_lib
from deocc_jax.runs import workdir as workdir_lib
from deocc_jax.training import checkpoint as ckpt_lib
from deocc_jax.training import preemption
from deocc_jax.training.metrics_writer import MetricWriter
from deocc_jax.utils import files
from deocc_jax.utils import sharding as shard_lib


class NonFiniteLossError(FloatingPointError):
  """Raised when a logged metric is NaN / Inf; the last good checkpoint stays."""


@dataclasses.dataclass
class LoopConfig:
  num_steps: int
  log_every: int = 50
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  best_metric: str | None = None  # rank kept checkpoints by this metric
  best_mode: str = "min"
  async_checkpoints: bool = True
  fsdp: bool = False  # shard params / optimizer state over 'data'
  sample_every: int = 0  # PNG sample grids (0 = never)
  batch_keys: tuple[str, ...] = ()  # host batch entries sent to devices (() = all)
  progress: bool = True


@dataclasses.dataclass(frozen=True)
class Prepare:
  """The device half of a batch stream, run right beside the jitted step.

  ``fn(batch, step, args) -> batch``: ``batch`` the sharded global host batch,
  ``step`` the step's index (int32 scalar), ``args`` a pytree (e.g. the
  occluder bank) placed on the mesh once, replicated, and passed as a jit
  argument (not a constant folded into the program).
  """

  fn: Callable[[dict, jax.Array, Any], dict]
  args: Any = None


class PreparedBatches:
  """A grain iterator of host batches with its device half ``prepare``
  (``get_state`` / ``set_state`` are the iterator's: checkpoints unchanged)."""

  def __init__(self, batches: Iterator[dict], prepare: Prepare):
    self.batches = batches
    self.prepare = prepare

  def __iter__(self) -> "PreparedBatches":
    return self

  def __next__(self) -> dict:
    return next(self.batches)

  def get_state(self) -> Any:
    return self.batches.get_state()

  def set_state(self, state: Any) -> None:
    self.batches.set_state(state)


def _select(fn: Callable[..., dict], keys: tuple[str, ...], name: str) -> Callable[..., dict]:
  """``fn`` keeping only ``keys`` of its batch (() = all): XLA drops the rest."""

  def selected(*args):
    out = fn(*args)
    if not keys:
      return out
    missing = [k for k in keys if k not in out]
    if missing:
      raise KeyError(f"[{name}] prepared batch lacks {missing}; it has {sorted(out)}")
    return {k: out[k] for k in keys}

  return selected


def batch_on_device(
    name: str, mesh: Mesh, config: "LoopConfig", prepare: Prepare | None
) -> Callable[[dict, int], dict]:
  """``(host batch, step) -> global device batch``: the host batch's
  ``batch_keys`` sharded along 'data'; with ``prepare``, the whole host batch
  sharded, then ``prepare.fn`` (jitted once) and its ``batch_keys``."""
  data_sh = shard_lib.data_sharding(mesh)
  rep = shard_lib.replicated(mesh)
  if prepare is None:

    def plain(host: dict, step: int) -> dict:
      if config.batch_keys:
        missing = [k for k in config.batch_keys if k not in host]
        if missing:
          raise KeyError(f"[{name}] batch lacks {missing}; it has {sorted(host)}")
        host = {k: host[k] for k in config.batch_keys}
      return shard_lib.host_batch_to_global(host, mesh)

    return plain
  args = shard_lib.put_global(prepare.args, jax.tree_util.tree_map(lambda _: rep, prepare.args))
  jitted = jax.jit(
      _select(prepare.fn, config.batch_keys, name),
      in_shardings=(data_sh, rep, rep),
      out_shardings=data_sh,
  )

  def prepared(host: dict, step: int) -> dict:
    s = shard_lib.put_global(np.int32(step), rep)
    return jitted(shard_lib.host_batch_to_global(host, mesh), s, args)

  return prepared


def host_local(batch: dict, sharding: NamedSharding) -> dict:
  """This process's examples of a global batch, as numpy (for sample grids)."""
  local = multihost_utils.global_array_to_host_local_array(batch, sharding.mesh, sharding.spec)
  return {k: np.asarray(v) for k, v in local.items()}


def _finite(metrics: dict[str, float]) -> bool:
  return all(math.isfinite(float(v)) for v in metrics.values())


def run(
    name: str,
    workdir: Any,
    init_fn: Callable[[jax.Array], Any],
    step_fn: Callable[[Any, dict], tuple[Any, dict]],
    batches: Iterator[dict],
    key: jax.Array,
    mesh: Mesh,
    config: LoopConfig,
    sample_fn: Callable[[Any, dict], np.ndarray] | None = None,
    extra_metadata: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    frozen: Any = None,
    artefact: artefacts_lib.Spec | None = None,
) -> Any:
  """Trains one stage to ``config.num_steps``; returns the final state.

  ``batches`` must be a grain iterator (``get_state`` / ``set_state``) of
  per-host numpy batches. ``sample_fn(state, device_batch)`` returns an
  (H, W, 3) uint8 grid written to ``<workdir>/<name>/samples/``.
  ``frozen`` (host arrays) is passed to ``step_fn`` as its third argument,
  replicated (or FSDP-sharded with ``config.fsdp``); ``artefact`` is written
  at every checkpoint (and for a finished stage that lacks it). When
  ``batches`` carries ``prepare`` (:class:`PreparedBatches`) each batch is
  completed on the device by it first (``sample_fn`` then gets this
  process's part of the completed batch).
  """
  stage_dir = workdir_lib.as_path(workdir) / name
  stage_dir.mkdir(parents=True, exist_ok=True)
  abstract = jax.eval_shape(init_fn, key)
  shardings = shard_lib.state_shardings(abstract, mesh, fsdp=config.fsdp)
  data_sh = shard_lib.data_sharding(mesh)
  rep = shard_lib.replicated(mesh)
  init_jit = jax.jit(init_fn, out_shardings=shardings)
  frozen_sh = () if frozen is None else (shard_lib.state_shardings(frozen, mesh, fsdp=config.fsdp),)
  frozen_dev = tuple(shard_lib.put_global(frozen, sh) for sh in frozen_sh)
  jitted = jax.jit(
      step_fn,
      in_shardings=(shardings, data_sh, *frozen_sh),
      out_shardings=(shardings, rep),
      donate_argnums=(0,),
  )
  step_jit = lambda state, batch: jitted(state, batch, *frozen_dev)  # noqa: E731

  def write_artefact(step: int, state: Any, metrics: dict[str, float]) -> None:
    if artefact is not None:
      artefacts_lib.write(
          stage_dir.parent,
          name,
          step,
          artefact,
          state,
          metrics,
          keep=config.keep_checkpoints,
          best_metric=config.best_metric,
          best_mode=config.best_mode,
      )

  ckpt = ckpt_lib.Checkpointer(
      stage_dir / "checkpoints",
      max_to_keep=config.keep_checkpoints,
      best_metric=config.best_metric,
      best_mode=config.best_mode,
      async_save=config.async_checkpoints,
  )
  start = 0
  global_batch = 0
  if ckpt.latest_step() is not None or ckpt.recorded_latest() is not None:
    start, state, extra = ckpt.restore(ckpt_lib.abstract_like(abstract, shardings))
    if extra.get("stage") != name:
      ckpt.close()
      raise ValueError(
          f"{ckpt.directory}: checkpoint belongs to stage " f"{extra.get('stage')!r}, not {name!r}"
      )
    global_batch = int(extra.get("global_batch_size", 0))
    log(f"[{name}] resumed from step {start} ({ckpt.directory})")
    if start < config.num_steps:  # a finished stage needs no data position
      log(f"[{name}] data: {restore_data_position(ckpt, start, batches, extra)}")
  else:
    state = init_jit(key)
  if start >= config.num_steps:
    ckpt.close()
    if artefact is not None and start not in artefacts_lib.steps(stage_dir.parent, name):
      write_artefact(start, state, {})  # a run trained before artefacts existed
      log(f"[{name}] wrote the trained artefact of step {start}")
    return state
  writer = MetricWriter(stage_dir / "logs")
  prepare = getattr(batches, "prepare", None)
  device_batch = batch_on_device(name, mesh, config, prepare)

  def write_sample(done: int, state: Any, host: dict) -> None:
    # Every process joins the gather; process 0 renders from its host batch.
    local_state = multihost_utils.process_allgather(state, tiled=True)
    if jax.process_index() == 0:
      import io

      from PIL import Image

      grid = sample_fn(local_state, host)
      (stage_dir / "samples").mkdir(parents=True, exist_ok=True)
      buf = io.BytesIO()
      Image.fromarray(grid).save(buf, format="PNG")
      files.write_atomic(stage_dir / "samples" / f"step_{done:07d}.png", buf.getvalue())
      writer.image(done, "samples", grid)

  bar = tqdm(
      total=config.num_steps,
      initial=start,
      desc=name,
      dynamic_ncols=True,
      disable=not config.progress or jax.process_index() != 0,
  )
  last_good = start if start else None
  t_log, n_log = time.perf_counter(), 0
  examples = global_batch
  done = start
  with preemption.Watch(log) as watch:  # SIGTERM: an agreed step, saved, then exit
    stop = watch.stop_at_entry(start)
    for step in range(start, config.num_steps) if not stop else ():
      host = next(batches)
      batch = device_batch(host, step)
      n_global = int(next(iter(batch.values())).shape[0])
      if examples and n_global != examples:
        raise ValueError(
            f"[{name}] global batch is {n_global}, but the checkpointed run "
            f"used {examples}: keep the stage's batch_size when resuming"
        )
      examples = n_global
      state, metrics = step_jit(state, batch)
      n_log += 1
      done = step + 1
      stop = watch.reached(done)
      is_log = stop or done % config.log_every == 0 or done == config.num_steps
      is_ckpt = stop or done % config.checkpoint_every == 0 or done == config.num_steps
      if is_log or is_ckpt:
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not _finite(m):
          bad = sorted(k for k, v in m.items() if not math.isfinite(v))
          ckpt.close()
          writer.close()
          kept = (
              f"The last good checkpoint (step {last_good}) in {ckpt.directory} is kept."
              if last_good is not None
              else f"No checkpoint was saved before it ({ckpt.directory} is empty; a rerun "
              f"starts from step 0)."
          )
          raise NonFiniteLossError(f"[{name}] non-finite {bad} at step {done}; stopping. {kept}")
        dt = time.perf_counter() - t_log
        m["perf/step_time_s"] = dt / n_log
        m["perf/examples_per_s"] = examples * n_log / max(dt, 1e-9)
        writer.scalars(done, m)
        bar.set_postfix({k: f"{v:.3g}" for k, v in m.items() if k.startswith("loss")})
        t_log, n_log = time.perf_counter(), 0
        if is_ckpt:
          logged = {k: v for k, v in m.items() if not k.startswith("perf/")}
          ckpt.save(
              done,
              state,
              extra={
                  "stage": name,
                  "global_batch_size": examples,
                  "process_count": jax.process_count(),
                  **(extra_metadata or {}),
              },
              metrics=logged,
              data_state=batches.get_state(),
              force=stop,
          )
          write_artefact(done, state, logged)
          last_good = done
      if stop:
        break
      if (
          sample_fn is not None
          and config.sample_every
          and (done % config.sample_every == 0 or done == config.num_steps)
      ):
        write_sample(done, state, host if prepare is None else host_local(batch, data_sh))
      bar.update(1)
    bar.close()
    ckpt.close()  # waits until the last save is written
    writer.close()
    # A single process's SIGTERM after the final step's check: the stage is saved.
    stop = stop or watch.late()
  if stop:
    saved = (
        f"checkpoint saved in {ckpt.directory}"
        if done
        else "nothing to save (no step taken yet; a rerun starts the stage afresh)"
    )
    message = (
        f"[{name}] preempted at step {done}, {saved}; exiting with status "
        f"{preemption.EXIT_STATUS} (rerun the same command to resume)"
    )
    log(message)
    raise preemption.Preempted(name, done, message)
  return state


def best_args(section: Any) -> dict[str, Any]:
  """``best_metric`` / ``best_mode`` of a stage's config section (for 'best')."""
  return {
      "best_metric": str(section.best_metric or "") or None,
      "best_mode": str(section.best_mode),
  }


def restore_data_position(
    ckpt: ckpt_lib.Checkpointer, step: int, batches: Any, extra: dict[str, Any]
) -> str:
  """Puts ``batches`` (a grain iterator) at checkpoint ``step``'s position.

  The same process count restores every process's own saved state (exact).
  Another count (or another grain worker count) re-derives each process's
  position from the step, the global batch and the sampler
  (:func:`checkpoint.derive_iterator_state`): the state a run on the new
  count would have reached. Returns a line for the log.
  """
  index, count = jax.process_index(), jax.process_count()
  fresh = batches.get_state()
  saved_count, states = ckpt.iterator_states(step)
  if saved_count is None and "data_iterator" in extra:  # single-item format (older runs)
    saved_count, states = 1, {0: ckpt_lib.decode_iterator_state(extra["data_iterator"])}
  mine = states.get(index) if saved_count == count else None
  if mine is not None and (
      json.loads(mine).get("worker_count") == json.loads(fresh).get("worker_count")
  ):
    batches.set_state(mine)
    return f"restored process {index}'s iterator state of step {step}"
  global_batch = int(extra.get("global_batch_size", 0))
  if global_batch <= 0:
    raise errors.UnreadableCheckpointError(
        f"checkpoint step {step} in {ckpt.directory} has no iterator state for process "
        f"{index} of {count} and no global batch size to re-derive it from"
    )
  if global_batch % count:
    raise ValueError(
        f"the checkpointed global batch {global_batch} does not divide over " f"{count} processes"
    )
  batches.set_state(
      ckpt_lib.derive_iterator_state(fresh, step, global_batch // count, index, count)
  )
  return (
      f"re-derived the position of step {step} for process {index} of {count} "
      f"(checkpoint written by {saved_count} process(es))"
  )


def restore_state(
    workdir: Any,
    name: str,
    init_fn: Callable[[jax.Array], Any],
    key: jax.Array,
    mesh: Mesh,
    which: int | str = "latest",
    fsdp: bool = False,
    best_metric: str | None = None,
    best_mode: str = "min",
) -> tuple[int, Any]:
  """Restores a stage's state (any device count) for evaluation / later stages.

  ``which``: 'latest', a step, or 'best' (needs the ``best_metric`` the stage
  ranked its checkpoints by; see :func:`best_args`).
  """
  directory = workdir_lib.as_path(workdir) / name / "checkpoints"
  if not directory.is_dir():
    raise errors.CheckpointNotFoundError(
        f"stage '{name}' has no checkpoints in {directory}: run that stage first "
        f"(list it in config.stages) or point --workdir at a run that did"
    )
  abstract = jax.eval_shape(init_fn, key)
  shardings = shard_lib.state_shardings(abstract, mesh, fsdp=fsdp)
  if which == "best" and not best_metric:
    raise errors.CheckpointNotFoundError(
        f"no checkpoint 'best' for stage '{name}': it keeps its latest checkpoints; set "
        f"the stage's best_metric (e.g. config.{name}.best_metric) when training to keep "
        f"the best ones"
    )
  ckpt = ckpt_lib.Checkpointer(
      directory, async_save=False, best_metric=best_metric, best_mode=best_mode, writer=False
  )
  try:
    step, state, _ = ckpt.restore(ckpt_lib.abstract_like(abstract, shardings), which)
  finally:
    ckpt.close()
  return step, state
