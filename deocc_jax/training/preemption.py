"""Preemption: on SIGTERM every process agrees on a step, saves it and exits.

Clusters stop a job with SIGTERM (SLURM preemption, ``scancel``, a time
limit, TPU maintenance, a Kubernetes eviction), then SIGKILL after a grace
period. The training loop (``training/loop.py``) runs its steps inside a
:class:`Watch`, which turns the SIGTERM into a step that every process
agrees on:

* **one process**: a Python SIGTERM handler (installed for the loop's
  duration, the previous one restored after) sets a flag, read after every
  step;
* **several processes** (``jax.distributed``): JAX's preemption service
  (``jax_enable_preemption_service``, on by default) catches SIGTERM
  ("preemption_notifier.cc: SIGTERM caught") on any process and tells the
  others; its sync protocol takes the step after the furthest process's,
  and ``multihost_utils.reached_preemption_sync_point(step)``, called after
  every step with the stage's step (the counter Orbax's
  ``CheckpointManager.save`` reports too), is True on every process at that
  same step. It costs no collective per step.

The loop then saves a checkpoint at that step, waits until it is written,
logs ``[stage] preempted at step N, checkpoint saved in DIR`` and raises
:class:`Preempted`: the job exits with status :data:`EXIT_STATUS` = 143
(128 + SIGTERM), what a job stopped by SIGTERM reports. A non-zero status
keeps ``afterok`` dependencies (and pipelines) from treating the unfinished
run as done; SLURM requeues a preempted job (``PreemptMode=REQUEUE``,
``--requeue``) whatever the status. Rerunning the same command resumes
from the checkpoint, exactly.

A notice that reaches the processes outside a stage's steps (restoring,
compiling, between stages) stops the job when the next training stage's
loop starts, before its first step (``Watch.stop_at_entry``; nothing new to
save): every process checks whether JAX's coordination service holds the
notice and they agree with one ``process_allgather`` per stage. A notice
after the last training stage (evaluation) does not stop the job. With one
process, a SIGTERM outside the steps meets the command's own handler
(``deocc_jax.main``: exit 143 at once, no step lost).
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

EXIT_STATUS = 128 + signal.SIGTERM  # 143: the status of a job stopped by SIGTERM
# The key JAX's preemption sync manager (XLA tsl) writes to the coordination
# service when a process receives the notice.
_NOTICE_KEY = "RECEIVED_PREEMPTION_NOTICE"


class Preempted(SystemExit):
  """Raised after the agreed step's checkpoint is saved; exits with :data:`EXIT_STATUS`."""

  def __init__(self, stage: str, step: int, message: str):
    super().__init__(EXIT_STATUS)
    self.stage, self.step, self.message = stage, step, message

  def __str__(self) -> str:
    return self.message


def notice_received() -> bool:
  """Whether JAX's coordination service holds a preemption notice (private API:
  False when it is not there)."""
  try:
    from jax._src import distributed

    distributed.global_state.client.key_value_try_get(_NOTICE_KEY)
    return True
  except Exception:  # noqa: BLE001 -- absent key (a JaxRuntimeError) or API
    return False


class Watch:
  """A stage's preemption watch (see the module doc); a context manager.

  ``mode``: ``'signal'`` (one process, main thread), ``'jax'`` (several
  processes, JAX's preemption service) or ``'off'`` (several processes with
  the service disabled, or one process off the main thread: SIGTERM is not
  turned into a checkpoint).
  """

  def __init__(self, log: Callable[[str], None] = print):
    self.log = log
    self.mode = "off"
    self._flag = False
    self._previous: Any = None

  def _on_sigterm(self, signum: int, frame: Any) -> None:
    del signum, frame
    self._flag = True

  def __enter__(self) -> "Watch":
    if jax.process_count() == 1:
      if threading.current_thread() is threading.main_thread():
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        self.mode = "signal"
    else:
      self.mode = "jax"  # until stop_at_entry finds the service disabled
    return self

  def __exit__(self, *exc: Any) -> None:
    if self.mode == "signal":
      signal.signal(signal.SIGTERM, self._previous)
      self.mode = "off"

  def stop_at_entry(self, step: int) -> bool:
    """Agreed on every process: was the job preempted before this loop's
    first step (resuming at ``step``)? Call it first, once; one collective
    with several processes."""
    if self.mode == "signal":
      return self._flag
    if self.mode != "jax":
      return False
    # Registers this loop's step with the sync protocol before the notice check,
    # so a notice after every process's check gets a sync point in this loop.
    try:
      mine = multihost_utils.reached_preemption_sync_point(step) or notice_received()
    except RuntimeError:  # the same on every process: no collective needed
      self.mode = "off"
      self.log(
          "warning: JAX's preemption service is disabled (jax_enable_preemption_service): "
          "a SIGTERM will not save a checkpoint"
      )
      return False
    return bool(np.any(multihost_utils.process_allgather(np.int32(mine))))

  def reached(self, step: int) -> bool:
    """Call after every step (``step`` = steps done): True at the agreed step,
    on every process alike."""
    if self.mode == "signal":
      return self._flag
    if self.mode == "jax":
      return multihost_utils.reached_preemption_sync_point(step)
    return False

  def late(self) -> bool:
    """A SIGTERM that came after the last step's :meth:`reached` (one process
    only; with several, the next stage's :meth:`stop_at_entry` sees it)."""
    return self.mode == "signal" and self._flag
