"""Multi-host start-up: ``jax.distributed.initialize`` for SLURM, TPU pods and
a manual coordinator.

``config.distributed.mode``:

* ``'none'``   single process (default; also what a one-GPU run uses);
* ``'auto'``   ``jax.distributed.initialize()`` with no arguments: JAX detects
  SLURM (``SLURM_*`` variables, one process per GPU), TPU pods and other
  cluster environments and fills in coordinator, process count and id;
* ``'manual'`` an explicit ``coordinator_address`` (``host:port``),
  ``num_processes`` and ``process_id`` (also read from the environment
  variables ``DEOCC_COORDINATOR``, ``DEOCC_NUM_PROCESSES``,
  ``DEOCC_PROCESS_ID`` when the config leaves them empty / negative).

Must run before anything touches a JAX device.
"""

from __future__ import annotations

import os

import jax
from ml_collections import ConfigDict

MODES = ("none", "auto", "manual")


def initialize(cfg: ConfigDict | None) -> None:
  mode = "none" if cfg is None else str(cfg.mode)
  if mode not in MODES:
    raise ValueError(f"config.distributed.mode must be one of {MODES}, got {mode!r}")
  if mode == "none":
    return
  if mode == "auto":
    jax.distributed.initialize()
    return
  coordinator = cfg.coordinator_address or os.environ.get("DEOCC_COORDINATOR", "")
  num = int(cfg.num_processes)
  pid = int(cfg.process_id)
  if num < 0:
    num = int(os.environ.get("DEOCC_NUM_PROCESSES", "-1"))
  if pid < 0:
    pid = int(os.environ.get("DEOCC_PROCESS_ID", "-1"))
  missing = [
      name
      for name, v in (
          ("coordinator_address", coordinator),
          ("num_processes", num >= 1),
          ("process_id", pid >= 0),
      )
      if not v
  ]
  if missing:
    raise ValueError(
        "config.distributed.mode='manual' needs "
        + ", ".join(f"config.distributed.{m}" for m in missing)
        + " (or the DEOCC_* environment variables)"
    )
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=pid)


def start_job(
    argv: list[str], config: ConfigDict | None, workdir: str | None, config_optional: bool = False
) -> ConfigDict:
  """Start-up shared by the command-line jobs (``main``, ``evaluate``): checks
  ``--config`` / ``--workdir`` and stray arguments, quiets the chatty INFO logs
  of Orbax / grain unless ``--verbosity`` was given, then :func:`initialize`.

  With ``config_optional`` a missing ``--config`` is read from the run's
  ``<workdir>/config.json`` (as one process: its ``distributed`` section held
  process 0's launch settings; pass ``--config`` for a multi-host job); a
  given one that differs from it gets a warning. Returns the config.
  """
  from absl import app, flags, logging

  from deocc_jax.runs import workdir as workdir_lib

  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not workdir:
    raise app.UsageError("--workdir is required")
  if config is None:
    if not config_optional:
      raise app.UsageError("--config is required, e.g. --config=configs/synthetic.py")
    config = workdir_lib.read_config(workdir)
    config.distributed.mode = "none"  # process 0's launch settings: run in one process
  elif config_optional:
    workdir_lib.warn_if_different(workdir, config)
  workdir_lib.validate_config(config)
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  initialize(config.distributed)
  return config
