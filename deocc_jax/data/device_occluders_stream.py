"""The pair stream with its occluders drawn on the device (``data.occluders='device'``).

The host half is a grain stream of clean, augmented faces
(:class:`DevicePairTransform`: ``device_occluders_host.prepare_example``, the
same flip / shift draws as the host path's ``MaskedPairTransform``), batched
by :func:`batch_examples`::

    {'image':       (B, H, W, 3) uint8 clean faces,
     'landmarks':   (B, 5, 2) float32, or (B, 68, 2) when every record has
                    'landmarks68' (then 'landmarks5' keeps the five),
     'face_region': (B, H, W) uint8 soft weights x 255 (when the records have
                    one; a batch never mixes the two),
     'identity':    (B,) int32}

The device half, :func:`prepare_batch` (jitted beside the training step),
occludes the batch with ``device_occluders.synthesize_details`` and returns
the host path's batch (``pipeline.make_masked_pair``'s keys, dtypes, ranges).
"""

from __future__ import annotations

from typing import Any, Sequence

import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np

from deocc_jax.data import device_occluders as do
from deocc_jax.data import device_occluders_host as host_lib
from deocc_jax.data import pipeline as pipe


class DevicePairTransform(grain.RandomMapTransform):
  """Record -> clean augmented face + landmarks (+ face region), no occluder."""

  def __init__(self, flip: bool = True, max_shift_px: int = 0):
    self.flip = flip
    self.max_shift_px = int(max_shift_px)

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    return host_lib.prepare_example(element, rng, self.flip, self.max_shift_px)


def batch_examples(examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  """``device_occluders_host.stack_batch``, keeping the five landmarks as
  'landmarks5' when 68 points replace them."""
  out = host_lib.stack_batch(examples)
  if out["landmarks"].shape[1] == 68:
    out["landmarks5"] = np.stack([e["landmarks"] for e in examples])
  return out


def make_loader(
    source: pipe.FaceSource,
    config: pipe.PipelineConfig,
    shard_options: grain.ShardOptions | None = None,
) -> grain.DataLoader:
  """``pipeline.make_loader`` of clean faces for the device synthesis (same
  sampler, sharding and augmentation draws as the host path)."""
  return pipe.make_loader(
      source,
      config,
      shard_options=shard_options,
      transform=DevicePairTransform(config.flip, config.max_shift_px),
      batch_fn=batch_examples,
  )


_UNIT = pipe.to_unit_range(np.arange(256, dtype=np.uint8))


def to_unit_range(x: jax.Array) -> jax.Array:
  """``pipeline.to_unit_range`` on the device, bit for bit: uint8 [0, 255] ->
  float32 [-1, 1] by table (XLA may fuse ``x * a - 1`` into one rounding)."""
  return jnp.asarray(_UNIT)[x.astype(jnp.int32)]


def prepare_batch(bank: do.Bank, batch: dict[str, jax.Array], key: jax.Array) -> dict[str, Any]:
  """A host batch of :func:`make_loader` -> the host path's training batch
  (masked / clean in [-1, 1] float32, mask (B, H, W, 1) float32, identity,
  5-point landmarks, category int32, coverage float32); jittable.

  Example i of the batch is occluded with ``fold_in(key, i)``.
  """
  o = do.synthesize_details(bank, batch["image"], batch["landmarks"], key, batch.get("face_region"))
  return {
      "masked": to_unit_range(o.masked),
      "mask": o.mask,
      "clean": to_unit_range(batch["image"]),
      "identity": batch["identity"].astype(jnp.int32),
      "landmarks": batch.get("landmarks5", batch["landmarks"]).astype(jnp.float32),
      "category": o.category.astype(jnp.int32),
      "coverage": o.coverage.astype(jnp.float32),
  }
