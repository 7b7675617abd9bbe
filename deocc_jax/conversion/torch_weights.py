"""Reading PyTorch-layout weight files and mapping them onto Flax variable trees.

Supported on-disk formats (detected from the content, not the file name):

* ``torch_state_dict``: a state dict written by ``torch.save`` (zip or legacy
  format), e.g. facenet-pytorch's ``20180402-114759-vggface2.pt``; read with
  ``torch.load(..., map_location='cpu', weights_only=True)`` when torch is
  installed, else by a torch-free reader of the ``torch.save`` format
  (:func:`deocc_jax.conversion.mtcnn_weights.read_torch_file`; plain tensor state
  dicts only). A ``{'state_dict': {...}}`` wrapper
  and a DataParallel ``module.`` prefix on every key are accepted.
* ``pickle_numpy``: a pickle of a dict ``{torch name: numpy array}`` as distributed
  with cydonia999/VGGFace2-pytorch (``resnet50_ft_weight.pkl``, written by
  Python 2). Read like ``pickle.load(f, encoding='latin1')`` but with an unpickler
  that only resolves the numpy / ``collections.OrderedDict`` globals such a file
  needs, so a hostile pickle cannot run code.

Mapping rule (the Flax models in :mod:`deocc_jax.teachers` mirror the PyTorch
module names): the Flax variable ``<collection>/a/b/c/<leaf>`` corresponds to the
PyTorch key ``a.b.c.<torch leaf>`` with

=================  =====================  =======================================
Flax leaf          PyTorch leaf           transform
=================  =====================  =======================================
params kernel 4-D  weight (O, I, kh, kw)  transpose to (kh, kw, I, O)
params kernel 2-D  weight (O, I)          transpose to (I, O)
params weight 2-D  weight (I, O)          as is (SphereFace's ``AngleLinear``)
params bias        bias                   as is
params scale       weight (C,)            as is (BatchNorm scale, PReLU slopes)
batch_stats mean   running_mean           as is
batch_stats var    running_var            as is
=================  =====================  =======================================

A Flax model that flattens a feature map for a linear layer transposes it to
NCHW first (PyTorch's ``view(N, -1)`` order), so that layer's weight maps like
any other (no row permutation here).

BatchNorm ``num_batches_tracked`` buffers are accepted and ignored. Every other
difference is refused: :class:`WeightsMismatchError` lists all missing keys,
unexpected keys and shape mismatches in one message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import zipfile
from typing import Any, Mapping

import jax
import numpy as np

__all__ = [
    "WeightsFileError",
    "WeightsMismatchError",
    "TorchKeySpec",
    "read_weights_file",
    "file_sha256",
    "torch_layout",
    "torch_to_flax",
]

# Magic number torch.save writes first in its legacy (non-zip) format.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_MAX_LISTED = 100


class WeightsFileError(ValueError):
  """The file cannot be read as a weights file (missing, corrupt, wrong content)."""


class WeightsMismatchError(ValueError):
  """The weights do not fit the architecture; the message lists every difference.

  Attributes:
    missing: PyTorch keys the architecture needs that the file lacks.
    unexpected: keys in the file the architecture does not have.
    mismatched: ``(key, file shape, expected shape)`` triples.
  """

  def __init__(
      self,
      message: str,
      missing: list[str],
      unexpected: list[str],
      mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
  ) -> None:
    super().__init__(message)
    self.missing = missing
    self.unexpected = unexpected
    self.mismatched = mismatched


@dataclasses.dataclass(frozen=True)
class TorchKeySpec:
  """Where one PyTorch tensor goes in the Flax tree.

  Attributes:
    flax_path: ``(collection, module, ..., leaf)``.
    torch_shape: shape the tensor must have in the file.
    kind: ``'conv'`` (OIHW -> HWIO), ``'linear'`` (OI -> IO) or ``'copy'``.
  """

  flax_path: tuple[str, ...]
  torch_shape: tuple[int, ...]
  kind: str


def file_sha256(path: str | os.PathLike[str]) -> str:
  """Hex SHA-256 of a file, read in 1 MiB chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """``pickle.Unpickler(encoding='latin1')`` that resolves only numpy array globals."""

  _ALLOWED = frozenset(
      {
          ("numpy.core.multiarray", "_reconstruct"),
          ("numpy._core.multiarray", "_reconstruct"),
          ("numpy.core.multiarray", "scalar"),
          ("numpy._core.multiarray", "scalar"),
          ("numpy", "ndarray"),
          ("numpy", "dtype"),
          ("collections", "OrderedDict"),
          ("_codecs", "encode"),
      }
  )

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights pickle")
    return super().find_class(module, name)


