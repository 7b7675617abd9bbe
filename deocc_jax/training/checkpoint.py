"""Orbax checkpoints: train state + per-process data-iterator state + metadata.

A checkpoint step holds three items: ``state`` (any pytree of arrays: params,
optimizer state, batch-norm statistics, step, RNG key data), ``extra`` (a
JSON dict written by process 0: the stage name, the global batch size,
metadata) and ``data`` (grain's Orbax handler: one
``process_<i>-of-<n>.json`` per process, each process's own iterator
state). Orbax writes each step to a temporary directory and renames it when
complete, so a killed run never leaves a half-written checkpoint behind;
with ``async_save=True`` the write overlaps the next training steps.

Restoring takes an *abstract* state whose leaves carry the target sharding
(``jax.ShapeDtypeStruct(shape, dtype, sharding=...)``), so a checkpoint
written on N devices restores onto M devices. The data position restores
exactly on the same process count; on another count it is re-derived from
the step (:func:`derive_iterator_state`).

Errors: a missing step is a :class:`CheckpointNotFoundError`; a step that
cannot be read (a truncated / corrupted file, or the newest step the run
recorded deleted) is an :class:`UnreadableCheckpointError` naming the step
and the steps available. Nothing falls back to an older step silently. The
newest step is recorded in ``<dir>_latest.json`` (beside the directory,
process 0) once its save has completed; checkpoints kept by a metric
(``best_metric``) are not recorded, as Orbax may delete the newest one.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import grain.python as grain
import jax
import orbax.checkpoint as ocp

from deocc_jax.errors import CheckpointNotFoundError, UnreadableCheckpointError
from deocc_jax.runs import workdir as workdir_lib
from deocc_jax.utils import files

_PROCESS_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json$")


class _Snapshot:
  """An iterator state frozen at save time (grain's handler calls get_state)."""

  def __init__(self, state: bytes):
    self._state = state

  def get_state(self) -> bytes:
    return self._state


def _first_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return (f"{type(e).__name__}: {text}")[:300]


class Checkpointer:
  """Keeps the last ``max_to_keep`` checkpoints (or the best by a metric).

  ``writer=True`` (the training loop) creates the directory and removes
  temporary directories a killed job left; readers (evaluation, inference)
  touch nothing.
  """

  def __init__(
      self,
      directory: Any,
      max_to_keep: int = 3,
      best_metric: str | None = None,
      best_mode: str = "min",
      async_save: bool = True,
      writer: bool = True,
  ):
    if best_mode not in ("min", "max"):
      raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
    self.directory = workdir_lib.as_path(directory)
    self.best_metric = best_metric
    self.record_path = self.directory.parent / f"{self.directory.name}_latest.json"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        best_fn=(lambda m: float(m[best_metric])) if best_metric else None,
        best_mode=best_mode,
        keep_checkpoints_without_metrics=False,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=writer,
        create=writer,
    )
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "extra", "data")
    )
    self._unrecorded = False

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def all_steps(self) -> list[int]:
    return sorted(int(s) for s in self.manager.all_steps())

  # ------------------------------------------------------ newest-step record

  def recorded_latest(self) -> int | None:
    """The newest step whose save completed, as recorded (None: none / not kept)."""
    if self.best_metric or not self.record_path.exists():
      return None
    try:
      return int(json.loads(self.record_path.read_text())["latest"])
    except (ValueError, KeyError, TypeError):
      return None

  def _record(self) -> None:
    """Records the newest completed step (after waiting for pending saves)."""
    if not self._unrecorded:
      return
    self.manager.wait_until_finished()
    self._unrecorded = False
    step = self.manager.latest_step()
    if self.best_metric or step is None or jax.process_index() != 0:
      return
    files.write_atomic(self.record_path, json.dumps({"latest": int(step)}) + "\n")

  # ------------------------------------------------------------------ save

  def save(
      self,
      step: int,
      state: Any,
      extra: dict[str, Any],
      metrics: dict[str, float] | None = None,
      force: bool = False,
      data_state: bytes | None = None,
  ) -> bool:
    """Saves ``state`` and ``extra``; ``data_state`` (this process's grain
    iterator state) goes to the per-process ``data`` item."""
    if self.best_metric and (metrics is None or self.best_metric not in metrics):
      raise ValueError(
          f"checkpoints are ranked by '{self.best_metric}', but save() got "
          f"metrics {sorted(metrics or {})}"
      )
    self._record()
    items = {"state": ocp.args.StandardSave(state), "extra": ocp.args.JsonSave(extra)}
    if data_state is not None:
      items["data"] = grain.PyGrainCheckpointSave(_Snapshot(data_state))
    saved = self.manager.save(
        int(step), args=ocp.args.Composite(**items), metrics=metrics, force=force
    )
    self._unrecorded = self._unrecorded or bool(saved)
    return saved

  # --------------------------------------------------------------- restore

  def _others(self, step: int | None) -> list[int]:
    return [s for s in self.all_steps() if s != step]

  def resolve(self, which: int | str = "latest") -> int:
    """'latest' | 'best' | a step number -> a step that exists."""
    if which == "latest":
      step = self.latest_step()
      recorded = self.recorded_latest()
      if (
          recorded is not None
          and recorded not in self.all_steps()
          and (step is None or step < recorded)
      ):
        raise UnreadableCheckpointError(
            f"checkpoint step {recorded} (the newest recorded in {self.record_path}) is "
            f"missing from {self.directory}; available steps: {self.all_steps()}. Not "
            f"falling back to an older step: restore one explicitly (--checkpoint=STEP) or "
            f"delete {self.record_path} to continue from the newest present"
        )
    elif which == "best":
      step = self.best_step()
    else:
      step = int(which)
      if step not in self.all_steps():
        step = None
    if step is None:
      raise CheckpointNotFoundError(
          f"no checkpoint {which!r} in {self.directory} (available steps: {self.all_steps()})"
      )
    return step

  def restore(
      self, abstract_state: Any, which: int | str = "latest"
  ) -> tuple[int, Any, dict[str, Any]]:
    """(step, state, extra); :class:`UnreadableCheckpointError` if it cannot be read."""
    step = self.resolve(which)
    try:
      out = self.manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()
          ),
      )
    except Exception as e:  # noqa: BLE001 -- tensorstore / orbax raise many types
      raise UnreadableCheckpointError(
          f"checkpoint step {step} in {self.directory} cannot be read ({_first_line(e)}); "
          f"other steps available: {self._others(step)}. Restore one explicitly "
          f"(--checkpoint=STEP) or delete {self.directory / str(step)}"
      ) from None
    return step, out.state, dict(out.extra or {})

  def iterator_states(self, step: int) -> tuple[int | None, dict[int, bytes]]:
    """(process count that wrote them, {process index: grain state}) of a step's
    ``data`` item; (None, {}) for checkpoints without one."""
    item = self.directory / str(int(step)) / "data"
    if not item.exists():
      return None, {}
    counts: set[int] = set()
    states: dict[int, bytes] = {}
    for f in item.iterdir():
      m = _PROCESS_FILE.match(f.name)
      if m:
        counts.add(int(m.group(2)))
        states[int(m.group(1))] = f.read_bytes()
    if len(counts) > 1:
      raise UnreadableCheckpointError(
          f"{item} mixes iterator states of {sorted(counts)} " f"processes"
      )
    return (counts.pop() if counts else None), states

  def wait(self) -> None:
    self.manager.wait_until_finished()
    self._record()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self._record()
    self.manager.close()


