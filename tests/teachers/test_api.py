"""The one-API teacher loader: dlib and converted teachers embed like their sources."""

import numpy as np
import pytest
import torch

from deocc_jax import convert
from deocc_jax.teachers import api
from deocc_jax.teachers import dlib_resnet

from tests.helpers.torch_reference import TorchInceptionResnetV1, nhwc_to_nchw, randomise_  # noqa: E402


def _faces(n, size, seed=0):
  from deocc_jax.data.synthetic_faces import SyntheticFaces

  ds = SyntheticFaces(identities=n, images_per_identity=1, resolution=size, seed=seed)
  return np.stack([ds[i]["image"] for i in range(n)])


def test_dlib_teacher_matches_the_direct_model():
  t = api.load_teacher("dlib")
  imgs = _faces(3, 150)
  got = t.embed(imgs)
  module, variables, _ = dlib_resnet.load_dlib_resnet()
  ref = dlib_resnet.embed(module, variables, imgs)
  ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
  assert got.shape == (3, 128) and t.input_size == 150
  np.testing.assert_allclose(got, ref, atol=2e-5)
  # Other sizes are resized to the teacher's input.
  assert t.embed(_faces(2, 64)).shape == (2, 128)


def test_converted_teacher_matches_torch(tmp_path):
  torch.manual_seed(0)
  rng = np.random.default_rng(5)
  imgs = rng.integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)
  pre = lambda x: (x.astype(np.float32) - 127.5) / 128.0  # noqa: E731
  model = randomise_(
      TorchInceptionResnetV1(num_classes=10),
      seed=1,
      calibration_input=nhwc_to_nchw(pre(rng.integers(0, 256, (4, 160, 160, 3)))),
  )
  torch.save(model.state_dict(), tmp_path / "w.pt")
  convert.convert(
      "inception_resnet_v1", str(tmp_path / "w.pt"), str(tmp_path / "out"), num_classes=10
  )
  t = api.load_teacher("converted", str(tmp_path / "out"))
  with torch.no_grad():
    ref = model(nhwc_to_nchw(pre(imgs)))[0].numpy()
  ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
  np.testing.assert_allclose(t.embed(imgs), ref, atol=1e-4)
  assert t.embed_dim == 512 and t.input_size == 160


def test_bad_teacher_requests():
  with pytest.raises(ValueError, match="unknown teacher kind 'vgg'"):
    api.load_teacher("vgg")
  with pytest.raises(FileNotFoundError, match="converted teacher directory not found"):
    api.load_teacher("converted", "/nonexistent/dir")
  t = api.load_teacher("dlib")
  with pytest.raises(ValueError, match=r"images must be \(B, H, W, 3\)"):
    t.embed(np.zeros((2, 8, 8), np.uint8))
