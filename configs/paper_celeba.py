"""The paper's setting (Li et al., ACM MM 2020, section 3.4 / 4.1).

CelebA at 256 px, DeepFill-v1 completion (cnum 32), a VGGFace2 teacher
converted from PyTorch, a ResNet-18 student, batch 128, SGD lr 0.1 times 0.1
every 24 epochs, lambda_p = 1, lambda_t = 2, random 6:1 train/val split.

    python -m deocc_jax.convert --arch vggface2_resnet50 \
        --weights resnet50_ft_weight.pkl --out ckpt/vggface2_r50
    python -m deocc_jax.main --config=configs/paper_celeba.py --workdir=runs/paper \
        --config.data.root=/data/celeba --config.teacher.path=ckpt/vggface2_r50
"""

import os
import sys

import ml_collections

# The base config lies next to this file; ml_collections loads config files
# by path, without their folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synthetic  # noqa: E402  (the base config; every field is documented there)

CELEBA_TRAIN_IMAGES = 202_599 * 6 // 7  # random 6:1 split of all images


def get_config() -> ml_collections.ConfigDict:
  c = synthetic.get_config()
  c.stages = ("teacher_embeddings", "deocclusion", "segmentation", "distill_hard",
              "distill_soft", "evaluate")
  c.data.source = "celeba"
  c.data.root = ""                     # REQUIRED: folder with img_align_celeba/ + annotations
  c.data.partition = "random_6_1"      # the paper's random 6:1 train/validation split
  c.data.resolution = 256
  c.pipeline.worker_count = 16
  c.pipeline.max_shift_px = 8

  c.teacher.kind = "converted"         # VGGFace2 teacher (python -m deocc_jax.convert)
  c.teacher.path = ""                  # REQUIRED: the converted teacher directory
  c.teacher_embeddings.batch_size = 512

  steps_per_epoch = CELEBA_TRAIN_IMAGES // 128
  c.deocclusion.cnum = 32
  c.deocclusion.critic_cnum = 64
  c.deocclusion.local_size = 128
  c.deocclusion.adversarial = "gan"    # Eq. 8
  c.deocclusion.reconstruction = "l1"  # Eq. 7
  c.deocclusion.batch_size = 128
  c.deocclusion.num_steps = 30 * steps_per_epoch
  c.deocclusion.checkpoint_every = 2000
  c.deocclusion.sample_every = 2000
  c.deocclusion.g_optimizer.lr = 1e-4
  c.deocclusion.d_optimizer.lr = 1e-4

  c.distillation.width = 1.0           # the real ResNet-18
  c.distillation.small_input_stem = False
  c.distillation.batch_size = 128
  c.distillation.num_steps = 72 * steps_per_epoch
  c.distillation.optimizer = "sgd"
  c.distillation.lr = 0.1
  c.distillation.schedule = "step"
  c.distillation.decay_every = 24 * steps_per_epoch  # x0.1 every 24 epochs
  c.distillation.decay_factor = 0.1
  c.distillation.warmup_steps = 0
  c.distillation.lambda_p = 1.0
  c.distillation.lambda_t = 2.0
  c.distillation.angle_block_size = 32
  c.distillation.checkpoint_every = 2000
  c.segmentation.width = 32
  c.segmentation.batch_size = 64
  c.segmentation.num_steps = 20_000
  c.segmentation.checkpoint_every = 2000

  c.evaluate.split = "validation"      # CelebA identities held out by the 6:1 split
  c.evaluate.batch_size = 512
  c.evaluate.diffusion_iters = 2000    # holes ~50 px across at 256 px
  c.evaluate.lfw_root = ""             # the paper's LFW table: /data/lfw ...
  c.evaluate.lfw_pairs = ""            # ... and /data/pairs.txt
  c.evaluate.ar_root = ""              # the paper's Table 1: the AR folder
  return c
