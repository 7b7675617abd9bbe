"""Metric logging: TensorBoard event files, a JSONL file and the console.

Only process 0 writes (``jax.process_index() == 0``); other hosts get a
no-op writer. TensorBoard files are written with tensorboardX (no
TensorFlow needed). A remote ``logdir`` (``gs://...``, any ``etils.epath``
scheme) is written through a local staging folder that is copied up on
:meth:`MetricWriter.flush` (at most every ``upload_every_s`` seconds) and on
:meth:`close`; an existing remote ``metrics.jsonl`` is downloaded first, so
a resumed run appends to it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from typing import Any

import jax
import numpy as np
from etils import epath

from deocc_jax.runs import workdir as workdir_lib
from deocc_jax.utils import files


class MetricWriter:

  def __init__(self, logdir: Any, enabled: bool | None = None, upload_every_s: float = 60.0):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.logdir = workdir_lib.as_path(logdir)
    self.remote = files.is_remote(self.logdir)
    self.upload_every_s = float(upload_every_s)
    self._tb = None
    self._jsonl = None
    self._local = None
    self._uploaded = time.monotonic()
    if self.enabled:
      self.logdir.mkdir(parents=True, exist_ok=True)
      if self.remote:
        self._local = tempfile.mkdtemp(prefix="deocc_logs_")
        remote_jsonl = self.logdir / "metrics.jsonl"
        if remote_jsonl.exists():
          with open(os.path.join(self._local, "metrics.jsonl"), "wb") as f:
            f.write(remote_jsonl.read_bytes())
        local = self._local
      else:
        local = os.fspath(self.logdir)
      self._tb = _summary_writer_class()(local)
      self._jsonl = open(os.path.join(local, "metrics.jsonl"), "a")

  def scalars(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in metrics.items()}
    for k, v in clean.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(
        json.dumps(
            {
                "step": int(step),
                **{k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()},
            }
        )
        + "\n"
    )
    self._jsonl.flush()
    if self.remote and time.monotonic() - self._uploaded >= self.upload_every_s:
      self.flush()

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    """(H, W, 3) uint8 image to TensorBoard (PNG files are written separately)."""
    if self.enabled:
      self._tb.add_image(name, image, step, dataformats="HWC")

  def _upload(self) -> None:
    for name in os.listdir(self._local):
      src = os.path.join(self._local, name)
      if os.path.isfile(src):
        with open(src, "rb") as f:
          files.write_atomic(self.logdir / name, f.read())
    self._uploaded = time.monotonic()

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._jsonl.flush()
      if self.remote:
        self._upload()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()
      if self.remote:
        self._upload()
        shutil.rmtree(self._local, ignore_errors=True)
      self.enabled = False


def read_jsonl(path: Any) -> list[dict[str, Any]]:
  text = epath.Path(path).read_text()
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def _summary_writer_class():
  """tensorboardX's ``SummaryWriter``, imported without PyTorch.

  tensorboardX imports torch whenever it is installed (only to accept torch
  tensors, which this writer never passes): seconds of start-up in every
  training process. Unless torch is already loaded, the import sees torch as
  absent; torch stays importable afterwards.
  """
  import sys

  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    from tensorboardX import SummaryWriter

    return SummaryWriter
  sys.modules["torch"] = None  # `import torch` raises ImportError meanwhile
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter
