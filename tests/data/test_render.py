"""The main entry point's data stage, config errors, README / CI consistency."""

import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from deocc_jax import main as main_lib
from deocc_jax.errors import ConfigError
from tests.helpers import paths
from tests.helpers.configs import tiny_config

ROOT = str(paths.ROOT)


def render_config():
  return tiny_config(
      stages=("render_data",),
      data={"images_per_identity": 3},
      render={"per_category": 8, "stats_examples": 40},
  )


def test_render_stage_writes_sheets_and_stats(tmp_path):
  main_lib.run(render_config(), str(tmp_path))
  stats = json.loads((tmp_path / "data" / "stats.json").read_text())
  for cat in ("simple", "complex", "body", "hybrid"):
    s = stats["categories"][cat]
    assert 0.1 <= s["coverage_mean"] <= 0.3
    im = Image.open(tmp_path / "data" / f"contact_{cat}.png")
    assert im.size == (8 * (64 + 2) + 2, 1 * (32 + 2) + 2)


def test_config_errors_name_the_field(tmp_path):
  c = render_config()
  c.stages = ("render_data", "fly")
  with pytest.raises(ConfigError, match=r"unknown stage\(s\) \['fly'\]"):
    main_lib.run(c, str(tmp_path))
  c = render_config()
  with c.unlocked():  # a hand-made config without the field
    del c.render["columns"]
  with pytest.raises(ConfigError, match="missing required field 'render.columns'"):
    main_lib.run(c, str(tmp_path))


def test_cli_runs_with_overrides(tmp_path):
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "deocc_jax.main",
          f"--config={ROOT}/configs/synthetic.py",
          f"--workdir={tmp_path}",
          "--config.data.resolution=32",
          "--config.data.identities=30",
          "--config.render.per_category=4",
          "--config.render.stats_examples=20",
          "--config.stages=('render_data',)",
      ],
      capture_output=True,
      text=True,
      cwd=ROOT,
      timeout=300,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert "| hybrid |" in out.stdout
  assert json.loads((tmp_path / "data" / "stats.json").read_text())["resolution"] == 32
  bad = subprocess.run(
      [
          sys.executable,
          "-m",
          "deocc_jax.main",
          f"--config={ROOT}/configs/synthetic.py",
          f"--workdir={tmp_path}",
          "--config.data.nonexistent=3",
      ],
      capture_output=True,
      text=True,
      cwd=ROOT,
      timeout=300,
  )
  assert bad.returncode != 0 and "nonexistent" in bad.stderr


def _readme_commands():
  text = open(os.path.join(ROOT, "README.md")).read()
  block = re.search(r"## Quick start(.*?)\n## ", text, re.S).group(1)
  return re.findall(r"```(?:bash|sh)\n(.*?)\n```", block, re.S)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second():
  cmds = _readme_commands()
  assert len(cmds) == 2, cmds
  assert "deocc_jax.main" in cmds[0] and "configs/synthetic.py" in cmds[0]
  assert "pytest" in cmds[1]
  ci = open(os.path.join(ROOT, ".ci", "run")).read()
  assert cmds[1].strip() in ci
