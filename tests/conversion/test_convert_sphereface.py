"""Conversion of SphereFace-20 (clcarwin/sphereface_pytorch ``sphere20a``) to Flax.

A narrow PyTorch reference (the published key names and layer structure, widths
/ 8, fc5 512 -> 32, 10,574 classes) with random weights, random PReLU slopes and
a random ``AngleLinear`` matrix is saved as a torch state dict, converted with
``deocc_jax.convert.convert``, loaded back and compared with PyTorch on random
112 x 96 images; the last map is 7 x 6, so the NCHW order of fc5's input is
exercised. The full-size layout is checked key by key on ``torch.device('meta')``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from deocc_jax import convert as convert_cli
from deocc_jax.conversion import checkpoint as ckpt
from deocc_jax.conversion.torch_weights import WeightsMismatchError, torch_layout
from deocc_jax.models.sphereface import SphereFace20, preprocess
from deocc_jax.teachers import api

from tests.helpers.torch_reference import TorchSphere20a, nhwc_to_nchw, randomise_

ARCH = "sphereface20"
NARROW = {"widths": [8, 16, 32, 64], "num_features": 32}
CLASSES = 10574
TOL = 2e-5  # relative to the largest reference output


def _reference_transform(rgb: np.ndarray) -> np.ndarray:
  """sphereface_pytorch's input: BGR (cv2), (x - 127.5) / 128, NHWC."""
  return (rgb[..., ::-1].astype(np.float32) - 127.5) / 128.0


@torch.no_grad()
def _random_sphere(seed: int) -> TorchSphere20a:
  model = randomise_(TorchSphere20a(NARROW["widths"], NARROW["num_features"], CLASSES), seed)
  g = torch.Generator().manual_seed(seed + 1)
  for m in model.modules():
    if isinstance(m, torch.nn.PReLU):  # one distinct slope per channel
      m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.6 - 0.1)
  model.fc6.weight.copy_(torch.randn(model.fc6.weight.shape, generator=g))
  return model.eval()


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
  """A narrow random reference saved as a state dict + its outputs on two images."""
  torch.manual_seed(0)
  d = tmp_path_factory.mktemp(ARCH)
  model = _random_sphere(11)
  weights = d / "sphere20a_20171020.pth"
  torch.save(model.state_dict(), weights)
  images = np.random.default_rng(13).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
  crops = images[:, :, 8:104]  # SphereFace's 96 columns of the ArcFace crop
  with torch.no_grad():
    emb, logits = model(nhwc_to_nchw(_reference_transform(crops)))
  return {
      "dir": d,
      "weights": weights,
      "state": {k: v.clone() for k, v in model.state_dict().items()},
      "images": images,
      "crops": crops,
      "emb": emb.numpy(),
      "logits": logits.numpy(),
  }


def _max_rel_err(got: np.ndarray, want: np.ndarray) -> float:
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def test_convert_load_and_match_torch(case: dict[str, Any]) -> None:
  out_dir = convert_cli.convert(
      ARCH, case["weights"], case["dir"] / "converted", arch_config=NARROW
  )
  module, variables, meta = ckpt.load_converted_teacher(out_dir)
  assert isinstance(module, SphereFace20) and tuple(module.widths) == (8, 16, 32, 64)
  x = np.asarray(preprocess(case["crops"]))
  np.testing.assert_allclose(x, _reference_transform(case["crops"]), rtol=0, atol=1e-6)
  np.testing.assert_array_equal(x, np.asarray(ckpt.preprocess_from_metadata(meta, case["crops"])))
  out = {k: np.asarray(v) for k, v in jax.jit(module.apply)(variables, x).items()}
  assert out["embedding"].shape == (2, 32) and out["logits"].shape == (2, CLASSES)
  err_emb = float(np.max(np.abs(out["embedding"] - case["emb"])))
  err_log = float(np.max(np.abs(out["logits"] - case["logits"])))
  print(
      f"\n[{ARCH}] max abs err: embedding {err_emb:.3g} (max |ref| "
      f"{np.max(np.abs(case['emb'])):.3g}), logits {err_log:.3g} "
      f"(max |ref| {np.max(np.abs(case['logits'])):.3g})"
  )
  assert _max_rel_err(out["embedding"], case["emb"]) <= TOL
  assert _max_rel_err(out["logits"], case["logits"]) <= TOL
  # the margin-free AngleLinear scores: |x| cos(theta_j), bounded by |x|
  norms = np.linalg.norm(case["emb"], axis=1, keepdims=True)
  assert np.all(np.abs(out["logits"]) <= norms * (1 + 1e-5))
  assert meta["architecture"] == ARCH and meta["arch_config"] == NARROW
  assert meta["input_size"] == [112, 96] and meta["colour_order"] == "BGR"
  assert meta["mean"] == [127.5] * 3 and meta["std"] == [128.0] * 3
  assert meta["embedding_size"] == 32 and meta["embedding_l2_normalised"] is False
  assert meta["num_classes"] == CLASSES  # read from fc6.weight's columns


