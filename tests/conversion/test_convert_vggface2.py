"""Conversion of VGGFace2 ResNet-50 / SE-ResNet-50 weights (cydonia999 layout) to Flax.

For each architecture a PyTorch reference with random weights and random
(calibrated then perturbed) BatchNorm statistics is saved in both on-disk formats
(a torch state dict and the latin1 pickle of numpy arrays the VGGFace2-pytorch port
distributes), converted with ``deocc_jax.convert.main``, loaded back from the Orbax
checkpoint and compared with PyTorch on random 224 x 224 images.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from deocc_jax import convert as convert_cli
from deocc_jax.conversion import checkpoint as ckpt
from deocc_jax.conversion.torch_weights import WeightsFileError, WeightsMismatchError, read_weights_file
from deocc_jax.models.vggface2_resnet import (
    VGGFace2ResNet,
    max_pool_ceil,
    preprocess_vggface2,
    resnet50,
)

from tests.helpers.torch_reference import TorchVGGFace2ResNet, nhwc_to_nchw, randomise_  # noqa: E402

SIZE = 224
TOL = 1e-4
MEAN_BGR = np.array([91.4953, 103.8827, 131.0912], np.float32)


def _reference_transform(rgb: np.ndarray) -> np.ndarray:
  """VGGFace2-pytorch's dataset transform (RGB -> BGR, minus mean_bgr), NHWC."""
  return rgb[..., ::-1].astype(np.float32) - MEAN_BGR


