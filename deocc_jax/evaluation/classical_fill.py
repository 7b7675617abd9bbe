"""Classical (non-learned) face completions, as baselines for the generator.

Every function takes ``masked`` (B, H, W, 3) in [-1, 1] and ``mask``
(B, H, W, 1) (1 = occluded; a pixel is in the hole when ``mask > 0.5``) and
returns the completed batch. Pixels outside the hole are returned exactly as
given (``jnp.where``), only the hole is synthesised. All are jit-able.

* :func:`mean_face_fill` pastes a mean face (:func:`compute_mean_face` over
  training clean faces) into the hole.
* :func:`diffusion_fill` is harmonic inpainting: it solves Laplace's equation
  inside the hole with the known pixels as Dirichlet boundary values, by
  Jacobi iteration of the 4-neighbour average (the explicit heat equation at
  its stability limit). The image border uses replicated ("edge") padding,
  i.e. a zero-flux (Neumann) condition where the hole touches the border.
"""

from __future__ import annotations

import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np


def _hole(mask: jax.Array) -> jax.Array:
  if mask.ndim != 4 or mask.shape[-1] != 1:
    raise ValueError(f"mask must be (B, H, W, 1), got {mask.shape}")
  return mask > 0.5


def compute_mean_face(
    source: np.ndarray | Iterable, key: str = "clean", max_batches: int | None = None
) -> np.ndarray:
  """Mean (H, W, 3) float32 image.

  ``source`` is either an array (N, H, W, 3) or an iterable of batches (dicts
  holding ``key``, or arrays); iteration stops after ``max_batches`` batches
  (needed for the infinite training stream). Accumulates in float64.
  """
  if isinstance(source, (np.ndarray, jax.Array)):
    arr = np.asarray(source, np.float64)
    if arr.ndim != 4:
      raise ValueError(f"expected (N, H, W, C) images, got {arr.shape}")
    return arr.mean(axis=0).astype(np.float32)
  total, count = None, 0
  for i, batch in enumerate(source):
    if max_batches is not None and i >= max_batches:
      break
    x = np.asarray(batch[key] if isinstance(batch, dict) else batch, np.float64)
    total = x.sum(axis=0) if total is None else total + x.sum(axis=0)
    count += x.shape[0]
  if count == 0:
    raise ValueError("compute_mean_face got no images")
  return (total / count).astype(np.float32)


@jax.jit
def mean_face_fill(masked: jax.Array, mask: jax.Array, mean_face: jax.Array) -> jax.Array:
  """Fills the hole with ``mean_face`` ((H, W, 3) or (B, H, W, 3))."""
  hole = _hole(mask)
  mean_face = jnp.broadcast_to(jnp.asarray(mean_face, masked.dtype), masked.shape)
  return jnp.where(hole, mean_face, masked)


def known_mean(masked: jax.Array, mask: jax.Array) -> jax.Array:
  """(B, 1, 1, C) mean of the known (unmasked) pixels per image / channel (0 if none)."""
  known = (~_hole(mask)).astype(masked.dtype)
  s = jnp.sum(masked * known, axis=(1, 2), keepdims=True)
  n = jnp.sum(known, axis=(1, 2), keepdims=True)
  return jnp.where(n > 0, s / jnp.maximum(n, 1), 0.0).astype(masked.dtype)


def neighbour_average(x: jax.Array) -> jax.Array:
  """Mean of the 4 neighbours of every pixel, edge-replicated at the border."""
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  return 0.25 * (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:])


@functools.partial(jax.jit, static_argnames=("num_iters",))
def diffusion_fill(masked: jax.Array, mask: jax.Array, num_iters: int = 500) -> jax.Array:
  """Harmonic inpainting by ``num_iters`` Jacobi sweeps (``lax.fori_loop``).

  The hole starts at the per-image, per-channel mean of the known pixels;
  each sweep replaces every hole pixel by the average of its 4 neighbours
  (all from the previous sweep), known pixels held fixed. Convergence is
  slow for big holes (error decays like ``(1 - c / size^2)^iters``): a hole
  ~15 px across at 64 px needs a few hundred sweeps.
  """
  hole = _hole(mask)
  x0 = jnp.where(hole, known_mean(masked, mask), masked)

  def body(_, x):
    return jnp.where(hole, neighbour_average(x), masked)

  return jax.lax.fori_loop(0, num_iters, body, x0)
