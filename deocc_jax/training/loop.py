"""The generic training loop shared by every stage.

A stage supplies pure functions::

    init_fn(key) -> state                         # a pytree of arrays
    step_fn(state, batch) -> (state, metrics)     # one optimisation step

and a grain iterator of host batches. The loop jit-compiles ``step_fn`` once
over the device mesh (state replicated or FSDP-sharded, batch sharded along
``'data'``, the state buffers donated), resumes from the latest checkpoint in
its directory (state *and* data-iterator position, so a killed run continues
exactly), logs every term, gradient norms, examples/s and step time, writes
PNG sample grids, saves checkpoints, and stops with a clear error on a
non-finite loss while keeping the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm import tqdm

from deocc_jax.training import checkpoint as ckpt_lib
from deocc_jax.training import sharding as shard_lib
from deocc_jax.training.metrics_writer import MetricWriter


class NonFiniteLossError(FloatingPointError):
  """Raised when a logged metric is NaN / Inf; the last good checkpoint stays."""


@dataclasses.dataclass
class LoopConfig:
  num_steps: int
  log_every: int = 50
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  best_metric: str | None = None       # rank kept checkpoints by this metric
  best_mode: str = "min"
  async_checkpoints: bool = True
  fsdp: bool = False                   # shard params / optimizer state over 'data'
  sample_every: int = 0                # PNG sample grids (0 = never)
  batch_keys: tuple[str, ...] = ()     # host batch entries sent to devices (() = all)
  progress: bool = True


def _finite(metrics: dict[str, float]) -> bool:
  return all(math.isfinite(float(v)) for v in metrics.values())


def run(name: str, workdir: str, init_fn: Callable[[jax.Array], Any],
        step_fn: Callable[[Any, dict], tuple[Any, dict]], batches: Iterator[dict],
        key: jax.Array, mesh: Mesh, config: LoopConfig,
        sample_fn: Callable[[Any, dict], np.ndarray] | None = None,
        extra_metadata: dict[str, Any] | None = None,
        log: Callable[[str], None] = print) -> Any:
  """Trains one stage to ``config.num_steps``; returns the final state.

  ``batches`` must be a grain iterator (``get_state`` / ``set_state``) of
  per-host numpy batches. ``sample_fn(state, device_batch)`` returns an
  (H, W, 3) uint8 grid written to ``<workdir>/<name>/samples/``.
  """
  stage_dir = os.path.join(workdir, name)
  os.makedirs(stage_dir, exist_ok=True)
  abstract = jax.eval_shape(init_fn, key)
  shardings = shard_lib.state_shardings(abstract, mesh, fsdp=config.fsdp)
  data_sh = shard_lib.data_sharding(mesh)
  rep = shard_lib.replicated(mesh)
  init_jit = jax.jit(init_fn, out_shardings=shardings)
  step_jit = jax.jit(step_fn, in_shardings=(shardings, data_sh),
                     out_shardings=(shardings, rep), donate_argnums=(0,))

  ckpt = ckpt_lib.Checkpointer(os.path.join(stage_dir, "checkpoints"),
                               max_to_keep=config.keep_checkpoints,
                               best_metric=config.best_metric, best_mode=config.best_mode,
                               async_save=config.async_checkpoints)
  writer = MetricWriter(os.path.join(stage_dir, "logs"))
  start = 0
  if ckpt.latest_step() is not None:
    start, state, extra = ckpt.restore(ckpt_lib.abstract_like(abstract, shardings))
    if extra.get("stage") != name:
      raise ValueError(f"{ckpt.directory}: checkpoint belongs to stage "
                       f"{extra.get('stage')!r}, not {name!r}")
    batches.set_state(ckpt_lib.decode_iterator_state(extra["data_iterator"]))
    log(f"[{name}] resumed from step {start} ({ckpt.directory})")
  else:
    state = init_jit(key)
  if start >= config.num_steps:
    ckpt.close()
    writer.close()
    return state

  def device_batch(host: dict) -> dict:
    if config.batch_keys:
      missing = [k for k in config.batch_keys if k not in host]
      if missing:
        raise KeyError(f"[{name}] batch lacks {missing}; it has {sorted(host)}")
      host = {k: host[k] for k in config.batch_keys}
    return shard_lib.host_batch_to_global(host, mesh)

  bar = tqdm(total=config.num_steps, initial=start, desc=name, dynamic_ncols=True,
             disable=not config.progress or jax.process_index() != 0)
  last_good = ckpt.latest_step()
  t_log, n_log = time.perf_counter(), 0
  examples = 0
  for step in range(start, config.num_steps):
    host = next(batches)
    batch = device_batch(host)
    if not examples:  # global batch size, fixed for the run
      examples = int(next(iter(batch.values())).shape[0])
    state, metrics = step_jit(state, batch)
    n_log += 1
    done = step + 1
    is_log = done % config.log_every == 0 or done == config.num_steps
    is_ckpt = done % config.checkpoint_every == 0 or done == config.num_steps
    if is_log or is_ckpt:
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not _finite(m):
        bad = sorted(k for k, v in m.items() if not math.isfinite(v))
        ckpt.close()
        writer.close()
        raise NonFiniteLossError(
            f"[{name}] non-finite {bad} at step {done}; stopping. The last good "
            f"checkpoint (step {last_good}) in {ckpt.directory} is kept.")
      dt = time.perf_counter() - t_log
      m["perf/step_time_s"] = dt / n_log
      m["perf/examples_per_s"] = examples * n_log / max(dt, 1e-9)
      writer.scalars(done, m)
      bar.set_postfix({k: f"{v:.3g}" for k, v in m.items() if k.startswith("loss")})
      t_log, n_log = time.perf_counter(), 0
      if is_ckpt:
        ckpt.save(done, state, extra={
            "stage": name, "data_iterator": ckpt_lib.encode_iterator_state(batches.get_state()),
            **(extra_metadata or {})}, metrics={k: v for k, v in m.items()
                                                 if not k.startswith("perf/")})
        last_good = done
    if sample_fn is not None and config.sample_every and (
        done % config.sample_every == 0 or done == config.num_steps):
      # Every process joins the gather; process 0 renders from its host batch.
      local_state = multihost_utils.process_allgather(state, tiled=True)
      if jax.process_index() == 0:
        from PIL import Image
        grid = sample_fn(local_state, host)
        os.makedirs(os.path.join(stage_dir, "samples"), exist_ok=True)
        Image.fromarray(grid).save(os.path.join(stage_dir, "samples", f"step_{done:07d}.png"))
        writer.image(done, "samples", grid)
    bar.update(1)
  bar.close()
  ckpt.close()
  writer.close()
  return state


def best_args(section: Any) -> dict[str, Any]:
  """``best_metric`` / ``best_mode`` of a stage's config section (for 'best')."""
  return {"best_metric": str(section.get("best_metric", "") or "") or None,
          "best_mode": str(section.get("best_mode", "min"))}


