"""The tests' one config builder: the embedded default (configs/synthetic.py) at test size."""

from __future__ import annotations

from typing import Any

import ml_collections

from deocc_jax.configs import base as synthetic  # configs/synthetic.py's body


def _merge(node: ml_collections.ConfigDict, overrides: dict[str, Any], where: str) -> None:
  for key, value in overrides.items():
    if key not in node:
      raise KeyError(f"tiny_config: no field {where}{key!r} in the synthetic config")
    if isinstance(value, dict) and isinstance(node[key], ml_collections.ConfigDict):
      _merge(node[key], value, f"{where}{key}.")
    else:
      node[key] = value


def tiny_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The synthetic default at test size.

  40 identities x 4 images at 32 px; narrow models (teacher and student ResNet-18
  at width 1/8 with 16-d embeddings, generator and critics at 4 channels); no
  warm-up (the first update is a real one); synchronous checkpoints; no progress
  bar; the student-sized ArcFace baseline at the student's size. ``overrides``: a top-level field -> value, or a section -> dict of its
  fields (merged, nested), e.g. ``tiny_config(stages=("noop",),
  data={"identities": 200})``. An unknown field is an error.
  """
  c = synthetic.get_config()
  c.progress = False
  c.checkpoint.async_save = False
  c.data.identities, c.data.images_per_identity = 40, 4
  c.teacher.width, c.teacher.embed_dim = 0.125, 16
  c.deocclusion.cnum, c.deocclusion.critic_cnum, c.deocclusion.local_size = 4, 4, 16
  c.distillation.width = 0.125
  c.pretrain_arcface.width, c.pretrain_arcface.embed_dim = 0.125, 16  # the student's size
  c.teacher.warmup_steps = c.distillation.warmup_steps = c.pretrain_arcface.warmup_steps = 0
  _merge(c, overrides, "")
  return c
