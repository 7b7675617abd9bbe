"""Occluders synthesised on the device vs today's host synthesis (small sizes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax.data import dense_landmarks as dl
from deocc_jax.data import device_occluders as do
from deocc_jax.data import device_occluders_bank as bank_lib
from deocc_jax.data import device_occluders_host as host_lib
from deocc_jax.data import masks as mk
from deocc_jax.data.synthetic_faces import SyntheticFaces

N = 160  # draws per category, each side
SIZES = bank_lib.BankSizes(
    grid=64, simple=12, complex=42, body=8, facemask_simple=8, facemask_complex=4, sunglasses=6
)
_jit = do.synthesize_details  # jits its core: uint8 and float share one compile


@pytest.fixture(scope="module")
def bank():
  return do.build(mk.MaskConfig(), SIZES, seed=0)


@pytest.fixture(scope="module")
def faces():
  ds = SyntheticFaces(identities=N, images_per_identity=2, resolution=64, seed=3)
  recs = [ds[2 * i + (i % 2)] for i in range(N)]
  ex = [
      host_lib.prepare_example(r, np.random.default_rng(i), flip=False) for i, r in enumerate(recs)
  ]
  return recs, host_lib.stack_batch(ex)


@pytest.fixture(scope="module")
def device_draws(bank, faces):
  _, b = faces
  out = {}
  for ci, _ in enumerate(mk.CATEGORIES):
    cat = jnp.full((N,), ci, jnp.int32)
    o = _jit(bank, b["image"], b["landmarks"], jax.random.key(100 + ci), b["face_region"], cat)
    out[ci] = jax.tree.map(np.asarray, o)
  return out


@pytest.fixture(scope="module")
def host_draws(faces):
  recs, _ = faces
  rng = np.random.default_rng(7)
  out = {}
  for c in mk.CATEGORIES:
    cov, fm = [], []
    for r in recs:
      occ = mk.synthesize_occlusion(rng, r["landmarks"], r["face_region"], mk.MaskConfig(), c)
      cov.append(mk.coverage(occ.mask, r["face_region"]))
      fm.append("facemask:" in occ.kind)
    out[c] = (np.array(cov), np.array(fm))
  return out


def _is_face_mask(bank, kinds) -> np.ndarray:
  return np.array(["facemask:" in do.kind_name(bank, k) for k in kinds])


# The share of face masks per category that MaskConfig() prescribes (face_mask_prob
# 0.2; hybrid: sunglasses 0.6 x not body 2/3 x 0.2).
_FM_SHARE = {"simple": 0.2, "complex": 0.2, "body": 0.0, "hybrid": 0.6 * 2 / 3 * 0.2}


def _stratified_mean(cov, fm, share) -> float:
  """Category mean with the prescribed face-mask share (much less sampling noise)."""
  if share == 0:
    return float(cov.mean())
  assert fm.any() and (~fm).any(), "no face mask or no procedural draw"
  return share * float(cov[fm].mean()) + (1 - share) * float(cov[~fm].mean())


@pytest.mark.parametrize("ci", range(4))
def test_coverage_per_category_matches_host(bank, device_draws, host_draws, ci):
  cat = mk.CATEGORIES[ci]
  d = device_draws[ci]
  assert (d.category == ci).all()
  d_fm = _is_face_mask(bank, d.kind)
  h_cov, h_fm = host_draws[cat]
  share = _FM_SHARE[cat]
  dev = _stratified_mean(d.coverage, d_fm, share)
  host = _stratified_mean(h_cov, h_fm, share)
  assert abs(dev - host) <= 0.02, (cat, dev, host)
  # the draw tree gives face masks their share (binomial, 4 standard errors)
  se = np.sqrt(max(share * (1 - share), 1e-9) / N)
  assert abs(d_fm.mean() - share) <= 4 * se + 1e-9, (cat, d_fm.mean(), share)
  # and the raw means agree within their sampling noise
  noise = np.sqrt(d.coverage.var() / N + h_cov.var() / N)
  assert abs(d.coverage.mean() - h_cov.mean()) <= max(0.02, 4 * noise), (cat, noise)


def test_pixels_outside_the_mask_unchanged(device_draws, faces):
  _, b = faces
  for d in device_draws.values():
    out = d.mask[..., 0] == 0
    assert out.any() and (~out).any()
    np.testing.assert_array_equal(d.masked[out], b["image"][out])
    assert ((d.alpha > 0) == (d.mask[..., 0] > 0)).all()
    assert (d.masked[~out] != b["image"][~out]).any(axis=-1).mean() > 0.5  # occluded


def test_float_images_keep_outside_pixels_bit_exact(bank, faces):
  _, b = faces
  x = b["image"].astype(np.float32) * np.float32(2 / 255) - 1
  o = _jit(bank, x, b["landmarks"], jax.random.key(3), b["face_region"])
  assert o.masked.dtype == jnp.float32
  out = np.asarray(o.mask[..., 0]) == 0
  np.testing.assert_array_equal(np.asarray(o.masked)[out], x[out])
  assert np.abs(np.asarray(o.masked)).max() <= 1.0


def test_deterministic_for_a_key_and_keys_differ(bank, faces, device_draws):
  _, b = faces
  args = (bank, b["image"], b["landmarks"], jax.random.key(100), b["face_region"])
  again = _jit(*args, jnp.zeros((N,), jnp.int32))
  np.testing.assert_array_equal(np.asarray(again.masked), device_draws[0].masked)
  np.testing.assert_array_equal(np.asarray(again.kind), device_draws[0].kind)
  other = _jit(bank, *args[1:3], jax.random.key(101), args[4], jnp.zeros((N,), jnp.int32))
  differ = (np.asarray(again.masked) != np.asarray(other.masked)).any(axis=(1, 2, 3))
  assert differ.mean() > 0.9, differ.mean()


def test_every_category_and_kind_appears(bank, device_draws):
  names = set()
  for d in device_draws.values():
    names |= {do.kind_name(bank, k) for k in d.kind}
  parts = {p for n in names for q in n.split("+") for p in q.split("/")}
  shapes = {"surgical", "cloth", "n95", "bandana", "scarf", "patch", "hand", "hair", "sunglasses"}
  textures = {"stripes", "checks", "dots", "camouflage", "noise", "gradient", "logo"}
  face_masks = {"facemask:surgical", "facemask:n95", "facemask:kn95", "facemask:cloth"}
  assert shapes | textures | face_masks <= parts, (shapes | textures | face_masks) - parts
  assert {"solid", "print"} <= parts
  hybrids = {n for n in names if "+" in n}
  assert any(n.startswith("sunglasses+facemask:") for n in hybrids), hybrids
  assert any(not n.startswith("sunglasses") for n in hybrids), hybrids
  # the bank itself holds every kind the host draws
  bank_parts = {p for n in bank.kind_names for p in n.split("/")}
  assert shapes - {"sunglasses"} | textures <= bank_parts | {"sunglasses"}


def _ref_eye_warp(bank, arr, n, lm, h, w, scale, shift):
  """Float64 loop: inverse-map each output pixel to the canonical grid, bilinear."""
  s, x0, y0 = bank.px_per_iod, *bank.origin
  ax, ay = np.asarray(bank.anchor[n], np.float64)
  lm = np.asarray(lm, np.float64)
  c = (lm[0] + lm[1]) / 2
  e = lm[1] - lm[0]
  iod = np.hypot(*e)
  ex = e / iod
  g = arr.shape[1]
  img = np.asarray(arr[n], np.float64)
  out = np.zeros((h, w) + img.shape[2:])
  for i in range(h):
    for j in range(w):
      dx, dy = j - c[0], i - c[1]
      u = (dx * ex[0] + dy * ex[1]) / iod
      v = (-dx * ex[1] + dy * ex[0]) / iod
      x = ((u - shift[0] - ax) / scale + ax) * s + x0
      y = ((v - shift[1] - ay) / scale + ay) * s + y0
      x, y = min(max(x, 0.0), g - 1.0), min(max(y, 0.0), g - 1.0)
      xi, yi = min(int(np.floor(x)), g - 2), min(int(np.floor(y)), g - 2)
      fx, fy = x - xi, y - yi
      out[i, j] = (img[yi, xi] * (1 - fx) + img[yi, xi + 1] * fx) * (1 - fy) + (
          img[yi + 1, xi] * (1 - fx) + img[yi + 1, xi + 1] * fx
      ) * fy
  return out


def test_affine_warp_matches_float64_loop(bank):
  h, w = 20, 24
  lm = np.array([[8.3, 7.1], [15.2, 8.4], [11.5, 11.9], [8.9, 14.8], [14.1, 15.6]], np.float32)
  n = int(np.argmax(np.asarray(bank.kind) == bank.kind_names.index("hand")))
  scale, shift = 1.3, np.array([0.05, -0.1], np.float32)
  u, v = do._eye_frame(jnp.asarray(lm), h, w)
  zeros = jnp.zeros((h, w))
  x, y, *_ = do._layer_coords(bank, n, do.FIT, scale, jnp.asarray(shift), u, v, (zeros, zeros, 1.0))
  for arr in (bank.rgb, bank.sdf):
    got = np.asarray(do._sample(arr, n, x, y))
    ref = _ref_eye_warp(bank, arr, n, lm, h, w, scale, shift)
    tol = 2e-2 if arr.dtype == jnp.uint8 else 1e-4
    np.testing.assert_allclose(got, ref, atol=tol)
    assert np.abs(ref).max() > 0  # the shape is in view


@pytest.mark.parametrize("h", [48, 96])  # 96: on a coarse grid, then bilinear
def test_piecewise_warp_reduces_to_the_similarity(bank, h):
  w = h
  lm = np.array([[17.0, 20.0], [31.0, 18.5], [24.5, 27.0], [18.5, 33.5], [29.5, 32.0]]) * h / 48
  canon5 = np.asarray(do._canon5(bank), np.float64)
  m = dl._similarity(canon5, lm)  # canonical -> image, float64
  dense = np.asarray(bank.canon68[:68], np.float64) @ m[:, :2].T + m[:, 2]
  x, y, _ = do._piecewise(bank, jnp.asarray(lm, jnp.float32), jnp.asarray(dense, jnp.float32), h, w)
  gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
  a_inv = np.linalg.inv(m[:, :2])
  p = np.stack([gx - m[0, 2], gy - m[1, 2]], -1) @ a_inv.T
  e = 3  # the outermost coarse half-cells are extrapolated flat
  np.testing.assert_allclose(np.asarray(x)[e:-e, e:-e], p[e:-e, e:-e, 0], atol=0.05)
  np.testing.assert_allclose(np.asarray(y)[e:-e, e:-e], p[e:-e, e:-e, 1], atol=0.05)


def test_dense_from_5_matches_host(faces):
  recs, _ = faces
  for r in recs[:6]:
    ref = dl.dense_from_5(r["landmarks"], r["face_region"])
    got = do.dense_from_5(jnp.asarray(r["landmarks"]), jnp.asarray(r["face_region"]))
    np.testing.assert_allclose(np.asarray(got), ref, atol=2e-3)


def test_bad_inputs_name_the_shape(bank):
  img = np.zeros((2, 32, 32, 3), np.uint8)
  with pytest.raises(ValueError, match=r"landmarks must be \(2, 5, 2\)"):
    do.synthesize_details(bank, img, np.zeros((2, 4, 2)), jax.random.key(0))
  with pytest.raises(ValueError, match=r"images must be \(B, H, W, 3\)"):
    do.synthesize_details(bank, img[..., 0], np.zeros((2, 5, 2)), jax.random.key(0))
  with pytest.raises(ValueError, match=r"face_region must be \(2, 32, 32\)"):
    do.synthesize_details(
        bank, img, np.zeros((2, 5, 2)), jax.random.key(0), face_region=np.zeros((2, 16, 16))
    )
  with pytest.raises(ValueError, match="mixes records"):
    a = {"image": img[0], "landmarks": np.zeros((5, 2)), "identity": 0}
    host_lib.stack_batch([a, dict(a, face_region=np.zeros((32, 32), np.uint8))])


_BANK_DIGEST = """
import hashlib, sys
import numpy as np
from deocc_jax.data import device_occluders_bank as bank_lib
hb = bank_lib.build_bank(bank_lib.masks_lib.MaskConfig(), bank_lib.BankSizes(grid=64), 0)
h = hashlib.sha256()
for name in sorted(vars(hb)):  # every array (and the kind names); not the config object
  value = getattr(hb, name)
  if isinstance(value, (np.ndarray, tuple)):
    h.update(name.encode() + np.ascontiguousarray(value).tobytes())
print(h.hexdigest())
"""


def test_the_bank_is_the_same_in_every_process():
  """Every process of a job renders the bank itself, and a resumed job renders it
  again: it must not depend on the process (Python's string hash seed decided
  which entry a re-draw replaced, so processes occluded with different banks)."""
  import os  # noqa: PLC0415
  import subprocess  # noqa: PLC0415
  import sys  # noqa: PLC0415

  digests = set()
  for seed in ("1", "2", "3"):
    env = dict(os.environ, PYTHONHASHSEED=seed, JAX_PLATFORMS="cpu")
    r = subprocess.run(
        [sys.executable, "-c", _BANK_DIGEST], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    digests.add(r.stdout.strip())
  assert len(digests) == 1, digests
