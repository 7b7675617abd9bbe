"""A tiny trained run of every stage (a few steps each), shared by the
evaluation and inference tests: real checkpoints in the real layout, fast."""

import numpy as np

from deocc_jax.data import masks as masks_lib
from deocc_jax.data import pipeline
from tests.helpers import configs

RESOLUTION = 32  # the tiny run's face size (the base config's)

TINY_STAGES = (
    "teacher",
    "teacher_embeddings",
    "deocclusion",
    "segmentation",
    "distill_hard",
    "distill_soft",
    "pretrain_arcface",
    "finetune_arcface",
)
TRAINED = (
    "teacher",
    "deocclusion",
    "segmentation",
    "distillation",
    "pretrain_arcface",
    "finetune_arcface",
)


def tiny_config(stages=TINY_STAGES):
  """``configs.tiny_config`` with 200 identities (20 held out: 2 per fold) and
  4 steps (checkpoints at 2 and 4) of every trained stage."""
  sections = {
      name: dict(num_steps=4, log_every=2, checkpoint_every=2, batch_size=16) for name in TRAINED
  }
  sections["deocclusion"]["sample_every"] = 0
  sections["segmentation"]["optimizer"] = {"warmup_steps": 1}
  c = configs.tiny_config(
      stages=tuple(stages),
      data={"identities": 200},
      evaluate={"num_pairs": 200, "batch_size": 64, "diffusion_iters": 20},
      **sections,
  )
  for name in TRAINED:
    if "warmup_steps" in c[name]:
      c[name].warmup_steps = 1
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
