"""Adversarial objectives for the global/local critics, paper Sec. 3.2, Eq. 8.

Two kinds, selected by name:

* ``'gan'``: the paper's log-loss (Eq. 8) on logits, in the numerically stable
  softplus form: ``-log sigmoid(z) = softplus(-z)``, ``-log(1 - sigmoid(z)) =
  softplus(z)``. The critic minimises ``softplus(-D(Y)) + softplus(D(G))``; the
  generator uses the non-saturating ``softplus(-D(G))``.
* ``'wgan_gp'``: DeepFill v1's WGAN-GP: critic ``mean(D(G)) - mean(D(Y))``,
  generator ``-mean(D(G))``; add ``lambda * gradient_penalty(...)`` (lambda = 10)
  to the critic loss. :func:`gradient_penalty` weights the input gradient by the
  ``mask`` it is given; the de-occlusion stage passes the hole for both critics
  (the image mask for the global critic, the mask cropped and resized with the
  local patch for the local one), as DeepFill v1 does.
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

ADVERSARIAL_KINDS = ("gan", "wgan_gp")
WGAN_GP_LAMBDA = 10.0


def _check_kind(kind: str) -> None:
  if kind not in ADVERSARIAL_KINDS:
    raise ValueError(f"kind must be one of {ADVERSARIAL_KINDS}, got {kind!r}")


def discriminator_loss(kind: str, d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
  """Critic loss (to minimise) from per-sample outputs on real and fake images (Eq. 8)."""
  _check_kind(kind)
  d_real = jnp.asarray(d_real, jnp.float32)
  d_fake = jnp.asarray(d_fake, jnp.float32)
  if kind == "gan":
    return jnp.mean(jax.nn.softplus(-d_real)) + jnp.mean(jax.nn.softplus(d_fake))
  return jnp.mean(d_fake) - jnp.mean(d_real)


def generator_adversarial_loss(kind: str, d_fake: jax.Array) -> jax.Array:
  """Generator loss: non-saturating ``-log D(G)`` for 'gan', ``-mean D(G)`` for 'wgan_gp'."""
  _check_kind(kind)
  d_fake = jnp.asarray(d_fake, jnp.float32)
  if kind == "gan":
    return jnp.mean(jax.nn.softplus(-d_fake))
  return -jnp.mean(d_fake)


def random_interpolates(real: jax.Array, fake: jax.Array, key: jax.Array) -> jax.Array:
  """``real + alpha * (fake - real)`` with one ``alpha ~ U[0, 1)`` per sample."""
  chex.assert_equal_shape([real, fake])
  alpha = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), jnp.float32)
  return real + alpha * (fake - real)


def gradient_penalty(
    critic_fn: Callable[[jax.Array], jax.Array],
    real: jax.Array,
    fake: jax.Array,
    mask: jax.Array | None,
    key: jax.Array,
    norm: float = 1.0,
) -> jax.Array:
  """DeepFill's ``gradients_penalty`` with mask, on random interpolates.

  ``slopes_i = sqrt(sum_{h,w,c} (dD(x_i)/dx)^2 * M_i)``, penalty ``mean_i (slopes_i - norm)^2``
  (for a binary mask this is ``||grad * M||_2``). ``critic_fn`` maps (B, H, W, C)
  to per-sample scores (B,) or (B, 1) and must treat samples independently.
  ``mask`` (B, H, W, 1) or None (whole image). A 1e-12 inside the square root
  keeps the gradient finite when the slope is 0. Multiply by ``WGAN_GP_LAMBDA``.
  """
  chex.assert_rank([real, fake], 4)
  chex.assert_equal_shape([real, fake])
  if mask is not None and mask.shape != (*real.shape[:3], 1):
    raise ValueError(f"mask must have shape {(*real.shape[:3], 1)}, got {mask.shape}")
  x = random_interpolates(jax.lax.stop_gradient(real), jax.lax.stop_gradient(fake), key)
  grads = jax.grad(lambda z: jnp.sum(critic_fn(z)))(x)
  sq = jnp.square(grads.astype(jnp.float32))
  if mask is not None:
    sq = sq * mask.astype(jnp.float32)
  slopes = jnp.sqrt(jnp.sum(sq, axis=(1, 2, 3)) + 1e-12)
  return jnp.mean(jnp.square(slopes - norm))
