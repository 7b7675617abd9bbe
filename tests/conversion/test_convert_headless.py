"""facenet-pytorch ``classify=False`` state dicts (no ``logits.*`` keys) convert.

A model built with ``InceptionResnetV1(classify=False)`` (and no pretrained
head) has no ``logits`` layer, so its state dict lacks ``logits.weight`` /
``logits.bias``; the converter used to refuse it as "missing keys". It now
gives a teacher without a classifier whose embedding still matches PyTorch.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
import torch

from deocc_jax import convert as convert_cli
from deocc_jax.conversion.checkpoint import load_converted_teacher, preprocess_from_metadata
from deocc_jax.teachers import api

from tests.helpers.torch_reference import TorchInceptionResnetV1, nhwc_to_nchw, randomise_  # noqa: E402

SIZE = 96  # any size >= 75 px runs (adaptive average pool); small keeps it fast


def test_state_dict_without_classifier_converts(tmp_path):
  rng = np.random.default_rng(0)
  prep = lambda a: nhwc_to_nchw((a.astype(np.float32) - 127.5) / 128.0)  # noqa: E731
  # Drawn BN statistics (no calibration pass, for speed): the compared embedding
  # is L2-normalised, so an absolute tolerance stays meaningful.
  model = randomise_(TorchInceptionResnetV1(8631), seed=3)
  state = {k: v for k, v in model.state_dict().items() if not k.startswith("logits.")}
  pt = tmp_path / "classify_false.pt"
  torch.save(state, pt)
  images = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
  with torch.no_grad():
    ref, _ = model(prep(images))

  out = convert_cli.convert("inception_resnet_v1", pt, tmp_path / "teacher")
  module, variables, meta = load_converted_teacher(out)
  assert meta["num_classes"] is None
  assert "logits" not in variables["params"]
  res = jax.jit(module.apply)(variables, preprocess_from_metadata(meta, images))
  assert set(res) == {"embedding"}
  err = float(np.max(np.abs(np.asarray(res["embedding"]) - ref.numpy())))
  assert err < 1e-4, err
  t = api.load_teacher("converted", path=str(out))
  assert t.num_classes is None and t.embed_dim == 512

  # A file WITH a classifier keeps it, sized from the file (here 10 classes).
  ten = dict(state, **{"logits.weight": torch.randn(10, 512), "logits.bias": torch.randn(10)})
  torch.save(ten, tmp_path / "ten.pt")
  _, v10, m10 = load_converted_teacher(
      convert_cli.convert("inception_resnet_v1", tmp_path / "ten.pt", tmp_path / "t10")
  )
  assert m10["num_classes"] == 10 and v10["params"]["logits"]["kernel"].shape == (512, 10)


def test_state_dict_reads_without_torch(tmp_path, monkeypatch):
  """`pip install 'deocc-jax[convert]'` has no torch: .pt files are read by the
  torch-free reader, to the same arrays as torch.load (module. prefix stripped)."""
  from deocc_jax.conversion.torch_weights import read_weights_file

  g = torch.Generator().manual_seed(0)
  state = {
      "module.conv.weight": torch.randn(4, 3, 3, 3, generator=g),
      "module.bn.running_var": torch.rand(4, generator=g),
      "module.bn.num_batches_tracked": torch.tensor(7),
      "module.fc.weight": torch.randn(6, 4, generator=g).t(),
  }  # non-contiguous
  pt = tmp_path / "sd.pt"
  torch.save(state, pt)
  with_torch, fmt = read_weights_file(pt)
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  without, fmt2 = read_weights_file(pt)
  assert fmt == fmt2 == "torch_state_dict"
  assert (
      sorted(without)
      == sorted(with_torch)
      == ["bn.num_batches_tracked", "bn.running_var", "conv.weight", "fc.weight"]
  )
  for k in with_torch:
    np.testing.assert_array_equal(without[k], with_torch[k])
