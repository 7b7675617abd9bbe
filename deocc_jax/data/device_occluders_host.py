"""The host's share of the device occluder synthesis: augment and batch records.

With :mod:`deocc_jax.data.device_occluders` the host draws no occluder: per
example it only mirrors / shifts the face with its landmarks and face region
(``pipeline.make_masked_pair``'s augmentation, same random draws) and stacks
the batch the device synthesis takes::

    {'image':       (B, H, W, 3) uint8 clean faces,
     'landmarks':   (B, 5, 2) float32 (or (B, 68, 2) when every record has
                    'landmarks68': face masks then follow the detected jaw),
     'face_region': (B, H, W) uint8 soft weights x 255 (records without one
                    get the ellipse on the device; a batch mixes none of the two),
     'identity':    (B,) int32}
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from deocc_jax.data.pipeline import augment


def prepare_example(
    element: dict[str, Any], rng: np.random.Generator, flip: bool = True, max_shift_px: int = 0
) -> dict[str, Any]:
  """One record -> the arrays the device synthesis needs (augmented)."""
  image = np.asarray(element["image"])
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f"record image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
  lm = np.asarray(element["landmarks"], np.float32)
  if lm.shape != (5, 2):
    raise ValueError(f"record landmarks must be (5, 2), got {lm.shape}")
  dense = element.get("landmarks68")
  if dense is not None:
    dense = np.asarray(dense, np.float32)
    if dense.shape != (68, 2):
      raise ValueError(f"record landmarks68 must be (68, 2), got {dense.shape}")
  region = element.get("face_region")
  image, lm, region, dense = augment(image, lm, region, dense, rng, flip, max_shift_px)
  out = {"image": image, "landmarks": lm, "identity": np.int32(element.get("identity", 0))}
  if dense is not None:
    out["landmarks68"] = dense
  if region is not None:
    reg = np.clip(np.asarray(region, np.float32), 0, 1)
    out["face_region"] = np.round(reg * 255.0).astype(np.uint8)  # soft weights, 1/255 steps
  return out


def stack_batch(examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Stacks prepared examples; 68 points replace the five when all have them."""
  if not examples:
    raise ValueError("stack_batch needs at least one example")
  out = {
      "image": np.stack([e["image"] for e in examples]),
      "identity": np.stack([e["identity"] for e in examples]),
  }
  if all("landmarks68" in e for e in examples):
    out["landmarks"] = np.stack([e["landmarks68"] for e in examples])
  else:
    out["landmarks"] = np.stack([e["landmarks"] for e in examples])
  has_region = ["face_region" in e for e in examples]
  if all(has_region):
    out["face_region"] = np.stack([e["face_region"] for e in examples])
  elif any(has_region):
    raise ValueError("a batch mixes records with and without 'face_region'")
  return out
