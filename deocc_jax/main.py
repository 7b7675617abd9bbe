"""Entry point: ``python -m deocc_jax.main --config=configs/<name>.py --workdir=DIR``.

Runs the stages listed in ``config.stages`` in order (see
``deocc_jax/training/stages.py``). Any config field can be overridden on the
command line (``--config.data.resolution=32``). Re-running with the same
``--workdir`` resumes every stage from its last checkpoint.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from deocc_jax.data import render
from deocc_jax.training import distributed
from deocc_jax.training.stages import ConfigError, require

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs / checkpoints.")


def _render_data(config: ConfigDict, workdir: str) -> None:
  if require(config, "data.source") != "synthetic":
    raise ConfigError("stage 'render_data' renders the synthetic set; "
                      f"config.data.source is {config.data.source!r}")
  render.render_dataset(
      os.path.join(workdir, "data"),
      identities=int(require(config, "data.identities")),
      images_per_identity=int(require(config, "data.images_per_identity")),
      resolution=int(require(config, "data.resolution")),
      seed=int(require(config, "data.seed")),
      per_category=int(require(config, "render.per_category")),
      columns=int(require(config, "render.columns")),
      stats_examples=int(require(config, "render.stats_examples")),
      coverage_range=tuple(require(config, "data.coverage_range")),
      categories=tuple(require(config, "data.categories")),
      mask_library=str(require(config, "data.mask_library")))


def _stage_table() -> dict[str, Callable[[ConfigDict, str], None]]:
  from deocc_jax.training import stages as s
  return {
      "render_data": _render_data,
      "teacher": s.run_teacher,
      "teacher_embeddings": s.run_teacher_embeddings,
      "deocclusion": s.run_deocclusion,
      "distill_hard": s.run_distill("distill_hard"),
      "distill_soft": s.run_distill("distill_soft"),
      "joint": s.run_joint,
      "segmentation": s.run_segmentation,
      "finetune_arcface": s.run_finetune_arcface,
      "evaluate": s.run_evaluate,
      "ablation": s.run_ablation,
  }


def run(config: ConfigDict, workdir: str) -> None:
  table = _stage_table()
  stages = list(require(config, "stages"))
  unknown = [s for s in stages if s not in table]
  if unknown:
    raise ConfigError(f"config.stages has unknown stage(s) {unknown}; "
                      f"available: {sorted(table)}")
  os.makedirs(workdir, exist_ok=True)
  t_all = time.perf_counter()
  for stage in stages:
    logging.info("stage %s", stage)
    print(f"== stage {stage} ==", flush=True)
    t0 = time.perf_counter()
    table[stage](config, workdir)
    print(f"== stage {stage} done in {time.perf_counter() - t0:.1f} s ==", flush=True)
  print(f"all stages done in {time.perf_counter() - t_all:.1f} s; outputs in {workdir}")


def main(argv) -> None:
  distributed.start_job(argv, _CONFIG.value, _WORKDIR.value)
  run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
