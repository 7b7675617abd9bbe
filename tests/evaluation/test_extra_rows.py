"""Pretrained and classical recognisers as rows of the tables (config.evaluate.pretrained_recognizers,
config.evaluate.classical):
Table 1's VGGFace / SphereFace rows, used as published, beside the run's own models."""

from __future__ import annotations

import copy
import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from deocc_jax import convert as convert_cli
from deocc_jax.data import alignment
from deocc_jax.errors import ConfigError
from deocc_jax.evaluation import job
from deocc_jax.runs import models as models_lib
from deocc_jax.teachers import api
from tests.helpers.torch_reference import TorchSphere20a, nhwc_to_nchw, randomise_

NARROW = {"widths": [4, 8, 16, 32], "num_features": 16}


@pytest.fixture(scope="module")
def sphereface(tmp_path_factory):
  """(converted directory, the PyTorch twin) of a narrow random SphereFace-20."""
  d = tmp_path_factory.mktemp("sphereface")
  torch.manual_seed(0)
  net = randomise_(TorchSphere20a(NARROW["widths"], NARROW["num_features"], 10), seed=3).eval()
  torch.save(net.state_dict(), d / "sphere20a.pth")
  out = convert_cli.convert(
      "sphereface20", d / "sphere20a.pth", d / "converted", arch_config=NARROW
  )
  return str(out), net


def _config(config, *entries):
  c = copy.deepcopy(config)
  c.evaluate.recognizers = ()
  c.evaluate.pretrained_recognizers = tuple(entries)
  c.evaluate.inputs = ("masked", "completed")
  c.evaluate.categories = ()
  c.evaluate.identification = False
  c.evaluate.plots = False
  c.evaluate.num_pairs = 40
  return c


def test_a_converted_network_is_a_row_fed_through_its_own_crop(tiny_run, sphereface, tmp_path):
  config, workdir = tiny_run
  path, net = sphereface
  c = _config(config, path, "dlib")
  models = models_lib.restore_models(c, workdir)
  assert list(models.recognizers)[-2:] == ["pretrained_sphereface20", "pretrained_dlib"]
  assert models.display("pretrained_sphereface20") == "SphereFace-20, pretrained"
  # What the row computes, against the PyTorch twin on the face the row's
  # network sees: the run's frame warped to the ArcFace template (SphereFace's
  # 96 x 112 crop is its central 96 columns), BGR, (x - 127.5) / 128.
  faces = np.random.default_rng(0).uniform(-1, 1, (2, models.resolution, models.resolution, 3))
  faces = jnp.asarray(faces, jnp.float32)
  got = np.asarray(models.recognizers["pretrained_sphereface20"](faces))
  seen = api.Teacher(
      "probe", {}, lambda p, x: {"embedding": x}, 1, 112, {"architecture": "sphereface20"}
  )
  crop = np.asarray(
      api.in_frame(seen, models.mean_landmarks, models.resolution).apply({}, faces)["embedding"]
  )
  assert crop.shape == (2, 112, 112, 3) and alignment.get_template("arcface").size[0] == 112
  rgb = (crop + 1.0) * 127.5
  x = (rgb[..., ::-1] - 127.5) / 128.0
  with torch.no_grad():
    want = net(nhwc_to_nchw(np.ascontiguousarray(x[:, :, 8:104].astype(np.float32))))[0].numpy()
  want = want / np.linalg.norm(want, axis=1, keepdims=True)
  np.testing.assert_allclose(got, want, atol=2e-5)
  # ... and it is a row of every table, beside the run's own recognisers.
  res = job.run(c, workdir, results_dir=str(tmp_path / "r"))
  mix = res["verification"]["synthetic"]["results"]["mixture"]
  assert {"teacher", "student_hard", "pretrained_sphereface20", "pretrained_dlib"} <= set(mix)
  for key in ("pretrained_sphereface20", "pretrained_dlib"):
    assert 0.0 <= mix[key]["masked"]["one"]["accuracy"] <= 1.0
  table = (tmp_path / "r" / "table2_synthetic.md").read_text()
  assert re.search(r"\| SphereFace-20, pretrained \| \d+\.\d\d ± \d+\.\d\d \|", table), table
  assert "| dlib ResNet, pretrained |" in table


def test_bad_entries_are_named(tiny_run, sphereface, tmp_path):
  config, workdir = tiny_run
  path, _ = sphereface
  with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "nothing"))):
    models_lib.restore_models(_config(config, str(tmp_path / "nothing")), workdir)
  with pytest.raises(ConfigError, match="both 'sphereface20'"):
    models_lib.restore_models(_config(config, path, path), workdir)
  with pytest.raises(ValueError, match="pretrained_vggface_vgg16"):
    models_lib.restore_models(
        _config(config, path), workdir, recognizers=("pretrained_vggface_vgg16",)
    )
  # without the entry the row does not exist
  m = models_lib.restore_models(_config(config), workdir, recognizers=("student_hard",))
  assert list(m.recognizers) == ["student_hard"] and not m.pretrained


def test_classical_rows_against_a_float64_numpy_pca(tiny_run, tmp_path):
  """Eigenfaces fitted on the run's training faces: the row's cosine scores
  equal those of a float64 numpy PCA (SVD) of the same faces' luminance (the
  scores do not depend on each component's sign); LPP and GW+PCA are rows too."""
  from deocc_jax.runs import factories

  config, workdir = tiny_run
  c = _config(config)
  c.evaluate.classical.recognizers = ("pca", "lpp", "gpca")
  c.evaluate.classical.fit_faces, c.evaluate.classical.dims = 60, 8
  c.evaluate.classical.lpp_pca_dims = 20
  models = models_lib.restore_models(c, workdir)
  assert list(models.recognizers)[-3:] == ["classical_pca", "classical_lpp", "classical_gpca"]
  assert models.display("classical_pca") == "PCA (eigenfaces), fitted on 60 training faces"
  source = factories.make_source(c, "train")
  luma = np.array([0.299, 0.587, 0.114])
  gray = lambda img: (np.asarray(img, np.float64) / 127.5 - 1.0) @ luma  # noqa: E731
  x = np.stack([gray(source[i]["image"]).ravel() for i in range(60)])
  mean = x.mean(0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  probes = np.random.default_rng(1).uniform(-1, 1, (5, models.resolution, models.resolution, 3))
  ref = ((probes @ luma).reshape(5, -1) - mean) @ vt[:8].T
  ref /= np.linalg.norm(ref, axis=1, keepdims=True)
  got = np.asarray(models.recognizers["classical_pca"](jnp.asarray(probes, jnp.float32)))
  np.testing.assert_allclose(got @ got.T, ref @ ref.T, atol=1e-4)
  for key in ("classical_lpp", "classical_gpca"):
    e = np.asarray(models.recognizers[key](jnp.asarray(probes, jnp.float32)))
    assert e.shape == (5, 8) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5), key
  res = job.run(c, workdir, results_dir=str(tmp_path / "r"))
  assert {"classical_pca", "classical_lpp", "classical_gpca"} <= set(
      res["verification"]["synthetic"]["results"]["mixture"]
  )
  assert (
      "| LPP (Laplacianfaces), fitted on 60 training faces |"
      in (tmp_path / "r" / "table2_synthetic.md").read_text()
  )
  c.evaluate.classical.recognizers = ("eigenfaces",)
  with pytest.raises(ConfigError, match="unknown \\['eigenfaces'\\]"):
    models_lib.restore_models(c, workdir)
