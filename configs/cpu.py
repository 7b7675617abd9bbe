"""Hardware variant: a laptop / CI CPU. The synthetic default, smaller still."""

import os
import sys

# The base config lies next to this file; ml_collections loads config files
# by path, without their folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synthetic  # noqa: E402


def get_config():
  c = synthetic.get_config()
  c.data.identities = 300
  c.teacher.num_steps = 300
  c.deocclusion.num_steps = 200
  c.distillation.num_steps = 200
  c.evaluate.num_pairs = 2000
  return c
