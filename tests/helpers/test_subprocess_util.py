"""Processes a test starts end with it, also when the test process is killed."""

import os
import signal
import subprocess
import sys
import time

from tests.helpers import paths

PARENT = """
import sys, time
from tests.helpers import subprocess_util as sp
child = sp.popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
  except FileNotFoundError:
    return False


def test_child_dies_when_the_test_process_is_killed():
  parent = subprocess.Popen(
      [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=str(paths.ROOT)
  )
  child_pid = int(parent.stdout.readline())
  assert _alive(child_pid)
  parent.send_signal(signal.SIGKILL)  # as when pytest itself is killed
  parent.wait()
  deadline = time.monotonic() + 30
  while _alive(child_pid) and time.monotonic() < deadline:
    time.sleep(0.05)  # polling the child's state; the assertion is on the state
  alive = _alive(child_pid)
  if alive:
    os.kill(child_pid, signal.SIGKILL)
  assert not alive, "the child outlived the killed test process"
