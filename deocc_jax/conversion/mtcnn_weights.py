"""MTCNN weights: read facenet-pytorch's pnet/rnet/onet state dicts without torch.

facenet-pytorch (2.6.0) ships the three MTCNN networks' weights in its wheel
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``), written by ``torch.save`` in
the legacy (non-zip) format. Decision: runtime code never needs torch. This
module reads those files directly (:func:`read_torch_file`: the legacy
stream of pickles + raw little-endian storages, or the zip format, with an
unpickler that resolves only ``collections.OrderedDict``, torch's
``_rebuild_tensor_v2`` / ``_rebuild_parameter`` and the ``*Storage`` type
names, so a hostile pickle cannot run code) and maps them onto the Flax
networks of :mod:`deocc_jax.detection.mtcnn`.

Weight sources, in :func:`load_mtcnn_params` order:

* a converted file (``.npz``, written by ``python -m deocc_jax.convert
  --arch mtcnn --out FILE.npz``; no facenet-pytorch needed afterwards);
* a folder holding ``pnet.pt``, ``rnet.pt``, ``onet.pt``;
* default: the installed facenet-pytorch wheel's ``data/`` folder, located
  with ``importlib.util.find_spec`` without importing the package (importing
  it needs torch and torchvision). Install it with
  ``pip install --no-deps facenet-pytorch==2.6.0`` (its metadata pins
  torch<2.3 / torchvision<0.18, which would replace the CPU torch).

Layout: PyTorch conv ``(O, I, kh, kw)`` -> Flax ``(kh, kw, I, O)``; linear
``(O, I)`` -> ``(I, O)``; PReLU ``weight (C,)`` -> ``alpha``. The dense layers
after the last conv read a ``(W, H, C)``-ordered flattening (the PyTorch
code permutes NCHW to NWHC first); the Flax networks do the same.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import os
import pickle
import struct
import tempfile
import zipfile
from typing import Any

import numpy as np

__all__ = [
    "NETS",
    "read_torch_file",
    "facenet_pytorch_data_dir",
    "state_dicts_to_params",
    "load_mtcnn_params",
    "convert_mtcnn",
    "MTCNNWeightsError",
]

NETS = ("pnet", "rnet", "onet")
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class MTCNNWeightsError(ValueError):
  """An MTCNN weights file / folder is missing, unreadable or does not fit."""


class _Storage:

  def __init__(self, key: str, dtype: Any, numel: int):
    self.key, self.dtype, self.numel = key, np.dtype(dtype), int(numel)
    self.data: np.ndarray | None = None


class _TensorRef:

  def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
    self.storage, self.offset, self.size, self.stride = (
        storage,
        int(offset),
        tuple(size),
        tuple(stride),
    )

  def materialize(self) -> np.ndarray:
    base = self.storage.data
    if base is None:
      raise MTCNNWeightsError(f"storage {self.storage.key} has no data")
    item = base.itemsize
    if not self.size:
      return np.array(base[self.offset])
    need = self.offset + sum((s - 1) * st for s, st in zip(self.size, self.stride)) + 1
    if need > len(base):
      raise MTCNNWeightsError(
          f"tensor of size {self.size} overruns its storage " f"({len(base)} elements)"
      )
    return np.lib.stride_tricks.as_strided(
        base[self.offset :], shape=self.size, strides=[st * item for st in self.stride]
    ).copy()


def _rebuild_tensor(storage, offset, size, stride, *unused):
  return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


class _StorageType:

  def __init__(self, name: str):
    self.name = name


class _Unpickler(pickle.Unpickler):
  """Resolves only the globals a tensor state dict needs."""

  def __init__(self, f, path: str, storages: dict[str, _Storage]):
    super().__init__(f)
    self.path, self.storages = path, storages

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return _rebuild_parameter
    if module == "torch" and name in _DTYPES:
      return _StorageType(name)
    raise MTCNNWeightsError(
        f"{self.path}: refusing to load global {module}.{name} " "(not a plain tensor state dict)"
    )

  def persistent_load(self, pid: Any) -> Any:
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise MTCNNWeightsError(f"{self.path}: unknown persistent id {pid!r}")
    stype, key, numel = pid[1], str(pid[2]), pid[4]
    name = stype.name if isinstance(stype, _StorageType) else str(stype)
    if name not in _DTYPES:
      raise MTCNNWeightsError(f"{self.path}: unsupported storage type {name}")
    if key not in self.storages:
      self.storages[key] = _Storage(key, _DTYPES[name], numel)
    return self.storages[key]


def _flatten(obj: Any, path: str) -> dict[str, np.ndarray]:
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise MTCNNWeightsError(f"{path}: expected a state dict, got {type(obj).__name__}")
  out = {}
  for k, v in obj.items():
    if not isinstance(v, _TensorRef):
      raise MTCNNWeightsError(f"{path}: entry {k!r} is not a tensor")
    out[str(k)] = v.materialize()
  return out


def read_torch_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """A ``torch.save``'d state dict as ``{name: numpy array}``, without torch."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MTCNNWeightsError(f"weights file not found: {path}")
  storages: dict[str, _Storage] = {}
  try:
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("data.pkl")]
        if not pkl:
          raise MTCNNWeightsError(f"{path}: zip without data.pkl (not a torch file)")
        prefix = pkl[0][: -len("data.pkl")]
        obj = _Unpickler(io.BytesIO(z.read(pkl[0])), path, storages).load()
        for key, st in storages.items():
          raw = z.read(f"{prefix}data/{key}")
          st.data = np.frombuffer(raw, st.dtype.newbyteorder("<"), count=st.numel)
      return _flatten(obj, path)
    with open(path, "rb") as f:
      magic = pickle.load(f)
      if magic != _LEGACY_MAGIC:
        raise MTCNNWeightsError(f"{path}: not a torch.save file (bad magic number)")
      pickle.load(f)  # protocol version
      info = pickle.load(f)
      if isinstance(info, dict) and not info.get("little_endian", True):
        raise MTCNNWeightsError(f"{path}: big-endian torch files are not supported")
      obj = _Unpickler(f, path, storages).load()
      keys = pickle.load(f)
      for key in keys:
        st = storages.get(str(key))
        if st is None:
          raise MTCNNWeightsError(f"{path}: storage {key} listed but never used")
        (n,) = struct.unpack("<q", f.read(8))
        raw = f.read(n * st.dtype.itemsize)
        if len(raw) != n * st.dtype.itemsize:
          raise MTCNNWeightsError(f"{path}: truncated storage {key}")
        st.data = np.frombuffer(raw, st.dtype.newbyteorder("<"), count=n)
    return _flatten(obj, path)
  except MTCNNWeightsError:
    raise
  except (
      pickle.UnpicklingError,
      EOFError,
      struct.error,
      KeyError,
      ValueError,
      zipfile.BadZipFile,
  ) as e:
    raise MTCNNWeightsError(f"{path}: unreadable torch file ({type(e).__name__}: {e})") from e