def _write_pickle(state: dict[str, torch.Tensor], path: Path) -> None:
  """The VGGFace2-pytorch distribution: {torch name: numpy array}, no num_batches_tracked."""
  arrays = {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
  with open(path, "wb") as f:
    pickle.dump(arrays, f, protocol=2)


@pytest.fixture(scope="module", params=["vggface2_resnet50", "vggface2_senet50"])
def vgg_case(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
  """Random reference model in both formats + its outputs on two random images."""
  arch = request.param
  se = arch == "vggface2_senet50"
  torch.manual_seed(0)
  d = tmp_path_factory.mktemp(arch)
  rng = np.random.default_rng(99 if se else 98)
  calib = rng.integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)
  model = randomise_(
      TorchVGGFace2ResNet(se=se, num_classes=8631),
      seed=3 if se else 4,
      calibration_input=nhwc_to_nchw(_reference_transform(calib)),
  )
  state = model.state_dict()
  files = {"torch_state_dict": d / f"{arch}.pth", "pickle_numpy": d / f"{arch}_ft_weight.pkl"}
  torch.save(state, files["torch_state_dict"])
  _write_pickle(state, files["pickle_numpy"])
  images = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
  with torch.no_grad():
    pooled, logits = model(nhwc_to_nchw(_reference_transform(images)))
  return {
      "arch": arch,
      "dir": d,
      "files": files,
      "state": {k: v.clone() for k, v in state.items()},
      "images": images,
      "emb": pooled.numpy(),
      "logits": logits.numpy(),
  }


@pytest.mark.parametrize("fmt", ["torch_state_dict", "pickle_numpy"])
def test_convert_load_and_match_torch(vgg_case: dict[str, Any], fmt: str) -> None:
  arch, weights = vgg_case["arch"], vgg_case["files"][fmt]
  out_dir = vgg_case["dir"] / f"converted_{fmt}"
  assert convert_cli.main(["--arch", arch, "--weights", str(weights), "--out", str(out_dir)]) == 0

  module, variables, meta = ckpt.load_converted_teacher(out_dir)
  assert isinstance(module, VGGFace2ResNet) and module.se == (arch == "vggface2_senet50")
  x = np.asarray(preprocess_vggface2(vgg_case["images"]))
  np.testing.assert_allclose(x, _reference_transform(vgg_case["images"]), rtol=0, atol=1e-5)
  np.testing.assert_array_equal(
      x, np.asarray(ckpt.preprocess_from_metadata(meta, vgg_case["images"]))
  )
  out = {k: np.asarray(v) for k, v in jax.jit(module.apply)(variables, x).items()}
  assert out["embedding"].shape == (2, 2048) and out["logits"].shape == (2, 8631)
  err_emb = float(np.max(np.abs(out["embedding"] - vgg_case["emb"])))
  err_log = float(np.max(np.abs(out["logits"] - vgg_case["logits"])))
  print(f"\n[{arch} {fmt}] max abs err: embedding {err_emb:.3g}, logits {err_log:.3g}")
  assert err_emb <= TOL and err_log <= TOL
  # the pooled feature is not normalised; outputs differ between images
  assert np.all(np.abs(np.linalg.norm(out["embedding"], axis=1) - 1.0) > 1e-2)
  assert np.max(np.abs(vgg_case["logits"][0] - vgg_case["logits"][1])) > 100 * TOL

  assert meta["architecture"] == arch
  assert meta["input_size"] == [224, 224]
  assert meta["colour_order"] == "BGR"
  assert meta["mean"] == [91.4953, 103.8827, 131.0912] and meta["std"] == [1.0, 1.0, 1.0]
  assert meta["embedding_size"] == 2048 and meta["embedding_l2_normalised"] is False
  assert meta["num_classes"] == 8631
  assert meta["source_format"] == fmt
  assert meta["source_file"] == str(weights.resolve())
  assert meta["source_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
  on_disk = json.loads((out_dir / "metadata.json").read_text())
  assert on_disk == meta


def test_pickle_with_missing_unexpected_and_misshapen_keys(
    vgg_case: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
  state = dict(vgg_case["state"])
  del state["layer3.2.bn2.running_mean"]
  state["layer5.0.conv1.weight"] = torch.zeros(4, 4, 1, 1)
  state["fc.weight"] = torch.zeros(1000, 2048)
  bad = vgg_case["dir"] / "bad.pkl"
  _write_pickle(state, bad)
  out_dir = vgg_case["dir"] / "bad_out"
  rc = convert_cli.main(["--arch", vgg_case["arch"], "--weights", str(bad), "--out", str(out_dir)])
  err = capsys.readouterr().err
  assert rc == 2 and err.count("error:") == 1 and str(bad) in err
  assert "missing keys (1)" in err and "layer3.2.bn2.running_mean" in err
  assert "unexpected keys (1)" in err and "layer5.0.conv1.weight" in err
  assert "shape mismatches (file vs expected) (1)" in err
  assert "fc.weight: (1000, 2048) vs (8631, 2048)" in err
  assert not out_dir.exists()


def test_senet_file_is_not_a_resnet50(vgg_case: dict[str, Any]) -> None:
  tensors, fmt = read_weights_file(vgg_case["files"]["pickle_numpy"])
  assert fmt == "pickle_numpy"
  other = "vggface2_resnet50" if vgg_case["arch"] == "vggface2_senet50" else "vggface2_senet50"
  with pytest.raises(WeightsMismatchError) as ei:
    convert_cli.convert(other, vgg_case["files"]["pickle_numpy"], vgg_case["dir"] / "other")
  se_keys = sorted(
      f"layer{i}.{b}.conv{c}.{p}"
      for i, n in zip(range(1, 5), (3, 4, 6, 3))
      for b in range(n)
      for c in (4, 5)
      for p in ("weight", "bias")
  )
  if other == "vggface2_resnet50":
    assert ei.value.unexpected == se_keys and ei.value.missing == []
  else:
    assert ei.value.missing == se_keys and ei.value.unexpected == []
  assert "is the architecture the right one" in str(ei.value)


def test_hostile_pickle_is_refused_without_running_code(tmp_path: Path) -> None:
  marker = tmp_path / "pwned"

  class Evil:

    def __reduce__(self) -> tuple:
      import os

      return (os.system, (f"touch {marker}",))

  path = tmp_path / "evil.pkl"
  path.write_bytes(pickle.dumps({"conv1.weight": Evil()}, protocol=2))
  with pytest.raises(WeightsFileError, match=str(path)):
    read_weights_file(path)
  assert not marker.exists()

  notdict = tmp_path / "list.pkl"
  notdict.write_bytes(pickle.dumps([np.zeros(3)], protocol=2))
  with pytest.raises(WeightsFileError, match="not a non-empty mapping"):
    read_weights_file(notdict)


@pytest.mark.parametrize("n", [5, 6, 7, 8, 11, 12, 112, 113])
def test_ceil_mode_max_pool_matches_torch(n: int) -> None:
  x = np.random.default_rng(n).normal(size=(1, n, n + 1, 2)).astype(np.float32)
  ref = torch.nn.MaxPool2d(3, 2, 0, ceil_mode=True)(nhwc_to_nchw(x)).numpy().transpose(0, 2, 3, 1)
  got = np.asarray(max_pool_ceil(jnp.asarray(x), 3, 2))
  assert got.shape == ref.shape
  np.testing.assert_array_equal(got, ref)


def test_input_size_other_than_224_is_refused() -> None:
  module = resnet50(num_classes=10)
  variables = ckpt.abstract_variables(module, (224, 224))
  with pytest.raises(ValueError, match="7x7"):
    jax.eval_shape(module.apply, variables, jax.ShapeDtypeStruct((1, 160, 160, 3), jnp.float32))


def test_atomic_save_leaves_nothing_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
  variables = {"params": {"fc": {"kernel": np.ones((2, 3), np.float32)}}}
  meta = {"architecture": "x"}

  def boom(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("disk full")

  monkeypatch.setattr(ckpt.json, "dump", boom)
  with pytest.raises(RuntimeError, match="disk full"):
    ckpt.save_converted_teacher(tmp_path / "t", variables, meta)
  assert list(tmp_path.iterdir()) == []


def test_load_refuses_incomplete_directory(tmp_path: Path) -> None:
  with pytest.raises(ckpt.CheckpointError, match="metadata.json"):
    ckpt.load_converted_teacher(tmp_path)
  (tmp_path / "metadata.json").write_text(json.dumps({"architecture": "vggface2_resnet50"}))
  with pytest.raises(ckpt.CheckpointError, match="lacks"):
    ckpt.load_converted_teacher(tmp_path)


def test_converted_teacher_keeps_its_classifier_for_distillation_ce(
    vgg_case: dict[str, Any],
) -> None:
  """Fix for L_CE (text after Eq. 16): the converted teacher keeps its 8,631-way
  ``fc``, the teacher API exposes it (``num_classes``, ``logits`` in PyTorch's
  values) and the paper config's student head takes the teacher's classes, so
  the teacher-target cross-entropy runs (it used to raise on the shape mismatch
  between the 8,631 teacher logits and a head over the data set's identities)."""
  from deocc_jax.configs import paper as paper_celeba
  from deocc_jax.losses import distillation
  from deocc_jax.teachers import api
  from deocc_jax.training import distillation_stage

  out_dir = vgg_case["dir"] / "converted_for_ce"
  assert (
      convert_cli.main(
          [
              "--arch",
              vgg_case["arch"],
              "--weights",
              str(vgg_case["files"]["pickle_numpy"]),
              "--out",
              str(out_dir),
          ]
      )
      == 0
  )
  teacher = api.load_teacher("converted", str(out_dir))
  assert teacher.num_classes == 8631
  images = vgg_case["images"].astype(np.float32) / 127.5 - 1.0  # the pipeline's [-1, 1]
  t_logits = np.asarray(jax.jit(teacher.apply)(teacher.params, jnp.asarray(images))["logits"])
  np.testing.assert_allclose(t_logits, vgg_case["logits"], rtol=0, atol=TOL)

  d = paper_celeba.get_config().distillation
  assert d.ce_target == "teacher" and d.use_ce
  n_head = distillation_stage.head_classes(d, 7, teacher.num_classes, teacher.name)
  assert n_head == 8631
  s_logits = np.random.default_rng(5).normal(size=(2, n_head)).astype(np.float32)
  t = float(d.temperature)
  got = float(
      distillation.cross_entropy(
          jnp.asarray(s_logits),
          target="teacher",
          teacher_logits=jnp.asarray(t_logits),
          temperature=t,
      )
  )

  def logsm(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(1, keepdims=True))

  lt, ls = logsm(t_logits / t), logsm(s_logits / t)
  want = t * t * np.mean(np.sum(np.exp(lt) * (lt - ls), axis=1))
  assert got == pytest.approx(want, rel=1e-4) and got > 0
