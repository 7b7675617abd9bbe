"""Running the processes of one multi-process JAX job from a test.

Each process writes stdout + stderr to its own file (no pipes: a process
blocked on a full pipe would stall its peers inside a collective), all are
polled together, and a failure or the deadline kills every process that is
still running, so a test never waits on a peer stuck in a collective.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
from typing import Sequence


def die_with_parent() -> None:
  """``preexec_fn`` for a test's child process: the kernel kills the child
  (SIGKILL) when the process that started it dies, so a killed pytest (or a
  crashed xdist worker) leaves no training process behind (Linux prctl
  PR_SET_PDEATHSIG; elsewhere a no-op)."""
  import ctypes
  import signal
  import sys

  if sys.platform.startswith("linux"):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def popen(cmd: Sequence[str], **kwargs) -> subprocess.Popen:
  """``subprocess.Popen`` whose child dies with this process (``die_with_parent``)."""
  return subprocess.Popen(list(cmd), preexec_fn=die_with_parent, **kwargs)


def free_port() -> int:
  """A free TCP port on 127.0.0.1 (the jax.distributed coordinator's)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def cpu_env(local_devices: int) -> dict[str, str]:
  """This environment with ``local_devices`` fake CPU devices per process."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(XLA_FLAGS=xla_flags(local_devices), JAX_PLATFORMS="cpu")
  return env


def xla_flags(local_devices: int) -> str:
  """XLA_FLAGS of a test's child process: ``local_devices`` fake CPU devices
  and the test run's compile flags (``DEOCC_TEST_XLA_COMPILE_FLAGS``, set in
  tests/conftest.py)."""
  extra = os.environ.get("DEOCC_TEST_XLA_COMPILE_FLAGS", "")
  return f"--xla_force_host_platform_device_count={local_devices} {extra}".strip()


@dataclasses.dataclass
class Finished:
  returncode: int
  output: str  # stdout and stderr, interleaved as written
  cpu_s: float  # user + sys seconds of the process (and its children)


def run_processes(
    cmds: Sequence[Sequence[str]],
    log_dir: str,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    grace: float = 30.0,
) -> list[Finished]:
  """Starts every command at once and waits for all of them.

  If one exits non-zero, the others get ``grace`` seconds to finish, then
  are killed; past ``timeout`` seconds all are killed and ``TimeoutError``
  names the processes still running and the tail of their output.
  """
  os.makedirs(log_dir, exist_ok=True)
  paths = [os.path.join(log_dir, f"process_{i}.log") for i in range(len(cmds))]
  files = [open(p, "w") for p in paths]
  procs = [
      popen(c, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd) for c, f in zip(cmds, files)
  ]
  cpu = [0.0] * len(procs)
  deadline = time.monotonic() + timeout
  failed_at = None
  try:
    running = set(range(len(procs)))
    while running:
      for i in sorted(running):
        # wait4 reaps the process and reports its own CPU time (children included).
        pid, status, usage = os.wait4(procs[i].pid, os.WNOHANG)
        if pid:
          procs[i].returncode = os.waitstatus_to_exitcode(status)
          cpu[i] = usage.ru_utime + usage.ru_stime
          running.discard(i)
          if procs[i].returncode != 0 and failed_at is None:
            failed_at = time.monotonic()
      now = time.monotonic()
      if running and (now > deadline or (failed_at is not None and now > failed_at + grace)):
        for i in running:
          procs[i].kill()
          procs[i].wait()
        if now > deadline:
          tails = {i: _tail(paths[i]) for i in sorted(running)}
          raise TimeoutError(
              f"processes {sorted(running)} still running after {timeout:.0f} "
              f"s; output tails: {tails}"
          )
        running = set()
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.returncode is None:
        p.kill()
        p.wait()
    for f in files:
      f.close()
  return [Finished(p.returncode, open(path).read(), c) for p, path, c in zip(procs, paths, cpu)]


def _tail(path: str, n: int = 3000) -> str:
  with open(path) as f:
    return f.read()[-n:]
