"""Pure-numpy reader for dlib's binary serialisation format (no dlib needed).

Facts used (checked against dlib's ``serialize.h``, ``float_details.h``,
``dnn/tensor.h``, ``dnn/core.h``, ``dnn/layers.h``, ``dnn/input.h``, ``dnn/loss.h``):

* Integers: one control byte (low 4 bits = number of magnitude bytes, bit 0x80 =
  negative) followed by the magnitude, little endian. Zero is ``01 00``.
* Floating point: a ``float_details`` object, i.e. a packed int64 mantissa then a
  packed int16 exponent; value = mantissa * 2**exponent. Exponents 32000, 32001 and
  32002 encode +inf, -inf and NaN.
* Strings: packed length then raw bytes. ``bool``: a single ASCII '0' / '1'.
* ``resizable_tensor`` v2: version, (n, k, nr, nc) as packed ints, then n*k*nr*nc
  little-endian float32. (v1 stored each element as a packed float.)
* ``alias_tensor``: version 1 then (n, k, nr, nc); no data.
* DNN containers: ``add_loss_layer`` = version 1, loss details, subnet.
  ``add_layer`` = version, subnet, layer details, then bookkeeping (3 bools and
  3 tensors for v2; the variant sitting directly on the input layer stores 3 bools,
  3 tensors and, for v3, an int). ``add_tag_layer`` / ``add_skip_layer`` on a
  non-input subnet = version 1 then subnet. Hence a file is: all container
  versions from the output down to the input, then the input layer, then every
  layer's details (+ bookkeeping) from the input up to the output. The tag/skip
  *wiring* (which tag a skip or add_prev refers to) is a template parameter and is
  not stored.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Sequence

import numpy as np

__all__ = [
    "DlibFormatError",
    "DlibReader",
    "LayerRecord",
    "read_layer_details",
    "parse_dnn",
]

_INF_EXP, _NINF_EXP, _NAN_EXP = 32000, 32001, 32002


class DlibFormatError(ValueError):
  """Raised when bytes do not match dlib's serialisation format."""


