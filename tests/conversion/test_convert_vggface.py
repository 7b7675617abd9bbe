"""Conversion of VGGFace (VGG-16, Albanie's ``vgg_face_dag.pth`` layout) to Flax.

A narrow PyTorch reference (the published key names and layer structure, widths
/ 16, fc 4,096 -> 64) with random weights is saved as a torch state dict,
converted with ``deocc_jax.convert.convert``, loaded back and compared with
PyTorch on random 224 x 224 images; the pool5 map is 7 x 7, so the NCHW order of
fc6's input is exercised. The full-size layout is checked key by key on
``torch.device('meta')``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from deocc_jax import convert as convert_cli
from deocc_jax.conversion import checkpoint as ckpt
from deocc_jax.conversion.torch_weights import WeightsMismatchError, torch_layout
from deocc_jax.models.vgg_face import VGGFace, preprocess
from deocc_jax.teachers import api

from tests.helpers.torch_reference import TorchVGGFace, nhwc_to_nchw, randomise_

ARCH = "vggface_vgg16"
NARROW = {"widths": [4, 8, 16, 32, 32], "fc_features": 64}
MEAN_RGB = np.array([129.186279296875, 104.76238250732422, 93.59396362304688], np.float32)
TOL = 2e-5  # relative to the largest reference output


def _reference_transform(rgb: np.ndarray) -> np.ndarray:
  """vgg_face_dag's input: RGB minus meta['mean'], std 1, NHWC."""
  return rgb.astype(np.float32) - MEAN_RGB


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
  """A narrow random reference saved as a state dict + its outputs on two images."""
  torch.manual_seed(0)
  d = tmp_path_factory.mktemp(ARCH)
  model = randomise_(TorchVGGFace(NARROW["widths"], NARROW["fc_features"], 2622), seed=5)
  weights = d / "vgg_face_dag.pth"
  torch.save(model.state_dict(), weights)
  images = np.random.default_rng(7).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
  with torch.no_grad():
    emb, logits = model(nhwc_to_nchw(_reference_transform(images)))
  return {
      "dir": d,
      "weights": weights,
      "state": {k: v.clone() for k, v in model.state_dict().items()},
      "images": images,
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
  assert isinstance(module, VGGFace) and tuple(module.widths) == (4, 8, 16, 32, 32)
  x = np.asarray(preprocess(case["images"]))
  np.testing.assert_allclose(x, _reference_transform(case["images"]), rtol=0, atol=1e-5)
  np.testing.assert_array_equal(x, np.asarray(ckpt.preprocess_from_metadata(meta, case["images"])))
  out = {k: np.asarray(v) for k, v in jax.jit(module.apply)(variables, x).items()}
  assert out["embedding"].shape == (2, 64) and out["logits"].shape == (2, 2622)
  err_emb = float(np.max(np.abs(out["embedding"] - case["emb"])))
  err_log = float(np.max(np.abs(out["logits"] - case["logits"])))
  print(
      f"\n[{ARCH}] max abs err: embedding {err_emb:.3g} (max |ref| "
      f"{np.max(np.abs(case['emb'])):.3g}), logits {err_log:.3g} "
      f"(max |ref| {np.max(np.abs(case['logits'])):.3g})"
  )
  assert _max_rel_err(out["embedding"], case["emb"]) <= TOL
  assert _max_rel_err(out["logits"], case["logits"]) <= TOL
  assert np.min(case["emb"]) >= 0 and np.mean(case["emb"] > 0) > 0.2  # relu7, not all dead
  assert meta["architecture"] == ARCH and meta["arch_config"] == NARROW
  assert meta["input_size"] == [224, 224] and meta["colour_order"] == "RGB"
  assert meta["mean"] == MEAN_RGB.tolist() and meta["std"] == [1.0, 1.0, 1.0]
  assert meta["embedding_size"] == 64 and meta["embedding_l2_normalised"] is False
  assert meta["num_classes"] == 2622 and meta["source_format"] == "torch_state_dict"


def test_teacher_api_loads_it(case: dict[str, Any]) -> None:
  out_dir = convert_cli.convert(ARCH, case["weights"], case["dir"] / "for_api", arch_config=NARROW)
  teacher = api.load_teacher("converted", str(out_dir))
  assert teacher.name == ARCH and teacher.num_classes == 2622 and teacher.embed_dim == 64
  images = case["images"].astype(np.float32) / 127.5 - 1.0  # the pipeline's [-1, 1]
  out = jax.jit(teacher.apply)(teacher.params, jnp.asarray(images))
  want = case["emb"] / np.linalg.norm(case["emb"], axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(out["embedding"]), want, rtol=0, atol=1e-5)
  assert _max_rel_err(np.asarray(out["logits"]), case["logits"]) <= TOL


def test_published_layout_is_the_default() -> None:
  """Every key / shape of the full-size vgg_face_dag layout maps onto the default
  Flax model (built on the meta device: no memory, no compute)."""
  with torch.device("meta"):
    reference = TorchVGGFace()
  want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
  spec = ckpt.teacher_spec(ARCH)
  layout = torch_layout(ckpt.abstract_variables(spec.build(2622, jnp.float32), spec.input_size))
  assert {k: s.torch_shape for k, s in layout.items()} == want
  assert want["fc6.weight"] == (4096, 25088) and want["fc8.weight"] == (2622, 4096)
  assert spec.embedding_size == 4096 and spec.default_num_classes == 2622
  assert spec.input_size == (224, 224) and spec.arch_config == {
      "widths": [64, 128, 256, 512, 512],
      "fc_features": 4096,
  }


def test_wrong_file_names_the_keys(case: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
  state = dict(case["state"])
  del state["conv4_2.bias"]
  state["conv3_3.weight"] = torch.zeros(16, 16, 1, 1)
  state["fc9.weight"] = torch.zeros(3, 3)
  bad = case["dir"] / "bad.pth"
  torch.save(state, bad)
  with pytest.raises(WeightsMismatchError) as ei:
    convert_cli.convert(ARCH, bad, case["dir"] / "bad_out", arch_config=NARROW)
  assert ei.value.missing == ["conv4_2.bias"] and ei.value.unexpected == ["fc9.weight"]
  assert ei.value.mismatched == [("conv3_3.weight", (16, 16, 1, 1), (16, 16, 3, 3))]
  assert "conv4_2.bias" in str(ei.value) and "conv3_3.weight" in str(ei.value)
  assert not (case["dir"] / "bad_out").exists()
  # The CLI (published widths): one line, exit status 2, the narrow file refused.
  rc = convert_cli.main(
      ["--arch", ARCH, "--weights", str(case["weights"]), "--out", str(case["dir"] / "full")]
  )
  err = capsys.readouterr().err
  assert rc == 2 and err.count("error:") == 1 and "fc6.weight: (64, 1568) vs (4096, 25088)" in err
  with pytest.raises(ValueError, match="5 positive widths"):
    ckpt.teacher_spec(ARCH, {"widths": [4, 8, 16]})
  with pytest.raises(ValueError, match="unknown arch_config keys"):
    ckpt.teacher_spec(ARCH, {"depth": 19})
