"""The student: ResNet-18 + a single embedding layer (+ optional classifier).

Paper section 3.4: "The student network is composed of a ResNet-18 model with
a single embedding layer on top." ``features`` is the pooled backbone output
(the paper's phi-hat), ``embedding`` the embedding layer's output used by the
relational losses and for recognition, ``logits`` the optional identity
classifier for L_CE. Batch-norm statistics live in the ``batch_stats``
collection (pass ``train=True`` with ``mutable=['batch_stats']``).
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class BasicBlock(nn.Module):
  """Two 3x3 convs with batch norm; projection shortcut on a shape change."""
  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,  # noqa: E731
                                     epsilon=1e-5, dtype=self.dtype, name=name)
    y = nn.Conv(self.features, (3, 3), (self.strides, self.strides), padding=((1, 1), (1, 1)),
                use_bias=False, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(norm("bn1")(y))
    y = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                dtype=self.dtype, name="conv2")(y)
    y = norm("bn2")(y)
    if x.shape[-1] != self.features or self.strides != 1:
      x = nn.Conv(self.features, (1, 1), (self.strides, self.strides), use_bias=False,
                  dtype=self.dtype, name="shortcut_conv")(x)
      x = norm("shortcut_bn")(x)
    return nn.relu(x + y)


class ResNet18Student(nn.Module):
  """ResNet-18 student.

  Attributes:
    embed_dim: size of the embedding layer (default 512).
    num_classes: identities of the classifier head (None = no head).
    width: channel multiplier (1.0 = the real ResNet-18: 64-128-256-512).
    small_input_stem: 3x3 stride-1 stem without max-pool (for 32-64 px
      faces) instead of the ImageNet 7x7 stride-2 stem + 3x3 max-pool.
    stage_sizes: blocks per stage ([2, 2, 2, 2] for ResNet-18).
    dtype: compute dtype (parameters stay float32).
  """
  embed_dim: int = 512
  num_classes: int | None = None
  width: float = 1.0
  small_input_stem: bool = False
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    chex.assert_rank(x, 4)
    if x.shape[-1] != 3:
      raise ValueError(f"ResNet18Student expects (B, H, W, 3) images, got {x.shape}")
    w = lambda c: max(8, int(round(c * self.width)))  # noqa: E731
    h = x.astype(self.dtype)
    if self.small_input_stem:
      h = nn.Conv(w(64), (3, 3), padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
                  name="stem_conv")(h)
    else:
      h = nn.Conv(w(64), (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                  dtype=self.dtype, name="stem_conv")(h)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="stem_bn")(h)
    h = nn.relu(h)
    if not self.small_input_stem:
      h = nn.max_pool(h, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for i, n in enumerate(self.stage_sizes):
      for j in range(n):
        h = BasicBlock(w(64 * 2**i), strides=2 if i > 0 and j == 0 else 1, dtype=self.dtype,
                       name=f"stage{i + 1}_block{j + 1}")(h, train)
    features = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
    emb = nn.Dense(self.embed_dim, dtype=self.dtype, name="embedding")(features)
    out = {"features": features, "embedding": emb.astype(jnp.float32)}
    if self.num_classes is not None:
      out["logits"] = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(
          emb).astype(jnp.float32)
    chex.assert_shape(out["embedding"], (x.shape[0], self.embed_dim))
    return out
