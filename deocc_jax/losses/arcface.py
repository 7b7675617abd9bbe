"""ArcFace (additive angular margin, Deng et al. 2019) training of a teacher.

The teacher of the synthetic default (no real teacher has seen those faces)
and the "fine-tuned ArcFace" baseline of the paper's Table 2. The head keeps
an L2-normalised weight per class; the target logit is
``s * cos(theta + m)`` and the others ``s * cos(theta)``. Where
``theta + m > pi`` the target logit falls back to ``s * (cos(theta) - m sin(m))``
(keeps the logit monotonic in theta, as in the reference implementations).
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))


class ArcFaceHead(nn.Module):
  """Cosine logits ``cos(theta_c)`` of normalised embeddings vs class weights."""

  num_classes: int

  @nn.compact
  def __call__(self, embeddings: jax.Array) -> jax.Array:
    chex.assert_rank(embeddings, 2)
    w = self.param(
        "weight",
        nn.initializers.normal(0.01),
        (embeddings.shape[-1], self.num_classes),
        jnp.float32,
    )
    e = l2_normalize(embeddings.astype(jnp.float32))
    return jnp.clip(e @ l2_normalize(w, axis=0), -1.0, 1.0)


def arcface_logits(
    cosines: jax.Array, labels: jax.Array, scale: float = 30.0, margin: float = 0.5
) -> jax.Array:
  """Applies the additive angular margin to the target class."""
  chex.assert_rank(cosines, 2)
  chex.assert_shape(labels, (cosines.shape[0],))
  sin = jnp.sqrt(jnp.clip(1.0 - cosines**2, 1e-9, 1.0))
  cos_m = cosines * math.cos(margin) - sin * math.sin(margin)  # cos(theta + m)
  fallback = cosines - math.sin(math.pi - margin) * margin  # theta + m > pi
  target = jnp.where(cosines > math.cos(math.pi - margin), cos_m, fallback)
  onehot = jax.nn.one_hot(labels, cosines.shape[1], dtype=cosines.dtype)
  return scale * (onehot * target + (1.0 - onehot) * cosines)


def arcface_loss(
    cosines: jax.Array, labels: jax.Array, scale: float = 30.0, margin: float = 0.5
) -> jax.Array:
  """Mean softmax cross-entropy of the margin logits."""
  logits = arcface_logits(cosines, labels, scale, margin)
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))
