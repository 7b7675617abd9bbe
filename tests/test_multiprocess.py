"""A two-process JAX job on CPU (jax.distributed on 127.0.0.1, gloo)."""

import os
import re
import sys

import pytest

import _subprocess_util as sp

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_two_processes_train_three_steps_and_agree(tmp_path):
  port = sp.free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  done = sp.run_processes(
      [
          [
              sys.executable,
              os.path.join(HERE, "_two_process_worker.py"),
              str(port),
              str(i),
              str(tmp_path),
          ]
          for i in range(2)
      ],
      log_dir=str(tmp_path / "logs"),
      timeout=600,
      env=env,
      cwd=os.path.dirname(HERE),
  )
  for d in done:
    assert d.returncode == 0, d.output[-3000:]
  outs = [d.output for d in done]
  sums = [re.search(r"CHECKSUM (\S+)", o).group(1) for o in outs]
  assert all("DEVICES 4 PROCESSES 2" in o for o in outs), outs
  assert all("STEP 3" in o for o in outs), outs
  assert sums[0] == sums[1], sums
  assert float(sums[0]) > 0
  assert os.path.isdir(tmp_path / "deocclusion" / "checkpoints" / "3")
  # Process 0 took 3 s to write the artefact: every process returned after it.
  assert all("ARTEFACT_STEPS [7]" in o for o in outs), [o[-800:] for o in outs]
  # Process 0 could not write: it raised its own error, the other one naming the file.
  assert "WRITE_ERROR OSError True" in outs[0], outs[0][-800:]
  assert "WRITE_ERROR ProcessZeroError True" in outs[1], outs[1][-800:]
