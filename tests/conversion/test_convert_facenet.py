"""Conversion of facenet-pytorch InceptionResnetV1 weights (torch state dict) to Flax.

A PyTorch reference InceptionResnetV1 with random weights and random (calibrated
then perturbed) BatchNorm statistics is saved as a state dict, converted with the
real ``python -m deocc_jax.convert`` command, loaded back from the Orbax checkpoint
and compared with PyTorch on random 160 x 160 images.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from deocc_jax import convert as convert_cli
from deocc_jax.conversion.checkpoint import load_converted_teacher, preprocess_from_metadata
from deocc_jax.conversion.torch_weights import WeightsMismatchError, read_weights_file
from deocc_jax.models.inception_resnet_v1 import InceptionResnetV1, preprocess_facenet

from tests.helpers.torch_reference import TorchInceptionResnetV1, nhwc_to_nchw, randomise_  # noqa: E402
from tests.helpers import paths

ARCH = "inception_resnet_v1"
SIZE = 160
TOL = 1e-4
REPO = paths.ROOT


@pytest.fixture(scope="module")
def facenet_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
  """Random reference model saved as a state dict + its outputs on two random images."""
  torch.manual_seed(0)
  d = tmp_path_factory.mktemp("facenet")
  rng = np.random.default_rng(1234)
  calib = rng.integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)
  # torch-side preprocessing as facenet-pytorch's fixed_image_standardization
  model = randomise_(
      TorchInceptionResnetV1(8631),
      seed=7,
      calibration_input=nhwc_to_nchw((calib.astype(np.float32) - 127.5) / 128.0),
  )
  state = model.state_dict()
  assert any(k.endswith("num_batches_tracked") for k in state)  # a real state dict has them
  pt = d / "20180402-114759-vggface2.pt"
  torch.save(state, pt)
  images = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
  with torch.no_grad():
    emb, logits = model(nhwc_to_nchw((images.astype(np.float32) - 127.5) / 128.0))
  return {
      "dir": d,
      "pt": pt,
      "state": {k: v.clone() for k, v in state.items()},
      "images": images,
      "emb": emb.numpy(),
      "logits": logits.numpy(),
  }


def _run_jax(module: Any, variables: Any, x: np.ndarray) -> dict[str, np.ndarray]:
  out = jax.jit(module.apply)(variables, x)
  return {k: np.asarray(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def converted(facenet_case: dict[str, Any]) -> tuple[Path, subprocess.CompletedProcess[str]]:
  """The state dict converted by a real ``python -m deocc_jax.convert`` process."""
  out_dir = facenet_case["dir"] / "converted"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "deocc_jax.convert",
          "--arch",
          ARCH,
          "--weights",
          str(facenet_case["pt"]),
          "--out",
          str(out_dir),
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  return out_dir, proc


def test_convert_subprocess_load_and_match_torch(
    facenet_case: dict[str, Any], converted: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
  out_dir, proc = converted
  assert proc.returncode == 0, proc.stderr
  assert str(out_dir) in proc.stdout
  assert not [p for p in out_dir.parent.iterdir() if ".tmp-" in p.name]  # no temp dir left

  module, variables, meta = load_converted_teacher(out_dir)
  assert isinstance(module, InceptionResnetV1) and module.num_classes == 8631
  assert set(variables) == {"params", "batch_stats"}

  x = np.asarray(preprocess_facenet(facenet_case["images"]))
  np.testing.assert_array_equal(
      x, np.asarray(preprocess_from_metadata(meta, facenet_case["images"]))
  )
  out = _run_jax(module, variables, x)
  assert out["embedding"].shape == (2, 512) and out["logits"].shape == (2, 8631)
  err_emb = float(np.max(np.abs(out["embedding"] - facenet_case["emb"])))
  err_log = float(np.max(np.abs(out["logits"] - facenet_case["logits"])))
  print(f"\n[facenet torch_state_dict] max abs err: embedding {err_emb:.3g}, logits {err_log:.3g}")
  assert err_emb <= TOL and err_log <= TOL
  np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, atol=1e-5)
  # the comparison is not vacuous: outputs vary between images
  assert np.max(np.abs(facenet_case["logits"][0] - facenet_case["logits"][1])) > 100 * TOL

  # metadata
  assert meta["architecture"] == ARCH
  assert meta["input_size"] == [160, 160]
  assert meta["colour_order"] == "RGB"
  assert meta["mean"] == [127.5] * 3 and meta["std"] == [128.0] * 3
  assert meta["embedding_size"] == 512 and meta["embedding_l2_normalised"] is True
  assert meta["num_classes"] == 8631
  assert meta["source_file"] == str(facenet_case["pt"].resolve())
  assert meta["source_sha256"] == hashlib.sha256(facenet_case["pt"].read_bytes()).hexdigest()
  assert meta["source_format"] == "torch_state_dict"


def test_bfloat16_compute_dtype(
    facenet_case: dict[str, Any], converted: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
  module, variables, _ = load_converted_teacher(converted[0], dtype=jnp.bfloat16)
  assert module.dtype == jnp.bfloat16
  assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(variables))
  out = jax.jit(module.apply)(variables, preprocess_facenet(facenet_case["images"]))
  assert out["embedding"].dtype == jnp.float32 and out["logits"].dtype == jnp.bfloat16
  emb = np.asarray(out["embedding"])
  cos = np.sum(emb * facenet_case["emb"], axis=1)  # both unit length
  print(f"\n[facenet bfloat16] cosine to float32 torch embedding: {cos}")
  # measured 0.9988 and 0.9990 (bf16 convolutions through the 160 px network,
  # random weights); the bound leaves 4x that distance (1 - cos)
  assert np.all(cos > 0.995)
  # ... and it discriminates: each is nearer its own image's float32
  # embedding than the other image's
  other = np.sum(emb * facenet_case["emb"][::-1], axis=1)
  assert np.all(cos > other), (cos, other)


def test_read_weights_variants(tmp_path: Path) -> None:
  """Legacy (non-zip) torch.save, a {'state_dict': ...} wrapper and a 'module.' prefix."""
  sd = {
      "module.a.weight": torch.arange(6.0).reshape(2, 3),
      "module.a.bias": torch.ones(2, dtype=torch.float16),
  }
  legacy = tmp_path / "legacy.pt"
  torch.save({"state_dict": sd, "epoch": 3}, legacy, _use_new_zipfile_serialization=False)
  tensors, fmt = read_weights_file(legacy)
  assert fmt == "torch_state_dict"
  assert sorted(tensors) == ["a.bias", "a.weight"]
  np.testing.assert_array_equal(tensors["a.weight"], np.arange(6.0).reshape(2, 3))
  assert tensors["a.bias"].dtype == np.float32


def test_existing_output_is_refused_and_overwrite_replaces(
    facenet_case: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
  out_dir = facenet_case["dir"] / "exists"
  out_dir.mkdir()
  (out_dir / "marker").write_text("x")
  rc = convert_cli.main(
      ["--arch", ARCH, "--weights", str(facenet_case["pt"]), "--out", str(out_dir)]
  )
  assert rc == 2
  assert "already exists" in capsys.readouterr().err
  assert (out_dir / "marker").exists()
  rc = convert_cli.main(
      ["--arch", ARCH, "--weights", str(facenet_case["pt"]), "--out", str(out_dir), "--overwrite"]
  )
  assert rc == 0
  assert not (out_dir / "marker").exists() and (out_dir / "metadata.json").exists()
  assert not [p for p in out_dir.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_mismatched_state_dict_lists_every_problem_in_one_error(
    facenet_case: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
  state = dict(facenet_case["state"])
  del state["repeat_2.3.branch1.2.bn.running_var"]
  state["repeat_9.extra.weight"] = torch.zeros(3)
  state["last_linear.weight"] = torch.zeros(512, 1000)
  bad = facenet_case["dir"] / "bad.pt"
  torch.save(state, bad)
  out_dir = facenet_case["dir"] / "bad_out"

  rc = convert_cli.main(["--arch", ARCH, "--weights", str(bad), "--out", str(out_dir)])
  err = capsys.readouterr().err
  assert rc == 2
  assert err.count("error:") == 1
  assert str(bad) in err
  assert "missing keys (1)" in err and "repeat_2.3.branch1.2.bn.running_var" in err
  assert "unexpected keys (1)" in err and "repeat_9.extra.weight" in err
  assert "last_linear.weight: (512, 1000) vs (512, 1792)" in err
  assert not out_dir.exists()
  assert not [p for p in out_dir.parent.iterdir() if ".tmp-" in p.name]

  with pytest.raises(WeightsMismatchError) as ei:
    convert_cli.convert(ARCH, bad, out_dir)
  assert ei.value.missing == ["repeat_2.3.branch1.2.bn.running_var"]
  assert ei.value.unexpected == ["repeat_9.extra.weight"]
  assert ei.value.mismatched == [("last_linear.weight", (512, 1000), (512, 1792))]


def test_wrong_num_classes_is_a_shape_mismatch(facenet_case: dict[str, Any]) -> None:
  with pytest.raises(WeightsMismatchError) as ei:
    convert_cli.convert(ARCH, facenet_case["pt"], facenet_case["dir"] / "nc", num_classes=10)
  assert ei.value.missing == [] and ei.value.unexpected == []
  assert sorted(k for k, _, _ in ei.value.mismatched) == ["logits.bias", "logits.weight"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(None, id="random-bytes"),
        pytest.param(b"PK\x03\x04" + bytes(100), id="broken-zip"),
        pytest.param(b"", id="empty"),
    ],
)
def test_non_weights_file_is_refused_naming_the_file(
    facenet_case: dict[str, Any], capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
  if content is None:
    content = np.random.default_rng(5).bytes(4096)
  junk = facenet_case["dir"] / "junk.pt"
  junk.write_bytes(content)
  out_dir = facenet_case["dir"] / "junk_out"
  rc = convert_cli.main(["--arch", ARCH, "--weights", str(junk), "--out", str(out_dir)])
  err = capsys.readouterr().err
  assert rc == 2
  assert str(junk) in err and (
      "not a weights file" in err or "not a readable PyTorch weights file" in err
  )
  assert not out_dir.exists()


def test_missing_weights_file(
    facenet_case: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
  missing = facenet_case["dir"] / "nope.pt"
  rc = convert_cli.main(
      ["--arch", ARCH, "--weights", str(missing), "--out", str(facenet_case["dir"] / "o")]
  )
  assert rc == 2
  assert f"{missing}: no such weights file" in capsys.readouterr().err


def _similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """(2, 3) least-squares similarity src -> dst (an independent float64 solve)."""
  rows, rhs = [], []
  for (x, y), (u, v) in zip(src, dst):
    rows += [[x, -y, 1.0, 0.0], [y, x, 0.0, 1.0]]
    rhs += [u, v]
  a, b, tx, ty = np.linalg.lstsq(np.asarray(rows), np.asarray(rhs), rcond=None)[0]
  return np.array([[a, -b, tx], [b, a, ty]])


@pytest.mark.slow
def test_infer_with_the_converted_teacher_matches_torch_on_real_photos(
    facenet_case: dict[str, Any],
    converted: tuple[Path, subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
  """``deocc-infer verify --teacher_kind=converted``: the photo aligned on the
  facenet template (checked against an independent warp), embedded as the PyTorch
  model embeds that crop, and the CLI's score is the cosine of the two."""
  from PIL import Image

  from tests.helpers import photos as photos_lib
  from deocc_jax.data import alignment
  from deocc_jax.inference import pretrained

  out_dir, proc = converted
  assert proc.returncode == 0, proc.stderr
  pics = photos_lib.face_photos()
  names = ("obama", "biden")
  for n in names:
    Image.fromarray(pics[n]).save(tmp_path / f"{n}.png")
  fr = pretrained.from_teacher("converted", str(out_dir), threshold=0.5)
  assert fr.resolution == SIZE and fr.template == "facenet"
  faces = [fr.load(str(tmp_path / f"{n}.png"), align="dlib") for n in names]
  tpl = alignment.get_template("facenet").points
  for n, f in zip(names, faces):
    # geometry: the crop's map sends the facenet template onto the least-squares
    # similarity fit of the landmarks (an independent float64 solve)
    inv = _similarity_lstsq(tpl, f.landmarks)  # crop -> image
    m = np.linalg.inv(np.vstack([inv, [0, 0, 1]]))[:2]
    want_pts = tpl @ inv[:, :2].T + inv[:, 2]
    got_pts = tpl @ f.transform[:, :2].T + f.transform[:, 2]
    assert np.abs(got_pts - want_pts).max() < 1e-6, (n, got_pts, want_pts)
    # pixels: RGB as in the photo (a PIL bicubic warp of the box-shrunk photo)
    k = max(1, int(1.0 / np.hypot(m[0, 0], m[1, 0])))
    m = _similarity_lstsq(f.landmarks / k, tpl)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    ref = (
        Image.fromarray(pics[n])
        .reduce(k)
        .transform(
            (SIZE, SIZE), Image.Transform.AFFINE, tuple(inv.ravel()), Image.Resampling.BICUBIC
        )
    )
    got = (f.face.astype(np.float64) + 1.0) * 127.5
    diff = np.abs(got - np.asarray(ref, np.float64))[16:-16, 16:-16]
    assert diff.mean() < 6.0, (n, diff.mean())
  x = np.stack([f.face for f in faces])
  emb = fr.embed_prepared(x)
  torch.manual_seed(0)
  model = TorchInceptionResnetV1(8631).eval()
  model.load_state_dict(facenet_case["state"])
  with torch.no_grad():  # the [-1, 1] face as facenet-pytorch standardises uint8 pixels
    want, _ = model(nhwc_to_nchw(((x + 1.0) * 127.5 - 127.5) / 128.0))
  np.testing.assert_allclose(emb, want.numpy(), atol=TOL)
  cos = float(np.dot(emb[0], emb[1]) / np.linalg.norm(emb[0]) / np.linalg.norm(emb[1]))
  cmd = [
      sys.executable,
      "-m",
      "deocc_jax.infer",
      "verify",
      "obama.png",
      "biden.png",
      "--teacher_kind=converted",
      f"--teacher_path={out_dir}",
      "--threshold=0.5",
      "--align=dlib",
  ]
  r = subprocess.run(
      cmd,
      cwd=tmp_path,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout)
  assert out["recognizer"].startswith("converted:") and out["checkpoint_steps"] == {}
  assert out["score"] == pytest.approx(cos, abs=1e-5) and out["same"] == (cos >= 0.5)
