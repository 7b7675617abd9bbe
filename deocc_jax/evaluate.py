"""Evaluation job: ``python -m deocc_jax.evaluate --config=configs/<name>.py --workdir=DIR``.

Loads the run's trained artefacts (per stage ``config.evaluate.checkpoints``,
e.g. ``--config.evaluate.checkpoints.distill_soft=best``, or
``--checkpoint=latest|best|STEP`` for every stage) onto however many devices /
hosts this job has, extracts embeddings sharded over them, and writes the paper's tables, plots
and the inference calibration to ``--results_dir`` (default
``DIR/results``). See ``deocc_jax/evaluation/job.py`` for the file list.
``--config`` is optional: by default the run's ``DIR/config.json`` (written
when training started); a given one is used, with a warning if it differs from
it in shapes or data.
The restored step of every model is printed and recorded in
``results.json`` (``checkpoint_steps``). User errors (bad config field,
missing / unreadable checkpoint) print one line and exit with status 2.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from deocc_jax import cli
from deocc_jax.evaluation import job
from deocc_jax.training import distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file (default: the run's WORKDIR/config.json).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (its checkpoints).")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "latest | best | a step, for every stage (default: per stage, "
    "config.evaluate.checkpoints, e.g. --config.evaluate.checkpoints.distill_soft=best).",
)
_RESULTS = flags.DEFINE_string("results_dir", None, "Output folder (default WORKDIR/results).")


def main(argv) -> None:
  def run() -> None:
    config = distributed.start_job(
        argv, cli.config_value(_CONFIG), _WORKDIR.value, config_optional=True
    )
    job.run(config, _WORKDIR.value, _CHECKPOINT.value, _RESULTS.value)

  cli.run_or_exit(run)


def console_main() -> None:
  """The ``deocc-evaluate`` console command (``python -m deocc_jax.evaluate``)."""
  cli.run_console(main, __name__)


if __name__ == "__main__":
  console_main()
