"""Occlusion synthesis: categories, coverage, compositing, user library."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from deocc_jax.data import masks as mk
from deocc_jax.data.mask_library import MaskLibrary
from deocc_jax.data.synthetic_faces import SyntheticFaces


@pytest.fixture(scope="module")
def faces():
  ds = SyntheticFaces(identities=40, images_per_identity=2, resolution=64, seed=1)
  return [ds[i] for i in range(0, 80, 2)]


@pytest.mark.parametrize("category", mk.CATEGORIES)
def test_every_category_in_coverage_range(faces, category):
  rng = np.random.default_rng(0)
  covs, kinds, fitted = [], set(), []
  for r in faces:
    occ = mk.synthesize_occlusion(rng, r["landmarks"], r["face_region"], category=category)
    assert occ.category == category
    assert occ.mask.shape == (64, 64) and set(np.unique(occ.mask)) <= {0.0, 1.0}
    covs.append(mk.coverage(occ.mask, r["face_region"]))
    kinds.add(occ.kind.split("/")[0])
    fitted.append("facemask:" in occ.kind)
  covs, fitted = np.array(covs), np.array(fitted)
  lo, hi = mk.DEFAULT_COVERAGE_RANGE
  # Procedural shapes: target drawn in [lo, hi]; the scale search lands close to it.
  scaled = covs[~fitted]
  assert np.mean((scaled >= lo - 0.03) & (scaled <= hi + 0.03)) >= 0.9, scaled
  assert 0.15 <= scaled.mean() <= 0.25, scaled.mean()  # about 1/5 of the face
  # Face masks are fitted to the landmarks, not to the target: nose to chin.
  if fitted.any():  # (+ sunglasses for hybrid)
    top = 0.9 if category == "hybrid" else 0.75
    assert 0.35 <= covs[fitted].min() and covs[fitted].max() <= top, covs[fitted]
  assert covs.mean() <= 0.32, covs.mean()
  assert len(kinds) >= 2, kinds  # several procedural shapes per category


@pytest.mark.parametrize("category", ("simple", "complex"))
def test_face_masks_join_the_man_made_categories(faces, category):
  cfg = mk.MaskConfig(face_mask_prob=1.0)
  rng = np.random.default_rng(5)
  kinds = set()
  for r in faces[:12]:
    occ = mk.synthesize_occlusion(rng, r["landmarks"], r["face_region"], cfg, category)
    assert occ.category == category and occ.kind.startswith("facemask:"), occ.kind
    kinds.add(occ.kind)
  if category == "complex":  # patterned cloth only
    assert kinds <= {"facemask:cloth/stripes", "facemask:cloth/print"}, kinds
  else:
    assert len({k.split("/")[0] for k in kinds}) >= 3, kinds  # surgical / n95 / kn95 / cloth
  none = mk.MaskConfig(face_mask_prob=0.0)
  for r in faces[:12]:
    occ = mk.synthesize_occlusion(rng, r["landmarks"], r["face_region"], none, category)
    assert "facemask" not in occ.kind


def test_configured_coverage_range_is_respected(faces):
  cfg = mk.MaskConfig(coverage_range=(0.35, 0.45), face_mask_prob=0.0)
  rng = np.random.default_rng(1)
  covs = [
      mk.coverage(
          mk.synthesize_occlusion(rng, r["landmarks"], r["face_region"], cfg).mask, r["face_region"]
      )
      for r in faces
  ]
  assert 0.33 <= np.median(covs) <= 0.47, covs


def test_hybrid_can_cover_the_eyes_with_sunglasses(faces):
  rng = np.random.default_rng(2)
  n_glasses, n_see_through = 0, 0
  for r in faces:
    occ = mk.synthesize_occlusion(rng, r["landmarks"], r["face_region"], category="hybrid")
    if occ.kind.startswith("sunglasses"):
      n_glasses += 1
      for eye in r["landmarks"][:2]:
        x, y = np.round(eye).astype(int)
        assert occ.mask[y, x] == 1
        # tinted, translucent lenses: the eye shows through (unless the second
        # occluder covers it too), M is still 1
        n_see_through += int(0.75 <= occ.alpha[y, x] < 1.0)
  assert n_glasses >= 10
  assert n_see_through >= 0.6 * 2 * n_glasses, (n_see_through, n_glasses)


@pytest.mark.parametrize("category", mk.CATEGORIES)
def test_composite_keeps_unmasked_pixels_exact(faces, category):
  rng = np.random.default_rng(3)
  for r in faces[:8]:
    occ = mk.synthesize_occlusion(rng, r["landmarks"], r["face_region"], category=category)
    out = mk.composite(r["image"], occ)
    outside = occ.mask == 0
    np.testing.assert_array_equal(out[outside], r["image"][outside])
    # M is exact: every pixel of M carries some of the occluder (alpha > 0)
    assert (occ.alpha[~outside] > 0).all()
    soft = (occ.alpha > 0) & (occ.alpha < 1)
    assert soft.sum() >= 8  # anti-aliased edges, not a hard sticker
  assert np.abs(out[~outside].astype(int) - r["image"][~outside].astype(int)).mean() > 3


def test_mask_config_validation():
  with pytest.raises(ValueError, match="unknown mask categories"):
    mk.MaskConfig(categories=("simple", "medical"))
  with pytest.raises(ValueError, match="coverage_range"):
    mk.MaskConfig(coverage_range=(0.5, 0.2))
  with pytest.raises(ValueError, match=r"landmarks must have shape \(5, 2\)"):
    mk.synthesize_occlusion(np.random.default_rng(0), np.zeros((4, 2)), np.ones((8, 8)))


def _write_rgba(path, w=40, h=24, colour=(200, 30, 30)):
  a = np.zeros((h, w, 4), np.uint8)
  a[..., :3] = colour
  a[4:-4, 2:-2, 3] = 255
  Image.fromarray(a, "RGBA").save(path)


def test_user_mask_library_placed_by_landmarks(tmp_path, faces):
  os.makedirs(tmp_path / "simple")
  _write_rgba(tmp_path / "simple" / "red.png")
  lib = MaskLibrary(str(tmp_path))
  assert len(lib) == 1
  cfg = mk.MaskConfig(categories=("simple",), library=lib, library_prob=1.0)
  rng = np.random.default_rng(0)
  for r in faces[:6]:
    occ = mk.synthesize_occlusion(rng, r["landmarks"], r["face_region"], cfg)
    assert occ.kind == "library:red.png"
    inside = occ.mask > 0
    assert inside.any()
    np.testing.assert_allclose(
        occ.rgb[inside],
        np.broadcast_to(np.array([200, 30, 30]) / 255, occ.rgb[inside].shape),
        atol=1e-6,
    )
    # Centred on the lower face: the mask's centroid is below the eyes.
    ys, xs = np.nonzero(inside)
    assert ys.mean() > r["landmarks"][:2, 1].mean()
    assert 0.05 <= mk.coverage(occ.mask, r["face_region"]) <= 0.35


def test_user_mask_library_bad_input(tmp_path):
  with pytest.raises(FileNotFoundError, match="mask library folder"):
    MaskLibrary(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no PNG mask images"):
    MaskLibrary(str(tmp_path / "empty"))
  d = tmp_path / "rgb"
  (d / "simple").mkdir(parents=True)
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "simple" / "x.png")
  with pytest.raises(ValueError, match=r"x\.png: mask images need an alpha channel"):
    MaskLibrary(str(d))
  f = tmp_path / "flat"
  f.mkdir()
  _write_rgba(f / "m.png")
  with pytest.raises(ValueError, match=r"m\.png: mask image outside a category folder"):
    MaskLibrary(str(f))
  (f / "masks.json").write_text(json.dumps({"m.png": {"category": "hybrid", "anchor": "eyes"}}))
  assert MaskLibrary(str(f)).masks[0].anchor == "eyes"
  (f / "masks.json").write_text("{broken")
  with pytest.raises(ValueError, match="masks.json: invalid JSON"):
    MaskLibrary(str(f))


def test_library_replaces_procedural_occluders_at_library_prob(tmp_path, faces):
  os.makedirs(tmp_path / "simple")
  _write_rgba(tmp_path / "simple" / "red.png")
  lib = MaskLibrary(str(tmp_path))
  r = faces[0]

  def rate(cfg, n=200):
    rng = np.random.default_rng(11)
    return np.mean(
        [
            mk.synthesize_occlusion(
                rng, r["landmarks"], r["face_region"], cfg, "simple"
            ).kind.startswith("library:")
            for _ in range(n)
        ]
    )

  # Default with a library: every occluder comes from it (as the paper's 45 PNGs).
  assert mk.MaskConfig(library=lib).effective_library_prob == 1.0
  assert rate(mk.MaskConfig(library=lib)) == 1.0
  assert rate(mk.MaskConfig(library=lib, library_prob=0.0)) == 0.0
  p = rate(mk.MaskConfig(library=lib, library_prob=0.3))
  assert 0.2 <= p <= 0.4, p  # binomial(200, 0.3): sd 0.032
  # categories without library images stay procedural
  rng = np.random.default_rng(0)
  assert not mk.synthesize_occlusion(
      rng, r["landmarks"], r["face_region"], mk.MaskConfig(library=lib), "body"
  ).kind.startswith("library")
  with pytest.raises(ValueError, match="library_prob"):
    mk.MaskConfig(library=lib, library_prob=1.5)


def test_library_prob_is_configurable_from_the_config(tmp_path):
  from deocc_jax.configs import base as synthetic
  from deocc_jax.data import pipeline as pl

  os.makedirs(tmp_path / "complex")
  _write_rgba(tmp_path / "complex" / "c.png")
  c = synthetic.get_config()
  assert pl.mask_config_from_data(c.data).library is None
  c.data.mask_library = str(tmp_path)
  assert pl.mask_config_from_data(c.data).effective_library_prob == 1.0
  c.data.library_prob = 0.25
  cfg = pl.mask_config_from_data(c.data)
  assert cfg.effective_library_prob == 0.25 and len(cfg.library) == 1
  c.data.face_mask_prob = 0.0
  assert pl.mask_config_from_data(c.data).face_mask_prob == 0.0