def abstract_like(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of ``state`` carrying the given target shardings."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
  )


def derive_iterator_state(
    template: bytes, step: int, per_process_batch: int, shard_index: int, shard_count: int
) -> bytes:
  """grain ``DataLoader`` iterator state after ``step`` batches.

  ``template``: the state of a *fresh* iterator of this process (it carries
  the sampler, source and worker count); each batch holds
  ``per_process_batch`` records. grain's sampler for shard ``k`` of ``P``
  visits global indices ``k + P j``; with ``W`` worker processes, worker
  ``w`` reads the shard's records ``w + W i`` and batches are taken from the
  workers in turn. The result equals the state an uninterrupted run on this
  process count would have after ``step`` steps.
  """
  s = json.loads(template)
  workers = int(s["worker_count"])
  slots = max(workers, 1)
  g = slots * shard_count
  first = {str(w): shard_index - g + w * shard_count for w in range(slots)}
  if {k: int(v) for k, v in s["last_seen_indices"].items()} != first:
    raise ValueError(
        "derive_iterator_state needs the state of a fresh iterator of shard "
        f"{shard_index} of {shard_count}; got {s['last_seen_indices']}"
    )
  if workers == 0:
    consumed = {"0": step}
    s["last_worker_index"] = -1
  else:
    consumed = {str(w): max(0, -(-(step - w) // workers)) for w in range(workers)}
    s["last_worker_index"] = step % workers - 1
  s["last_seen_indices"] = {
      w: int(first[w] + n * per_process_batch * g) for w, n in consumed.items()
  }
  return json.dumps(s, indent=4).encode()


def encode_iterator_state(state: bytes) -> str:
  return base64.b64encode(state).decode("ascii")


def decode_iterator_state(text: str) -> bytes:
  return base64.b64decode(text.encode("ascii"))
