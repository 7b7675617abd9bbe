"""The training-loss curves of every stage of a run (``training_losses.png``),
read from the stages' ``logs/metrics.jsonl``."""

from __future__ import annotations

import os

import numpy as np
from etils import epath

from deocc_jax.evaluation import report


def write(workdir: str, out_dir: str) -> None:
  series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
  wanted = {
      "teacher": ["loss/arcface"],
      "deocclusion": ["loss/reconstruction", "loss/d_global"],
      "distill_hard": ["loss/total"],
      "distill_soft": ["loss/total"],
      "pretrain_arcface": ["loss/arcface"],
      "finetune_arcface": ["loss/arcface"],
      "finetune_teacher": ["loss/arcface"],
      "segmentation": ["loss/bce"],
  }
  for stage, keys in wanted.items():
    path = os.path.join(workdir, stage, "logs", "metrics.jsonl")
    if not epath.Path(path).exists():
      continue
    for k, v in report.read_metric_series(path, keys).items():
      series.setdefault(k, {})[stage] = v
  if series:
    report.plot_loss_curves(
        series, os.path.join(out_dir, "training_losses.png"), title="Training losses per stage"
    )
