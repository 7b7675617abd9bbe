"""insightface ArcFace (IResNet) teachers: ONNX and state-dict conversion vs the references.

A PyTorch IResNet of insightface's layout (written here from the arcface_torch
description: bn1-conv1-bn2-prelu-conv2(stride)-bn3 + 1x1/BN shortcut, bn2 ->
flatten -> fc -> features BN) with random weights, calibrated-then-perturbed BN
statistics and random PReLU slopes is exported with ``torch.onnx.export`` (which
folds every Conv->BN pair, as in the published ONNX files), converted with the
real ``deocc_jax.convert`` code and compared with onnxruntime on the same images.
Tiny widths / depth keep it fast; the real iresnet50 / iresnet100 layouts are
checked key by key and shape by shape against the Flax model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
import torch
from torch import nn

from deocc_jax import convert as convert_cli
from deocc_jax.conversion import checkpoint as ckpt
from deocc_jax.conversion.onnx_arcface import OnnxLayoutError, read_arcface_onnx
from deocc_jax.conversion.torch_weights import torch_layout, torch_to_flax
from deocc_jax.models import iresnet as ir
from deocc_jax.teachers import api

from tests.helpers.torch_reference import randomise_  # noqa: E402

import onnxruntime as ort  # noqa: E402  (in the test extra: a missing one fails)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # legacy torch.onnx.export

LAYERS = (1, 2, 1, 1)
WIDTHS = (8, 16, 16, 24)
FEATURES = 16
TOL = 1e-4


class TorchBlock(nn.Module):

  def __init__(self, cin: int, planes: int, stride: int, k2: int = 3) -> None:
    super().__init__()
    self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
    self.conv1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
    self.prelu = nn.PReLU(planes)
    self.conv2 = nn.Conv2d(planes, planes, k2, stride, k2 // 2, bias=False)
    self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
    self.downsample = None
    if stride != 1 or cin != planes:
      self.downsample = nn.Sequential(
          nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes, eps=1e-5)
      )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    return out + (x if self.downsample is None else self.downsample(x))


class TorchIResNet(nn.Module):
  """insightface's IResNet layout; ``normalise`` puts MXNet-style (x - 127.5) * 1/128 inside."""

  def __init__(
      self, layers=LAYERS, widths=WIDTHS, features=FEATURES, normalise=False, odd_kernel=False
  ) -> None:
    super().__init__()
    self.normalise = normalise
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
    self.prelu = nn.PReLU(widths[0])
    cin = widths[0]
    for i, (n, w) in enumerate(zip(layers, widths)):
      blocks = []
      for j in range(n):
        k2 = 5 if (odd_kernel and i == 1 and j == 1) else 3
        blocks.append(TorchBlock(cin, w, 2 if j == 0 else 1, k2))
        cin = w
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
    self.dropout = nn.Dropout(0.0)
    self.fc = nn.Linear(cin * 7 * 7, features)
    self.features = nn.BatchNorm1d(features, eps=1e-5)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.normalise:
      x = (x - 127.5) * 0.0078125
    x = self.prelu(self.bn1(self.conv1(x)))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    x = self.dropout(torch.flatten(self.bn2(x), 1))
    return self.features(self.fc(x))


def _random_model(seed: int, **kw: Any) -> TorchIResNet:
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  calib = torch.from_numpy(rng.uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32))
  model = TorchIResNet(**kw)
  if kw.get("normalise"):
    calib = calib * 127.5 + 127.5
  with torch.no_grad():
    randomise_(model, seed=seed, calibration_input=calib)
    for m in model.modules():
      if isinstance(m, nn.PReLU):
        m.weight.copy_(torch.rand(m.weight.shape) * 0.5 - 0.1)  # some negative slopes too
  return model.eval()


def _export(model: nn.Module, path: Path) -> Path:
  torch.onnx.export(
      model,
      torch.zeros(1, 3, 112, 112),
      str(path),
      dynamo=False,
      input_names=["data"],
      output_names=["fc1"],
      dynamic_axes={"data": {0: "n"}, "fc1": {0: "n"}},
  )
  return path


