"""A tiny trained run of every stage (a few steps each), shared by the
evaluation and inference tests: real checkpoints in the real layout, fast."""

import numpy as np

from deocc_jax.configs import base as synthetic  # configs/synthetic.py's body
from deocc_jax.data import masks as masks_lib
from deocc_jax.data import pipeline

RESOLUTION = 32  # the tiny run's face size (the base config's)

TINY_STAGES = (
    "teacher",
    "teacher_embeddings",
    "deocclusion",
    "segmentation",
    "distill_hard",
    "distill_soft",
    "finetune_arcface",
)


def tiny_config(stages=TINY_STAGES):
  c = synthetic.get_config()
  c.stages = tuple(stages)
  c.progress = False
  c.data.identities = 200  # 20 held-out test identities: 2 per fold
  c.data.images_per_identity = 4
  c.checkpoint.async_save = False
  for name in ("teacher", "deocclusion", "segmentation", "distillation", "finetune_arcface"):
    s = c[name]
    s.num_steps = 4
    s.log_every = 2
    s.checkpoint_every = 2
    s.batch_size = 16
    if "warmup_steps" in s:
      s.warmup_steps = 1
  c.segmentation.optimizer.warmup_steps = 1
  c.deocclusion.sample_every = 0
  c.evaluate.num_pairs = 200
  c.evaluate.batch_size = 64
  c.evaluate.diffusion_iters = 20
  return c


def make_tiny_run(workdir):
  from deocc_jax import main as main_lib

  c = tiny_config()
  main_lib.run(c, str(workdir))
  return c


def held_out_source() -> pipeline.SyntheticSplitSource:
  """The tiny run's 'test' split (identities no model of the run trained on)."""
  c = tiny_config()
  assert int(c.data.resolution) == RESOLUTION
  return pipeline.SyntheticSplitSource.create(
      "test", int(c.data.identities), int(c.data.images_per_identity), RESOLUTION, int(c.data.seed)
  )


def occluded(rec, seed=0, category="simple"):
  """(occluded uint8 image, (H, W) binary mask) of a record, as the evaluation occludes."""
  occ = masks_lib.synthesize_occlusion(
      np.random.default_rng(seed), rec["landmarks"], rec["face_region"], category=category
  )
  return masks_lib.composite(rec["image"], occ), (occ.mask > 0.5)
