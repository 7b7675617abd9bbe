"""A small U-Net that predicts where a face is occluded (blind de-occlusion).

When no occlusion mask is given, the generator's hole mask ``M`` has to be
estimated from the masked face itself. ``OcclusionSegmenter`` maps a masked
face (B, H, W, 3) in [-1, 1] to per-pixel logits (B, H, W, 1) of "occluded".
Fully convolutional: any H, W divisible by 4.

Layout (``w`` = ``width``): two 3x3 conv-GroupNorm-ReLU blocks at each of
three scales (w, 2w, 4w channels; stride-2 convs between), nearest-neighbour
upsampling + skip concatenation on the way back up, and a 1x1 conv head.
No BatchNorm, so there is no mutable state. Logits are float32 whatever
``dtype`` the body computes in.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class _Block(nn.Module):
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = partial(
        nn.Conv, kernel_size=(3, 3), padding="SAME", dtype=self.dtype, param_dtype=jnp.float32
    )
    groups = min(8, self.features)
    for i in range(2):
      x = conv(self.features, name=f"conv{i}")(x)
      x = nn.GroupNorm(
          num_groups=groups, dtype=self.dtype, param_dtype=jnp.float32, name=f"norm{i}"
      )(x)
      x = nn.relu(x)
    return x


def _upsample2(x: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class OcclusionSegmenter(nn.Module):
  """masked face (B, H, W, 3) -> occlusion logits (B, H, W, 1) float32."""

  width: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"expected (B, H, W, 3) images, got {x.shape}")
    if x.shape[1] % 4 or x.shape[2] % 4:
      raise ValueError(f"H and W must be divisible by 4, got {x.shape[1:3]}")
    w = self.width
    down = partial(
        nn.Conv,
        kernel_size=(3, 3),
        strides=(2, 2),
        padding="SAME",
        dtype=self.dtype,
        param_dtype=jnp.float32,
    )
    x = x.astype(self.dtype)
    e1 = _Block(w, self.dtype, name="enc1")(x)  # H
    e2 = _Block(2 * w, self.dtype, name="enc2")(down(2 * w, name="down1")(e1))  # H/2
    b = _Block(4 * w, self.dtype, name="bottleneck")(down(4 * w, name="down2")(e2))  # H/4
    d2 = _Block(2 * w, self.dtype, name="dec2")(jnp.concatenate([_upsample2(b), e2], -1))
    d1 = _Block(w, self.dtype, name="dec1")(jnp.concatenate([_upsample2(d2), e1], -1))
    logits = nn.Conv(1, (1, 1), dtype=jnp.float32, param_dtype=jnp.float32, name="head")(
        d1.astype(jnp.float32)
    )
    return logits
