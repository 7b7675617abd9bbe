"""Hardware variant: a laptop / CI CPU. The synthetic default, smaller still."""

import synthetic


def get_config():
  c = synthetic.get_config()
  c.data.identities = 300
  c.teacher.num_steps = 300
  c.deocclusion.num_steps = 200
  c.distillation.num_steps = 200
  c.evaluate.num_pairs = 2000
  return c
