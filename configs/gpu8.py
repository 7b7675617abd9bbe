"""Hardware variant: one host with 8 GPUs (the paper's setting, data parallel).

    python -m deocc_jax.main --config=configs/gpu8.py --workdir=runs/gpu8 \
        --config.data.root=/data/celeba --config.teacher.path=ckpt/vggface2_r50
"""

import os
import sys

# The base config lies next to this file; ml_collections loads config files
# by path, without their folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paper_celeba  # noqa: E402


def get_config():
  c = paper_celeba.get_config()
  c.mesh.num_devices = 0               # all 8 GPUs on the 'data' axis
  c.pipeline.worker_count = 32         # feed 8 devices
  c.distillation.batch_size = 128      # global: 16 per GPU (epochs, decay points and
                                       # lr follow the batch: paper_celeba.py)
  c.deocclusion.dtype = "bfloat16"     # bf16 compute, fp32 params
  c.distillation.dtype = "bfloat16"
  c.distillation.sharded_relational = True
  return c