def _to_numpy(value: Any) -> np.ndarray | None:
  """A tensor / array -> float32-or-native numpy array; ``None`` if not array-like."""
  if isinstance(value, np.ndarray):
    return value
  if isinstance(value, np.generic):
    return np.asarray(value)
  if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
    t = value.detach().cpu()
    if t.is_floating_point():
      t = t.float()  # bfloat16 has no numpy dtype; all weights end up float32
    return t.numpy()
  return None


def _torch_load(path: str) -> Any:
  try:
    import torch
  except ImportError:
    # No torch: read the torch.save format directly (zip or legacy; the
    # restricted unpickler of conversion/mtcnn_weights.py), so converting
    # needs no (multi-GB) torch install.
    from deocc_jax.conversion.mtcnn_weights import MTCNNWeightsError, read_torch_file

    try:
      return read_torch_file(path)
    except MTCNNWeightsError as e:
      raise WeightsFileError(
          f"{path}: not a readable PyTorch weights file " f"(read without torch: {e})"
      ) from e
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for bad files
    raise WeightsFileError(
        f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    ) from e


def read_weights_file(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], str]:
  """Read a weights file into ``{torch key: numpy array}``.

  Args:
    path: a torch state dict (``.pt`` / ``.pth``) or a latin1 pickle of numpy arrays.

  Returns:
    ``(tensors, format)`` with ``format`` in ``{'torch_state_dict', 'pickle_numpy'}``.

  Raises:
    WeightsFileError: the file is missing, unreadable, or holds no mapping of names
      to tensors; the message names the file.
  """
  p = os.fspath(path)
  if not os.path.isfile(p):
    raise WeightsFileError(f"{p}: no such weights file")
  with open(p, "rb") as f:
    head = f.read(4)
  if head == b"PK\x03\x04" and zipfile.is_zipfile(p):
    obj, fmt = _torch_load(p), "torch_state_dict"
  else:
    try:
      with open(p, "rb") as f:
        obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
      if "is not allowed" in str(e):
        raise WeightsFileError(
            f"{p}: refused to unpickle ({e}); expected a dict of numpy arrays"
        ) from e
      raise WeightsFileError(
          f"{p}: not a weights file (neither a PyTorch state dict nor a pickle of numpy arrays)"
      ) from e
    except Exception as e:  # EOFError, ValueError, UnicodeDecodeError, ... on random bytes
      raise WeightsFileError(
          f"{p}: not a weights file (neither a PyTorch state dict nor a pickle of numpy arrays; "
          f"{type(e).__name__})"
      ) from e
    if isinstance(obj, int) and obj == _TORCH_LEGACY_MAGIC:
      obj, fmt = _torch_load(p), "torch_state_dict"
    else:
      fmt = "pickle_numpy"
  return _as_tensor_dict(obj, p), fmt


def _as_tensor_dict(obj: Any, path: str) -> dict[str, np.ndarray]:
  """Unwrap ``{'state_dict': ...}`` / ``module.`` prefixes; convert values to numpy."""
  if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping) or not obj:
    raise WeightsFileError(
        f"{path}: holds a {type(obj).__name__}, not a non-empty mapping of parameter names to tensors"
    )
  keys = [str(k) for k in obj]
  strip = all(k.startswith("module.") for k in keys)
  out: dict[str, np.ndarray] = {}
  bad: list[str] = []
  for k, v in obj.items():
    arr = _to_numpy(v)
    name = str(k)[len("module.") :] if strip else str(k)
    if arr is None:
      bad.append(f"{name} ({type(v).__name__})")
    else:
      out[name] = arr
  if bad:
    raise WeightsFileError(
        f"{path}: entries that are not tensors/arrays: {', '.join(bad[:_MAX_LISTED])}"
    )
  return out


