"""Hardware variant: a TPU-VM pod slice (multi-host, jax.distributed auto-detect).

Launch on every worker with launch/tpu_pod.sh.
"""

import os
import sys

# The base config lies next to this file; ml_collections loads config files
# by path, without their folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paper_celeba  # noqa: E402


def get_config():
  c = paper_celeba.get_config()
  c.distributed.mode = "auto"          # jax.distributed.initialize() on each host
  c.mesh.fsdp = True                   # shard params / optimizer state over 'data'
  c.pipeline.worker_count = 16         # per host
  c.deocclusion.dtype = "bfloat16"
  c.distillation.dtype = "bfloat16"
  # Global batches. Schedules stay in epochs (paper_celeba.py): at stage start
  # the steps, the decay points (every 24 epochs) and the lr (0.1 x 256 / 128
  # = 0.2, linear scaling) follow from the training split's size and the batch.
  c.deocclusion.batch_size = 256
  c.distillation.batch_size = 256
  c.distillation.sharded_relational = True
  c.checkpoint.async_save = True
  return c
