"""Relational distillation losses (Eqs. 12-18) against independent float64 numpy loops."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.test_util import check_grads

from deocc_jax.losses import distillation as D
from deocc_jax.losses import relational as R

# ----------------------------------------------------------------------------
# Independent float64 references (explicit loops over every pair / triplet).
# ----------------------------------------------------------------------------


def _huber(x: float) -> float:
  return 0.5 * x * x if abs(x) < 1.0 else abs(x) - 0.5


def ref_distance(t: np.ndarray, s: np.ndarray) -> float:
  b = len(t)
  pairs = [(i, j) for i in range(b) for j in range(b) if i != j]
  dt = {p: np.linalg.norm(t[p[0]] - t[p[1]]) for p in pairs}
  ds = {p: np.linalg.norm(s[p[0]] - s[p[1]]) for p in pairs}
  mt = sum(dt.values()) / len(pairs)
  ms = sum(ds.values()) / len(pairs)
  nt = (lambda v: v / mt) if mt > 0 else (lambda v: 0.0)
  ns = (lambda v: v / ms) if ms > 0 else (lambda v: 0.0)
  return sum(_huber(ns(ds[p]) - nt(dt[p])) for p in pairs) / len(pairs)


def _ref_cos(e: np.ndarray, i: int, j: int, k: int) -> float:
  """RKD: <normalize(e_i - e_j), normalize(e_k - e_j)>, F.normalize eps = 1e-12."""
  a = e[i] - e[j]
  c = e[k] - e[j]
  a = a / max(np.linalg.norm(a), 1e-12)
  c = c / max(np.linalg.norm(c), 1e-12)
  return float(a @ c)


def ref_angle(t: np.ndarray, s: np.ndarray, include_degenerate: bool = True) -> float:
  b = len(t)
  total, count = 0.0, 0
  for i, j, k in itertools.product(range(b), repeat=3):
    if not include_degenerate and (i == j or k == j):
      continue
    total += _huber(_ref_cos(s, i, j, k) - _ref_cos(t, i, j, k))
    count += 1
  return total / count


def _data(b: int, dt: int, ds: int, seed: int, dup: bool = False):
  rng = np.random.default_rng(seed)
  t = rng.normal(size=(b, dt))
  s = rng.normal(size=(b, ds)) * 3.0 + 1.5
  if dup:
    s[3] = s[1]
    s[5] = s[1]
    t[2] = t[0]
    t[4] = t[6]
  return t, s


CASES = [
    ("random", dict(b=9, dt=7, ds=5, seed=0, dup=False)),
    ("duplicates", dict(b=8, dt=6, ds=6, seed=1, dup=True)),
]


@pytest.mark.parametrize("name,kw", CASES)
def test_distance_loss_matches_numpy_pair_loops(name, kw):
  t, s = _data(**kw)
  got = R.distance_loss(jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32))
  np.testing.assert_allclose(float(got), ref_distance(t, s), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("include_degenerate", [True, False])
@pytest.mark.parametrize("name,kw", CASES)
def test_angle_loss_matches_numpy_triplet_loops(name, kw, include_degenerate):
  t, s = _data(**kw)
  want = ref_angle(t, s, include_degenerate)
  for bs in (None, 3):
    got = R.angle_loss(
        jnp.asarray(t, jnp.float32),
        jnp.asarray(s, jnp.float32),
        block_size=bs,
        include_degenerate=include_degenerate,
    )
    np.testing.assert_allclose(float(got), want, rtol=2e-5, atol=1e-7)


def test_all_identical_batch_is_finite_and_zero_cosines():
  """Every distance is zero: all cosines 0 (RKD), all normalised distances 0."""
  rng = np.random.default_rng(2)
  t = rng.normal(size=(6, 4))
  s = np.tile(rng.normal(size=(1, 4)), (6, 1))
  ts, ss = jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32)
  np.testing.assert_allclose(float(R.angle_loss(ts, ss)), ref_angle(t, s), rtol=2e-5)
  np.testing.assert_allclose(float(R.distance_loss(ts, ss)), ref_distance(t, s), rtol=2e-5)
  for fn in (R.angle_loss, R.distance_loss):
    g = jax.grad(lambda x, fn=fn: fn(ts, x))(ss)
    assert np.all(np.isfinite(np.asarray(g)))


def test_no_nan_gradients_with_duplicated_rows():
  t, s = _data(b=8, dt=6, ds=6, seed=3, dup=True)
  ts, ss = jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32)
  for fn in (R.distance_loss, R.angle_loss, lambda a, b: R.angle_loss(a, b, block_size=3)):
    g = np.asarray(jax.grad(lambda x, fn=fn: fn(ts, x))(ss))
    assert np.all(np.isfinite(g)), fn
    assert np.abs(g).sum() > 0


def test_gram_form_near_duplicates_error_is_bounded():
  """Large common offset + small spread: centring keeps the Gram form accurate."""
  rng = np.random.default_rng(4)
  base = rng.normal(size=(1, 32)) * 100.0
  t = base + rng.normal(size=(7, 32))
  s = base + rng.normal(size=(7, 32)) * 0.1
  got = R.angle_loss(jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32))
  # Loss differences are squared cosine differences; compare cosines directly too.
  np.testing.assert_allclose(float(got), ref_angle(t, s), rtol=1e-3, atol=1e-6)
  d = np.asarray(R.pairwise_distances(jnp.asarray(s, jnp.float32)))
  ref = np.linalg.norm(s[:, None] - s[None], axis=-1)
  np.testing.assert_allclose(d, ref, rtol=1e-3, atol=1e-4)


def test_blocked_equals_direct():
  rng = np.random.default_rng(5)
  t = jnp.asarray(rng.normal(size=(13, 8)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(13, 6)), jnp.float32)
  vg = lambda bs: jax.jit(jax.value_and_grad(lambda x: R.angle_loss(t, x, block_size=bs)))(s)
  direct, gdirect = vg(None)
  for bs in (1, 4, 5, 13, 32):
    v, g = vg(bs)
    np.testing.assert_allclose(float(v), float(direct), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g), np.asarray(gdirect), rtol=1e-5, atol=1e-7)


def test_tiles_with_padding_equal_single_tile(monkeypatch):
  # Small tile budget: several anchor blocks and row blocks, both padded
  # (B = 37 divisible by neither), nested scans; must equal one whole tile.
  rng = np.random.default_rng(11)
  t = jnp.asarray(rng.normal(size=(37, 8)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(37, 5)), jnp.float32)
  s = s.at[3].set(s[7])  # a zero distance inside the tiles
  vg = lambda: jax.jit(jax.value_and_grad(lambda x: R.angle_loss(t, x)))(s)
  whole, gwhole = vg()
  assert R._tile_shape(37, 37, None) == (16, 37)
  monkeypatch.setattr(R, "_TILE_ELEMS", 30 * 37)
  assert R._tile_shape(37, 37, None) == (3, 10)
  v, g = vg()
  np.testing.assert_allclose(float(v), float(whole), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(g), np.asarray(gwhole), rtol=1e-5, atol=1e-7)
  assert np.all(np.isfinite(np.asarray(g)))
  np.testing.assert_allclose(
      float(v), ref_angle(np.asarray(t, np.float64), np.asarray(s, np.float64)), rtol=1e-4
  )


def test_check_grads_float64():
  """Finite differences in float64 on inputs without ties."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(6)
    t = jnp.asarray(rng.normal(size=(7, 5)))
    s = jnp.asarray(rng.normal(size=(7, 4)))
    kw = dict(order=1, eps=1e-6, atol=1e-6, rtol=1e-5)
    check_grads(lambda x: R.distance_loss(t, x), (s,), modes=("fwd", "rev"), **kw)
    # angle_loss has a fused custom VJP: reverse mode only.
    check_grads(lambda x: R.angle_loss(t, x), (s,), modes=("rev",), **kw)
    check_grads(lambda x: R.angle_loss(t, x, block_size=3), (s,), modes=("rev",), **kw)
    s_same = jnp.asarray(rng.normal(size=(7, 5)))
    check_grads(lambda x: D.instance_loss(t, x), (s_same,), modes=("fwd", "rev"), **kw)


