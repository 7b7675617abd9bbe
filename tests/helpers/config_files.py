"""Loads an experiment config the way the command-line tools do (by path,
with an optional ``:variant`` suffix), for tests of variants."""

import os

from absl import flags
from ml_collections import ConfigDict, config_flags
from tests.helpers import paths

ROOT = str(paths.ROOT)


def load(spec: str) -> ConfigDict:
  """``spec``: e.g. 'configs/paper_celeba.py:gpu8' (relative to the repository)."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv)
  fv(["prog", f"--config={os.path.join(ROOT, spec)}"])
  return fv.config
