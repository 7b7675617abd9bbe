"""Relational distillation losses, paper Sec. 3.3 (Eqs. 13-15).

All functions are pure ``(teacher, student, ...) -> scalar`` JAX functions over
**all** tuples of the batch (paper Sec. 3.4: "we simply use all the tuples"),
vectorised, jit/grad compatible. The teacher side is always put under
``stop_gradient``; only the student receives gradients. The instance-wise and
cross-entropy terms and the total loss (Eq. 16) are in
:mod:`deocc_jax.losses.distillation`.

Terms and their normalisation
-----------------------------
* :func:`distance_loss`, Eq. 13: Euclidean distances over the ``B (B - 1)``
  ordered distinct pairs ``i != j``; each side divided by its own mean distance
  ``mu`` over those pairs; Huber (``delta = 1``, i.e. torch ``smooth_l1_loss``
  with ``beta = 1``); mean over the ``B (B - 1)`` pairs. (RKD divides the sum by
  ``B**2``, counting the zero diagonal, and takes ``mu`` over the *strictly
  positive* distances; the two agree when no two distinct samples coincide,
  up to the factor ``(B - 1) / B`` of the mean.) When all samples of one side
  coincide ``mu = 0``; that side's normalised distances are then all 0.
* :func:`angle_loss`, Eqs. 14-15: RKD's definition. For every index triplet
  ``(i, j, k)`` of the ``B x B x B`` grid the angle at the anchor ``j`` is
  ``cos_ijk = <n(e_i - e_j), n(e_k - e_j)>`` with ``n(v) = v / max(|v|, eps)``
  (``F.normalize``), so triplets with ``i == j`` or ``k == j`` (and pairs of
  coinciding embeddings) give ``cos = 0`` on both sides and contribute 0;
  ``i == k`` (``i != j``) is included (``cos = 1`` on both sides, contributes 0
  too). Huber ``delta = 1``; by default the mean over all ``B**3`` triplets as
  in RKD (``include_degenerate=True``); with ``include_degenerate=False`` the
  mean is over the ``B (B - 1)**2`` triplets with ``i != j`` and ``k != j``.

Angle loss algorithm
--------------------
RKD materialises the ``B x B x D`` normalised differences and a batched matmul
(``O(B^3 D)`` flops, ``O(B^2 D + B^3)`` memory). Here everything comes from the
``B x B`` squared-distance matrix ``d2`` (one Gram matmul on batch-centred
embeddings, ``O(B^2 D)``): by the law of cosines

    <e_i - e_j, e_k - e_j> = (d2_ij + d2_kj - d2_ik) / 2,
    cos_ijk = (d2_ij + d2_kj - d2_ik) / (2 d_ij d_kj),

so the triplet part is ``O(B^3)`` element-wise work with no ``D`` factor.
Per anchor ``j`` this is ``cos_ijk = u_ji u_jk (d2_ji + d2_jk - d2_ik)`` with
``u = 1 / (sqrt(2) d)``: a rank-one scaling of the ``B x B`` matrix ``d2``.

The ``B^3`` triplets are swept in cache-sized tiles of ``K`` anchors x ``bi``
rows ``i`` x all ``B`` columns ``k`` (two nested ``lax.scan`` over
reshape-blocked operands, no gather/scatter inside; at ``B = 512`` the tile is
``16 x 16 x 512``, 512 KiB per float32 intermediate), so peak memory is
``O(B^2)`` (a few ``B x B`` matrices; ``B = 4096``: < 1 GiB for forward +
backward) for any ``block_size``. The gradient is a fused custom VJP with an
analytic backward: the sweep that computes the loss also accumulates, per
tile, the two ``O(B^2)`` partial gradients w.r.t. the student's ``d2``
(:func:`_angle_tile`): a row reduction over ``k`` and a sum over the anchors
``j``, so the backward pass itself is ``O(B^2)`` and ``d2 -> embeddings`` is
two matmuls (autodiff of the Gram form). Consequence: ``angle_loss`` supports
reverse-mode differentiation only (no ``jvp``/forward mode, no second order).
Measured (``benchmarks/bench_relational_losses.py``, 2-core EPYC, shared):
B = 512, D = 512, forward + backward 0.15-0.29 s vs 6-16 s for RKD's PyTorch
formulation (B x B x D normalised differences + bmm) in the same runs, 39-56x.

Precision: the Gram form computes squared distances with an absolute error of
about ``sqrt(D) * eps * (|c_i|^2 + |c_j|^2)`` (``c`` = batch-centred
embeddings, the centring removes the common offset). Squared distances below
``zero_tol * (|c_i|^2 + |c_j|^2)`` (default ``zero_tol = 4 sqrt(D) eps``) are
treated as exact zeros: those pairs get distance 0, their angles get
``cos = 0`` (RKD's value for coinciding embeddings) and they pass no gradient
(RKD's ``F.normalize`` gives a ``1/eps = 1e12`` gradient there; the Euclidean
distance has no gradient at 0, we use the zero sub-gradient, so no NaN/inf).
Cosines are clipped to ``[-1, 1]``. For near-duplicates just above the
threshold the cosine's absolute error is about
``sqrt(D) eps |c|^2 / (d_ij d_kj)``; the tests bound it against float64 loops.

Sharding
--------
:func:`sharded_relational_losses` runs both relational losses under
``jax.shard_map``: the batch is split over a mesh axis, every device
all-gathers the (small, ``B x D``) embeddings, builds the ``B x B`` distance
matrix and evaluates only the tuples whose anchor/row is one of its local
samples; partial sums are ``psum``-reduced, so values and gradients equal the
single-device losses over the global batch.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import numpy as np
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

HUBER_DELTA = 1.0
NORMALIZE_EPS = 1e-12  # torch F.normalize's eps, RKD's definition.


# ----------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------


def check_embeddings(
    teacher: jax.Array, student: jax.Array, fn: str, *, same_dim: bool, min_batch: int = 1
) -> None:
  """Raises a ``ValueError`` naming ``fn`` unless both are ``(B, D)`` with one ``B``."""
  for name, x in (("teacher", teacher), ("student", student)):
    if x.ndim != 2:
      raise ValueError(f"{fn}: `{name}` must be a (batch, dim) array, got shape {x.shape}")
  if teacher.shape[0] != student.shape[0]:
    raise ValueError(
        f"{fn}: batch mismatch, `teacher` has shape {teacher.shape} and "
        f"`student` has shape {student.shape}"
    )
  if same_dim and teacher.shape[1] != student.shape[1]:
    raise ValueError(
        f"{fn}: `teacher` {teacher.shape} and `student` {student.shape} must "
        "have the same embedding dimension for an instance-wise loss"
    )
  if teacher.shape[0] < min_batch:
    raise ValueError(
        f"{fn}: needs a batch of at least {min_batch}, got `teacher`/`student` "
        f"of shape {teacher.shape}/{student.shape}"
    )


def compute_dtype(x: jax.Array) -> jnp.dtype:
  """float32 at least (bf16/f16 embeddings are upcast), float64 kept."""
  return jnp.promote_types(x.dtype, jnp.float32)


def huber(x: jax.Array, delta: float = HUBER_DELTA) -> jax.Array:
  """Element-wise Huber / smooth-L1: ``0.5 x^2`` if ``|x| < delta`` else ``delta (|x| - delta/2)``.

  With ``delta = 1`` this is torch's ``smooth_l1_loss`` (``beta = 1``) per element.
  """
  ax = jnp.abs(x)
  return jnp.where(ax < delta, 0.5 * x * x, delta * (ax - 0.5 * delta))


# ----------------------------------------------------------------------------
# Pairwise distances
# ----------------------------------------------------------------------------


def _default_zero_tol(dim: int, dtype: jnp.dtype) -> float:
  return 4.0 * math.sqrt(dim) * float(jnp.finfo(dtype).eps)


def _centred(e: jax.Array, mean: jax.Array | None = None) -> jax.Array:
  e = e.astype(compute_dtype(e))
  if mean is None:
    mean = jnp.mean(e, axis=0, keepdims=True)
  return e - mean


def _sq_dists(
    c_rows: jax.Array, c_all: jax.Array, row_ids: jax.Array, zero_tol: float | None
) -> tuple[jax.Array, jax.Array]:
  """Squared distances ``d2[r, j] = |c_rows[r] - c_all[j]|^2`` via the Gram form.

  ``row_ids`` are the global indices of ``c_rows`` (for the diagonal mask).
  Returns ``(d2, nz)``: ``d2`` clamped, with entries on the diagonal or below the
  relative tolerance set to exactly 0, and the boolean mask ``nz`` of the
  remaining (non-zero distance, off-diagonal) entries.
  """
  tol = _default_zero_tol(c_all.shape[1], c_all.dtype) if zero_tol is None else zero_tol
  g = jnp.matmul(c_rows, c_all.T, precision=lax.Precision.HIGHEST)
  n_rows = jnp.sum(c_rows * c_rows, axis=1)
  n_all = jnp.sum(c_all * c_all, axis=1)
  scale = n_rows[:, None] + n_all[None, :]
  d2 = scale - 2.0 * g
  offdiag = row_ids[:, None] != jnp.arange(c_all.shape[0])[None, :]
  nz = offdiag & (d2 > tol * scale)
  return jnp.where(nz, d2, 0.0), nz


def _safe_sqrt(d2: jax.Array, nz: jax.Array) -> jax.Array:
  """``sqrt(d2)`` where ``nz``, else 0, with a finite (zero) gradient at 0."""
  return jnp.where(nz, jnp.sqrt(jnp.where(nz, d2, 1.0)), 0.0)


def _safe_inv_sqrt(d2: jax.Array, nz: jax.Array) -> jax.Array:
  return jnp.where(nz, lax.rsqrt(jnp.where(nz, d2, 1.0)), 0.0)


def pairwise_distances(embeddings: jax.Array, *, zero_tol: float | None = None) -> jax.Array:
  """``(B, B)`` Euclidean distance matrix (diagonal and coinciding pairs exactly 0)."""
  if embeddings.ndim != 2:
    raise ValueError(f"pairwise_distances: `embeddings` must be (B, D), got {embeddings.shape}")
  c = _centred(embeddings)
  d2, nz = _sq_dists(c, c, jnp.arange(c.shape[0]), zero_tol)
  return _safe_sqrt(d2, nz)


# ----------------------------------------------------------------------------
# Pair-wise loss (Eq. 13)
# ----------------------------------------------------------------------------


def _distance_rows_sum(
    d_t: jax.Array, d_s: jax.Array, mu_t: jax.Array, mu_s: jax.Array
) -> jax.Array:
  """Sum of Huber(psi_p(s) - psi_p(t)) over the given rows (diagonal entries are 0 - 0)."""
  inv_t = jnp.where(mu_t > 0, 1.0 / jnp.where(mu_t > 0, mu_t, 1.0), 0.0)
  inv_s = jnp.where(mu_s > 0, 1.0 / jnp.where(mu_s > 0, mu_s, 1.0), 0.0)
  return jnp.sum(huber(d_s * inv_s - d_t * inv_t))


def distance_loss(
    teacher: jax.Array, student: jax.Array, *, zero_tol: float | None = None
) -> jax.Array:
  """Eq. 13: pair-wise (distance) relational loss over all ordered pairs ``i != j``.

  ``psi_p(e_i, e_j) = |e_i - e_j| / mu`` with ``mu`` the mean distance over the
  ``B (B - 1)`` distinct pairs of that side; Huber (``delta = 1``); mean over
  the ``B (B - 1)`` pairs. Teacher and student may have different dimensions.

  Args:
    teacher: ``(B, Dt)`` teacher embeddings (no gradient).
    student: ``(B, Ds)`` student embeddings.
    zero_tol: relative threshold under which a squared distance counts as 0
      (default ``4 sqrt(D) eps``); see the module docstring.
  """
  check_embeddings(teacher, student, "distance_loss", same_dim=False, min_batch=2)
  b = teacher.shape[0]
  ids = jnp.arange(b)
  n_pairs = b * (b - 1)
  ct = _centred(lax.stop_gradient(teacher))
  cs = _centred(student)
  d_t = _safe_sqrt(*_sq_dists(ct, ct, ids, zero_tol))
  d_s = _safe_sqrt(*_sq_dists(cs, cs, ids, zero_tol))
  mu_t = jnp.sum(d_t) / n_pairs
  mu_s = jnp.sum(d_s) / n_pairs
  return _distance_rows_sum(d_t, d_s, mu_t, mu_s) / n_pairs


# ----------------------------------------------------------------------------
# Triplet-wise loss (Eqs. 14-15)
# ----------------------------------------------------------------------------


# Tile of the triplet sweep: ``K`` anchors x ``bi`` rows ``i`` x all ``B``
# columns, at most _TILE_ELEMS elements (128 Ki float32 = 512 KiB per
# intermediate, cache sized). Measured on the 2-core AMD EPYC dev machine,
# B = 512, forward + backward: K = 16, bi = 16 is the best; K = 8..64 with
# bi = 4..32 within ~15%; K <= 4 is 1.4-6x slower (loop overhead), and so is
# bi = 64 with K = 4 (hence a fixed K = 16 instead of fewer anchors x more rows).
_TILE_ELEMS = 1 << 17
_TILE_ANCHORS = 16
_TILE_MIN_ROWS = 8


def _tile_shape(num_anchors: int, b: int, block_size: int | None) -> tuple[int, int]:
  """``(K, bi)``: anchors and rows ``i`` per tile of the sweep.

  ``block_size=K`` caps a tile at ``K * B * B`` elements (the memory of the
  historical ``K``-anchor block, ``B x B`` per anchor); tiles are at most
  ``_TILE_ELEMS`` elements anyway, so the cap only binds for tiny ``K * B``.
  """
  cap = _TILE_ELEMS if block_size is None else min(_TILE_ELEMS, block_size * b * b)
  k = min(num_anchors, _TILE_ANCHORS, max(1, cap // (min(b, _TILE_MIN_ROWS) * b)))
  bi = min(b, max(1, cap // (k * b)))
  return k, bi


def _angle_tile(dt, ds, ati, uti, asi, usi, atk, utk, ask, usk, with_grad: bool):
  """Huber terms of Eq. 14 on one tile, layout ``(j, i, k)``: ``K`` anchors ``j``,
  ``bi`` rows ``i``, all ``B`` columns ``k``.

  ``dt``/``ds`` ``(bi, B)``: rows ``i`` of the squared-distance matrices ``d2``;
  ``a*i``/``u*i`` ``(K, bi)`` and ``a*k``/``u*k`` ``(K, B)``: the anchor rows of
  ``a = d2`` and ``u = w / sqrt(2)`` (``w`` = inverse distance, 0 where the
  distance is 0) at the columns ``i`` and ``k``. Law of cosines (Eq. 15), per
  anchor ``j``:

    cos_ijk = u_ji u_jk (a_ji + a_jk - d2_ik).

  With ``g = dHuber(clip(cos_s) - clip(cos_t))/dcos_s`` (0 where the clip is
  active) and the ``i <-> k`` symmetry of ``cos`` and ``g``, the gradient of
  the sum w.r.t. the student's ``d2`` (entries read at ``[j, i]`` as ``a`` and
  ``u``, and at ``[i, k]``) is

    G[j, i] += sum_k g_ijk (2 u_ji u_jk - w_ji^2 cos_ijk)    (r, per tile)
    G[i, k] -= sum_j g_ijk u_ji u_jk                          (g3, per tile)

  (``du/dd2 = -u w^2 / 2``). Returns the sum, or ``(sum, r (K, bi), g3 (bi, B))``.
  """
  ct = (uti[:, :, None] * utk[:, None, :]) * (ati[:, :, None] + atk[:, None, :] - dt[None])
  uu = usi[:, :, None] * usk[:, None, :]
  cs = uu * (asi[:, :, None] + ask[:, None, :] - ds[None])
  x = jnp.clip(cs, -1.0, 1.0) - jnp.clip(ct, -1.0, 1.0)
  ax = jnp.abs(x)
  small = ax < HUBER_DELTA
  loss = jnp.sum(jnp.where(small, 0.5 * x * x, HUBER_DELTA * (ax - 0.5 * HUBER_DELTA)))
  if not with_grad:
    return loss
  g = jnp.where(jnp.abs(cs) <= 1.0, jnp.where(small, x, HUBER_DELTA * jnp.sign(x)), 0.0)
  w2 = 2.0 * usi * usi
  r = jnp.sum(g * (2.0 * uu - w2[:, :, None] * cs), axis=2)
  g3 = jnp.sum(g * uu, axis=0)
  return loss, r, g3


def _angle_sweep(d2_t, w_t, d2_s, w_s, start, num_anchors, block_size, with_grad):
  """Sum over the anchors ``start + [0, num_anchors)`` (all ``i, k``), tile by tile.

  Tiles of ``K`` anchors x ``bi`` rows ``i`` x all ``B`` columns ``k``
  (:func:`_tile_shape`), two nested ``lax.scan`` over static, reshape-blocked
  operands (rows ``i`` outside, anchors inside), no gather/scatter in the
  loop. Padded anchors and rows have ``u = 0``, i.e. ``cos = 0`` on both sides:
  they add exactly 0 to the sum and the gradient. With ``with_grad`` also
  returns the gradient of the sum w.r.t. ``d2_s`` (``B x B``).
  """
  b = d2_s.shape[0]
  n = num_anchors
  dtype = d2_s.dtype
  c = math.sqrt(0.5)
  if n == b:  # all anchors (start == 0)
    rows = lambda m: m
  else:
    rows = lambda m: lax.dynamic_slice_in_dim(m, start, n, axis=0)
  anchor_rows = (rows(d2_t), c * rows(w_t), rows(d2_s), c * rows(w_s))
  k, bi = _tile_shape(n, b, block_size)
  nb, n_i = -(-n // k), -(-b // bi)
  na, bp = nb * k, n_i * bi
  # Anchor rows in the `k` role (nb, K, B) and in the `i` role (n_i, nb, K, bi).
  kx = tuple(jnp.pad(m, ((0, na - n), (0, 0))).reshape(nb, k, b) for m in anchor_rows)
  ix = tuple(
      jnp.pad(m, ((0, na - n), (0, bp - b))).reshape(nb, k, n_i, bi).transpose(2, 0, 1, 3)
      for m in anchor_rows
  )
  dx = tuple(jnp.pad(m, ((0, bp - b), (0, 0))).reshape(n_i, bi, b) for m in (d2_t, d2_s))
  # Zero carries derived from `start` so they have its varying-axes type (under
  # shard_map `start` is per-device).
  zero = (jnp.asarray(start) * 0).astype(dtype)

  def outer(total, xo):
    dt, ds, *xi_i = xo
    if not with_grad:

      def inner_value(acc, xi):
        return acc + _angle_tile(dt, ds, *xi, False), None

      acc, _ = lax.scan(inner_value, zero, (*xi_i, *kx))
      return total + acc, None

    def inner(carry, xi):
      acc, g3_acc = carry
      loss, r, g3 = _angle_tile(dt, ds, *xi, True)
      return (acc + loss, g3_acc - g3), r

    (acc, g3), r = lax.scan(inner, (zero, jnp.zeros((bi, b), dtype) + zero), (*xi_i, *kx))
    return total + acc, (g3, r)

  total, ys = lax.scan(outer, zero, (*dx, *ix))
  if not with_grad:
    return total
  g3, r = ys  # (n_i, bi, B), (n_i, nb, K, bi)
  grad = g3.reshape(bp, b)[:b]
  r = r.transpose(1, 2, 0, 3).reshape(na, bp)[:n, :b]
  if n == b:
    return total, grad + r
  return total, lax.dynamic_update_slice_in_dim(grad, rows(grad) + r, start, axis=0)


def _angle_inputs(d2: jax.Array, nz: jax.Array) -> tuple[jax.Array, jax.Array]:
  return d2, _safe_inv_sqrt(d2, nz)


@partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _angle_core(d2_t, nz_t, d2_s, nz_s, start, num_anchors, block_size):
  """Huber sum of Eq. 14 over the given anchors, from the squared-distance matrices.

  Custom VJP: its forward pass computes the loss and the gradient w.r.t. the
  student's ``d2`` in the same sweep over the triplets, so the backward pass
  is ``O(B^2)``. Only the student side gets gradients (the teacher is
  stop-gradient'ed upstream). Reverse mode only.
  """
  return _angle_sweep(
      *_angle_inputs(d2_t, nz_t), *_angle_inputs(d2_s, nz_s), start, num_anchors, block_size, False
  )


def _angle_core_fwd(d2_t, nz_t, d2_s, nz_s, start, num_anchors, block_size):
  loss, grad = _angle_sweep(
      *_angle_inputs(d2_t, nz_t), *_angle_inputs(d2_s, nz_s), start, num_anchors, block_size, True
  )
  return loss, (grad, nz_t, nz_s, start)


def _float0_like(x: jax.Array) -> np.ndarray:
  return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


def _angle_core_bwd(num_anchors, block_size, res, ct):
  grad, nz_t, nz_s, start = res
  return (
      jnp.zeros_like(grad),
      _float0_like(nz_t),
      ct * grad,
      _float0_like(nz_s),
      _float0_like(start),
  )


_angle_core.defvjp(_angle_core_fwd, _angle_core_bwd)


def _angle_sum(
    d2_t: jax.Array,
    nz_t: jax.Array,
    d2_s: jax.Array,
    nz_s: jax.Array,
    anchor_start: jax.Array | int,
    num_anchors: int,
    block_size: int | None,
) -> jax.Array:
  """Huber sum over all ``(i, k)`` and the anchors ``anchor_start + [0, num_anchors)``."""
  start = jnp.asarray(anchor_start, jnp.int32)
  sym = lambda m: 0.5 * (m + m.T)  # exact symmetry, relied upon by the custom VJP
  return _angle_core(sym(d2_t), nz_t, sym(d2_s), nz_s, start, num_anchors, block_size)


def _angle_count(b: int, include_degenerate: bool) -> int:
  return b**3 if include_degenerate else b * (b - 1) ** 2


def _check_block_size(block_size: int | None, fn: str) -> None:
  if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
    raise ValueError(f"{fn}: `block_size` must be a positive int or None, got {block_size!r}")


def angle_loss(
    teacher: jax.Array,
    student: jax.Array,
    *,
    block_size: int | None = None,
    include_degenerate: bool = True,
    zero_tol: float | None = None,
) -> jax.Array:
  """Eqs. 14-15: triplet-wise (angle) relational loss over all index triplets.

  ``psi_t(e_i, e_j, e_k) = <n(e_i - e_j), n(e_k - e_j)>`` (angle at ``j``), RKD's
  definition (see module docstring); Huber ``delta = 1``.

  Args:
    teacher: ``(B, Dt)`` teacher embeddings (no gradient).
    student: ``(B, Ds)`` student embeddings.
    block_size: ``None``: the ``B^3`` triplets are evaluated in automatic
      cache-sized tiles (see the module docstring), never all at once; ``K``:
      additionally caps a tile at ``K * B^2`` elements (the memory of a block
      of ``K`` anchors; tiles are at most 128 Ki elements anyway, so this only
      binds for tiny ``K * B``). Same value for every setting (up to float
      summation order).
    include_degenerate: ``True`` (RKD): mean over all ``B^3`` triplets;
      ``False``: mean over the ``B (B-1)^2`` triplets with ``i != j`` and
      ``k != j`` (``i == k`` included).
    zero_tol: relative zero-distance threshold (module docstring).
  """
  check_embeddings(teacher, student, "angle_loss", same_dim=False, min_batch=2)
  _check_block_size(block_size, "angle_loss")
  b = teacher.shape[0]
  ids = jnp.arange(b)
  ct = _centred(lax.stop_gradient(teacher))
  cs = _centred(student)
  d2_t, nz_t = _sq_dists(ct, ct, ids, zero_tol)
  d2_s, nz_s = _sq_dists(cs, cs, ids, zero_tol)
  total = _angle_sum(d2_t, nz_t, d2_s, nz_s, 0, b, block_size)
  return total / float(_angle_count(b, include_degenerate))


# ----------------------------------------------------------------------------
# Sharded relational losses
# ----------------------------------------------------------------------------


def sharded_relational_losses(
    teacher: jax.Array,
    student: jax.Array,
    mesh: Mesh,
    axis: str = "data",
    *,
    block_size: int | None = None,
    include_degenerate: bool = True,
    zero_tol: float | None = None,
) -> dict[str, jax.Array]:
  """Distance (Eq. 13) and angle (Eqs. 14-15) losses with the batch split over ``axis``.

  Each device all-gathers the embeddings (``B x D``), builds the ``B x B``
  distance matrices and evaluates the pairs whose row ``i`` and the triplets
  whose anchor ``j`` is one of its local samples; sums are ``psum``-reduced.
  The values (and gradients w.r.t. ``student``) equal :func:`distance_loss`
  and :func:`angle_loss` over the global batch.

  Args:
    teacher, student: global ``(B, Dt)`` / ``(B, Ds)`` arrays, ``B`` divisible
      by ``mesh.shape[axis]`` (they are resharded as ``P(axis, None)``).
    mesh: device mesh containing ``axis``.
    axis: mesh axis name the batch is split over.
    block_size: tile cap for the local angle computation (:func:`angle_loss`).

  Returns:
    ``{'distance': scalar, 'angle': scalar}``.
  """
  fn = "sharded_relational_losses"
  check_embeddings(teacher, student, fn, same_dim=False, min_batch=2)
  _check_block_size(block_size, fn)
  if axis not in mesh.shape:
    raise ValueError(f"{fn}: `axis`={axis!r} is not a mesh axis {tuple(mesh.shape)}")
  n_dev = mesh.shape[axis]
  b = teacher.shape[0]
  if b % n_dev:
    raise ValueError(
        f"{fn}: batch {b} of `teacher`/`student` {teacher.shape}/{student.shape} "
        f"is not divisible by mesh axis {axis!r} of size {n_dev}"
    )
  b_loc = b // n_dev
  n_pairs = b * (b - 1)

  def local(t_loc: jax.Array, s_loc: jax.Array) -> tuple[jax.Array, jax.Array]:
    start = lax.axis_index(axis) * b_loc
    ids = jnp.arange(b)
    per_side = []
    for e_loc in (lax.stop_gradient(t_loc), s_loc):
      e_all = lax.all_gather(e_loc, axis, tiled=True)
      c_all = _centred(e_all)
      d2, nz = _sq_dists(c_all, c_all, ids, zero_tol)
      # Rows of the local samples, for the pair-wise loss.
      d_rows = _safe_sqrt(
          lax.dynamic_slice_in_dim(d2, start, b_loc, axis=0),
          lax.dynamic_slice_in_dim(nz, start, b_loc, axis=0),
      )
      mu = lax.psum(jnp.sum(d_rows), axis) / n_pairs
      per_side.append((d2, nz, d_rows, mu))
    (d2_t, nz_t, dr_t, mu_t), (d2_s, nz_s, dr_s, mu_s) = per_side
    dist = lax.psum(_distance_rows_sum(dr_t, dr_s, mu_t, mu_s), axis) / n_pairs
    ang = lax.psum(_angle_sum(d2_t, nz_t, d2_s, nz_s, start, b_loc, block_size), axis)
    return dist, ang / float(_angle_count(b, include_degenerate))

  f = jax.shard_map(local, mesh=mesh, in_specs=(P(axis, None), P(axis, None)), out_specs=(P(), P()))
  dist, ang = f(teacher, student)
  return {"distance": dist, "angle": ang}
