"""Sparse-representation classification (SRC; Wright et al., TPAMI 2009).

The gallery's feature vectors, each scaled to unit l2 norm, are the columns of
a dictionary ``A`` (D, N). A probe ``y`` (unit norm) is coded by the l1
problem

  min_w  1/2 |B w - y|^2 + lam |w|_1,   B = A  or  B = [A, I] (``occlusion``)

and assigned the class ``c`` with the smallest residual
``r_c = |y - e - A delta_c(x)|`` (``w = [x; e]``; ``e = 0`` without the
occlusion dictionary; ``delta_c`` keeps the coefficients of class ``c``).

Differences from the paper, chosen here: the paper solves the constrained
form ``min |w|_1 s.t. |B w - y| <= eps`` (or the equality form for the
occlusion model) with l1-magic; we solve the Lagrangian (Lasso) form above
with FISTA (Beck & Teboulle 2009) for a fixed number of iterations, batched
over probes, in JAX; a small ``lam`` approaches the constrained solutions.
Features: :func:`src_features` downsamples the luminance image (the paper's
"downsampled images" features, by area averaging); any (N, D) features work.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from deocc_jax.baselines import gabor

_HI = jax.lax.Precision.HIGHEST


class Dictionary(NamedTuple):
  """Unit-norm gallery atoms (D, N), their labels (N,) and class membership."""

  atoms: jax.Array  # (D, N)
  labels: np.ndarray  # (N,)
  classes: np.ndarray  # (C,) sorted distinct labels
  member: jax.Array  # (N, C) one-hot class of each atom


def _unit_rows(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def make_dictionary(features: jax.Array | np.ndarray, labels: jax.Array | np.ndarray) -> Dictionary:
  """The SRC dictionary of gallery ``features`` (N, D) with ``labels`` (N,)."""
  f = jnp.asarray(features, jnp.float32)
  y = np.asarray(labels).reshape(-1)
  if f.ndim != 2:
    raise ValueError(f"gallery features must be (N, D), got shape {f.shape}")
  if len(y) != f.shape[0]:
    raise ValueError(f"{f.shape[0]} gallery features but {len(y)} labels")
  classes, inv = np.unique(y, return_inverse=True)
  member = jax.nn.one_hot(inv, len(classes), dtype=jnp.float32)
  return Dictionary(_unit_rows(f).T, y, classes, member)


def area_matrix(src_size: int, dst_size: int) -> np.ndarray:
  """(dst, src) area-averaging weights: output cell ``i`` averages the input
  interval ``[i, i + 1) * src / dst`` (pixel fractions at its ends)."""
  edges = np.arange(dst_size + 1) * src_size / dst_size
  lo, hi = edges[:-1, None], edges[1:, None]
  j = np.arange(src_size)[None, :]
  overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
  return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


def src_features(images: jax.Array, size: tuple[int, int] = (12, 10)) -> jax.Array:
  """(N, h * w) luminance images area-downsampled to ``size`` = (h, w)."""
  g = gabor.luminance(images)
  rows = jnp.asarray(area_matrix(g.shape[1], size[0]))
  cols = jnp.asarray(area_matrix(g.shape[2], size[1]))
  out = jnp.einsum("ih,nhw,jw->nij", rows, g, cols, precision=_HI)
  return out.reshape(g.shape[0], -1)


def soft_threshold(x: jax.Array, t: jax.Array | float) -> jax.Array:
  return jnp.sign(x) * jnp.maximum(jnp.abs(x) - t, 0.0)


@functools.partial(jax.jit, static_argnames=("num_iters", "occlusion"))
def l1_codes(
    atoms: jax.Array,
    y: jax.Array,
    lam: float = 1e-3,
    num_iters: int = 500,
    occlusion: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """FISTA for ``min 1/2 |A x + e - y|^2 + lam (|x|_1 + |e|_1)``, per row of ``y``.

  ``atoms`` (D, N), ``y`` (P, D). Returns ``x`` (P, N) and ``e`` (P, D)
  (zeros unless ``occlusion``). Step ``1 / L``, ``L = |A|_2^2 (+ 1)``.
  """
  if atoms.ndim != 2 or y.ndim != 2 or y.shape[1] != atoms.shape[0]:
    raise ValueError(f"y {y.shape} must be (P, D) for atoms (D, N) = {atoms.shape}")
  lip = jnp.linalg.norm(atoms, 2) ** 2 + (1.0 if occlusion else 0.0)
  step = 1.0 / lip

  def grad(x, e):
    r = jnp.matmul(x, atoms.T, precision=_HI) + e - y  # (P, D)
    return jnp.matmul(r, atoms, precision=_HI), (r if occlusion else jnp.zeros_like(r))

  def body(_, state):
    x, e, zx, ze, t = state
    gx, ge = grad(zx, ze)
    x_new = soft_threshold(zx - step * gx, step * lam)
    e_new = soft_threshold(ze - step * ge, step * lam) if occlusion else ze
    t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
    mom = (t - 1.0) / t_new
    return x_new, e_new, x_new + mom * (x_new - x), e_new + mom * (e_new - e), t_new

  x0 = jnp.zeros((y.shape[0], atoms.shape[1]), jnp.float32)
  e0 = jnp.zeros_like(y)
  x, e, _, _, _ = jax.lax.fori_loop(0, num_iters, body, (x0, e0, x0, e0, jnp.float32(1.0)))
  return x, e


@jax.jit
def class_residuals(atoms: jax.Array, member: jax.Array, y: jax.Array, x: jax.Array, e: jax.Array):
  """(P, C) ``|y - e - A delta_c(x)|`` via the Gram matrix (no (P, C, D) array)."""
  r = y - e
  gram = jnp.matmul(atoms.T, atoms, precision=_HI)
  same = jnp.matmul(member, member.T, precision=_HI)  # (N, N) same-class indicator
  ra = jnp.matmul(r, atoms, precision=_HI) * x  # (P, N)
  cross = jnp.matmul(ra, member, precision=_HI)
  quad = jnp.matmul(x * jnp.matmul(x, gram * same, precision=_HI), member, precision=_HI)
  sq = jnp.sum(r * r, 1, keepdims=True) - 2 * cross + quad
  return jnp.sqrt(jnp.maximum(sq, 0.0))


def classify(
    dictionary: Dictionary,
    probes: jax.Array | np.ndarray,
    lam: float = 1e-3,
    num_iters: int = 500,
    occlusion: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
  """(predicted labels (P,), class residuals (P, C) in ``dictionary.classes`` order)."""
  y = jnp.asarray(probes, jnp.float32)
  if y.ndim != 2 or y.shape[1] != dictionary.atoms.shape[0]:
    raise ValueError(f"probe features {y.shape} must be (P, {dictionary.atoms.shape[0]})")
  y = _unit_rows(y)
  x, e = l1_codes(dictionary.atoms, y, lam, num_iters, occlusion)
  res = np.asarray(class_residuals(dictionary.atoms, dictionary.member, y, x, e))
  return dictionary.classes[np.argmin(res, axis=1)], res