@pytest.fixture(scope="module")
def images() -> np.ndarray:
  return np.random.default_rng(5).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)


def _ort(path: Path, x_nchw: np.ndarray) -> np.ndarray:
  sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
  return sess.run(None, {sess.get_inputs()[0].name: x_nchw.astype(np.float32)})[0]


@pytest.mark.parametrize("normalise", [False, True], ids=["plain", "normalising_graph"])
def test_onnx_conversion_matches_onnxruntime(tmp_path, images, normalise):
  model = _random_model(3 + normalise, normalise=normalise)
  onnx_path = _export(model, tmp_path / "model.onnx")
  graph = read_arcface_onnx(onnx_path)
  assert graph.arch_config == {
      "layers": list(LAYERS),
      "widths": list(WIDTHS),
      "num_features": FEATURES,
      "map_size": 7,
  }
  # torch's exporter folds every Conv->BN (stem, 2 per block, the shortcuts).
  assert graph.folded_bn == 1 + 2 * sum(LAYERS) + 4
  out = convert_cli.convert("iresnet", onnx_path, tmp_path / "teacher")
  module, variables, meta = ckpt.load_converted_teacher(out)
  assert meta["arch_config"]["layers"] == list(LAYERS) and meta["num_classes"] is None
  x = images.astype(np.float32)
  if normalise:  # the graph normalises inside: its constants become the metadata's
    np.testing.assert_allclose(meta["mean"], [127.5] * 3)
    np.testing.assert_allclose(meta["std"], [128.0] * 3)
    ref = _ort(onnx_path, x.transpose(0, 3, 1, 2))
  else:
    assert meta["mean"] == [127.5] * 3 and meta["std"] == [127.5] * 3
    ref = _ort(onnx_path, ((x - 127.5) / 127.5).transpose(0, 3, 1, 2))
  got = np.asarray(
      module.apply(variables, ckpt.preprocess_from_metadata(meta, images))["embedding"]
  )
  err = float(np.max(np.abs(got - ref)))
  print(
      f"\n[iresnet onnx, normalise={normalise}] max abs err {err:.3g} "
      f"(outputs up to {np.max(np.abs(ref)):.3g})"
  )
  assert err < TOL * max(1.0, float(np.max(np.abs(ref))))
  assert np.max(np.abs(ref[0] - ref[1])) > 100 * TOL  # the check can fail
  # Through the teacher API: [-1, 1] faces, L2-normalised embedding.
  t = api.load_teacher("converted", path=str(out))
  assert t.embed_dim == FEATURES and t.num_classes is None and t.input_size == 112
  emb = t.embed(images)
  ref_n = ref / np.linalg.norm(ref, axis=1, keepdims=True)
  assert np.max(np.abs(emb - ref_n)) < 1e-4


def test_state_dict_conversion_matches_torch(images):
  """The unfolded layout (arcface_torch backbone.pth keys) against PyTorch itself."""
  model = _random_model(11)
  module = ir.IResNet(layers=LAYERS, widths=WIDTHS, num_features=FEATURES)
  tensors = {k: v.numpy() for k, v in model.state_dict().items()}
  variables = torch_to_flax(tensors, ckpt.abstract_variables(module, (112, 112)))
  x = (images.astype(np.float32) - 127.5) / 127.5
  with torch.no_grad():
    ref = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  got = np.asarray(module.apply(variables, x)["embedding"])
  assert np.max(np.abs(got - ref)) < TOL * max(1.0, float(np.max(np.abs(ref))))


