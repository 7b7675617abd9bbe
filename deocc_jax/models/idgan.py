"""IDGAN's inpainting generator (Ge, Li, Zhao, Zeng, "Occluded Face Recognition in the
Wild by Identity-Diversity Inpainting", IEEE TCSVT 2020).

IDGAN pairs an inpainting generator, trained with global and local
adversarial losses, with a recogniser supplying an identity-diversity loss
(:mod:`deocc_jax.losses.idgan`). The generator's exact architecture is not
available to us, so we use the completion network of the global/local
framework IDGAN builds on (Iizuka, Simo-Serra, Ishikawa, "Globally and Locally
Consistent Image Completion", SIGGRAPH 2017, Table 1), widths scaled by
``base`` (GLCIC: 64):

* 5x5 conv b; 3x3 stride-2 conv 2b; 3x3 conv 2b; 3x3 stride-2 conv 4b;
  two 3x3 convs 4b;
* four dilated 3x3 convs 4b at rates 2, 4, 8, 16; two 3x3 convs 4b;
* 4x4 stride-2 transposed conv 2b; 3x3 conv 2b; 4x4 stride-2 transposed
  conv b; 3x3 conv b/2; 3x3 conv to 3, ``tanh`` (GLCIC: sigmoid on [0, 1]
  images; ours are in [-1, 1]).

Choices: ReLU after every layer but the output, as GLCIC, but *no* batch
normalisation (GLCIC has it) so that samples are independent and the module
is a pure function of its parameters; the input is the project's
``[X * (1 - M), M]`` (GLCIC fills the hole with the mean pixel value);
H and W must be multiples of 4. The output is composited into the hole by
:func:`~deocc_jax.models.generator.complete`.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

DILATIONS = (2, 4, 8, 16)


def check_idgan_inputs(x: jax.Array, mask: jax.Array) -> None:
  """Validate an NHWC image batch and its (B, H, W, 1) mask for :class:`IDGANGenerator`."""
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"x must have shape (B, H, W, 3), got {x.shape}")
  b, h, w, _ = x.shape
  if mask.shape != (b, h, w, 1):
    raise ValueError(f"mask must have shape {(b, h, w, 1)} to match x {x.shape}, got {mask.shape}")
  if h % 4 or w % 4 or h < 4 or w < 4:
    raise ValueError(
        f"IDGANGenerator needs H and W divisible by 4 (two stride-2 convs), got x shape {x.shape}"
    )


class IDGANGenerator(nn.Module):
  """GLCIC-style completion network ``G(X, M)`` (see the module docstring).

  Attributes:
    base: width of the first layer (64 in GLCIC); must be even.
    dtype: compute dtype (params stay float32).
  """

  base: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, H, W, 3) image in [-1, 1], (B, H, W, 1) mask -> (B, H, W, 3) in [-1, 1]."""
    check_idgan_inputs(x, mask)
    if self.base % 2:
      raise ValueError(f"base must be even, got {self.base}")
    b = self.base

    def conv(h, f, k, name, stride=1, rate=1):
      return nn.Conv(
          f,
          (k, k),
          strides=(stride, stride),
          kernel_dilation=(rate, rate),
          padding="SAME",
          dtype=self.dtype,
          param_dtype=jnp.float32,
          name=name,
      )(h)

    def deconv(h, f, name):
      return nn.ConvTranspose(
          f,
          (4, 4),
          strides=(2, 2),
          padding="SAME",
          dtype=self.dtype,
          param_dtype=jnp.float32,
          name=name,
      )(h)

    m = mask.astype(jnp.float32)
    h = jnp.concatenate([x.astype(jnp.float32) * (1.0 - m), m], axis=-1).astype(self.dtype)
    h = nn.relu(conv(h, b, 5, "conv1"))
    h = nn.relu(conv(h, 2 * b, 3, "conv2", stride=2))
    h = nn.relu(conv(h, 2 * b, 3, "conv3"))
    h = nn.relu(conv(h, 4 * b, 3, "conv4", stride=2))
    h = nn.relu(conv(h, 4 * b, 3, "conv5"))
    h = nn.relu(conv(h, 4 * b, 3, "conv6"))
    for i, r in enumerate(DILATIONS):
      h = nn.relu(conv(h, 4 * b, 3, f"dilated{i + 1}", rate=r))
    h = nn.relu(conv(h, 4 * b, 3, "conv7"))
    h = nn.relu(conv(h, 4 * b, 3, "conv8"))
    h = nn.relu(deconv(h, 2 * b, "deconv1"))
    h = nn.relu(conv(h, 2 * b, 3, "conv9"))
    h = nn.relu(deconv(h, b, "deconv2"))
    h = nn.relu(conv(h, b // 2, 3, "conv10"))
    out = jnp.tanh(conv(h, 3, 3, "out").astype(jnp.float32))
    chex.assert_shape(out, x.shape)
    return out