def test_teacher_gets_no_gradient():
  t, s = _data(b=6, dt=4, ds=4, seed=7)
  ts, ss = jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32)
  for fn in (R.distance_loss, R.angle_loss, D.instance_loss):
    g = jax.grad(fn, argnums=0)(ts, ss)
    assert np.all(np.asarray(g) == 0.0)


def test_sharded_equals_unsharded_value_and_grad():
  devices = np.array(jax.devices()[:8])
  assert devices.size == 8, "conftest should provide 8 fake CPU devices"
  mesh = Mesh(devices, ("data",))
  t, s = _data(b=16, dt=6, ds=5, seed=8)
  s[9] = s[2]  # a duplicate across devices
  ts, ss = jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32)
  for bs in (None, 1):

    def sharded(x, bs=bs):
      out = R.sharded_relational_losses(ts, x, mesh, "data", block_size=bs)
      return out["distance"] + 2.0 * out["angle"], out

    def single(x):
      dist, ang = R.distance_loss(ts, x), R.angle_loss(ts, x)
      return dist + 2.0 * ang, {"distance": dist, "angle": ang}

    (v_sh, o_sh), g_sh = jax.jit(jax.value_and_grad(sharded, has_aux=True))(ss)
    (v_1, o_1), g_1 = jax.jit(jax.value_and_grad(single, has_aux=True))(ss)
    for k in ("distance", "angle"):
      np.testing.assert_allclose(float(o_sh[k]), float(o_1[k]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(v_sh), float(v_1), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g_sh), np.asarray(g_1), rtol=1e-5, atol=1e-6)
    assert float(o_1["angle"]) > 0