@pytest.mark.parametrize("arch", ["iresnet50", "iresnet100"])
def test_published_layouts_cover_every_key(arch):
  """Every key / shape of the real layout maps onto the Flax model (no compute)."""
  torch_model = TorchIResNet(layers=ir.IRESNET_LAYERS[arch], widths=ir.IRESNET_WIDTHS, features=512)
  want = {
      k: tuple(v.shape)
      for k, v in torch_model.state_dict().items()
      if not k.endswith("num_batches_tracked")
  }
  spec = ckpt.teacher_spec(arch)
  layout = torch_layout(
      ckpt.abstract_variables(spec.build(None, jax.numpy.float32), spec.input_size)
  )
  assert {k: s.torch_shape for k, s in layout.items()} == want
  assert spec.input_size == (112, 112) and spec.embedding_size == 512


def test_unknown_layout_names_the_node_and_initializer(tmp_path, capsys):
  onnx_path = _export(_random_model(2, odd_kernel=True), tmp_path / "odd.onnx")
  with pytest.raises(OnnxLayoutError) as ei:
    read_arcface_onnx(onnx_path)
  msg = str(ei.value)
  assert "odd.onnx" in msg and "Conv" in msg and f"({WIDTHS[1]}, {WIDTHS[1]}, 5, 5)" in msg
  # A depth that is not the named architecture's: one line, exit status 2.
  good = _export(_random_model(2), tmp_path / "good.onnx")
  rc = convert_cli.main(
      ["--arch", "iresnet50", "--weights", str(good), "--out", str(tmp_path / "t50")]
  )
  err = capsys.readouterr().err
  assert rc == 2 and "iresnet50" in err and "(1, 2, 1, 1)" in err and err.count("\n") == 1
  # Not an ONNX file at all.
  junk = tmp_path / "junk.onnx"
  junk.write_bytes(b"\x00garbage" * 10)
  rc = convert_cli.main(["--arch", "iresnet", "--weights", str(junk), "--out", str(tmp_path / "j")])
  assert rc == 2 and "junk.onnx" in capsys.readouterr().err


def test_state_dict_of_other_widths_converts_through_the_cli(tmp_path, images, capsys):
  """``--arch iresnet --arch-config`` on an arcface_torch state dict: the
  rehearsal's student-sized ArcFace (data/rehearsal.py writes it by name) loads
  strictly into the PyTorch reference, converts, and matches it."""
  import json

  from deocc_jax.data import rehearsal

  layers, widths, features = (1, 1, 2, 1), (8, 8, 16, 24), 12
  sd = rehearsal.arcface_iresnet_state_dict(layers, widths, features, seed=4)
  model = TorchIResNet(layers=layers, widths=widths, features=features)
  model.load_state_dict(sd, strict=True)  # every name and shape of the layout
  with torch.no_grad():
    for m in model.modules():  # non-trivial statistics so a swapped BN shows
      if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        m.running_mean.uniform_(-0.1, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  model.eval()
  weights = tmp_path / "backbone.pth"
  torch.save(model.state_dict(), weights)
  arc = {"layers": list(layers), "widths": list(widths), "num_features": features}
  out = tmp_path / "arcface"
  args = ["--arch", "iresnet", "--weights", str(weights), "--out", str(out)]
  assert convert_cli.main(args + ["--arch-config", json.dumps(arc)]) == 0
  module, variables, meta = ckpt.load_converted_teacher(out)
  assert meta["arch_config"] == {**arc, "map_size": 7}
  x = (images.astype(np.float32) - 127.5) / 127.5
  with torch.no_grad():
    ref = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  got = np.asarray(module.apply(variables, x)["embedding"])
  assert got.shape == (3, features)
  assert np.max(np.abs(got - ref)) < TOL * max(1.0, float(np.max(np.abs(ref))))
  assert np.max(np.abs(ref[0] - ref[1])) > 100 * TOL
  # Not JSON / not an object / widths that do not fit: one line, exit status 2.
  for bad, says in (
      ("{layers: 1}", "--arch-config is not JSON"),
      ("[1, 2]", "must be a JSON object"),
      (json.dumps({**arc, "widths": [8, 8, 16, 32]}), "layer4"),
  ):
    rc = convert_cli.main(args + ["--overwrite", "--arch-config", bad])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and err.count("\n") == 1, (bad, err)
