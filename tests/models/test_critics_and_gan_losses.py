"""Critics, hole-box cropping and adversarial objectives."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax.losses.adversarial import (
    WGAN_GP_LAMBDA,
    discriminator_loss,
    generator_adversarial_loss,
    gradient_penalty,
    random_interpolates,
)
from deocc_jax.models.critics import (
    Critic,
    conv_s2_transpose_subpixel,
    GlobalCritic,
    GlobalLocalCritics,
    LocalCritic,
    crop_hole_boxes,
    hole_boxes,
)


def _masks(boxes, h, w):
  m = np.zeros((len(boxes), h, w, 1), np.float32)
  for n, (t, l, b, r) in enumerate(boxes):
    m[n, t:b, l:r] = 1.0
  return m


def test_hole_boxes_per_sample():
  boxes = [(2, 3, 9, 7), (0, 0, 16, 16), (5, 1, 6, 2)]
  m = _masks(boxes, 16, 16)
  m[0, 4, 10] = 1.0  # extra pixel widens box 0 to the right
  m = np.concatenate([m, np.zeros((1, 16, 16, 1), np.float32)])  # empty -> full image
  got = np.asarray(jax.jit(hole_boxes)(jnp.asarray(m)))
  np.testing.assert_array_equal(got, [[2, 3, 9, 11], [0, 0, 16, 16], [5, 1, 6, 2], [0, 0, 16, 16]])


def _ref_crop(img: np.ndarray, box, size: int) -> np.ndarray:
  """Half-pixel bilinear upsampling of img[box] (edge-clamped), loops, float64."""
  t, l, b, r = box
  h, w, c = img.shape
  out = np.zeros((size, size, c))
  sy, sx = size / (b - t), size / (r - l)
  for i in range(size):
    for j in range(size):
      y = t + (i + 0.5) / sy - 0.5
      x = l + (j + 0.5) / sx - 0.5
      y0, x0 = math.floor(y), math.floor(x)
      acc = np.zeros(c)
      wsum = 0.0
      for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
          wgt = max(0.0, 1 - abs(y - yy)) * max(0.0, 1 - abs(x - xx))
          if 0 <= yy < h and 0 <= xx < w and wgt > 0:
            acc += wgt * img[yy, xx]
            wsum += wgt
      out[i, j] = acc / wsum
  return out


def test_crop_hole_boxes_identity_and_upsampling():
  rng = np.random.default_rng(0)
  img = rng.uniform(-1, 1, (3, 24, 24, 3)).astype(np.float32)
  boxes = [(3, 5, 11, 13), (10, 2, 14, 6), (0, 16, 4, 24)]  # 8x8, 4x4, 4x8
  m = _masks(boxes, 24, 24)
  crop = np.asarray(jax.jit(crop_hole_boxes, static_argnums=2)(jnp.asarray(img), jnp.asarray(m), 8))
  assert crop.shape == (3, 8, 8, 3)
  np.testing.assert_allclose(crop[0], img[0, 3:11, 5:13], atol=1e-5)  # same size: exact crop
  for n in (1, 2):
    np.testing.assert_allclose(
        crop[n], _ref_crop(img[n].astype(np.float64), boxes[n], 8), atol=1e-5
    )


def test_crop_hole_boxes_downsampling_and_grad():
  rng = np.random.default_rng(1)
  img = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32))
  m = jnp.asarray(_masks([(0, 0, 32, 32), (8, 8, 24, 24)], 32, 32))
  crop = crop_hole_boxes(img, m, 8)
  # 4x box-downsampling with antialiasing approximately averages 4x4 blocks
  const = jnp.ones_like(img) * 0.3
  np.testing.assert_allclose(np.asarray(crop_hole_boxes(const, m, 8)), 0.3, atol=1e-5)
  assert crop.shape == (2, 8, 8, 3)
  g = jax.grad(lambda x: jnp.sum(crop_hole_boxes(x, m, 8) ** 2))(img)
  g = np.asarray(g)
  assert np.all(np.isfinite(g))
  # sample 1's crop only depends on pixels near its box
  assert np.abs(g[1, :6]).sum() == 0.0 and np.abs(g[1, 8:24, 8:24]).sum() > 0.0


def test_crop_hole_boxes_bad_mask():
  with pytest.raises(ValueError, match="masks must have shape"):
    crop_hole_boxes(jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 8, 8, 3)), 4)


def test_critic_architecture_and_outputs():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32))
  g = GlobalCritic(cnum=4)
  pg = jax.jit(g.init)(jax.random.PRNGKey(0), x)["params"]
  shapes = [pg[f"conv{i}"]["kernel"].shape for i in range(1, 5)]
  assert shapes == [(5, 5, 3, 4), (5, 5, 4, 8), (5, 5, 8, 16), (5, 5, 16, 16)]
  assert pg["fc"]["kernel"].shape == (2 * 2 * 16, 1)  # 32 / 2**4 = 2
  out = jax.jit(g.apply)({"params": pg}, x)
  assert out.shape == (2,) and out.dtype == jnp.float32
  lc = LocalCritic(cnum=4)
  pl = jax.jit(lc.init)(jax.random.PRNGKey(1), x[:, :16, :16])["params"]
  assert pl["conv4"]["kernel"].shape == (5, 5, 16, 32)
  # samples are independent (no normalisation across the batch)
  np.testing.assert_allclose(
      np.asarray(jax.jit(g.apply)({"params": pg}, x[:1])), np.asarray(out[:1]), rtol=1e-5, atol=1e-6
  )
  both = GlobalLocalCritics(cnum=4)
  pb = jax.jit(both.init)(jax.random.PRNGKey(2), x, x[:, :16, :16])
  dg, dl = jax.jit(both.apply)(pb, x, x[:, :16, :16])
  assert dg.shape == (2,) and dl.shape == (2,)
  dg16 = jax.jit(Critic(cnum=4, dtype=jnp.bfloat16).apply)({"params": pg}, x)
  assert dg16.dtype == jnp.float32
  # measured: 0.0011 on logits of ~0.19 (bf16 keeps 8 mantissa bits)
  np.testing.assert_allclose(np.asarray(dg16), np.asarray(out), atol=0.005, rtol=0.02)


def _sp(z):
  return math.log1p(math.exp(-abs(z))) + max(z, 0.0)


def test_gan_losses_against_formulas():
  rng = np.random.default_rng(3)
  dr = rng.normal(size=5) * 3
  df = rng.normal(size=5) * 3
  sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
  ref_d = -np.mean([math.log(sig(z)) for z in dr]) - np.mean([math.log(1 - sig(z)) for z in df])
  ref_g = -np.mean([math.log(sig(z)) for z in df])
  got_d = float(
      discriminator_loss("gan", jnp.asarray(dr, jnp.float32), jnp.asarray(df, jnp.float32))
  )
  got_g = float(generator_adversarial_loss("gan", jnp.asarray(df, jnp.float32)))
  assert got_d == pytest.approx(ref_d, rel=1e-5)
  assert got_g == pytest.approx(ref_g, rel=1e-5)
  # numerically stable for huge logits
  big = jnp.asarray([1e4, -1e4], jnp.float32)
  assert np.isfinite(float(discriminator_loss("gan", big, -big)))
  assert float(discriminator_loss("gan", big, -big)) == pytest.approx(
      np.mean([_sp(-1e4), _sp(1e4)]) + np.mean([_sp(-1e4), _sp(1e4)]), rel=1e-6
  )
  assert np.all(np.isfinite(jax.grad(lambda z: generator_adversarial_loss("gan", z))(big)))
  # WGAN
  assert float(discriminator_loss("wgan_gp", jnp.asarray(dr), jnp.asarray(df))) == pytest.approx(
      df.mean() - dr.mean(), abs=1e-5
  )
  assert float(generator_adversarial_loss("wgan_gp", jnp.asarray(df))) == pytest.approx(
      -df.mean(), abs=1e-5
  )
  with pytest.raises(ValueError, match="kind"):
    discriminator_loss("hinge", big, big)
  with pytest.raises(ValueError, match="kind"):
    generator_adversarial_loss("lsgan", big)


def test_random_interpolates_per_sample_alpha():
  real = jnp.zeros((4, 3, 3, 2))
  fake = jnp.ones((4, 3, 3, 2))
  x = np.asarray(random_interpolates(real, fake, jax.random.PRNGKey(0)))
  for n in range(4):
    assert np.all(x[n] == x[n, 0, 0, 0]) and 0 <= x[n, 0, 0, 0] < 1
  assert len(set(x[:, 0, 0, 0].tolist())) == 4


def test_gradient_penalty_analytic_linear_critic():
  # D(x) = sum(x * W) -> dD/dx = W for every x; penalty is then known in closed form.
  rng = np.random.default_rng(4)
  wmap = rng.normal(size=(8, 8, 3)).astype(np.float32)
  critic = lambda x: jnp.sum(x * wmap, axis=(1, 2, 3))  # noqa: E731
  real = jnp.asarray(rng.normal(size=(3, 8, 8, 3)).astype(np.float32))
  fake = jnp.asarray(rng.normal(size=(3, 8, 8, 3)).astype(np.float32))
  m = _masks([(0, 0, 4, 4), (2, 2, 8, 8), (0, 0, 0, 0)], 8, 8)
  got = float(gradient_penalty(critic, real, fake, jnp.asarray(m), jax.random.PRNGKey(1)))
  ref = 0.0
  for n in range(3):
    s = 0.0
    for i in range(8):
      for j in range(8):
        for c in range(3):
          s += float(wmap[i, j, c]) ** 2 * m[n, i, j, 0]
    ref += (math.sqrt(s) - 1.0) ** 2
  ref /= 3
  assert got == pytest.approx(ref, rel=1e-4)
  full = float(gradient_penalty(critic, real, fake, None, jax.random.PRNGKey(1)))
  assert full == pytest.approx((math.sqrt(float(np.sum(wmap**2))) - 1.0) ** 2, rel=1e-4)
  assert WGAN_GP_LAMBDA == 10.0


def test_gradient_penalty_nonlinear_critic_and_param_grad():
  rng = np.random.default_rng(5)
  critic = GlobalCritic(cnum=4)
  real = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32))
  fake = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32))
  m = jnp.asarray(_masks([(2, 2, 9, 9), (4, 0, 16, 6)], 16, 16))
  params = critic.init(jax.random.PRNGKey(0), real)
  key = jax.random.PRNGKey(7)

  def gp(p):
    return gradient_penalty(lambda z: critic.apply(p, z), real, fake, m, key)

  val, grads = jax.jit(jax.value_and_grad(gp))(params)
  # reference: same interpolates, per-sample input gradients via vmap of single samples
  x = random_interpolates(real, fake, key)
  ref = 0.0
  for n in range(2):
    gn = jax.grad(lambda z: critic.apply(params, z[None])[0])(x[n])
    ref += (float(jnp.sqrt(jnp.sum(gn**2 * m[n]))) - 1.0) ** 2
  assert float(val) == pytest.approx(ref / 2, rel=1e-4)
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(np.all(np.isfinite(l)) for l in leaves)
  assert sum(float(jnp.abs(l).sum()) for l in leaves) > 0.0


def test_fast_double_backward_critic_is_numerically_identical():
  rng = np.random.default_rng(6)
  real = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32))
  fake = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32))
  m = jnp.asarray(_masks([(2, 2, 9, 9), (4, 0, 16, 6)], 16, 16))
  slow, fast = Critic(cnum=4, fast_double_backward=False), Critic(cnum=4)
  params = jax.jit(slow.init)(jax.random.PRNGKey(0), real)
  fast_params = jax.jit(fast.init)(jax.random.PRNGKey(0), real)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(fast_params)
  key = jax.random.PRNGKey(3)

  def make(critic):
    def f(p):
      gp = gradient_penalty(lambda z: critic.apply(p, z), real, fake, m, key)
      return gp + jnp.mean(critic.apply(p, fake)) - jnp.mean(critic.apply(p, real))

    return jax.jit(jax.value_and_grad(f))

  v0, g0 = make(slow)(params)
  v1, g1 = make(fast)(params)  # same parameter tree, same values
  assert float(v1) == pytest.approx(float(v0), rel=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
    np.testing.assert_allclose(
        np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(a)))
    )
  # input gradients (used by G's adversarial loss) agree too
  gx0 = jax.grad(lambda z: jnp.sum(slow.apply(params, z) ** 2))(fake)
  gx1 = jax.grad(lambda z: jnp.sum(fast.apply(params, z) ** 2))(fake)
  np.testing.assert_allclose(np.asarray(gx1), np.asarray(gx0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("hwk", [(16, 16, 5), (15, 17, 5), (9, 7, 3), (4, 4, 5), (2, 3, 5)])
def test_subpixel_transpose_equals_lax_input_gradient(hwk):
  h, w, k = hwk
  rng = np.random.default_rng(h * 100 + w)
  x = jnp.asarray(rng.standard_normal((2, h, w, 3)).astype(np.float32))
  kern = jnp.asarray(rng.standard_normal((k, k, 3, 4)).astype(np.float32))
  conv = lambda z: jax.lax.conv_general_dilated(  # noqa: E731
      z, kern, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  y, vjp = jax.vjp(conv, x)
  dy = jnp.asarray(rng.standard_normal(y.shape).astype(np.float32))
  np.testing.assert_allclose(
      np.asarray(conv_s2_transpose_subpixel(dy, kern, x.shape)),
      np.asarray(vjp(dy)[0]),
      rtol=1e-5,
      atol=1e-5,
  )


@pytest.mark.parametrize("fast", [True, False])
def test_critics_match_an_independent_torch_forward_pass(fast):
  """Global (cnum 4, 32 px) and local (16 px, DeepFill's 1-2-4-8 widths)
  critics against PyTorch modules written from the architecture description
  (tests/helpers/torch_reference.py), in float64, with random biases."""
  import torch  # the test extra installs it
  from tests.helpers.torch_reference import TorchCritic, load_flax_, nhwc_to_nchw

  rng = np.random.default_rng(7)
  for cls, side, mult in ((GlobalCritic, 32, (1, 2, 4, 4)), (LocalCritic, 16, (1, 2, 4, 8))):
    x = rng.normal(size=(3, side, side, 3)).astype(np.float32)
    critic = cls(cnum=4, fast_double_backward=fast)
    params = critic.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
    params = jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape).astype(np.float32), params)
    got = np.asarray(jax.jit(critic.apply)({"params": params}, jnp.asarray(x)), np.float64)
    ref = TorchCritic(3, 4, mult, side)
    names = {f"convs.{i}": f"conv{i + 1}" for i in range(4)} | {"fc": "fc"}
    ref = load_flax_(ref, params, names)
    with torch.no_grad():
      want = ref(nhwc_to_nchw(x).double()).numpy()
    assert got.shape == want.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