def test_instance_losses_and_centroids_vs_numpy():
  rng = np.random.default_rng(9)
  n, d, c = 20, 5, 7
  emb = rng.normal(size=(n, d))
  labels = rng.integers(0, c - 2, size=n)  # identities 5, 6 have no sample
  cent, counts = D.identity_centroids(jnp.asarray(emb, jnp.float32), jnp.asarray(labels), c)
  for k in range(c):
    sel = emb[labels == k]
    assert int(counts[k]) == len(sel)
    want = sel.mean(0) if len(sel) else np.zeros(d)
    np.testing.assert_allclose(np.asarray(cent[k]), want, rtol=1e-5, atol=1e-6)
  assert int(counts[5]) == 0 and np.all(np.asarray(cent[6]) == 0)

  s = rng.normal(size=(6, d))
  lab = labels[:6]

  # Eq. 12 / 17: l1(a, b) is the L1 distance of two vectors (sum over the
  # dimensions, float64 loops), averaged over the batch.
  def l1(a, b):
    return sum(abs(float(a[k]) - float(b[k])) for k in range(d))

  want = np.mean([l1(s[b], np.asarray(cent, np.float64)[lab[b]]) for b in range(6)])
  got = D.soft_instance_loss(jnp.asarray(s, jnp.float32), jnp.asarray(lab), cent)
  np.testing.assert_allclose(float(got), want, rtol=1e-6)
  t = rng.normal(size=(6, d))
  want_hard = np.mean([l1(t[b], s[b]) for b in range(6)])
  got_hard = D.instance_loss(jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32))
  np.testing.assert_allclose(float(got_hard), want_hard, rtol=1e-6)


