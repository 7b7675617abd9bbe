"""The metrics writer: TensorBoard event files and metrics.jsonl, and no
PyTorch import on the way (tensorboardX would load it whenever installed)."""

import glob
import json
import struct
import subprocess
import sys
from tests.helpers import paths

ROOT = str(paths.ROOT)


def _events(path):
  """Every Event record of a TensorBoard event file (TFRecord framing)."""
  from tensorboardX.proto import event_pb2

  out, data = [], open(path, "rb").read()
  i = 0
  while i < len(data):
    (n,) = struct.unpack("<Q", data[i : i + 8])
    e = event_pb2.Event()
    e.ParseFromString(data[i + 12 : i + 12 + n])
    out.append(e)
    i += 12 + n + 4
  return out


def test_scalars_reach_tensorboard_and_jsonl_without_importing_torch(tmp_path):
  code = (
      "import sys, jax; jax.config.update('jax_platforms', 'cpu');"
      "from deocc_jax.training import metrics_writer as mw;"
      f"w = mw.MetricWriter({str(tmp_path)!r}, enabled=True);"
      "w.scalars(3, {'loss': 0.5, 'acc': 0.25}); w.scalars(4, {'loss': 0.125});"
      "w.close() if hasattr(w, 'close') else w.flush();"
      "print('TORCH', 'torch' in sys.modules);"
      "import torch; print('TORCH_AFTER', torch.__name__)"
  )
  proc = subprocess.run(
      [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "TORCH False" in proc.stdout  # the writer did not load torch
  assert "TORCH_AFTER torch" in proc.stdout  # and torch still imports afterwards
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert rows == [{"step": 3, "loss": 0.5, "acc": 0.25}, {"step": 4, "loss": 0.125}]
  (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
  got = {(e.step, v.tag): v.simple_value for e in _events(path) for v in e.summary.value}
  assert got == {(3, "loss"): 0.5, (3, "acc"): 0.25, (4, "loss"): 0.125}
