"""The loss ablation of Fig. 5 on the synthetic default.

Trains one student per loss setting (CE; CE+pair; CE+pair+angle; +hard
instance; +soft instance) with the run's teacher and generator, evaluating
each every ``ablation.eval_every`` steps on held-out identities. Point
``--workdir`` at a finished main-job run to reuse its teacher / generator
(the listed stages resume from their checkpoints and are skipped):

    python -m deocc_jax.main --config=configs/ablation_synthetic.py --workdir=workdir/synthetic
"""

import os
import sys

# The base config lies next to this file; ml_collections loads config files
# by path, without their folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synthetic  # noqa: E402


def get_config():
  c = synthetic.get_config()
  c.stages = ("teacher", "teacher_embeddings", "deocclusion", "ablation")
  return c
