"""MTCNN in Flax vs facenet-pytorch on the weights its wheel ships."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.facenet_reference import facenet_pytorch
from tests.helpers.photos import face_photos
from deocc_jax.conversion import mtcnn_weights as mw
from deocc_jax.detection import mtcnn as M


@pytest.fixture(scope="module")
def fp():
  return facenet_pytorch()


@pytest.fixture(scope="module")
def det():
  return M.MTCNN(mw.load_mtcnn_params())


@pytest.fixture(scope="module")
def small_photos():
  from PIL import Image

  out = {}
  for name, img in face_photos().items():
    s = 320 / max(img.shape[:2])
    out[name] = np.asarray(
        Image.fromarray(img).resize(
            (round(img.shape[1] * s), round(img.shape[0] * s)), Image.BILINEAR
        )
    )
  return out


def test_weights_read_without_torch_equal_torch_load():
  import torch

  d = mw.facenet_pytorch_data_dir()
  for net in mw.NETS:
    ours = mw.read_torch_file(os.path.join(d, f"{net}.pt"))
    ref = torch.load(os.path.join(d, f"{net}.pt"), weights_only=True)
    assert list(ours) == list(ref)
    for k, v in ref.items():
      np.testing.assert_array_equal(ours[k], v.numpy())


def test_zip_format_state_dict_is_read_too(tmp_path):
  import torch

  sd = {"a.weight": torch.randn(3, 4), "b": torch.arange(6).reshape(2, 3)[:, 1]}
  torch.save(sd, tmp_path / "z.pt")
  got = mw.read_torch_file(tmp_path / "z.pt")
  for k, v in sd.items():
    np.testing.assert_array_equal(got[k], v.numpy())


def test_hostile_or_broken_weight_files_are_refused(tmp_path):
  class Evil:

    def __reduce__(self):
      return (os.system, ("echo pwned",))

  p = tmp_path / "evil.pt"
  with open(p, "wb") as f:
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, Evil()):
      pickle.dump(obj, f, protocol=2)
  with pytest.raises(mw.MTCNNWeightsError, match=r"evil\.pt: refusing to load global"):
    mw.read_torch_file(p)
  (tmp_path / "junk.pt").write_bytes(b"not a torch file")
  with pytest.raises(mw.MTCNNWeightsError, match=r"junk\.pt"):
    mw.read_torch_file(tmp_path / "junk.pt")
  with pytest.raises(mw.MTCNNWeightsError, match="not found"):
    mw.load_mtcnn_params(tmp_path / "nope")


def _nchw(x):
  import torch

  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_three_networks_match_pytorch(fp, det):
  import torch

  rng = np.random.default_rng(0)
  nets = {"pnet": fp.PNet().eval(), "rnet": fp.RNet().eval(), "onet": fp.ONet().eval()}
  with torch.no_grad():
    for shape in ((2, 37, 45, 3), (1, 12, 12, 3), (1, 50, 31, 3)):
      x = rng.uniform(-1, 1, shape).astype(np.float32)
      ref = [t.permute(0, 2, 3, 1).numpy() for t in nets["pnet"](_nchw(x))]
      for got in (det.pnet(x), det.pnet(x, bucket=32)):
        for g, r in zip(got, ref):
          assert g.shape == r.shape
          np.testing.assert_allclose(g, r, atol=2e-6)
    x = rng.uniform(-1, 1, (5, 24, 24, 3)).astype(np.float32)
    for g, r in zip(det.rnet(x), nets["rnet"](_nchw(x))):
      np.testing.assert_allclose(g, r.numpy(), atol=2e-6)
    x = rng.uniform(-1, 1, (3, 48, 48, 3)).astype(np.float32)
    for g, r in zip(det.onet(x), nets["onet"](_nchw(x))):
      np.testing.assert_allclose(g, r.numpy(), atol=2e-6)


def test_area_resize_and_nms_match_the_reference(fp):
  import torch
  from facenet_pytorch.models.utils.detect_face import nms_numpy

  rng = np.random.default_rng(1)
  img = rng.uniform(0, 255, (37, 53, 3)).astype(np.float32)
  for h, w in ((24, 24), (19, 40), (37, 53), (7, 9)):
    ref = torch.nn.functional.interpolate(_nchw(img[None]), size=(h, w), mode="area")
    np.testing.assert_allclose(
        M._area_resize(img, h, w), ref[0].permute(1, 2, 0).numpy(), atol=2e-4
    )
  xy = rng.uniform(0, 80, (60, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (60, 2))], 1).astype(np.float32)
  scores = rng.uniform(0, 1, 60).astype(np.float32)
  np.testing.assert_array_equal(
      M.nms(boxes, scores, 0.7, "min"), nms_numpy(boxes, scores, 0.7, "Min")
  )
  from torchvision.ops.boxes import batched_nms  # facenet-pytorch's (see _facenet_pytorch)

  keep = batched_nms(
      torch.from_numpy(boxes), torch.from_numpy(scores), torch.zeros(60, dtype=torch.int64), 0.5
  ).numpy()
  np.testing.assert_array_equal(M.nms(boxes, scores, 0.5), keep)


def test_detection_matches_facenet_pytorch_on_real_photos(fp, det, small_photos):
  ref = fp.MTCNN(device="cpu")
  for name, img in small_photos.items():
    d = det.detect(img)
    boxes, probs, points = ref.detect(img, landmarks=True)
    assert boxes is not None and len(d) == len(boxes) >= 1, name
    boxes, points = np.asarray(boxes, np.float32), np.asarray(points, np.float32)
    np.testing.assert_allclose(d.boxes, boxes, atol=0.05, err_msg=name)
    np.testing.assert_allclose(d.landmarks, points, atol=0.05, err_msg=name)
    np.testing.assert_allclose(d.scores, probs.astype(np.float32), atol=1e-4, err_msg=name)
    # CelebA order: image-left eye first, nose between the eyes and the mouth
    lm = d.landmarks[0]
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert lm[:2, 1].mean() < lm[2, 1] < lm[3:, 1].mean()


def test_converted_npz_and_cli(tmp_path, det):
  out = tmp_path / "mtcnn.npz"
  proc = subprocess.run(
      [sys.executable, "-m", "deocc_jax.convert", "--arch", "mtcnn", "--out", str(out)],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr
  params = mw.load_mtcnn_params(out)
  ref = mw.load_mtcnn_params()
  for net in mw.NETS:
    for layer, leaves in ref[net]["params"].items():
      for leaf, v in leaves.items():
        np.testing.assert_array_equal(params[net]["params"][layer][leaf], v)
  with np.load(out) as z:
    assert len(str(z["meta/pnet_sha256"])) == 64
  proc = subprocess.run(
      [sys.executable, "-m", "deocc_jax.convert", "--arch", "mtcnn", "--out", str(out)],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 2 and "already exists" in proc.stderr
  with pytest.raises(mw.MTCNNWeightsError, match=r"\.npz"):
    mw.convert_mtcnn(tmp_path / "x.bin")


def test_bad_images_and_no_face(det):
  with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
    det.detect(np.zeros((40, 40), np.uint8))
  assert len(det.detect(np.full((60, 80, 3), 128, np.uint8))) == 0
  with pytest.raises(ValueError, match="MTCNN found no face"):
    M.detect_landmarks_mtcnn(np.full((60, 80, 3), 128, np.uint8))


def test_pnet_compiles_once_per_padded_size(det, small_photos):
  """Photos of 5 nearby sizes share P-Net's padded shapes: fewer compilations
  than pyramid level shapes, and the same detections as exact shapes."""
  from PIL import Image

  sizes = sorted({M.padded_size(n, 32) for n in range(1, 3000)})
  assert len(sizes) == 17 and sizes[:4] == [32, 64, 96, 128]
  assert all(M.padded_size(n, 32) >= n for n in range(1, 3000))
  assert max(M.padded_size(n, 32) / n for n in range(129, 3000)) < 1.4
  fresh = M.MTCNN(det.params)
  exact = M.MTCNN(det.params, bucket=0)
  img = small_photos["obama"]
  levels = set()
  for k, side in enumerate((300, 290, 277, 262, 251)):
    s = side / max(img.shape[:2])
    im = np.asarray(Image.fromarray(img).resize((round(img.shape[1] * s), round(img.shape[0] * s))))
    got = fresh.detect(im)
    h, w = im.shape[:2]
    scale = 12.0 / fresh.min_face_size
    while min(h, w) * scale >= 12:
      levels.add((int(h * scale + 1), int(w * scale + 1)))
      scale *= fresh.factor
    if k == 0:
      ref = exact.detect(im)
      np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-3)
      np.testing.assert_allclose(got.landmarks, ref.landmarks, atol=1e-3)
  compiled = fresh._pnet_valid._cache_size()
  padded = {(M.padded_size(h, 32), M.padded_size(w, 32)) for h, w in levels}
  assert compiled == len(padded) < len(levels) // 2, (compiled, len(padded), len(levels))
