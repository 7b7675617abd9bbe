"""Every config file loads the way the command-line tools load it (by path,
in a fresh interpreter without configs/ on sys.path)."""
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import sys
from absl import flags
from ml_collections import config_flags
for path in sys.argv[1:]:
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv)
  fv(["prog", f"--config={path}"])
  c = fv.config
  assert c.stages and c.data.resolution > 0, path
  print(path, len(c.stages))
"""


def test_every_config_loads_by_path_in_a_fresh_process():
  paths = sorted(glob.glob(os.path.join("configs", "*.py")))
  assert len(paths) >= 6
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run([sys.executable, "-c", SCRIPT, *paths], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert [line.split()[0] for line in proc.stdout.splitlines()] == paths
