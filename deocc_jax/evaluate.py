"""Evaluation job: ``python -m deocc_jax.evaluate --config=configs/<name>.py --workdir=DIR``.

Restores the run's checkpoints (``--checkpoint=latest|best|STEP`` or per stage,
``latest,distill_soft=best``) onto however many devices / hosts this job has,
extracts embeddings sharded over them, and writes the paper's tables, plots
and the inference calibration to ``--results_dir`` (default
``DIR/results``). See ``deocc_jax/evaluation/job.py`` for the file list.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from deocc_jax.evaluation import job
from deocc_jax.training import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (its checkpoints).")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "latest | best | a step | per stage 'latest,distill_soft=best' "
    "(default: config.evaluate.checkpoint).")
_RESULTS = flags.DEFINE_string("results_dir", None, "Output folder (default WORKDIR/results).")


def main(argv) -> None:
  distributed.start_job(argv, _CONFIG.value, _WORKDIR.value)
  job.run(_CONFIG.value, _WORKDIR.value, _CHECKPOINT.value, _RESULTS.value)

if __name__ == "__main__":
  app.run(main)