def facenet_pytorch_data_dir() -> str:
  """The installed facenet-pytorch's ``data/`` folder (package not imported)."""
  spec = importlib.util.find_spec("facenet_pytorch")
  if spec is None or not spec.submodule_search_locations:
    raise MTCNNWeightsError(
        "MTCNN weights: the facenet-pytorch package is not installed. Install its wheel "
        "without its (torch<2.3) dependencies: `pip install --no-deps "
        "facenet-pytorch==2.6.0`, or pass a converted .npz / a folder with "
        "pnet.pt, rnet.pt, onet.pt"
    )
  d = os.path.join(list(spec.submodule_search_locations)[0], "data")
  missing = [n for n in NETS if not os.path.isfile(os.path.join(d, f"{n}.pt"))]
  if missing:
    raise MTCNNWeightsError(
        f"{d}: facenet-pytorch is installed but lacks " f"{', '.join(m + '.pt' for m in missing)}"
    )
  return d


# PyTorch name -> (Flax module name, kind) per network.
_LAYERS = {
    "pnet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4_1", "conv4_2"],
    "rnet": [
        "conv1",
        "prelu1",
        "conv2",
        "prelu2",
        "conv3",
        "prelu3",
        "dense4",
        "prelu4",
        "dense5_1",
        "dense5_2",
    ],
    "onet": [
        "conv1",
        "prelu1",
        "conv2",
        "prelu2",
        "conv3",
        "prelu3",
        "conv4",
        "prelu4",
        "dense5",
        "prelu5",
        "dense6_1",
        "dense6_2",
        "dense6_3",
    ],
}


