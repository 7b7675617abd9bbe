"""Reconstruction losses for the generator, paper Sec. 3.2, Eq. 7.

Two kinds, selected by name in :func:`reconstruction_loss`:

* ``'l1'``: Eq. 7, ``mean |G(X, M) - Y|`` over all pixels of the refined output.
* ``'deepfill'``: DeepFill v1's loss. With ``w`` the spatial discounting weights
  (:func:`spatial_discounting_weights`) and ``a = coarse_alpha`` (1.2):

  - ``l1 = a * mean_hole(w |Y - coarse|) + mean_hole(w |Y - refined|)``,
    ``mean_hole`` = sum over hole pixels and channels / (C * #hole pixels);
  - ``ae = (a * sum((1-M) |Y - coarse|) + sum((1-M) |Y - refined|)) / (C * sum(1-M))``
    (DeepFill's ``reduce_mean(|.| (1-M)) / reduce_mean(1-M)``);
  - ``total = l1_alpha * l1 + ae_alpha * ae`` (both 1.2 in DeepFill's config).

Choices for the spatial discounting (documented deviation): DeepFill v1 builds
one fixed ``HEIGHT x WIDTH`` map for the local box, ``max(gamma**min(i, H-i),
gamma**min(j, W-j))``, and averages over that box. Here the map is computed per
sample from the actual mask: a hole pixel gets ``gamma ** d`` with ``d`` >= 1 the
Chebyshev (8-neighbour) distance to the nearest known pixel inside the image
(pixels outside the image do not count as known), known pixels get 0, and the
average is over the hole. For a box hole this equals DeepFill's map on its
bottom/right half; on the top/left half DeepFill's ``min(i, H - i)`` counts
from 0, i.e. is one power of gamma larger there (an off-by-one asymmetry we do
not reproduce). A fully masked image has no known pixel; its distance is
capped at ``max(H, W)``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

RECONSTRUCTION_KINDS = ("l1", "deepfill")


def l1_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Eq. 7: mean absolute error."""
  chex.assert_equal_shape([pred, target])
  return jnp.mean(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def spatial_discounting_weights(mask: jax.Array, gamma: float = 0.9) -> jax.Array:
  """Per-sample spatial discounting map (B, H, W, 1): ``gamma ** d`` in the hole, 0 outside.

  ``d`` = Chebyshev distance from a hole pixel to the nearest known pixel
  (computed by repeated 3x3 erosion of the hole; see the module docstring).
  No gradient flows to ``mask``.
  """
  chex.assert_rank(mask, 4)
  chex.assert_axis_dimension(mask, 3, 1)
  hole = (jax.lax.stop_gradient(mask) > 0.5).astype(jnp.float32)
  max_iter = max(mask.shape[1], mask.shape[2])

  def erode(h: jax.Array) -> jax.Array:
    # 3x3 min-pool; outside the image counts as hole (padding value 1).
    return jax.lax.reduce_window(
        h, 1.0, jax.lax.min, (1, 3, 3, 1), (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    )

  def cond(state):
    h, _, it = state
    return jnp.logical_and(jnp.any(h > 0), it < max_iter)

  def body(state):
    h, dist, it = state
    h = erode(h)
    return h, dist + h, it + 1

  # dist = sum_{k>=0} [pixel in erosion^k(hole)] = Chebyshev distance to known.
  _, dist, _ = jax.lax.while_loop(cond, body, (hole, hole, jnp.int32(1)))
  return jnp.where(hole > 0, jnp.power(jnp.float32(gamma), dist), 0.0)


def deepfill_reconstruction_loss(
    target: jax.Array,
    coarse: jax.Array,
    refined: jax.Array,
    mask: jax.Array,
    gamma: float = 0.9,
    coarse_alpha: float = 1.2,
    l1_alpha: float = 1.2,
    ae_alpha: float = 1.2,
) -> dict[str, jax.Array]:
  """DeepFill v1's discounted hole L1 + known-region auto-encoder L1 (see module doc).

  Returns a dict with 'l1', 'ae' and 'total' (= l1_alpha * l1 + ae_alpha * ae).
  """
  chex.assert_rank([target, coarse, refined, mask], 4)
  chex.assert_equal_shape([target, coarse, refined])
  if mask.shape != (*target.shape[:3], 1):
    raise ValueError(f"mask must have shape {(*target.shape[:3], 1)}, got {mask.shape}")
  y = target.astype(jnp.float32)
  m = mask.astype(jnp.float32)
  c = y.shape[-1]
  w = spatial_discounting_weights(m, gamma)
  n_hole = jnp.maximum(jnp.sum((m > 0.5).astype(jnp.float32)) * c, 1.0)
  n_known = jnp.maximum(jnp.sum(1.0 - m) * c, 1.0)
  d1 = jnp.abs(y - coarse.astype(jnp.float32))
  d2 = jnp.abs(y - refined.astype(jnp.float32))
  l1 = (coarse_alpha * jnp.sum(d1 * w) + jnp.sum(d2 * w)) / n_hole
  ae = (coarse_alpha * jnp.sum(d1 * (1.0 - m)) + jnp.sum(d2 * (1.0 - m))) / n_known
  return {"l1": l1, "ae": ae, "total": l1_alpha * l1 + ae_alpha * ae}


def reconstruction_loss(
    kind: str, target: jax.Array, coarse: jax.Array, refined: jax.Array, mask: jax.Array, **kwargs
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Select the reconstruction objective by name: 'l1' (Eq. 7) or 'deepfill'.

  Returns ``(total, terms)``.
  """
  if kind == "l1":
    if kwargs:
      raise ValueError(f"'l1' reconstruction loss takes no options, got {sorted(kwargs)}")
    v = l1_loss(refined, target)
    return v, {"l1": v, "total": v}
  if kind == "deepfill":
    terms = deepfill_reconstruction_loss(target, coarse, refined, mask, **kwargs)
    return terms["total"], terms
  raise ValueError(f"kind must be one of {RECONSTRUCTION_KINDS}, got {kind!r}")
