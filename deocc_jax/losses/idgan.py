"""IDGAN's objectives (Ge, Li, Zhao, Zeng, "Occluded Face Recognition in the Wild by
Identity-Diversity Inpainting", IEEE TCSVT 2020).

What the paper specifies (abstract, and the host paper's Sec. 2.2 / 4.4):
an inpainting GAN with global and local adversarial training, plus a
pre-trained CNN recogniser as a "third player" whose identity-centred
features supervise the inpainting so that inpainted faces cluster towards
their identity centres while different identities stay apart
("identity diversity"). The exact loss forms and weights are not available
to us; the forms below are our choice (``docs/completion_baselines.md``):

* reconstruction: mean L1 over the whole image (the host paper's Eq. 7,
  :func:`deocc_jax.losses.reconstruction.l1_loss`);
* global / local adversarial: the project's log-loss GAN
  (:mod:`deocc_jax.losses.adversarial`, kind ``'gan'``);
* identity preservation (:func:`identity_preservation_loss`):
  ``mean_i (1 - cos(e(G_i), t_i))`` with ``e`` the frozen recogniser's
  embedding of the completed face and ``t_i`` the clean face's embedding
  (or a precomputed identity centre, IDGAN's identity-centred features);
* identity diversity (:func:`identity_diversity_loss`): over all in-batch
  pairs ``i < j`` whose identity labels differ,
  ``mean max(0, cos(e(G_i), e(G_j)) - margin)``, 0 when no such pair.

:func:`idgan_generator_loss` sums them with :class:`IDGANWeights` (untuned
defaults, ours).
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from deocc_jax.losses import adversarial as adv
from deocc_jax.losses.reconstruction import l1_loss

_EPS = 1e-12


class IDGANWeights(NamedTuple):
  """Weights of the IDGAN-style generator objective (our defaults, not the paper's)."""

  reconstruction: float = 1.0
  adv_local: float = 1e-3
  adv_global: float = 1e-3
  identity: float = 0.1
  diversity: float = 0.1
  margin: float = 0.2


def _unit(e: jax.Array) -> jax.Array:
  e = e.astype(jnp.float32)
  return e * jax.lax.rsqrt(jnp.maximum(jnp.sum(e * e, axis=-1, keepdims=True), _EPS))


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Row-wise cosine similarity of (B, D) embeddings -> (B,)."""
  chex.assert_rank([a, b], 2)
  chex.assert_equal_shape([a, b])
  return jnp.sum(_unit(a) * _unit(b), axis=-1)


def identity_preservation_loss(emb_completed: jax.Array, emb_target: jax.Array) -> jax.Array:
  """``mean_i (1 - cos(emb_completed_i, emb_target_i))``; the target is frozen by the caller."""
  return jnp.mean(1.0 - cosine_similarity(emb_completed, emb_target))


def identity_diversity_loss(
    emb_completed: jax.Array, labels: jax.Array, margin: float = 0.2
) -> jax.Array:
  """Hinge on the cosine similarity of completions of *different* identities.

  ``sum_{i<j, y_i != y_j} max(0, cos(e_i, e_j) - margin) / #{i<j, y_i != y_j}``
  (0 when every sample has the same label). Vectorised over the (B, B) Gram
  matrix.
  """
  chex.assert_rank(emb_completed, 2)
  b = emb_completed.shape[0]
  if labels.shape != (b,):
    raise ValueError(f"labels must have shape {(b,)}, got {labels.shape}")
  u = _unit(emb_completed)
  sim = u @ u.T
  pair = (labels[:, None] != labels[None, :]) & jnp.triu(jnp.ones((b, b), bool), k=1)
  pair = pair.astype(jnp.float32)
  hinge = jnp.maximum(sim - margin, 0.0)
  return jnp.sum(hinge * pair) / jnp.maximum(jnp.sum(pair), 1.0)


def idgan_generator_loss(
    completed: jax.Array,
    target: jax.Array,
    d_global_fake: jax.Array,
    d_local_fake: jax.Array,
    emb_completed: jax.Array,
    emb_target: jax.Array,
    labels: jax.Array,
    weights: IDGANWeights = IDGANWeights(),
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Reconstruction + adversarial (global, local) + identity preservation + diversity.

  ``completed`` is the generator output used for the L1 (the caller chooses
  raw or composited), ``emb_*`` (B, D) the frozen recogniser's embeddings,
  ``labels`` (B,) identity labels. Returns ``(total, terms)``.
  """
  rec = l1_loss(completed, target)
  a_l = adv.generator_adversarial_loss("gan", d_local_fake)
  a_g = adv.generator_adversarial_loss("gan", d_global_fake)
  ident = identity_preservation_loss(emb_completed, jax.lax.stop_gradient(emb_target))
  div = identity_diversity_loss(emb_completed, labels, weights.margin)
  total = (
      weights.reconstruction * rec
      + weights.adv_local * a_l
      + weights.adv_global * a_g
      + weights.identity * ident
      + weights.diversity * div
  )
  return total, {
      "reconstruction": rec,
      "adv_local": a_l,
      "adv_global": a_g,
      "identity": ident,
      "diversity": div,
      "total": total,
  }
