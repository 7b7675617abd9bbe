"""The evaluation's landmark detector from its config value
(``evaluate.landmark_detector``): MTCNN on the wheel's weights or on a
converted ``.npz``, and clear errors."""

import numpy as np
import pytest
from PIL import Image

from _photos import face_photos
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
