"""GFC's and IDGAN's objectives (losses/gfc.py, losses/idgan.py) against float64
numpy loops."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax.losses import gfc, idgan


def _softplus(z: float) -> float:
  return math.log1p(math.exp(-abs(z))) + max(z, 0.0)


def _ce_reference(logits: np.ndarray, labels: np.ndarray, weights=None) -> float:
  num = den = 0.0
  b, h, w, k = logits.shape
  for n in range(b):
    for i in range(h):
      for j in range(w):
        z = logits[n, i, j].astype(np.float64)
        lse = z.max() + math.log(sum(math.exp(v - z.max()) for v in z))
        wt = 1.0 if weights is None else float(weights[n, i, j])
        num += wt * (lse - z[labels[n, i, j]])
        den += wt
  return num / den


def _cos(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.dot(a, b) / (math.sqrt(np.dot(a, a)) * math.sqrt(np.dot(b, b))))


def test_l2_reconstruction_matches_loop():
  rng = np.random.default_rng(0)
  p, t = rng.uniform(-1, 1, (2, 2, 3, 4, 3)).astype(np.float32)
  want = sum((float(a) - float(b)) ** 2 for a, b in zip(p.ravel(), t.ravel())) / p.size
  np.testing.assert_allclose(float(gfc.l2_reconstruction_loss(p, t)), want, rtol=1e-5)
  with pytest.raises(AssertionError):
    gfc.l2_reconstruction_loss(p, t[:, :2])


def test_pixel_cross_entropy_matches_loop_with_and_without_weights():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 3, (2, 3, 4, 5)).astype(np.float32)
  labels = rng.integers(0, 5, (2, 3, 4)).astype(np.int32)
  weights = (rng.uniform(size=(2, 3, 4)) > 0.4).astype(np.float32)
  np.testing.assert_allclose(
      float(gfc.pixel_cross_entropy(logits, labels)), _ce_reference(logits, labels), rtol=1e-5
  )
  np.testing.assert_allclose(
      float(gfc.semantic_parsing_loss(logits, labels, weights)),
      _ce_reference(logits, labels, weights),
      rtol=1e-5,
  )
  g = np.asarray(jax.grad(lambda z: gfc.pixel_cross_entropy(z, labels))(jnp.asarray(logits)))
  # d CE / d logits = (softmax - onehot) / #pixels
  sm = np.exp(logits - logits.max(-1, keepdims=True))
  sm /= sm.sum(-1, keepdims=True)
  want = (sm - np.eye(5)[labels]) / labels.size
  np.testing.assert_allclose(g, want, atol=1e-6)


@pytest.mark.parametrize(
    "lshape,dtype,wshape,match",
    [
        ((2, 3, 5), np.int32, None, "labels must have shape"),
        ((2, 3, 4), np.float32, None, "integers"),
        ((2, 3, 4), np.int32, (2, 3), "weights must have shape"),
    ],
)
def test_pixel_cross_entropy_refuses_bad_shapes(lshape, dtype, wshape, match):
  logits = jnp.zeros((2, 3, 4, 5))
  w = None if wshape is None else jnp.ones(wshape)
  with pytest.raises(ValueError, match=match):
    gfc.pixel_cross_entropy(logits, jnp.zeros(lshape, dtype), w)
  with pytest.raises(ValueError, match=r"\(B, H, W, K\)"):
    gfc.pixel_cross_entropy(jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), jnp.int32))


def test_gfc_generator_and_critic_objectives_match_loops():
  rng = np.random.default_rng(2)
  pred, target = rng.uniform(-1, 1, (2, 2, 4, 4, 3)).astype(np.float32)
  dg, dl, rg, rl = rng.normal(0, 2, (4, 2)).astype(np.float32)
  logits = rng.normal(0, 2, (2, 4, 4, 5)).astype(np.float32)
  labels = rng.integers(0, 5, (2, 4, 4)).astype(np.int32)
  w = gfc.GFCWeights(reconstruction=0.7, adv_local=0.3, adv_global=0.2, parsing=0.11)
  total, terms = gfc.gfc_generator_loss(pred, target, dg, dl, logits, labels, w)
  rec = float(np.mean((pred.astype(np.float64) - target) ** 2))
  a_l = np.mean([_softplus(-float(v)) for v in dl])
  a_g = np.mean([_softplus(-float(v)) for v in dg])
  par = _ce_reference(logits, labels)
  for name, want in (("reconstruction", rec), ("adv_local", a_l), ("adv_global", a_g)):
    np.testing.assert_allclose(float(terms[name]), want, rtol=1e-5)
  np.testing.assert_allclose(float(terms["parsing"]), par, rtol=1e-5)
  np.testing.assert_allclose(
      float(total), 0.7 * rec + 0.3 * a_l + 0.2 * a_g + 0.11 * par, rtol=1e-5
  )
  d_total, d_terms = gfc.gfc_critic_loss(rg, dg, rl, dl)
  want_g = np.mean([_softplus(-float(v)) for v in rg]) + np.mean([_softplus(float(v)) for v in dg])
  want_l = np.mean([_softplus(-float(v)) for v in rl]) + np.mean([_softplus(float(v)) for v in dl])
  np.testing.assert_allclose(float(d_terms["global"]), want_g, rtol=1e-5)
  np.testing.assert_allclose(float(d_terms["local"]), want_l, rtol=1e-5)
  np.testing.assert_allclose(float(d_total), want_g + want_l, rtol=1e-5)


def test_gfc_default_weights_are_the_release_weights_per_element():
  w = gfc.GFCWeights()
  assert w.reconstruction == 1.0
  assert math.isclose(w.adv_local, 300 / 49152) and math.isclose(w.adv_global, 300 / 49152)
  assert math.isclose(w.parsing, 0.05 * 16384 / 49152)


def _identity_reference(emb, target):
  return np.mean([1 - _cos(emb[i], target[i]) for i in range(len(emb))])


def _diversity_reference(emb, labels, margin):
  vals = [
      max(0.0, _cos(emb[i], emb[j]) - margin)
      for i in range(len(emb))
      for j in range(i + 1, len(emb))
      if labels[i] != labels[j]
  ]
  return float(np.mean(vals)) if vals else 0.0


@pytest.mark.parametrize("margin", [0.0, 0.2, -0.5])
def test_identity_terms_match_loops(margin):
  rng = np.random.default_rng(3)
  emb = rng.normal(size=(6, 5)).astype(np.float32)
  emb[3] = emb[0] + 0.1 * emb[3]  # a near-duplicate of a different identity
  target = rng.normal(size=(6, 5)).astype(np.float32)
  labels = np.array([0, 1, 0, 2, 1, 3], np.int32)
  e64, t64 = emb.astype(np.float64), target.astype(np.float64)
  np.testing.assert_allclose(
      float(idgan.identity_preservation_loss(emb, target)),
      _identity_reference(e64, t64),
      rtol=1e-5,
  )
  got = float(idgan.identity_diversity_loss(emb, jnp.asarray(labels), margin))
  want = _diversity_reference(e64, labels, margin)
  assert want > 0
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_diversity_is_zero_without_pairs_of_different_identities_and_refuses_bad_labels():
  emb = np.random.default_rng(4).normal(size=(4, 3)).astype(np.float32)
  assert float(idgan.identity_diversity_loss(emb, jnp.zeros(4, jnp.int32), -1.0)) == 0.0
  with pytest.raises(ValueError, match="labels must have shape"):
    idgan.identity_diversity_loss(emb, jnp.zeros(3, jnp.int32))


def test_identity_gradients_are_finite_nonzero_and_match_finite_differences():
  rng = np.random.default_rng(5)
  emb = rng.normal(size=(4, 6))
  target = rng.normal(size=(4, 6))
  labels = np.array([0, 1, 2, 1])

  def f(e):
    return idgan.identity_preservation_loss(e, target) + idgan.identity_diversity_loss(
        e, jnp.asarray(labels), -0.2
    )

  g = np.asarray(jax.grad(f)(jnp.asarray(emb, jnp.float32)))
  assert np.all(np.isfinite(g)) and np.all(np.abs(g).sum(1) > 0)

  def ref(e):
    return _identity_reference(e, target) + _diversity_reference(e, labels, -0.2)

  fd = np.zeros_like(emb)
  for idx in np.ndindex(emb.shape):
    d = np.zeros_like(emb)
    d[idx] = 1e-6
    fd[idx] = (ref(emb + d) - ref(emb - d)) / 2e-6
  np.testing.assert_allclose(g, fd, atol=2e-5)


def test_idgan_generator_objective_matches_loops_and_freezes_the_target():
  rng = np.random.default_rng(6)
  comp, target = rng.uniform(-1, 1, (2, 2, 4, 4, 3)).astype(np.float32)
  dg, dl = rng.normal(0, 2, (2, 3)).astype(np.float32)
  emb, emb_t = rng.normal(size=(2, 3, 4)).astype(np.float32)
  labels = np.array([0, 1, 1], np.int32)
  w = idgan.IDGANWeights(
      reconstruction=0.5, adv_local=0.1, adv_global=0.3, identity=0.7, diversity=0.9, margin=-1.0
  )
  total, terms = idgan.idgan_generator_loss(comp, target, dg, dl, emb, emb_t, labels, w)
  rec = float(np.mean(np.abs(comp.astype(np.float64) - target)))
  a_l = np.mean([_softplus(-float(v)) for v in dl])
  a_g = np.mean([_softplus(-float(v)) for v in dg])
  ident = _identity_reference(emb.astype(np.float64), emb_t.astype(np.float64))
  div = _diversity_reference(emb.astype(np.float64), labels, -1.0)
  want = {"reconstruction": rec, "adv_local": a_l, "adv_global": a_g}
  want |= {"identity": ident, "diversity": div}
  for name, v in want.items():
    np.testing.assert_allclose(float(terms[name]), v, rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(
      float(total), 0.5 * rec + 0.1 * a_l + 0.3 * a_g + 0.7 * ident + 0.9 * div, rtol=1e-5
  )
  g_t = jax.grad(lambda t: idgan.idgan_generator_loss(comp, target, dg, dl, emb, t, labels)[0])(
      jnp.asarray(emb_t)
  )
  np.testing.assert_array_equal(np.asarray(g_t), 0.0)
