"""Subspace face recognisers: eigenfaces (PCA) and Laplacianfaces (LPP).

Both learn a linear map ``x -> (x - mean) @ proj`` from training faces
(flattened to (N, D) vectors) and identify a probe by its nearest gallery
embedding (:func:`nearest_neighbour`).

* :func:`fit_pca` -- eigenfaces (Turk & Pentland 1991): the leading
  eigenvectors of the training covariance, computed as in the paper from the
  small N x N Gram matrix ``Xc Xc^T`` when N <= D (``u = Xc^T v / sqrt(l)``).
  Each component's sign is fixed so its largest-magnitude entry is positive.
* :func:`fit_lpp` -- locality preserving projections (He & Niyogi 2003, as
  "Laplacianfaces"): PCA to ``pca_dims`` first (so ``Z^T D Z`` is
  non-singular), then a symmetric k-nearest-neighbour graph (i ~ j when either
  is among the other's ``neighbours`` nearest) with heat-kernel weights
  ``exp(-|z_i - z_j|^2 / t)``, then the generalized eigenproblem
  ``Z^T L Z a = l Z^T D Z a`` (``L = D - W``), smallest ``l`` first,
  normalised ``a^T Z^T D Z a = 1``. Open detail chosen here: ``t`` defaults
  to the mean squared distance over the graph's edges.

Everything is float32 JAX, jit-able (``dims`` etc. are static).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_HI = jax.lax.Precision.HIGHEST


class Subspace(NamedTuple):
  """A linear embedding ``(x - mean) @ proj``."""

  mean: jax.Array  # (D,)
  proj: jax.Array  # (D, K)


def flatten(images: jax.Array | np.ndarray, name: str = "images") -> jax.Array:
  """(N, ...) -> (N, D) float32; a 1-D input is an error."""
  x = jnp.asarray(images, jnp.float32)
  if x.ndim < 2:
    raise ValueError(f"{name} must be (N, ...) with N samples, got shape {x.shape}")
  return x.reshape(x.shape[0], -1)


def _fix_signs(v: jax.Array) -> jax.Array:
  """Flips each column so its largest-magnitude entry is positive."""
  idx = jnp.argmax(jnp.abs(v), axis=0)
  s = jnp.sign(v[idx, jnp.arange(v.shape[1])])
  return v * jnp.where(s == 0, 1.0, s)


@functools.partial(jax.jit, static_argnames=("dims",))
def fit_pca(x: jax.Array, dims: int) -> Subspace:
  """Eigenfaces: the top ``dims`` principal directions of ``x`` (N, D)."""
  x = flatten(x, "x")
  n, d = x.shape
  if not 1 <= dims <= min(n - 1, d):
    raise ValueError(f"pca dims must be in [1, min(N - 1, D)] = [1, {min(n - 1, d)}], got {dims}")
  mean = x.mean(0)
  xc = x - mean
  if n <= d:  # Turk & Pentland: eigenvectors of the N x N matrix Xc Xc^T
    evals, v = jnp.linalg.eigh(jnp.matmul(xc, xc.T, precision=_HI))
    evals, v = evals[::-1][:dims], v[:, ::-1][:, :dims]
    u = jnp.matmul(xc.T, v, precision=_HI) / jnp.sqrt(jnp.maximum(evals, 1e-30))
    u = u / jnp.linalg.norm(u, axis=0, keepdims=True)
  else:
    _, u = jnp.linalg.eigh(jnp.matmul(xc.T, xc, precision=_HI))
    u = u[:, ::-1][:, :dims]
  return Subspace(mean, _fix_signs(u))


def embed(model: Subspace, x: jax.Array | np.ndarray) -> jax.Array:
  """(N, ...) inputs -> (N, K) embeddings."""
  x = flatten(x, "x")
  if x.shape[1] != model.mean.shape[0]:
    raise ValueError(f"inputs have {x.shape[1]} features, the model expects {model.mean.shape[0]}")
  return jnp.matmul(x - model.mean, model.proj, precision=_HI)


def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """(N, M) squared Euclidean distances between the rows of ``a`` and ``b``."""
  d = (
      jnp.sum(a * a, 1)[:, None]
      + jnp.sum(b * b, 1)[None, :]
      - 2 * jnp.matmul(a, b.T, precision=_HI)
  )
  return jnp.maximum(d, 0.0)


def knn_heat_graph(
    z: jax.Array, neighbours: int, heat: float | None = None
) -> tuple[jax.Array, jax.Array]:
  """(W (N, N), t): symmetric kNN graph with heat-kernel weights.

  ``i ~ j`` when ``j`` is among the ``neighbours`` nearest points of ``i``
  (itself excluded) or vice versa; ``W_ij = exp(-|z_i - z_j|^2 / t)`` on the
  edges, 0 elsewhere; ``t`` is ``heat`` or the mean squared edge length.
  """
  n = z.shape[0]
  if not 1 <= neighbours < n:
    raise ValueError(f"neighbours must be in [1, N - 1] = [1, {n - 1}], got {neighbours}")
  d2 = squared_distances(z, z)
  far = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, d2)
  _, idx = jax.lax.top_k(-far, neighbours)
  adj = jnp.zeros((n, n), bool).at[jnp.arange(n)[:, None], idx].set(True)
  adj = adj | adj.T
  t = jnp.sum(jnp.where(adj, d2, 0.0)) / jnp.sum(adj) if heat is None else jnp.float32(heat)
  return jnp.where(adj, jnp.exp(-d2 / t), 0.0), t


@functools.partial(jax.jit, static_argnames=("dims", "pca_dims", "neighbours"))
def fit_lpp(
    x: jax.Array,
    dims: int,
    pca_dims: int,
    neighbours: int = 5,
    heat: float | None = None,
    ridge: float = 1e-6,
) -> Subspace:
  """Laplacianfaces: PCA to ``pca_dims``, then ``dims`` LPP directions.

  ``ridge`` (relative to the mean diagonal) keeps ``Z^T D Z`` positive
  definite in float32.
  """
  if not 1 <= dims <= pca_dims:
    raise ValueError(f"lpp dims must be in [1, pca_dims={pca_dims}], got {dims}")
  pca = fit_pca(x, pca_dims)
  z = embed(pca, x)
  w, _ = knn_heat_graph(z, neighbours, heat)
  deg = w.sum(1)
  lap = jnp.diag(deg) - w
  a = jnp.matmul(z.T, jnp.matmul(lap, z, precision=_HI), precision=_HI)
  b = jnp.matmul(z.T * deg, z, precision=_HI)
  b = b + ridge * jnp.trace(b) / pca_dims * jnp.eye(pca_dims)
  c = jnp.linalg.cholesky(b)
  ci = jax.scipy.linalg.solve_triangular(c, jnp.eye(pca_dims), lower=True)
  m = jnp.matmul(ci, jnp.matmul(a, ci.T, precision=_HI), precision=_HI)
  _, v = jnp.linalg.eigh(0.5 * (m + m.T))  # ascending eigenvalues
  vecs = jnp.matmul(ci.T, v[:, :dims], precision=_HI)
  return Subspace(pca.mean, _fix_signs(jnp.matmul(pca.proj, vecs, precision=_HI)))


def nearest_neighbour(
    gallery_emb: jax.Array | np.ndarray,
    gallery_labels: jax.Array | np.ndarray,
    probe_emb: jax.Array | np.ndarray,
    metric: str = "euclidean",
) -> np.ndarray:
  """(P,) label of each probe's nearest gallery embedding.

  ``metric``: 'euclidean' (the eigenfaces / LPP papers) or 'cosine' (the
  project's identification protocol). Ties go to the first gallery row.
  """
  g = np.asarray(gallery_emb, np.float64)
  p = np.asarray(probe_emb, np.float64)
  labels = np.asarray(gallery_labels).reshape(-1)
  if g.ndim != 2 or p.ndim != 2 or g.shape[1] != p.shape[1]:
    raise ValueError(f"gallery_emb {g.shape} and probe_emb {p.shape} must be (N, K) with equal K")
  if len(labels) != len(g):
    raise ValueError(f"{len(g)} gallery embeddings but {len(labels)} gallery labels")
  if metric == "euclidean":
    d = np.sum(p * p, 1)[:, None] + np.sum(g * g, 1)[None] - 2 * p @ g.T
    return labels[np.argmin(d, axis=1)]
  if metric == "cosine":
    gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    pn = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    return labels[np.argmax(pn @ gn.T, axis=1)]
  raise ValueError(f"unknown metric {metric!r}; choose 'euclidean' or 'cosine'")
