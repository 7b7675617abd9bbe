"""A two-process JAX job on CPU (jax.distributed on 127.0.0.1, gloo)."""
import os
import re
import socket
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_three_steps_and_agree(tmp_path):
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "_two_process_worker.py"),
                             str(port), str(i), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=os.path.dirname(HERE))
           for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err[-3000:]
    outs.append(out)
  sums = [re.search(r"CHECKSUM (\S+)", o).group(1) for o in outs]
  assert all("DEVICES 4 PROCESSES 2" in o for o in outs), outs
  assert all("STEP 3" in o for o in outs), outs
  assert sums[0] == sums[1], sums
  assert float(sums[0]) > 0
  assert os.path.isdir(tmp_path / "deocclusion" / "checkpoints" / "3")
