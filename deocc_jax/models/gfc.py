"""GFC generator (Li, Liu, Yang, Yang, "Generative Face Completion", CVPR 2017, Sec. 3.1).

An encoder-decoder: VGG-19-style convolution blocks with 2x2 max pooling, a
fully connected bottleneck, and a decoder that *unpools* with the encoder's
pooling switches (SegNet-style max-unpooling: each value goes back to the
position its window's maximum came from, zeros elsewhere). The paper
describes the encoder as VGG-19 ``conv1``-``pool3`` with "two more
convolutional layers and one more pooling layer" and a fully connected layer,
and the decoder as "symmetric ... with unpooling layers". The widths and
layer counts follow the official release (``Model_G.prototxt``), which puts
the extra block *in front* of VGG's ``conv1`` (same number of poolings):

=========  ===============================  ===========  =================
block      convs (3x3, ReLU)                release      here (``base`` b)
=========  ===============================  ===========  =================
enc 0      2, then pool0 (/2)               32           b
enc 1      2, then pool1 (/4)               64           2b
enc 2      2, then pool2 (/8)               128          4b
enc 3      4, then pool3 (/16)              256          8b
fc / defc  dense + ReLU, dense + ReLU       4096, 16384  ``fc_dim``, flat
dec 3      unpool3, 4 convs                 64,64,64,128 2b,2b,2b,4b
dec 2      unpool2, 2 convs                 64, 64       2b, 2b
dec 1      unpool1, 2 convs                 64, 32       2b, b
dec 0      unpool0, 2 convs, 3x3 conv -> 3  32, 32, 3    b, b, 3
=========  ===============================  ===========  =================

Each decoder level ends with as many channels as the pooling it unpools
(required by max-unpooling). Choices where the paper is vague or fixed to
128 px:

* **Input size**: any H, W divisible by 16 (four poolings), from 16 px up;
  the release is fixed at 128 px (8 x 8 at the bottleneck). The dense layers
  tie the parameters to the resolution used at ``init``.
* **Bottleneck width** ``fc_dim``: default ``None`` keeps the release's ratio
  4096 / 16384 = 1/4 of the flattened pool3 features (at least 1).
* **Input**: the project's convention ``[X * (1 - M) + fill * M, M]`` (image +
  mask channel, 4 channels). GFC feeds 3 channels with the hole filled with
  uniform noise in [-1, 1]: pass ``fill=`` :func:`noise_fill` for that; the
  default fill is 0.
* **Output**: the release's last layer is linear; we clip to [-1, 1] as the
  project's generator does. :func:`~deocc_jax.models.generator.complete`
  composites the output into the hole.
* **Initialisation**: Caffe's ``msra`` with ``variance_norm: AVERAGE`` (normal,
  variance ``2 / fan_avg``) for every layer but the last (normal, std 0.001),
  as in the release. GFC initialises the VGG-19 layers from ImageNet weights;
  none are loaded here.
* No normalisation layers (none in the release), so samples are independent.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

#: (convs per encoder block, width multiplier of ``base``), blocks 0..3.
ENCODER = ((2, 1), (2, 2), (2, 4), (4, 8))
#: decoder convs per level 3..0, as width multipliers; the last of each level
#: matches the pooling it unpools next (or ``base`` before the output conv).
DECODER = ((2, 2, 2, 4), (2, 2), (2, 1), (1, 1))
DOWNSAMPLING = 16

_msra_avg = nn.initializers.variance_scaling(2.0, "fan_avg", "normal")


def check_gfc_inputs(x: jax.Array, mask: jax.Array) -> None:
  """Validate an NHWC image batch and its (B, H, W, 1) mask for :class:`GFCGenerator`."""
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"x must have shape (B, H, W, 3), got {x.shape}")
  b, h, w, _ = x.shape
  if mask.shape != (b, h, w, 1):
    raise ValueError(f"mask must have shape {(b, h, w, 1)} to match x {x.shape}, got {mask.shape}")
  if h % DOWNSAMPLING or w % DOWNSAMPLING:
    raise ValueError(
        f"GFCGenerator needs H and W divisible by {DOWNSAMPLING} (four 2x2 poolings), "
        f"got x shape {x.shape}"
    )


def max_pool_with_switches(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """2x2 stride-2 max pooling that also returns the switches.

  Returns ``(pooled, switches)``, both (B, H/2, W/2, C); ``switches`` (int32 in
  [0, 4)) is the row-major index ``2 dy + dx`` of the window's maximum, the
  first one on ties (Caffe's and PyTorch's rule).
  """
  b, h, w, c = x.shape
  win = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
  win = win.reshape(b, h // 2, w // 2, c, 4)
  idx = jnp.argmax(win, axis=-1).astype(jnp.int32)
  pooled = jnp.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
  return pooled, idx


def max_unpool(y: jax.Array, switches: jax.Array) -> jax.Array:
  """Inverse of :func:`max_pool_with_switches`: (B, h, w, C) -> (B, 2h, 2w, C),
  each value at its switch position, zeros elsewhere."""
  chex.assert_equal_shape([y, switches])
  b, h, w, c = y.shape
  out = jax.nn.one_hot(switches, 4, dtype=y.dtype) * y[..., None]
  out = out.reshape(b, h, w, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
  return out.reshape(b, 2 * h, 2 * w, c)


def noise_fill(key: jax.Array, x: jax.Array) -> jax.Array:
  """GFC's hole content: uniform noise in [-1, 1) with the shape of ``x``."""
  return jax.random.uniform(key, x.shape, jnp.float32, -1.0, 1.0)