def restore_state(workdir: str, name: str, init_fn: Callable[[jax.Array], Any],
                  key: jax.Array, mesh: Mesh, which: int | str = "latest",
                  fsdp: bool = False, best_metric: str | None = None,
                  best_mode: str = "min") -> tuple[int, Any]:
  """Restores a stage's state (any device count) for evaluation / later stages.

  ``which``: 'latest', a step, or 'best' (needs the ``best_metric`` the stage
  ranked its checkpoints by; see :func:`best_args`).
  """
  directory = os.path.join(workdir, name, "checkpoints")
  if not os.path.isdir(directory):
    raise ckpt_lib.CheckpointNotFoundError(
        f"stage '{name}' has no checkpoints in {directory}: run that stage first "
        f"(list it in config.stages) or point --workdir at a run that did")
  abstract = jax.eval_shape(init_fn, key)
  shardings = shard_lib.state_shardings(abstract, mesh, fsdp=fsdp)
  if which == "best" and not best_metric:
    raise ckpt_lib.CheckpointNotFoundError(
        f"no checkpoint 'best' for stage '{name}': it keeps its latest checkpoints; set "
        f"the stage's best_metric (e.g. config.{name}.best_metric) when training to keep "
        f"the best ones")
  ckpt = ckpt_lib.Checkpointer(directory, async_save=False, best_metric=best_metric,
                               best_mode=best_mode)
  try:
    step, state, _ = ckpt.restore(ckpt_lib.abstract_like(abstract, shardings), which)
  finally:
    ckpt.close()
  return step, state
