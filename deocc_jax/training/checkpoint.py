"""Orbax checkpoints: train state + data-iterator state + metadata.

A checkpoint holds two items: ``state`` (any pytree of arrays: params,
optimizer state, batch-norm statistics, step, RNG key data) and ``extra`` (a
JSON dict: the grain iterator state, the config, the stage name). Orbax
writes each step to a temporary directory and renames it when complete, so a
killed run never leaves a half-written checkpoint behind; with
``async_save=True`` the write overlaps the next training steps.

Restoring takes an *abstract* state whose leaves carry the target sharding
(``jax.ShapeDtypeStruct(shape, dtype, sharding=...)``), so a checkpoint
written on N devices restores onto M devices.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointNotFoundError(FileNotFoundError):
  pass


class Checkpointer:
  """Keeps the last ``max_to_keep`` checkpoints (or the best by a metric)."""

  def __init__(self, directory: str, max_to_keep: int = 3,
               best_metric: str | None = None, best_mode: str = "min",
               async_save: bool = True):
    if best_mode not in ("min", "max"):
      raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        best_fn=(lambda m: float(m[best_metric])) if best_metric else None,
        best_mode=best_mode,
        keep_checkpoints_without_metrics=False,
        enable_async_checkpointing=async_save,
        create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "extra"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, extra: dict[str, Any],
           metrics: dict[str, float] | None = None, force: bool = False) -> bool:
    if self.best_metric and (metrics is None or self.best_metric not in metrics):
      raise ValueError(f"checkpoints are ranked by '{self.best_metric}', but save() got "
                       f"metrics {sorted(metrics or {})}")
    return self.manager.save(
        int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           extra=ocp.args.JsonSave(extra)),
        metrics=metrics, force=force)

  def resolve(self, which: int | str = "latest") -> int:
    """'latest' | 'best' | a step number -> a step that exists."""
    if which == "latest":
      step = self.latest_step()
    elif which == "best":
      step = self.best_step()
    else:
      step = int(which)
      if step not in self.all_steps():
        step = None
    if step is None:
      raise CheckpointNotFoundError(
          f"no checkpoint {which!r} in {self.directory} (available steps: {self.all_steps()})")
    return step

  def restore(self, abstract_state: Any, which: int | str = "latest"
              ) -> tuple[int, Any, dict[str, Any]]:
    step = self.resolve(which)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()))
    return step, out.state, out.extra

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of ``state`` carrying the given target shardings."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def encode_iterator_state(state: bytes) -> str:
  return base64.b64encode(state).decode("ascii")


def decode_iterator_state(text: str) -> bytes:
  return base64.b64decode(text.encode("ascii"))
