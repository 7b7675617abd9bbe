"""GFC's objectives (Li, Liu, Yang, Yang, "Generative Face Completion", CVPR 2017, Sec. 3.2).

``L = L_r + lambda_a1 L_a1 + lambda_a2 L_a2 + lambda_p L_p``:

* ``L_r``: reconstruction, the L2 distance between the generator's output and
  the clean face over the whole image (:func:`l2_reconstruction_loss`, mean of
  squared differences over every pixel and channel). The paper names L2; the
  released training script (``demo_GFC_training.m``) uses a Charbonnier L1
  instead; we follow the paper.
* ``L_a1`` / ``L_a2``: the local (hole patch) and global (whole completed
  image) adversarial terms, the standard GAN log-loss. They reuse the
  project's :mod:`deocc_jax.losses.adversarial` (kind ``'gan'``: critic
  ``softplus(-D(Y)) + softplus(D(G))``, generator the non-saturating
  ``softplus(-D(G))``) and the project's critics and hole-box crops
  (:mod:`deocc_jax.models.critics`) in place of GFC's DCGAN-like
  discriminators (see ``docs/completion_baselines.md``).
* ``L_p``: the semantic parsing loss, a pixel-wise softmax cross-entropy
  between a frozen parsing network's logits on the *completed* face and the
  parsing labels of the clean face (:func:`semantic_parsing_loss`).

Weights (:class:`GFCWeights`): the release's ``gradstack.m`` uses
``lambda_a1 = lambda_a2 = 300`` and ``lambda_p = 0.05`` on losses that are
sums over a 128 x 128 image (x 3 channels for ``L_r``) divided by the batch.
Here every term is a per-element mean, so the defaults are those weights
rescaled: ``300 / (3 * 128**2)`` for each adversarial term and
``0.05 * 128**2 / (3 * 128**2) = 0.05 / 3`` for parsing. The paper trains in
three stages (``L_r`` alone, then + ``L_a1``, then + ``L_a2`` and ``L_p``); a
stage does that by setting weights to 0.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from deocc_jax.losses import adversarial as adv

_RELEASE_PIXELS = 128 * 128


class GFCWeights(NamedTuple):
  """Weights of GFC's generator objective (defaults: the release's, per-element)."""

  reconstruction: float = 1.0
  adv_local: float = 300.0 / (3 * _RELEASE_PIXELS)
  adv_global: float = 300.0 / (3 * _RELEASE_PIXELS)
  parsing: float = 0.05 / 3


def l2_reconstruction_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """GFC's ``L_r``: mean squared error over all pixels and channels."""
  chex.assert_rank([pred, target], 4)
  chex.assert_equal_shape([pred, target])
  d = pred.astype(jnp.float32) - target.astype(jnp.float32)
  return jnp.mean(d * d)


def pixel_cross_entropy(
    logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
  """Mean pixel-wise softmax cross-entropy ``-log softmax(logits)[label]``.

  Args:
    logits: (B, H, W, K).
    labels: (B, H, W) integer classes in ``[0, K)``.
    weights: optional (B, H, W) non-negative pixel weights; the loss is then
      ``sum(w * ce) / max(sum(w), 1e-8)`` (e.g. the hole only).
  """
  if logits.ndim != 4:
    raise ValueError(f"logits must be (B, H, W, K), got shape {logits.shape}")
  if labels.shape != logits.shape[:3]:
    raise ValueError(f"labels must have shape {logits.shape[:3]}, got {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  ce = -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  if weights is None:
    return jnp.mean(ce)
  if weights.shape != labels.shape:
    raise ValueError(f"weights must have shape {labels.shape}, got {weights.shape}")
  w = weights.astype(jnp.float32)
  return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-8)


def semantic_parsing_loss(
    completed_logits: jax.Array, clean_labels: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
  """GFC's ``L_p``: cross-entropy of the frozen parser's logits on the completed
  face against the clean face's parsing labels (:func:`pixel_cross_entropy`).

  The parser's parameters are frozen by the caller (pass them through
  ``jax.lax.stop_gradient``); gradients reach the generator through the
  completed image only.
  """
  return pixel_cross_entropy(completed_logits, clean_labels, weights)


def gfc_generator_loss(
    pred: jax.Array,
    target: jax.Array,
    d_global_fake: jax.Array,
    d_local_fake: jax.Array,
    completed_logits: jax.Array,
    clean_labels: jax.Array,
    weights: GFCWeights = GFCWeights(),
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """``L_r + lambda_a1 L_a1 + lambda_a2 L_a2 + lambda_p L_p``; returns ``(total, terms)``.

  ``pred`` is the raw generator output (``L_r`` is over the whole image, as in
  GFC), ``d_*_fake`` the critics' logits (B,) on the completed image and its
  hole patch, ``completed_logits`` the frozen parser's logits on the
  completed image.
  """
  rec = l2_reconstruction_loss(pred, target)
  a_l = adv.generator_adversarial_loss("gan", d_local_fake)
  a_g = adv.generator_adversarial_loss("gan", d_global_fake)
  par = semantic_parsing_loss(completed_logits, clean_labels)
  total = (
      weights.reconstruction * rec
      + weights.adv_local * a_l
      + weights.adv_global * a_g
      + weights.parsing * par
  )
  return total, {
      "reconstruction": rec,
      "adv_local": a_l,
      "adv_global": a_g,
      "parsing": par,
      "total": total,
  }


def gfc_critic_loss(
    d_global_real: jax.Array,
    d_global_fake: jax.Array,
    d_local_real: jax.Array,
    d_local_fake: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Both critics' log-loss (``adversarial.discriminator_loss('gan', ...)``), summed."""
  lg = adv.discriminator_loss("gan", d_global_real, d_global_fake)
  ll = adv.discriminator_loss("gan", d_local_real, d_local_fake)
  return lg + ll, {"global": lg, "local": ll, "total": lg + ll}
