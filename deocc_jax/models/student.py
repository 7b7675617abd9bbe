"""Student network: ResNet-18 with a single embedding layer (paper Sec. 3.4).

``phi_s`` = ResNet-18 (BasicBlock x [2, 2, 2, 2], widths 64-128-256-512 times
``width``) -> global average pool (returned as ``'features'``) -> one ``Dense``
embedding layer (``'embedding'``, sized like the teacher's embedding) ->
optional classifier (``'logits'``; over the teacher's classes for the paper's
``L_CE``, ``training/distillation_stage.py``).

The relational losses of Eqs. 12-17 act on ``'embedding'`` (``s_i``), not on
``'features'``: the instance terms compare ``s_i`` with the teacher's
embedding ``t_i`` coordinate by coordinate, so ``s_i`` must have the teacher's
dimension. (The paper's text calls ``phi-hat_s`` "the layers before the
embedding layer"; with a 2,048-d VGGFace2 teacher and a 512-d ResNet-18 pool
that reading leaves Eq. 12 undefined, so the embedding layer's output is used.)

Layout follows torchvision's ``resnet18`` (explicit torch paddings: 7x7/s2
pad 3, max-pool 3x3/s2 pad 1, 3x3 convs pad 1, 1x1/s2 projection shortcuts
with BatchNorm), so weights can be copied one-to-one. ``small_input_stem``
replaces the stem by a 3x3 stride-1 conv without max-pool (CIFAR-style, for
32-64 px inputs).

BatchNorm statistics live in the ``'batch_stats'`` collection: call with
``train=True`` and ``mutable=['batch_stats']`` to use and update batch
statistics (momentum 0.9 = torch's 0.1; note flax updates the running variance
with the biased batch variance, torch with the unbiased one), ``train=False``
to use the running averages. Inputs: NHWC images in ``[-1, 1]``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torch kaiming_normal_


class BasicBlock(nn.Module):
  """ResNet BasicBlock: conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = partial(
        nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_conv_init
    )
    norm = partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=self.bn_momentum,
        epsilon=1e-5,
        dtype=self.dtype,
        param_dtype=jnp.float32,
    )
    s = self.strides
    y = conv(self.features, (3, 3), (s, s), padding=((1, 1), (1, 1)), name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.features, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
    y = norm(name="bn2")(y)
    if s != 1 or x.shape[-1] != self.features:
      x = conv(self.features, (1, 1), (s, s), padding="VALID", name="down_conv")(x)
      x = norm(name="down_bn")(x)
    return nn.relu(x + y)


class ResNet18Student(nn.Module):
  """ResNet-18 + embedding (+ classifier) student ``phi_s`` of Sec. 3.3-3.4.

  Attributes:
    embedding_dim: size of the single embedding layer (default 512).
    num_classes: classifier outputs, ``None`` = no classifier head.
    width: channel multiplier of the (64, 128, 256, 512) stage widths.
    small_input_stem: 3x3 s1 stem without max-pool (32-64 px) instead of the
      ImageNet 7x7 s2 + max-pool stem.
    dtype: compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and
      the outputs are returned in float32.
    stage_sizes: blocks per stage.
  """

  embedding_dim: int = 512
  num_classes: int | None = None
  width: float = 1.0
  small_input_stem: bool = False
  dtype: Dtype = jnp.float32
  stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
  bn_momentum: float = 0.9

  def stage_widths(self) -> tuple[int, ...]:
    return tuple(max(1, int(round(64 * self.width * 2**i))) for i in range(len(self.stage_sizes)))

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Returns ``{'features': (B, C), 'embedding': (B, E)[, 'logits': (B, K)]}``."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(
          f"ResNet18Student: `images` must be NHWC (B, H, W, 3) in [-1, 1], "
          f"got shape {images.shape}"
      )
    if self.embedding_dim < 1:
      raise ValueError(f"ResNet18Student: `embedding_dim` must be >= 1, got {self.embedding_dim}")
    if self.num_classes is not None and self.num_classes < 1:
      raise ValueError(
          f"ResNet18Student: `num_classes` must be >= 1 or None, got " f"{self.num_classes}"
      )
    b = images.shape[0]
    widths = self.stage_widths()
    x = images.astype(self.dtype)
    conv = partial(
        nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_conv_init
    )
    if self.small_input_stem:
      x = conv(widths[0], (3, 3), padding=((1, 1), (1, 1)), name="stem_conv")(x)
    else:
      x = conv(widths[0], (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="stem_conv")(x)
    x = nn.BatchNorm(
        use_running_average=not train,
        momentum=self.bn_momentum,
        epsilon=1e-5,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name="stem_bn",
    )(x)
    x = nn.relu(x)
    if not self.small_input_stem:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, (n_blocks, feats) in enumerate(zip(self.stage_sizes, widths)):
      for j in range(n_blocks):
        strides = 2 if (i > 0 and j == 0) else 1
        x = BasicBlock(
            feats, strides, dtype=self.dtype, bn_momentum=self.bn_momentum, name=f"layer{i + 1}_{j}"
        )(x, train)
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    chex.assert_shape(features, (b, widths[-1]))
    emb = nn.Dense(self.embedding_dim, dtype=self.dtype, param_dtype=jnp.float32, name="embedding")(
        features.astype(self.dtype)
    )
    out = {"features": features, "embedding": emb.astype(jnp.float32)}
    chex.assert_shape(out["embedding"], (b, self.embedding_dim))
    if self.num_classes is not None:
      logits = nn.Dense(
          self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="classifier"
      )(emb)
      out["logits"] = logits.astype(jnp.float32)
      chex.assert_shape(out["logits"], (b, self.num_classes))
    return out
