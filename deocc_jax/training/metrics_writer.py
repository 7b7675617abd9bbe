"""Metric logging: TensorBoard event files, a JSONL file and the console.

Only process 0 writes (``jax.process_index() == 0``); other hosts get a
no-op writer. TensorBoard files are written with tensorboardX (no
TensorFlow needed).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import numpy as np


class MetricWriter:
  def __init__(self, logdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.logdir = logdir
    self._tb = None
    self._jsonl = None
    if self.enabled:
      os.makedirs(logdir, exist_ok=True)
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(logdir)
      self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")

  def scalars(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in metrics.items()}
    for k, v in clean.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({"step": int(step), **{k: (v if math.isfinite(v) else str(v))
                                                        for k, v in clean.items()}}) + "\n")
    self._jsonl.flush()

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    """(H, W, 3) uint8 image to TensorBoard (PNG files are written separately)."""
    if self.enabled:
      self._tb.add_image(name, image, step, dataformats="HWC")

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()
      self.enabled = False


def read_jsonl(path: str) -> list[dict[str, Any]]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
