"""The evaluation's landmark detector from its config value
(``evaluate.landmark_detector``): MTCNN on the wheel's weights or on a
converted ``.npz``, and clear errors."""

import numpy as np
import pytest
from PIL import Image

from tests.helpers.photos import face_photos
from deocc_jax.conversion import mtcnn_weights as mw
from deocc_jax.data import real_datasets as rd


def test_mtcnn_from_a_converted_npz_equals_the_wheels_weights(tmp_path):
  npz = mw.convert_mtcnn(tmp_path / "mtcnn.npz")
  img = face_photos()["obama"]
  s = 320 / max(img.shape[:2])
  img = np.asarray(Image.fromarray(img).resize((round(img.shape[1] * s), round(img.shape[0] * s))))
  from_wheel = rd.make_detector("mtcnn")(img)
  from_npz = rd.make_detector(f"mtcnn:{npz}")(img)
  assert from_wheel.shape == (5, 2)
  np.testing.assert_array_equal(from_npz, from_wheel)


def test_missing_weights_and_unknown_spec_are_named(tmp_path):
  missing = tmp_path / "nope" / "x.npz"
  with pytest.raises(mw.MTCNNWeightsError, match="x.npz"):
    rd.make_detector(f"mtcnn:{missing}")
  with pytest.raises(ValueError, match="'mtcnn:FILE.npz'"):
    rd.make_detector("retinaface")


def test_dlib_detector_gives_celebas_five_points_and_the_paper_config_uses_mtcnn():
  """'dlib': eye centres, nose tip and mouth corners from the 68-point predictor
  (CelebA's definition), not dlib's 5-point marks (eye corners, nose base)."""
  from deocc_jax.configs import paper
  from deocc_jax.data import alignment

  img = face_photos()["obama"]
  s = 400 / max(img.shape[:2])
  img = np.asarray(Image.fromarray(img).resize((round(img.shape[1] * s), round(img.shape[0] * s))))
  got = rd.make_detector("dlib")(img)
  faces = alignment.detect_landmarks68_dlib(img).astype(np.float64)
  p = faces[int(np.argmax(np.ptp(faces[:, :, 0], axis=1)))]  # the widest face
  want = np.array(
      [
          [sum(p[i, 0] for i in range(36, 42)) / 6, sum(p[i, 1] for i in range(36, 42)) / 6],
          [sum(p[i, 0] for i in range(42, 48)) / 6, sum(p[i, 1] for i in range(42, 48)) / 6],
          p[30],
          p[48],
          p[54],
      ]
  )
  np.testing.assert_allclose(got, want, atol=1e-9)
  old = rd.largest_face(alignment.detect_landmarks_dlib(img))  # dlib's own five marks
  assert np.abs(old - got).max() > 2.0, np.abs(old - got).max()
  assert paper.get_config().evaluate.landmark_detector == "mtcnn"
