"""Robust PCA face completion (Wright, Ganesh, Rao, Peng & Ma 2009).

:func:`rpca` splits a matrix ``D`` (m, n) into low rank plus sparse,

  min |A|_* + lam |E|_1   s.t.  D = A + E,   lam = 1 / sqrt(max(m, n)),

by the inexact augmented Lagrange multiplier method of Lin, Chen & Ma (2010),
as in their reference code ``inexact_alm_rpca.m``: ``Y = D / max(|D|_2,
|D|_inf / lam)``, ``mu = 1.25 / |D|_2``, ``rho = 1.5``, ``mu <= 1e7 mu_0``;
each sweep shrinks ``E`` (soft threshold ``lam / mu``), then ``A`` (singular
value threshold ``1 / mu``), then updates ``Y``; it stops when
``|D - A - E|_F / |D|_F < tol`` (default 1e-5: float32; the reference code's
1e-7 is below float32 rounding) or after ``max_iters`` sweeps. Batched over
leading axes (``vmap`` of a ``while_loop``: each matrix stops on its own).

:func:`rpca_fill` completes occluded faces: each probe, as a row, is stacked
on the rows of an aligned library of clean faces (e.g. the training faces);
the probe's row of the low-rank part is its completion (the occluder goes to
the sparse part). Choices where the paper is not a completion method: pixels
are mapped to [0, 1] for the decomposition (RPCA is not shift invariant);
each probe is decomposed with the library alone (results do not depend on the
batch); with a known mask the pixels outside the hole are returned unchanged,
as by every completion here; without one (``mask=None``) the whole low-rank
face is returned.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_HI = jax.lax.Precision.HIGHEST


def _shrink(x: jax.Array, t: jax.Array) -> jax.Array:
  return jnp.sign(x) * jnp.maximum(jnp.abs(x) - t, 0.0)


def _thin_svd(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """SVD of a wide (tall) matrix through the QR of its (transpose): the SVD
  proper runs on a min(m, n) square (XLA:CPU's SVD of a 61 x 3072 matrix
  takes ~3x longer than this route)."""
  m, n = x.shape
  if m < n:
    q, r = jnp.linalg.qr(x.T)  # x = r^T q^T
    u, s, vt = jnp.linalg.svd(r.T)
    return u, s, jnp.matmul(vt, q.T, precision=_HI)
  if m > n:
    q, r = jnp.linalg.qr(x)
    u, s, vt = jnp.linalg.svd(r)
    return jnp.matmul(q, u, precision=_HI), s, vt
  return jnp.linalg.svd(x, full_matrices=False)


def _rpca_single(
    d: jax.Array, lam: jax.Array, tol: float, max_iters: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
  norm_two = jnp.linalg.norm(d, 2)
  norm_inf = jnp.max(jnp.abs(d)) / lam
  y = d / jnp.maximum(norm_two, norm_inf)
  mu = 1.25 / norm_two
  mu_bar = mu * 1e7
  d_norm = jnp.linalg.norm(d)
  zeros = jnp.zeros_like(d)

  def cond(state):
    _, _, _, _, it, err = state
    return (it < max_iters) & (err > tol)

  def body(state):
    a, _, y, mu, it, _ = state
    e = _shrink(d - a + y / mu, lam / mu)
    u, s, vt = _thin_svd(d - e + y / mu)
    a = jnp.matmul(u * jnp.maximum(s - 1.0 / mu, 0.0), vt, precision=_HI)
    z = d - a - e
    return a, e, y + mu * z, jnp.minimum(mu * 1.5, mu_bar), it + 1, jnp.linalg.norm(z) / d_norm

  a, e, _, _, it, _ = jax.lax.while_loop(
      cond, body, (zeros, zeros, y, mu, jnp.int32(0), jnp.float32(jnp.inf))
  )
  return a, e, it


@functools.partial(jax.jit, static_argnames=("max_iters",))
def rpca(
    d: jax.Array, lam: float | None = None, tol: float = 1e-5, max_iters: int = 200
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(low rank A, sparse E, sweeps) of ``d`` (..., m, n), batched over ``...``."""
  if d.ndim < 2:
    raise ValueError(f"rpca needs a matrix (..., m, n), got shape {d.shape}")
  d = jnp.asarray(d, jnp.float32)
  m, n = d.shape[-2:]
  lam = jnp.float32(1.0 / max(m, n) ** 0.5 if lam is None else lam)
  fn = lambda x: _rpca_single(x, lam, tol, max_iters)
  for _ in range(d.ndim - 2):
    fn = jax.vmap(fn)
  return fn(d)


@functools.partial(jax.jit, static_argnames=("max_iters",))
def rpca_fill(
    masked: jax.Array,
    mask: jax.Array | None,
    library: jax.Array,
    lam: float | None = None,
    tol: float = 1e-5,
    max_iters: int = 200,
) -> jax.Array:
  """Completes ``masked`` (B, H, W, C) in [-1, 1] by RPCA with ``library`` (N, H, W, C).

  ``mask`` (B, H, W, 1), 1 = occluded (hole where ``> 0.5``), or None.
  """
  if masked.ndim != 4 or library.ndim != 4 or library.shape[1:] != masked.shape[1:]:
    raise ValueError(
        f"masked {masked.shape} and library {library.shape} must be (B|N, H, W, C) alike"
    )
  b = masked.shape[0]
  probes = (masked.reshape(b, 1, -1).astype(jnp.float32) + 1.0) / 2.0
  lib = (library.reshape(1, library.shape[0], -1).astype(jnp.float32) + 1.0) / 2.0
  stack = jnp.concatenate([probes, jnp.broadcast_to(lib, (b,) + lib.shape[1:])], axis=1)
  low, _, _ = rpca(stack, lam, tol, max_iters)
  out = (low[:, 0].reshape(masked.shape) * 2.0 - 1.0).astype(masked.dtype)
  if mask is None:
    return out
  if mask.shape != masked.shape[:3] + (1,):
    raise ValueError(f"mask must be {masked.shape[:3] + (1,)}, got {mask.shape}")
  return jnp.where(mask > 0.5, out, masked)
