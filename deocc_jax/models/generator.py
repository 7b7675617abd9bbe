"""DeepFill v1 inpainting generator (Yu et al., CVPR 2018), paper Sec. 3.2.

Coarse-to-fine network of the official v1 release (plain convolutions + ELU, no
gated convolutions):

* coarse network: 5x5 conv, two stride-2 downsamplings, dilated 3x3 convs at
  rates 2/4/8/16, two nearest-x2 + 3x3 conv upsamplings, output clipped to
  [-1, 1];
* refinement network on ``coarse*M + x*(1-M)``: a dilated-conv ("hallucination")
  branch and a contextual-attention branch (Eq. 9, ``rate=2`` at 1/4
  resolution, see :mod:`deocc_jax.models.contextual_attention`), concatenated
  and decoded like the coarse network.

Inputs: ``x`` (B, H, W, 3) in [-1, 1] and mask ``M`` (B, H, W, 1), 1 in the
hole. The network sees ``[x*(1-M), 1, M]`` (5 channels). ``H`` and ``W`` must be
multiples of 4 (two stride-2 convs followed by two x2 upsamplings) and >= 8.
Contextual attention at 1/4 resolution needs nothing more: odd 1/4-resolution
sizes (e.g. 36 px) use a ``ceil(h/2)`` matching grid.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from deocc_jax.models.contextual_attention import (
    contextual_attention,
    resize_nearest_align_corners,
)

Dtype = Any


class GeneratorOutput(NamedTuple):
  """Outputs of :class:`InpaintGenerator` (all float32)."""

  coarse: jax.Array  # (B, H, W, 3) stage-1 prediction in [-1, 1]
  refined: jax.Array  # (B, H, W, 3) stage-2 prediction in [-1, 1]
  flow: jax.Array  # (B, H, W, 3) contextual-attention offsets as colours in [-1, 1]


def check_image_and_mask(x: jax.Array, mask: jax.Array) -> None:
  """Validate an NHWC image batch and its (B, H, W, 1) mask for the generator."""
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"x must have shape (B, H, W, 3), got {x.shape}")
  b, h, w, _ = x.shape
  if mask.shape != (b, h, w, 1):
    raise ValueError(f"mask must have shape {(b, h, w, 1)} to match x {x.shape}, got {mask.shape}")
  if h % 4 or w % 4 or h < 8 or w < 8:
    raise ValueError(
        f"InpaintGenerator needs H and W divisible by 4 and >= 8 (two stride-2 "
        f"downsamplings, contextual attention at 1/4 resolution), got x shape {x.shape}"
    )


def complete(x: jax.Array, mask: jax.Array, refined: jax.Array) -> jax.Array:
  """Composite ``X*(1-M) + G*M``: observed pixels from ``x``, the hole from ``refined``."""
  chex.assert_rank([x, mask, refined], 4)
  chex.assert_equal_shape([x, refined])
  chex.assert_shape(mask, (*x.shape[:3], 1))
  return x * (1.0 - mask) + refined * mask


class _Conv(nn.Module):
  """DeepFill ``gen_conv``: SAME conv (optionally dilated) + activation."""

  features: int
  ksize: int = 3
  stride: int = 1
  rate: int = 1
  activation: Callable[[jax.Array], jax.Array] | None = nn.elu
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(
        self.features,
        (self.ksize, self.ksize),
        strides=(self.stride, self.stride),
        kernel_dilation=(self.rate, self.rate),
        padding="SAME",
        dtype=self.dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.xavier_uniform(),
        name="conv",
    )(x)
    return x if self.activation is None else self.activation(x)


class _Deconv(nn.Module):
  """DeepFill ``gen_deconv``: nearest x2 upsampling + 3x3 conv + ELU.

  (TF1 ``resize_nearest_neighbor(align_corners=True)`` to exactly 2x the size
  selects the same pixels as plain repetition.)
  """

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return _Conv(self.features, 3, dtype=self.dtype, name="conv")(x)


class InpaintGenerator(nn.Module):
  """Two-stage DeepFill v1 generator ``G(X, M)``.

  Attributes:
    cnum: base width (32 in DeepFill v1).
    dtype: compute dtype of convolutions (params stay float32); contextual
      attention matching always runs in float32.
    use_contextual_attention: if False the attention branch is a plain conv
      branch (ablation only).
    fuse: attention propagation in contextual attention.
  """

  cnum: int = 32
  dtype: Dtype = jnp.float32
  use_contextual_attention: bool = True
  fuse: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> GeneratorOutput:
    check_image_and_mask(x, mask)
    c = self.cnum
    conv = lambda *a, **k: _Conv(*a, dtype=self.dtype, **k)  # noqa: E731
    deconv = lambda *a, **k: _Deconv(*a, dtype=self.dtype, **k)  # noqa: E731
    mask = mask.astype(jnp.float32)
    x = x.astype(jnp.float32)
    xin = x * (1.0 - mask)
    ones = jnp.ones_like(mask)

    # Stage 1: coarse network.
    h = jnp.concatenate([xin, ones, ones * mask], axis=-1).astype(self.dtype)
    h = conv(c, 5, name="conv1")(h)
    h = conv(2 * c, 3, 2, name="conv2_downsample")(h)
    h = conv(2 * c, 3, name="conv3")(h)
    h = conv(4 * c, 3, 2, name="conv4_downsample")(h)
    h = conv(4 * c, 3, name="conv5")(h)
    h = conv(4 * c, 3, name="conv6")(h)
    mask_s = resize_nearest_align_corners(mask, h.shape[1:3])
    for i, r in enumerate((2, 4, 8, 16)):
      h = conv(4 * c, 3, rate=r, name=f"conv{7 + i}_atrous")(h)
    h = conv(4 * c, 3, name="conv11")(h)
    h = conv(4 * c, 3, name="conv12")(h)
    h = deconv(2 * c, name="conv13_upsample")(h)
    h = conv(2 * c, 3, name="conv14")(h)
    h = deconv(c, name="conv15_upsample")(h)
    h = conv(c // 2, 3, name="conv16")(h)
    h = conv(3, 3, activation=None, name="conv17")(h)
    coarse = jnp.clip(h.astype(jnp.float32), -1.0, 1.0)

    # Stage 2: refinement on the pasted coarse result.
    xnow = coarse * mask + xin * (1.0 - mask)
    xnow = jnp.concatenate([xnow, ones, ones * mask], axis=-1).astype(self.dtype)
    # dilated-conv ("hallucination") branch
    h = conv(c, 5, name="xconv1")(xnow)
    h = conv(c, 3, 2, name="xconv2_downsample")(h)
    h = conv(2 * c, 3, name="xconv3")(h)
    h = conv(2 * c, 3, 2, name="xconv4_downsample")(h)
    h = conv(4 * c, 3, name="xconv5")(h)
    h = conv(4 * c, 3, name="xconv6")(h)
    for i, r in enumerate((2, 4, 8, 16)):
      h = conv(4 * c, 3, rate=r, name=f"xconv{7 + i}_atrous")(h)
    x_hallu = h
    # contextual-attention branch
    h = conv(c, 5, name="pmconv1")(xnow)
    h = conv(c, 3, 2, name="pmconv2_downsample")(h)
    h = conv(2 * c, 3, name="pmconv3")(h)
    h = conv(4 * c, 3, 2, name="pmconv4_downsample")(h)
    h = conv(4 * c, 3, name="pmconv5")(h)
    h = conv(4 * c, 3, activation=nn.relu, name="pmconv6")(h)
    if self.use_contextual_attention:
      h, flow = contextual_attention(h, h, mask_s, ksize=3, stride=1, rate=2, fuse=self.fuse)
      flow = jnp.repeat(jnp.repeat(flow, 4, axis=1), 4, axis=2)
    else:
      flow = jnp.zeros(x.shape, jnp.float32)
    h = conv(4 * c, 3, name="pmconv9")(h)
    h = conv(4 * c, 3, name="pmconv10")(h)
    h = jnp.concatenate([x_hallu, h], axis=-1)
    h = conv(4 * c, 3, name="allconv11")(h)
    h = conv(4 * c, 3, name="allconv12")(h)
    h = deconv(2 * c, name="allconv13_upsample")(h)
    h = conv(2 * c, 3, name="allconv14")(h)
    h = deconv(c, name="allconv15_upsample")(h)
    h = conv(c // 2, 3, name="allconv16")(h)
    h = conv(3, 3, activation=None, name="allconv17")(h)
    refined = jnp.clip(h.astype(jnp.float32), -1.0, 1.0)
    chex.assert_shape([coarse, refined, flow], x.shape)
    return GeneratorOutput(coarse=coarse, refined=refined, flow=flow)
