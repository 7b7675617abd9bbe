"""Test set-up: 8 fake CPU devices so sharded code is exercised on CPU."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import json  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """(config, workdir) of a tiny trained run of every stage, evaluated once
  (``results/`` written). Built once per test session, shared by the xdist
  workers through a file lock. Read-only for tests: copy before writing."""
  import sys
  from filelock import FileLock

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import _tiny_run

  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # shared by every worker of this session
  workdir = root / "tiny_run"
  with FileLock(str(root / "tiny_run.lock")):
    done = workdir / "results" / "results.json"
    if not done.exists():
      from deocc_jax.evaluation import job

      config = _tiny_run.make_tiny_run(workdir)
      job.run(config, str(workdir))
      json.loads(done.read_text())  # written completely
  return _tiny_run.tiny_config(), str(workdir)