def test_teacher_api_loads_it_and_crops_the_square_input(case: dict[str, Any]) -> None:
  out_dir = convert_cli.convert(ARCH, case["weights"], case["dir"] / "for_api", arch_config=NARROW)
  teacher = api.load_teacher("converted", str(out_dir))
  assert teacher.name == ARCH and teacher.num_classes == CLASSES and teacher.embed_dim == 32
  images = case["images"].astype(np.float32) / 127.5 - 1.0  # 112 x 112, the pipeline's [-1, 1]
  out = jax.jit(teacher.apply)(teacher.params, jnp.asarray(images))
  want = case["emb"] / np.linalg.norm(case["emb"], axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(out["embedding"]), want, rtol=0, atol=1e-5)
  assert _max_rel_err(np.asarray(out["logits"]), case["logits"]) <= TOL
  module = SphereFace20(widths=(8, 16, 32, 64), num_features=32, num_classes=None)
  with pytest.raises(ValueError, match="112 x 96"):
    jax.eval_shape(
        module.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 112, 100, 3), jnp.float32)
    )


def test_published_layout_is_the_default() -> None:
  """Every key / shape of the full-size sphere20a layout maps onto the default
  Flax model (built on the meta device: no memory, no compute)."""
  with torch.device("meta"):
    reference = TorchSphere20a()
  state = reference.state_dict()
  want = {k: tuple(v.shape) for k, v in state.items()}
  spec = ckpt.teacher_spec(ARCH)
  layout = torch_layout(ckpt.abstract_variables(spec.build(CLASSES, jnp.float32), spec.input_size))
  assert {k: s.torch_shape for k, s in layout.items()} == want
  assert len([k for k in want if k.startswith("conv")]) == 2 * 20  # sphere20: 20 convs, w + b
  assert want["fc5.weight"] == (512, 21504) and want["fc6.weight"] == (512, CLASSES)
  assert want["relu3_9.weight"] == (256,)
  assert convert_cli._consistent_rows(state, "fc6", spec.classifier_classes_axis) == CLASSES
  assert spec.input_size == (112, 96) and spec.embedding_size == 512
  assert spec.arch_config == {"widths": [64, 128, 256, 512], "num_features": 512}


def test_wrong_file_names_the_keys(case: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
  state = dict(case["state"])
  del state["conv2_5.bias"]
  state["relu3_4.weight"] = torch.full((1,), 0.25)  # nn.PReLU(): one shared slope
  state["fc7.weight"] = torch.zeros(3, 3)
  bad = case["dir"] / "bad.pth"
  torch.save(state, bad)
  with pytest.raises(WeightsMismatchError) as ei:
    convert_cli.convert(ARCH, bad, case["dir"] / "bad_out", arch_config=NARROW)
  assert ei.value.missing == ["conv2_5.bias"] and ei.value.unexpected == ["fc7.weight"]
  assert ei.value.mismatched == [("relu3_4.weight", (1,), (32,))]
  assert "conv2_5.bias" in str(ei.value) and "relu3_4.weight: (1,) vs (32,)" in str(ei.value)
  assert not (case["dir"] / "bad_out").exists()
  # The CLI (published widths): one line, exit status 2, the narrow file refused.
  rc = convert_cli.main(
      ["--arch", ARCH, "--weights", str(case["weights"]), "--out", str(case["dir"] / "full")]
  )
  err = capsys.readouterr().err
  assert rc == 2 and err.count("error:") == 1 and "fc5.weight: (32, 2688) vs (512, 21504)" in err
