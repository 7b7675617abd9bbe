"""Entry point: ``python -m deocc_jax.main --config=configs/<name>.py --workdir=DIR``.

``--config`` is a config file, or a packaged experiment by name
(``--config=synthetic:cpu``; ``configs/<name>.py`` finds the packaged file when
no such file exists, e.g. from a wheel install:
:mod:`deocc_jax.configs.experiments`).

Runs the stages listed in ``config.stages`` in order (the table:
:func:`stage_table`). Any config field can be overridden on the
command line (``--config.data.resolution=32``). Re-running with the same
``--workdir`` resumes every stage from its last checkpoint (any process /
device count). The workdir may be local or a URI (``gs://...``). One job per
workdir (``<workdir>/.lock``); the resolved config goes to
``<workdir>/config.json``, and a resume with a config that changes shapes or
data is refused. User errors print one line and exit with status 2.
"""

from __future__ import annotations

import time
from typing import Callable

from absl import flags, logging
from ml_collections import ConfigDict, config_flags

from deocc_jax import cli
from deocc_jax.configs import require
from deocc_jax.errors import ConfigError
from deocc_jax.runs import workdir as workdir_lib
from deocc_jax.runs.workdir import WorkdirError
from deocc_jax.training import distributed, registry
from deocc_jax.utils import files

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs / checkpoints.")


def stage_table() -> dict[str, Callable[[ConfigDict, str], None]]:
  """Stage name -> runner(config, workdir): the data stages, training's
  (``training/registry.py``) and the evaluation stages, in run order."""
  from deocc_jax.data import rehearsal, render
  from deocc_jax.evaluation import job
  from deocc_jax.studies import ablation, lambda_sweep, teacher_study

  return {
      "render_data": render.run_stage,
      "rehearsal_data": rehearsal.run,
      **registry.RUNNERS,
      "evaluate": job.run,
      "ablation": ablation.run,
      "lambda_sweep": lambda_sweep.run,
      "teacher_study": teacher_study.run,
  }


def run(
    config: ConfigDict,
    workdir: str,
    table: dict[str, Callable[[ConfigDict, str], None]] | None = None,
) -> None:
  """Runs ``config.stages`` in ``workdir``: validates the config, locks the
  workdir (process 0), writes / checks ``config.json``, then each stage."""
  table = stage_table() if table is None else table
  stages = list(require(config, "stages"))
  unknown = [s for s in stages if s not in table]
  if unknown:
    raise ConfigError(
        f"config.stages has unknown stage(s) {unknown}; " f"available: {sorted(table)}"
    )
  if "rehearsal_data" in stages:  # the miniature's paths, before the config is written
    from deocc_jax.data import rehearsal

    config = rehearsal.with_paths(config, workdir)
  workdir_lib.validate_config(config)
  path = workdir_lib.as_path(workdir)
  lock = workdir_lib.WorkdirLock(path)

  def setup() -> None:
    lock.acquire()
    try:
      workdir_lib.write_config(path, config)
    except BaseException:
      lock.release()
      raise

  files.on_process_0(setup, "set up the workdir", WorkdirError)
  try:
    t_all = time.perf_counter()
    for stage in stages:
      logging.info("stage %s", stage)
      print(f"== stage {stage} ==", flush=True)
      t0 = time.perf_counter()
      table[stage](config, str(path))
      # What process 0 alone wrote in the stage (teacher embeddings, data
      # facts, artefacts) is there before any process starts the next one.
      files.on_process_0(lambda: None, f"finish stage {stage}")
      print(f"== stage {stage} done in {time.perf_counter() - t0:.1f} s ==", flush=True)
    print(f"all stages done in {time.perf_counter() - t_all:.1f} s; outputs in {path}")
  finally:
    lock.release()


def main(argv) -> None:
  import signal
  import sys

  # A scheduler's SIGTERM (preemption, scancel) unwinds normally: the workdir
  # lock is released, so the requeued job (on any host) can take the workdir.
  signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

  def job() -> None:
    config = distributed.start_job(argv, cli.config_value(_CONFIG), _WORKDIR.value)
    run(config, _WORKDIR.value)

  cli.run_or_exit(job)


def console_main() -> None:
  """The ``deocc-train`` console command (``python -m deocc_jax.main``)."""
  cli.run_console(main, __name__)


if __name__ == "__main__":
  console_main()
