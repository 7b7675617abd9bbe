"""Test set-up: 8 fake CPU devices so sharded code is exercised on CPU."""

import os

# Tests compile at XLA:CPU backend optimisation level 1 without LLVM's
# expensive passes, with XLA's older loop emitters for fusions instead of the
# MLIR fusion emitters: their programs are compiled far more often than they
# run (a few steps each). The first two cut compile time by ~30% with the same
# step time; the third another ~22% on compile-bound tests, training steps
# within +-10% (docs/experiments/2026-12-03-ci-time.md). Every process a test starts
# gets the same flags (tests/helpers/subprocess_util.py:xla_flags), so processes agree.
# DEOCC_TEST_XLA_COMPILE_FLAGS= (empty) compiles as users do.
os.environ.setdefault(
    "DEOCC_TEST_XLA_COMPILE_FLAGS",
    "--xla_backend_optimization_level=1 --xla_llvm_disable_expensive_passes=true"
    " --xla_cpu_use_fusion_emitters=false",
)
from tests.helpers.subprocess_util import xla_flags  # noqa: E402  (reads the variable above)

os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent XLA compilation cache for the whole test run: the xdist
# workers and every process a test starts (the multi-process jobs, the CLIs)
# read it through the environment, so a program compiled once is loaded, not
# recompiled, by the next process that needs it. It lives in the clone
# (.cache/, git-ignored): a fresh clone starts empty, a local re-run is warm.
# DEOCC_TEST_JAX_CACHE=<dir> moves it, DEOCC_TEST_JAX_CACHE= (empty) turns it off.
_CACHE = os.environ.get(
    "DEOCC_TEST_JAX_CACHE",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "jax"),
)
if _CACHE:
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


import json  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """(config, workdir) of a tiny trained run of every stage, evaluated once
  (``results/`` written). Built once per test session, shared by the xdist
  workers through a file lock. Read-only for tests: copy before writing."""
  from filelock import FileLock

  from tests.helpers import tiny_run as tiny_run_lib

  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # shared by every worker of this session
  workdir = root / "tiny_run"
  with FileLock(str(root / "tiny_run.lock")):
    done = workdir / "results" / "results.json"
    if not done.exists():
      from deocc_jax.evaluation import job

      config = tiny_run_lib.make_tiny_run(workdir)
      job.run(config, str(workdir))
      json.loads(done.read_text())  # written completely
  return tiny_run_lib.tiny_config(), str(workdir)


@pytest.fixture
def tiny_config():
  """The tests' config builder, ``tiny_config(**overrides)``
  (tests/helpers/configs.py: the synthetic default at test size)."""
  from tests.helpers import configs

  return configs.tiny_config


@pytest.fixture
def fake_gcs(monkeypatch):
  """``gs://`` served by fsspec's in-memory filesystem (through epath's real
  gs:// code path), so no byte may reach the local disk."""
  import sys

  import fsspec
  from etils.epath import backend
  from fsspec.implementations.memory import MemoryFileSystem

  class FakeGCS(MemoryFileSystem):
    protocol = ("gs", "gcs")
    store = {}
    pseudo_dirs = [""]

  fsspec.register_implementation("gs", FakeGCS, clobber=True)
  fsspec.register_implementation("gcs", FakeGCS, clobber=True)
  monkeypatch.setattr(fsspec.config, "conf", {})
  backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches the gs filesystem
  yield FakeGCS()
  registry = sys.modules["fsspec.registry"]._registry
  registry.pop("gs", None)
  registry.pop("gcs", None)
  FakeGCS.store.clear()
  backend.fsspec_backend._get_filesystem.cache_clear()


# The two longest tests (minutes each, measured in benchmarks/results/ci_timing.md)
# start at once, one per xdist worker: left in file order they began late and
# ran on one worker while the other idled, making the run's tail.
LONGEST_FIRST = (
    "test_paper_rehearsal.py::test_paper_rehearsal_two_processes",
    "test_end_to_end.py::test_student_beats_teacher_on_masked_faces",
)


def pytest_collection_modifyitems(config, items):
  """Puts the longest tests at the heads of the first chunks xdist's 'load'
  scheduler sends to its workers (chunks of len(items) // workers // 4)."""
  workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
  if workers < 2:
    return
  longest = [i for n in LONGEST_FIRST for i in items if i.nodeid.endswith(n)]
  rest = [i for i in items if i not in longest]
  chunk = max(len(items) // workers // 4, 2)
  for k, item in enumerate(longest[:workers]):
    rest.insert(min(k * chunk, len(rest)), item)
  rest += longest[workers:]
  items[:] = rest
