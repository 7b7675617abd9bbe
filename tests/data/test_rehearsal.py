"""The rehearsal's miniature paths are set before a run starts (data/rehearsal.py):
no stage changes the config."""

import os

import pytest

from deocc_jax.configs.experiments import paper_rehearsal
from deocc_jax.data import rehearsal
from deocc_jax.errors import ConfigError


def test_with_paths_points_a_copy_at_the_miniature(tmp_path):
  c = paper_rehearsal.get_config()
  before = c.to_dict()
  got = rehearsal.with_paths(c, str(tmp_path))
  assert c.to_dict() == before  # the given config is left as it was
  root = os.path.join(str(tmp_path), "rehearsal_data")
  assert got.data.root == os.path.join(root, "celeba")
  assert got.evaluate.ar_root == os.path.join(root, "AR")
  assert got.teacher.path == got.finetune_arcface.path == os.path.join(root, "teacher")
  changed = {
      f"{s}.{k}"
      for s, sec in got.to_dict().items()
      if isinstance(sec, dict)
      for k, v in sec.items()
      if before[s][k] != v
  }
  assert changed == set(rehearsal.paths(root))
  c.rehearsal.root = str(tmp_path / "elsewhere")
  assert rehearsal.with_paths(c, "ignored").data.root == str(tmp_path / "elsewhere" / "celeba")


def test_the_stage_refuses_a_config_not_pointed_at_its_miniature(tmp_path):
  c = paper_rehearsal.get_config()
  with pytest.raises(ConfigError, match=r"point elsewhere: .*with_paths"):
    rehearsal.run(c, str(tmp_path))
  assert not (tmp_path / "rehearsal_data").exists()  # refused before writing anything