class GFCGenerator(nn.Module):
  """GFC's encoder-decoder ``G(X, M)`` (see the module docstring).

  Attributes:
    base: width of the first block (32 in the release).
    fc_dim: bottleneck width; ``None`` = a quarter of the flattened pool3 size.
    dtype: compute dtype (params stay float32).
  """

  base: int = 32
  fc_dim: int | None = None
  dtype: Dtype = jnp.float32

  def _conv(self, features: int, name: str, last: bool = False) -> nn.Conv:
    return nn.Conv(
        features,
        (3, 3),
        padding="SAME",
        dtype=self.dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(1e-3) if last else _msra_avg,
        name=name,
    )

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, fill: jax.Array | None = None) -> jax.Array:
    """(B, H, W, 3) image in [-1, 1], (B, H, W, 1) mask (1 = hole), optional
    (B, H, W, 3) hole content -> (B, H, W, 3) output in [-1, 1] (float32)."""
    check_gfc_inputs(x, mask)
    if fill is not None:
      chex.assert_equal_shape([fill, x])
    m = mask.astype(jnp.float32)
    xin = x.astype(jnp.float32) * (1.0 - m)
    if fill is not None:
      xin = xin + fill.astype(jnp.float32) * m
    h = jnp.concatenate([xin, m], axis=-1).astype(self.dtype)
    b = self.base
    switches = []
    for i, (n, mult) in enumerate(ENCODER):
      for j in range(n):
        h = nn.relu(self._conv(b * mult, f"enc{i}_conv{j + 1}")(h))
      h, s = max_pool_with_switches(h)
      switches.append(s)
    bottom_shape = h.shape[1:]
    flat = h.reshape(h.shape[0], -1)
    fc_dim = self.fc_dim if self.fc_dim is not None else max(flat.shape[-1] // 4, 1)
    dense = lambda f, name: nn.Dense(  # noqa: E731
        f, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_msra_avg, name=name
    )
    z = nn.relu(dense(fc_dim, "fc")(flat))
    h = nn.relu(dense(flat.shape[-1], "defc")(z)).reshape(h.shape[0], *bottom_shape)
    for level, mults in zip((3, 2, 1, 0), DECODER):
      h = max_unpool(h, switches[level])
      for j, mult in enumerate(mults):
        h = nn.relu(self._conv(b * mult, f"dec{level}_conv{j + 1}")(h))
    out = self._conv(3, "out", last=True)(h).astype(jnp.float32)
    out = jnp.clip(out, -1.0, 1.0)
    chex.assert_shape(out, x.shape)
    return out