class DlibReader:
  """Sequential reader over a dlib serialised byte stream.

  Every read method takes ``what`` (a human readable description) that is put
  in the error message together with the file name and the byte offset.
  """

  def __init__(self, data: bytes, name: str = "<bytes>") -> None:
    self.data = memoryview(bytes(data))
    self.name = name
    self.pos = 0

  @classmethod
  def from_file(cls, path: str | os.PathLike[str]) -> "DlibReader":
    """Reads a whole file into memory."""
    with open(path, "rb") as f:
      return cls(f.read(), name=os.fspath(path))

  # ----------------------------------------------------------------- errors
  def error(self, what: str, problem: str, offset: int | None = None) -> DlibFormatError:
    off = self.pos if offset is None else offset
    return DlibFormatError(
        f"{self.name}: at byte offset {off} (file size {len(self.data)}): "
        f"expected {what}: {problem}"
    )

  def _take(self, n: int, what: str) -> memoryview:
    if n < 0:
      raise self.error(what, f"negative length {n}")
    if self.pos + n > len(self.data):
      raise self.error(
          what,
          f"truncated stream, needed {n} byte(s) but only " f"{len(self.data) - self.pos} remain",
      )
    out = self.data[self.pos : self.pos + n]
    self.pos += n
    return out

  @property
  def remaining(self) -> int:
    return len(self.data) - self.pos

  # -------------------------------------------------------------- scalars
  def read_int(self, what: str = "an integer", max_bytes: int = 8) -> int:
    """Packed signed/unsigned integer (control byte + little-endian magnitude)."""
    start = self.pos
    ctrl = self._take(1, what)[0]
    if ctrl & 0x70:
      raise self.error(
          what, f"invalid integer control byte 0x{ctrl:02x} " "(reserved bits 0x70 set)", start
      )
    size = ctrl & 0x0F
    if size > max_bytes:
      raise self.error(
          what, f"integer of {size} bytes does not fit in " f"{max_bytes} bytes", start
      )
    mag = int.from_bytes(self._take(size, what), "little") if size else 0
    return -mag if ctrl & 0x80 else mag

  def read_float(self, what: str = "a floating point number") -> float:
    """dlib ``float_details``: packed int64 mantissa then packed int16 exponent."""
    start = self.pos
    if self.pos < len(self.data) and (self.data[self.pos] & 0x70):
      raise self.error(
          what,
          "old ASCII float encoding or corrupt data " f"(byte 0x{self.data[self.pos]:02x})",
          start,
      )
    mantissa = self.read_int(what + " (mantissa)", 8)
    exponent = self.read_int(what + " (exponent)", 2)
    if exponent == _INF_EXP:
      return math.inf
    if exponent == _NINF_EXP:
      return -math.inf
    if exponent == _NAN_EXP:
      return math.nan
    if not -32768 <= exponent <= 32767:
      raise self.error(what, f"exponent {exponent} out of int16 range", start)
    return math.ldexp(float(mantissa), exponent)

  def read_float32(self, what: str = "a float") -> np.float32:
    """A serialised float read the way dlib deserialises into ``float``."""
    return np.float32(self.read_float(what))

  def read_bool(self, what: str = "a bool") -> bool:
    start = self.pos
    ch = bytes(self._take(1, what))
    if ch == b"1":
      return True
    if ch == b"0":
      return False
    raise self.error(what, f"bool must be ASCII '0' or '1', got {ch!r}", start)

  def read_string(self, what: str = "a string", max_len: int = 1 << 20) -> str:
    n = self.read_int(what + " (length)")
    if n < 0 or n > max_len:
      raise self.error(what, f"implausible string length {n}")
    raw = bytes(self._take(n, what))
    try:
      return raw.decode("utf-8")
    except UnicodeDecodeError:
      return raw.decode("latin-1")

  def expect_string(self, expected: str | Sequence[str], what: str) -> str:
    """Reads a string and checks it is one of ``expected``."""
    options = (expected,) if isinstance(expected, str) else tuple(expected)
    start = self.pos
    try:
      s = self.read_string(what)
    except DlibFormatError as e:
      raise self.error(f"{what} (one of {options})", str(e), start) from None
    if s not in options:
      raise self.error(what, f"got {s!r}, wanted one of {options}", start)
    return s

  def expect_int(self, allowed: Sequence[int], what: str) -> int:
    start = self.pos
    v = self.read_int(what)
    if v not in allowed:
      raise self.error(what, f"got {v}, wanted one of {tuple(allowed)}", start)
    return v

  # -------------------------------------------------------------- tensors
  def _dims(self, what: str) -> tuple[int, int, int, int]:
    dims = tuple(self.read_int(f"{what} dim {d}") for d in ("n", "k", "nr", "nc"))
    if any(d < 0 for d in dims):
      raise self.error(what, f"negative tensor dimension {dims}")
    return dims  # type: ignore[return-value]

  def read_tensor(self, what: str = "a tensor") -> np.ndarray:
    """``resizable_tensor`` -> float32 array of shape (n, k, nr, nc)."""
    version = self.expect_int((1, 2), what + " version")
    dims = self._dims(what)
    count = int(np.prod(dims, dtype=np.int64))
    if version == 2:
      raw = self._take(4 * count, f"{what} data ({count} float32)")
      arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    else:
      arr = np.array(
          [self.read_float(f"{what} element {i}") for i in range(count)], dtype=np.float32
      )
    return arr.reshape(dims)

  def read_alias_tensor(self, what: str = "an alias_tensor") -> tuple[int, int, int, int]:
    self.expect_int((1,), what + " version")
    return self._dims(what)


# ---------------------------------------------------------------------------
# Layer details
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class LayerRecord:
  """One parsed layer: its dlib type string, parameters and attributes."""

  kind: str
  params: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
  offset: int = 0


def _read_con(r: DlibReader, rec: LayerRecord) -> None:
  params = r.read_tensor("con_ params").reshape(-1)
  num_filters = r.read_int("con_ num_filters")
  nr = r.read_int("con_ nr")
  nc = r.read_int("con_ nc")
  stride_y = r.read_int("con_ stride_y")
  stride_x = r.read_int("con_ stride_x")
  pad_y = r.read_int("con_ padding_y")
  pad_x = r.read_int("con_ padding_x")
  fshape = r.read_alias_tensor("con_ filters alias")
  bshape = r.read_alias_tensor("con_ biases alias")
  for name in (
      "learning_rate_multiplier",
      "weight_decay_multiplier",
      "bias_learning_rate_multiplier",
      "bias_weight_decay_multiplier",
  ):
    rec.attrs[name] = r.read_float(f"con_ {name}")
  if rec.kind == "con_5":
    rec.attrs["use_bias"] = r.read_bool("con_ use_bias")
  nf = int(np.prod(fshape))
  nb = int(np.prod(bshape))
  if fshape[0] != num_filters or nf + nb != params.size:
    raise r.error(
        "consistent con_ shapes",
        f"filters {fshape}, biases {bshape}, num_filters {num_filters}, "
        f"params size {params.size}",
    )
  rec.params["filters"] = params[:nf].reshape(fshape)  # (O, I, kh, kw)
  rec.params["biases"] = params[nf : nf + nb].reshape(-1)
  rec.attrs.update(
      num_filters=num_filters, nr=nr, nc=nc, stride=(stride_y, stride_x), padding=(pad_y, pad_x)
  )


