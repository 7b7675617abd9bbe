"""The embedded default: synthetic identity faces, sized for a 2-core CPU.

Run:  python -m deocc_jax.main --config=configs/synthetic.py --workdir=DIR
Override any field:  --config.data.resolution=32
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # master seed of everything random in the run
  # Stages run in order. Available now: 'render_data' (contact sheets and
  # statistics of the synthetic masked-face set).
  c.stages = ("render_data",)

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"          # the embedded default data set
  c.data.identities = 1000             # number of synthetic identities
  c.data.images_per_identity = 20      # images rendered per identity
  c.data.resolution = 64               # face side in pixels (32..256)
  c.data.seed = 0                      # data seed: same seed, same faces
  c.data.coverage_range = (0.1, 0.3)   # fraction of the face occluded (mean ~1/5)
  c.data.categories = ("simple", "complex", "body", "hybrid")  # mask categories
  c.data.mask_library = ""             # optional folder of RGBA mask PNGs

  c.render = ml_collections.ConfigDict()
  c.render.per_category = 48           # faces per contact sheet
  c.render.columns = 8                 # pairs per sheet row
  c.render.stats_examples = 400        # examples measured for coverage statistics
  return c
