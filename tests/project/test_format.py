"""One formatter for the whole tree: pyink (Google style, 2-space indentation,
configured in pyproject.toml [tool.pyink]). Reformat with
``.venv/bin/pyink deocc_jax tests benchmarks configs``."""

import os
import shutil
import subprocess
import sys
from tests.helpers import paths

ROOT = str(paths.ROOT)
TREES = ("deocc_jax", "tests", "benchmarks", "configs")


def test_the_tree_is_pyink_formatted():
  exe = shutil.which("pyink", path=os.path.dirname(sys.executable)) or shutil.which("pyink")
  assert exe, "pyink is not installed (it is in the test extra: pip install -e '.[test]')"
  proc = subprocess.run(
      [exe, "--check", "--quiet", *TREES], cwd=ROOT, capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, (
      "files not pyink-formatted (run pyink on them):\n" + proc.stderr[-4000:]
  )