def _read_affine(r: DlibReader, rec: LayerRecord) -> None:
  params = r.read_tensor("affine_ params").reshape(-1)
  gshape = r.read_alias_tensor("affine_ gamma alias")
  bshape = r.read_alias_tensor("affine_ beta alias")
  mode = r.read_int("affine_ mode")
  ng, nb = int(np.prod(gshape)), int(np.prod(bshape))
  if ng + nb != params.size:
    raise r.error(
        "consistent affine_ shapes", f"gamma {gshape} + beta {bshape} != params size {params.size}"
    )
  rec.params["gamma"] = params[:ng].reshape(gshape)
  rec.params["beta"] = params[ng : ng + nb].reshape(bshape)
  rec.attrs["mode"] = {0: "conv", 1: "fc"}.get(mode, mode)


def _read_pool(r: DlibReader, rec: LayerRecord) -> None:
  p = rec.kind.split("_pool")[0]
  nr = r.read_int(f"{p}_pool nr")
  nc = r.read_int(f"{p}_pool nc")
  sy = r.read_int(f"{p}_pool stride_y")
  sx = r.read_int(f"{p}_pool stride_x")
  py = r.read_int(f"{p}_pool padding_y")
  px = r.read_int(f"{p}_pool padding_x")
  rec.attrs.update(nr=nr, nc=nc, stride=(sy, sx), padding=(py, px))


def _read_fc(r: DlibReader, rec: LayerRecord) -> None:
  num_outputs = r.read_int("fc_ num_outputs")
  num_inputs = r.read_int("fc_ num_inputs")
  params = r.read_tensor("fc_ params")
  wshape = r.read_alias_tensor("fc_ weights alias")
  bshape = r.read_alias_tensor("fc_ biases alias")
  bias_mode = r.read_int("fc_ bias_mode")
  for name in (
      "learning_rate_multiplier",
      "weight_decay_multiplier",
      "bias_learning_rate_multiplier",
      "bias_weight_decay_multiplier",
  ):
    rec.attrs[name] = r.read_float(f"fc_ {name}")
  flat = params.reshape(-1)
  nw = num_inputs * num_outputs
  if wshape[:2] != (num_inputs, num_outputs) or flat.size < nw:
    raise r.error(
        "consistent fc_ shapes",
        f"weights alias {wshape}, inputs {num_inputs}, outputs {num_outputs}, "
        f"params {params.shape}",
    )
  rec.params["weights"] = flat[:nw].reshape(num_inputs, num_outputs)  # (in, out)
  if bias_mode == 0:  # FC_HAS_BIAS
    rec.params["biases"] = flat[nw : nw + num_outputs]
  rec.attrs.update(num_outputs=num_outputs, num_inputs=num_inputs, has_bias=bias_mode == 0)


def _read_input_rgb_sized(r: DlibReader, rec: LayerRecord) -> None:
  rec.attrs["avg_rgb"] = np.array(
      [r.read_float32(f"input avg_{c}") for c in ("red", "green", "blue")], np.float32
  )
  rec.attrs["nr"] = r.read_int("input NR")
  rec.attrs["nc"] = r.read_int("input NC")


def _read_input_rgb(r: DlibReader, rec: LayerRecord) -> None:
  rec.attrs["avg_rgb"] = np.array(
      [r.read_float32(f"input avg_{c}") for c in ("red", "green", "blue")], np.float32
  )


def _read_loss_metric(r: DlibReader, rec: LayerRecord) -> None:
  if rec.kind == "loss_metric_2":
    rec.attrs["margin"] = r.read_float("loss_metric_ margin")
    rec.attrs["dist_thresh"] = r.read_float("loss_metric_ dist_thresh")
  else:  # "loss_metric_": values were hard coded in dlib
    rec.attrs.update(margin=0.1, dist_thresh=0.75)