def torch_layout(abstract_variables: Mapping[str, Any]) -> dict[str, TorchKeySpec]:
  """PyTorch key -> :class:`TorchKeySpec` for every leaf of a Flax variable tree.

  Args:
    abstract_variables: ``{'params': ..., 'batch_stats': ...}`` of a teacher model
      (arrays or ``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape(model.init, ...)``).
  """
  layout: dict[str, TorchKeySpec] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(dict(abstract_variables))[0]:
    names = tuple(str(getattr(e, "key", e)) for e in path)
    collection, modules, leaf_name = names[0], names[1:-1], names[-1]
    shape = tuple(int(s) for s in leaf.shape)
    if collection == "params" and leaf_name == "kernel" and len(shape) == 4:
      kind, tname, tshape = "conv", "weight", (shape[3], shape[2], shape[0], shape[1])
    elif collection == "params" and leaf_name == "kernel" and len(shape) == 2:
      kind, tname, tshape = "linear", "weight", (shape[1], shape[0])
    elif collection == "params" and leaf_name == "weight" and len(shape) == 2:
      kind, tname, tshape = "copy", "weight", shape  # AngleLinear: stored (in, out)
    elif collection == "params" and leaf_name in ("bias", "scale"):
      kind, tname, tshape = "copy", "bias" if leaf_name == "bias" else "weight", shape
    elif collection == "batch_stats" and leaf_name in ("mean", "var"):
      kind, tname, tshape = "copy", "running_" + leaf_name, shape
    else:
      raise ValueError(f"no PyTorch counterpart for Flax variable {'/'.join(names)}")
    layout[".".join(modules + (tname,))] = TorchKeySpec(names, tshape, kind)
  return layout


def _transform(arr: np.ndarray, kind: str) -> np.ndarray:
  a = np.asarray(arr, dtype=np.float32)
  if kind == "conv":
    return np.ascontiguousarray(a.transpose(2, 3, 1, 0))
  if kind == "linear":
    return np.ascontiguousarray(a.T)
  return np.ascontiguousarray(a)


def _listing(title: str, items: list[str]) -> list[str]:
  lines = [f"  {title} ({len(items)}):"]
  lines += [f"    {s}" for s in items[:_MAX_LISTED]]
  if len(items) > _MAX_LISTED:
    lines.append(f"    ... and {len(items) - _MAX_LISTED} more")
  return lines


def torch_to_flax(
    tensors: Mapping[str, np.ndarray],
    abstract_variables: Mapping[str, Any],
    *,
    source: str = "<weights>",
    architecture: str = "<architecture>",
) -> dict[str, Any]:
  """Map ``{torch key: array}`` onto a Flax variable tree, strictly.

  Args:
    tensors: from :func:`read_weights_file`.
    abstract_variables: the target tree (shapes only needed).
    source: the file name, for messages.
    architecture: the architecture name, for messages.

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` nested dicts of float32 numpy arrays.

  Raises:
    WeightsMismatchError: listing every missing key, unexpected key and shape
      mismatch (``num_batches_tracked`` of an expected BatchNorm is ignored).
  """
  layout = torch_layout(abstract_variables)
  bn_modules = {k.rsplit(".", 1)[0] for k in layout if k.endswith(".running_mean")}
  missing = sorted(k for k in layout if k not in tensors)
  unexpected: list[str] = []
  mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
  for k, v in tensors.items():
    if k not in layout:
      if k.endswith(".num_batches_tracked") and k.rsplit(".", 1)[0] in bn_modules:
        continue
      unexpected.append(k)
    elif tuple(v.shape) != layout[k].torch_shape:
      mismatched.append((k, tuple(v.shape), layout[k].torch_shape))
  unexpected.sort()
  mismatched.sort()
  if missing or unexpected or mismatched:
    lines = [f"{source} does not match architecture '{architecture}' (PyTorch key layout):"]
    if missing:
      lines += _listing("missing keys", missing)
    if unexpected:
      lines += _listing("unexpected keys", unexpected)
    if mismatched:
      lines += _listing(
          "shape mismatches (file vs expected)",
          [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in mismatched],
      )
    if len(missing) + len(unexpected) > 20:
      lines.append("  (many differences: is the architecture the right one for this file?)")
    raise WeightsMismatchError("\n".join(lines), missing, unexpected, mismatched)
  out: dict[str, Any] = {}
  for k, spec in layout.items():
    node = out
    for name in spec.flax_path[:-1]:
      node = node.setdefault(name, {})
    node[spec.flax_path[-1]] = _transform(tensors[k], spec.kind)
  return out
