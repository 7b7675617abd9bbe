"""ArcFace margin logits and loss against a float64 numpy reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from deocc_jax.losses import arcface


def _reference(cos, labels, s, m):
  out = np.array(cos, np.float64) * s
  for i, y in enumerate(labels):
    theta = math.acos(np.clip(cos[i, y], -1, 1))
    if theta + m <= math.pi:
      out[i, y] = s * math.cos(theta + m)
    else:
      out[i, y] = s * (cos[i, y] - math.sin(math.pi - m) * m)
  logp = (
      out
      - np.log(np.exp(out - out.max(1, keepdims=True)).sum(1, keepdims=True))
      - out.max(1, keepdims=True)
  )
  return out, -np.mean(logp[np.arange(len(labels)), labels])


def test_margin_logits_and_loss_match_reference():
  rng = np.random.default_rng(0)
  cos = np.tanh(rng.normal(size=(12, 7))).astype(np.float32)
  cos[0, 3] = -0.99  # theta + m > pi branch
  labels = rng.integers(0, 7, 12)
  labels[0] = 3
  for s, m in ((30.0, 0.5), (16.0, 0.2)):
    ref_logits, ref_loss = _reference(cos, labels, s, m)
    got = arcface.arcface_logits(jnp.asarray(cos), jnp.asarray(labels), s, m)
    np.testing.assert_allclose(np.asarray(got), ref_logits, rtol=1e-5, atol=1e-4)
    loss = arcface.arcface_loss(jnp.asarray(cos), jnp.asarray(labels), s, m)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)


def test_head_gives_cosines_and_finite_gradients():
  head = arcface.ArcFaceHead(num_classes=5)
  x = jax.random.normal(jax.random.key(0), (6, 16))
  params = head.init(jax.random.key(1), x)
  cos = head.apply(params, x)
  w = np.asarray(params["params"]["weight"], np.float64)
  ref = (np.asarray(x) / np.linalg.norm(np.asarray(x), axis=1, keepdims=True)) @ (
      w / np.linalg.norm(w, axis=0, keepdims=True)
  )
  np.testing.assert_allclose(np.asarray(cos), ref, atol=1e-5)
  g = jax.grad(lambda p: arcface.arcface_loss(head.apply(p, x), jnp.arange(6) % 5))(params)
  assert all(np.isfinite(np.asarray(l)).all() for l in jax.tree_util.tree_leaves(g))