_DETAIL_READERS = {
    "con_4": _read_con,
    "con_5": _read_con,
    "affine_": _read_affine,
    "relu_": lambda r, rec: None,
    "add_prev_": lambda r, rec: None,
    "max_pool_2": _read_pool,
    "avg_pool_2": _read_pool,
    "fc_2": _read_fc,
    "input_rgb_image_sized": _read_input_rgb_sized,
    "input_rgb_image": _read_input_rgb,
    "loss_metric_": _read_loss_metric,
    "loss_metric_2": _read_loss_metric,
}


def read_layer_details(r: DlibReader, allowed: Sequence[str], what: str) -> LayerRecord:
  """Reads one layer-details object whose type string is in ``allowed``."""
  offset = r.pos
  kind = r.expect_string([a for a in allowed if a in _DETAIL_READERS], what + " type")
  rec = LayerRecord(kind=kind, offset=offset)
  _DETAIL_READERS[kind](r, rec)
  return rec


# ---------------------------------------------------------------------------
# Network container
# ---------------------------------------------------------------------------
#: Allowed type strings per abstract layer kind used in a network spec.
DETAIL_KINDS: dict[str, tuple[str, ...]] = {
    "con": ("con_4", "con_5"),
    "affine": ("affine_",),
    "relu": ("relu_",),
    "add_prev": ("add_prev_",),
    "max_pool": ("max_pool_2",),
    "avg_pool": ("avg_pool_2",),
    "fc": ("fc_2",),
    "input_rgb_image_sized": ("input_rgb_image_sized",),
    "input_rgb_image": ("input_rgb_image",),
    "loss_metric": ("loss_metric_", "loss_metric_2"),
}


def parse_dnn(
    r: DlibReader, spec: Sequence[str], loss: str, input_kind: str
) -> tuple[LayerRecord, LayerRecord, list[LayerRecord]]:
  """Parses ``add_loss_layer<loss, spec...<input>>``.

  Args:
    r: reader positioned at the start of the network.
    spec: layer kinds from the output down to (not including) the input layer.
      Entries are keys of ``DETAIL_KINDS`` for computational layers or
      ``'tag'`` / ``'skip'`` for dlib's tag and skip layers.
    loss: key of ``DETAIL_KINDS`` for the loss.
    input_kind: key of ``DETAIL_KINDS`` for the input layer.

  Returns:
    (loss record, input record, computational-layer records ordered from the
    input up to the output; tags and skips are omitted).
  """
  r.expect_int((1,), "add_loss_layer version")
  loss_rec = read_layer_details(r, DETAIL_KINDS[loss], "loss layer")
  if not spec or spec[-1] in ("tag", "skip"):
    raise ValueError("spec must end with a computational layer sitting on the input")
  # 1. container versions, outermost first.
  versions: list[int] = []  # of computational layers, output -> input order
  for i, kind in enumerate(spec):
    if kind in ("tag", "skip"):
      r.expect_int((1,), f"add_{kind}_layer version (spec entry {i})")
    elif kind not in DETAIL_KINDS:
      raise ValueError(f"unknown layer kind {kind!r} in spec")
    elif i == len(spec) - 1:
      versions.append(
          r.expect_int((2, 3), f"add_layer-on-input version " f"(spec entry {i}: {kind})")
      )
    else:
      versions.append(r.expect_int((1, 2), f"add_layer version " f"(spec entry {i}: {kind})"))
  layers = [s for s in spec if s not in ("tag", "skip")]
  # 2. the input layer.
  input_rec = read_layer_details(r, DETAIL_KINDS[input_kind], "input layer")
  # 3. details + bookkeeping from the input up to the output.
  out: list[LayerRecord] = []
  n = len(layers)
  for j, kind in enumerate(reversed(layers)):
    version = versions[n - 1 - j]
    name = f"layer {j} ({kind})"
    rec = read_layer_details(r, DETAIL_KINDS[kind], f"{name} details")
    for b in (
        "this_layer_setup_called",
        "gradient_input_is_stale",
        "get_output_and_gradient_input_disabled",
    ):
      r.read_bool(f"{name} {b}")
    for t in ("x_grad", "cached_output"):
      r.read_tensor(f"{name} {t}")
    if j == 0:  # the add_layer sitting directly on the input layer
      r.read_tensor(f"{name} grad_final")
      if version >= 3:
        r.read_int(f"{name} sample_expansion_factor")
    elif version >= 2:
      r.read_tensor(f"{name} params_grad")
    out.append(rec)
  if r.remaining:
    raise r.error("end of file", f"{r.remaining} unexpected trailing byte(s)")
  return loss_rec, input_rec, out