def state_dicts_to_params(
    state_dicts: dict[str, dict[str, np.ndarray]],
) -> dict[str, dict[str, Any]]:
  """``{'pnet': sd, 'rnet': sd, 'onet': sd}`` -> ``{'pnet': {'params': ...}, ...}``."""
  out = {}
  for net in NETS:
    if net not in state_dicts:
      raise MTCNNWeightsError(f"missing the {net} state dict")
    sd = dict(state_dicts[net])
    params: dict[str, Any] = {}
    expected = set()
    for layer in _LAYERS[net]:
      if layer.startswith("prelu"):
        key = f"{layer}.weight"
        expected.add(key)
        if key not in sd:
          raise MTCNNWeightsError(f"{net}: missing {key}")
        params[layer] = {"alpha": np.asarray(sd[key], np.float32)}
        continue
      wk, bk = f"{layer}.weight", f"{layer}.bias"
      expected |= {wk, bk}
      if wk not in sd or bk not in sd:
        raise MTCNNWeightsError(f"{net}: missing {wk} / {bk}")
      w = np.asarray(sd[wk], np.float32)
      if w.ndim == 4:
        kernel = w.transpose(2, 3, 1, 0)
      elif w.ndim == 2:
        kernel = w.T
      else:
        raise MTCNNWeightsError(f"{net}: {wk} has shape {w.shape}")
      params[layer] = {
          "kernel": np.ascontiguousarray(kernel),
          "bias": np.asarray(sd[bk], np.float32),
      }
    extra = sorted(set(sd) - expected)
    if extra:
      raise MTCNNWeightsError(f"{net}: unexpected keys {extra}")
    out[net] = {"params": params}
  return out


def _from_npz(path: str) -> dict[str, dict[str, Any]]:
  try:
    with np.load(path, allow_pickle=False) as z:
      flat = {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise MTCNNWeightsError(f"{path}: unreadable .npz ({e})") from e
  out: dict[str, dict[str, Any]] = {n: {"params": {}} for n in NETS}
  for k, v in flat.items():
    if k.startswith("meta/"):
      continue
    parts = k.split("/")
    if len(parts) != 3 or parts[0] not in NETS:
      raise MTCNNWeightsError(f"{path}: unexpected array {k!r}")
    out[parts[0]]["params"].setdefault(parts[1], {})[parts[2]] = np.asarray(v, np.float32)
  for n in NETS:
    missing = [layer for layer in _LAYERS[n] if layer not in out[n]["params"]]
    if missing:
      raise MTCNNWeightsError(f"{path}: {n} lacks layers {missing}")
  return out


def load_mtcnn_params(source: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
  """Flax variables of the three MTCNN networks (see the module docstring)."""
  if source is not None and os.fspath(source).endswith(".npz"):
    p = os.fspath(source)
    if not os.path.isfile(p):
      raise MTCNNWeightsError(f"converted MTCNN weights not found: {p}")
    return _from_npz(p)
  d = facenet_pytorch_data_dir() if source is None else os.fspath(source)
  if not os.path.isdir(d):
    raise MTCNNWeightsError(f"MTCNN weights folder not found: {d}")
  return state_dicts_to_params({n: read_torch_file(os.path.join(d, f"{n}.pt")) for n in NETS})


def convert_mtcnn(
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> str:
  """Writes the three networks' Flax params to ``out`` (.npz, atomically)."""
  out = os.fspath(out)
  if not out.endswith(".npz"):
    raise MTCNNWeightsError(f"--out must end with .npz for --arch mtcnn, got {out}")
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{os.path.abspath(out)} already exists (use --overwrite)")
  d = facenet_pytorch_data_dir() if source is None else os.fspath(source)
  params = load_mtcnn_params(d)
  flat: dict[str, np.ndarray] = {}
  for net in NETS:
    for layer, leaves in params[net]["params"].items():
      for leaf, v in leaves.items():
        flat[f"{net}/{layer}/{leaf}"] = np.asarray(v, np.float32)
  for net in NETS:
    with open(os.path.join(d, f"{net}.pt"), "rb") as f:
      flat[f"meta/{net}_sha256"] = np.array(hashlib.sha256(f.read()).hexdigest())
  out_dir = os.path.dirname(os.path.abspath(out))
  fd, tmp = tempfile.mkstemp(suffix=".npz", dir=out_dir)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **flat)
    os.replace(tmp, out)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return os.path.abspath(out)