def test_instance_loss_is_an_l1_distance_not_a_mean_over_dimensions():
  """Eq. 12 at the right scale: doubling the dimension with a copy of every
  coordinate doubles the per-sample L1 distance (a mean over dimensions would
  not change), and a single sample gives exactly ||t - s||_1."""
  rng = np.random.default_rng(12)
  t = rng.normal(size=(5, 16))
  s = rng.normal(size=(5, 16))
  f = lambda a, b: float(
      D.instance_loss(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))  # noqa: E731
  )
  np.testing.assert_allclose(
      f(np.concatenate([t, t], 1), np.concatenate([s, s], 1)), 2 * f(t, s), rtol=1e-6
  )
  np.testing.assert_allclose(f(t[:1], s[:1]), np.abs(t[0] - s[0]).sum(), rtol=1e-6)
  lab = np.array([0, 1, 0, 2, 1])
  cent = rng.normal(size=(3, 16))
  np.testing.assert_allclose(
      float(
          D.soft_instance_loss(
              jnp.asarray(s, jnp.float32), jnp.asarray(lab), jnp.asarray(cent, jnp.float32)
          )
      ),
      np.mean(np.abs(s - cent[lab]).sum(1)),
      rtol=1e-6,
  )


def test_cross_entropy_vs_numpy():
  rng = np.random.default_rng(10)
  logits = rng.normal(size=(5, 4)) * 2
  tl = rng.normal(size=(5, 4)) * 2
  labels = rng.integers(0, 4, size=5)

  def logsm(x):
    m = x.max(1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(1, keepdims=True))

  want = -np.mean(logsm(logits)[np.arange(5), labels])
  got = D.cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
  np.testing.assert_allclose(float(got), want, rtol=1e-6)
  temp = 3.0
  pt = np.exp(logsm(tl / temp))
  want_kd = temp**2 * np.mean(np.sum(pt * (logsm(tl / temp) - logsm(logits / temp)), 1))
  got_kd = D.cross_entropy(
      jnp.asarray(logits, jnp.float32),
      target="teacher",
      teacher_logits=jnp.asarray(tl, jnp.float32),
      temperature=temp,
  )
  np.testing.assert_allclose(float(got_kd), want_kd, rtol=1e-5)


@pytest.mark.parametrize("mode", ["hard", "soft", "none"])
def test_total_loss_is_weighted_sum_of_terms(mode):
  rng = np.random.default_rng(11)
  t = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  logits = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=6))
  cent = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  total, terms = D.total_distillation_loss(
      t, s, logits, labels, instance_mode=mode, centroids=cent, lambda_i=0.7
  )
  inst = {
      "hard": D.instance_loss(t, s),
      "soft": D.soft_instance_loss(s, labels, cent),
      "none": 0.0,
  }[mode]
  want = (
      D.cross_entropy(logits, labels)
      + 0.7 * inst
      + R.distance_loss(t, s)
      + 2.0 * R.angle_loss(t, s)
  )
  np.testing.assert_allclose(float(total), float(want), rtol=1e-6)
  assert set(terms) == {"ce", "instance", "distance", "angle"}
  np.testing.assert_allclose(float(terms["instance"]), float(inst), rtol=1e-6)


def test_errors_name_argument_and_shape():
  a = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match=r"batch mismatch.*\(4, 3\).*\(5, 3\)"):
    R.distance_loss(a, jnp.zeros((5, 3)))
  with pytest.raises(ValueError, match="student"):
    R.angle_loss(a, jnp.zeros((4,)))
  with pytest.raises(ValueError, match="same embedding dimension"):
    D.instance_loss(a, jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="block_size"):
    R.angle_loss(a, a, block_size=0)
  with pytest.raises(ValueError, match="centroids"):
    D.soft_instance_loss(a, jnp.zeros((4,), jnp.int32), jnp.zeros((2, 5)))
  with pytest.raises(ValueError, match="instance_mode='soft'"):
    D.total_distillation_loss(a, a, instance_mode="soft")
