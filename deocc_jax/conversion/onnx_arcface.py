"""insightface ArcFace ONNX models (IResNet backbones) -> PyTorch-named tensors.

insightface distributes its recognisers as ONNX graphs (``w600k_r50.onnx`` of
buffalo_l, ``glintr100.onnx``, the arcface_torch exports ...) whose initializer
names carry no layer names (``onnx::Conv_123``) and whose BatchNorms that follow
a convolution are usually folded into it. This module reads such a graph with
the ``onnx`` package (``pip install -e '.[convert]'``) and recovers the
:mod:`deocc_jax.models.iresnet` layout from the graph's *structure*:

* an optional input normalisation before the first Conv (``Sub`` / ``Add`` /
  ``Mul`` / ``Div`` by constants, as in the MXNet-converted models) becomes the
  converted teacher's ``mean`` / ``std``;
* the stem: first Conv (3x3) -> [BatchNormalization] -> PRelu;
* the residual ``Add`` nodes (two computed inputs) delimit the blocks; in a
  block, the 3x3 Convs in graph order are ``conv1``, ``conv2``, a 1x1 Conv is
  ``downsample.0``; a BatchNormalization belongs to the Conv that produces its
  input (``bn2``, ``bn3``, ``downsample.1``), else it is the block's ``bn1``; a
  block whose ``conv2`` has stride 2 starts the next layer;
* after the last block: BatchNormalization (``bn2``), ``Gemm`` (or ``MatMul`` +
  ``Add``) = ``fc``, BatchNormalization = ``features``.

A BN folded into its Conv (the Conv has a bias, no BN reads its output) comes
back as an identity BN carrying the bias (``weight`` 1, ``bias`` = conv bias,
``running_mean`` 0, ``running_var`` 1 - eps), exactly equivalent at inference.
A BN with another epsilon (MXNet's 2e-5) gets ``running_var + eps_file - 1e-5``.
The result is a ``{torch key: array}`` dict for
:func:`deocc_jax.conversion.torch_weights.torch_to_flax`, which then checks
every key and shape strictly. Nodes that fit no slot raise :class:`OnnxLayoutError`
naming the node and its initializers.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from deocc_jax.conversion.torch_weights import WeightsFileError

__all__ = ["OnnxLayoutError", "ArcFaceOnnx", "read_arcface_onnx"]

_FLAX_BN_EPS = 1e-5
# Shape bookkeeping ops torch / MXNet exports put around Flatten / Reshape.
_STRUCTURAL = frozenset(
    {
        "Flatten",
        "Reshape",
        "Dropout",
        "Identity",
        "Shape",
        "Gather",
        "Unsqueeze",
        "Squeeze",
        "Concat",
        "Constant",
        "Cast",
        "Slice",
    }
)
_NORMALISE = frozenset({"Sub", "Add", "Mul", "Div"})


class OnnxLayoutError(ValueError):
  """The ONNX graph is not an insightface IResNet; names the node at fault."""


@dataclasses.dataclass(frozen=True)
class ArcFaceOnnx:
  """What :func:`read_arcface_onnx` recovered.

  Attributes:
    tensors: ``{PyTorch key of the iresnet layout: float32 array}``.
    arch_config: ``{'layers', 'widths', 'num_features', 'map_size'}``.
    mean: per-channel mean of the graph's own input normalisation, or None.
    std: per-channel std of it, or None (then insightface's 127.5 / 127.5 apply).
    folded_bn: how many BatchNorms were folded into a Conv / Gemm.
    input_name: the graph input.
  """

  tensors: dict[str, np.ndarray]
  arch_config: dict[str, Any]
  mean: tuple[float, float, float] | None
  std: tuple[float, float, float] | None
  folded_bn: int
  input_name: str


@dataclasses.dataclass
class _Node:
  op: str
  name: str
  inputs: list[str]
  outputs: list[str]
  attrs: dict[str, Any]
  index: int


def _describe(node: _Node, consts: dict[str, np.ndarray]) -> str:
  inits = [f"{i} {tuple(consts[i].shape)}" for i in node.inputs if i in consts]
  what = f"initializers {', '.join(inits)}" if inits else "no initializers"
  return f"node #{node.index} {node.op} {node.name!r} ({what})"


def _load(path: str) -> tuple[list[_Node], dict[str, np.ndarray], str]:
  try:
    import onnx
    from onnx import numpy_helper
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise WeightsFileError(
        f"{path}: reading ONNX models needs the onnx package (pip install onnx, "
        "or pip install -e '.[convert]' in the repository)"
    ) from e
  if not os.path.isfile(path):
    raise WeightsFileError(f"{path}: no such ONNX file")
  try:
    model = onnx.load(path)
  except Exception as e:  # protobuf DecodeError and friends
    raise WeightsFileError(f"{path}: not a readable ONNX model ({type(e).__name__})") from e
  g = model.graph
  consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
  nodes = []
  for k, n in enumerate(g.node):
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
    if n.op_type == "Constant" and "value" in attrs:
      consts[n.output[0]] = numpy_helper.to_array(attrs["value"])
    nodes.append(_Node(n.op_type, n.name, list(n.input), list(n.output), attrs, k))
  inputs = [i.name for i in g.input if i.name not in consts]
  if len(inputs) != 1:
    raise OnnxLayoutError(f"{path}: expected one image input, the graph has {inputs}")
  if not nodes:
    raise OnnxLayoutError(f"{path}: the graph has no nodes")
  return nodes, consts, inputs[0]


def _f32(a: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(a, np.float32))


def _per_channel(c: np.ndarray, node: _Node, consts: dict[str, np.ndarray]) -> np.ndarray:
  v = np.asarray(c, np.float64).reshape(-1)
  if v.size == 1:
    v = np.repeat(v, 3)
  if v.size != 3:
    raise OnnxLayoutError(
        f"input normalisation {_describe(node, consts)}: expected a scalar or "
        f"3 per-channel constants, got shape {np.shape(c)}"
    )
  return v


def read_arcface_onnx(path: str | os.PathLike[str]) -> ArcFaceOnnx:
  """Reads an insightface IResNet ONNX model (see the module docstring).

  Raises:
    WeightsFileError: missing / unreadable file (or no onnx package).
    OnnxLayoutError: the graph does not have the IResNet structure; the message
      names the node and initializer at fault.
  """
  p = os.fspath(path)
  nodes, consts, x_name = _load(p)
  producer = {o: n for n in nodes for o in n.outputs}

  def computed(name: str) -> bool:
    return name not in consts and name != ""

  def bad(node: _Node, why: str) -> OnnxLayoutError:
    return OnnxLayoutError(
        f"{p}: {_describe(node, consts)} does not fit the insightface " f"IResNet layout: {why}"
    )

  # --- input normalisation before the first Conv
  mean, scale = np.zeros(3), np.ones(3)
  normalised = False
  first_conv = next((n for n in nodes if n.op == "Conv"), None)
  if first_conv is None:
    raise OnnxLayoutError(f"{p}: the graph has no Conv node (not an IResNet)")
  body: list[_Node] = []
  for n in nodes:
    if n.index < first_conv.index and n.op in _NORMALISE:
      c = [consts[i] for i in n.inputs if i in consts]
      if len(c) != 1:
        raise bad(n, "an input normalisation needs exactly one constant operand")
      v = _per_channel(c[0], n, consts)
      if n.op == "Sub" and n.inputs[1] in consts:
        mean = mean + v / scale
      elif n.op == "Add":
        mean = mean - v / scale
      elif n.op == "Mul":
        scale = scale * v
      elif n.op == "Div" and n.inputs[1] in consts:
        scale = scale / v
      else:
        raise bad(n, "unsupported input normalisation (constant on the left)")
      normalised = True
    elif n.op in _STRUCTURAL:
      continue
    elif n.index < first_conv.index:
      raise bad(n, "unexpected op before the first convolution")
    else:
      body.append(n)

  def param(node: _Node, pos: int) -> np.ndarray:
    if pos >= len(node.inputs) or node.inputs[pos] not in consts:
      raise bad(node, f"input {pos} is not a constant initializer")
    return consts[node.inputs[pos]]

  out: dict[str, np.ndarray] = {}
  folded = 0

  def put_conv(node: _Node, key: str, ksize: int) -> np.ndarray | None:
    w = param(node, 1)
    if w.ndim != 4 or w.shape[2:] != (ksize, ksize):
      raise bad(node, f"expected a {ksize}x{ksize} kernel as {key}, got weight shape {w.shape}")
    if int(node.attrs.get("group", 1)) != 1 or any(
        int(d) != 1 for d in node.attrs.get("dilations", [1, 1])
    ):
      raise bad(node, f"{key}: grouped / dilated convolutions are not in the layout")
    pads = [int(v) for v in node.attrs.get("pads", [0, 0, 0, 0])]
    if pads != [ksize // 2] * 4:
      raise bad(node, f"{key}: pads {pads}, the layout has {[ksize // 2] * 4}")
    out[f"{key}.weight"] = _f32(w)
    return _f32(param(node, 2)) if len(node.inputs) > 2 and node.inputs[2] else None

  def put_bn(
      node: _Node | None, key: str, channels: int, prior_bias: np.ndarray | None, owner: _Node
  ) -> None:
    nonlocal folded
    if node is None:
      if prior_bias is None:
        raise bad(
            owner,
            f"no BatchNormalization reads its output and it has no bias "
            f"(expected {key} or a BN folded into it)",
        )
      folded += 1
      out[f"{key}.weight"] = np.ones(channels, np.float32)
      out[f"{key}.bias"] = _f32(prior_bias)
      out[f"{key}.running_mean"] = np.zeros(channels, np.float32)
      out[f"{key}.running_var"] = np.full(channels, 1.0 - _FLAX_BN_EPS, np.float32)
      return
    gamma, beta, mu, var = (param(node, i).astype(np.float64) for i in range(1, 5))
    if gamma.shape != (channels,):
      raise bad(node, f"{key}: {gamma.shape[0] if gamma.ndim else 0} channels, expected {channels}")
    eps = float(node.attrs.get("epsilon", 1e-5))
    if prior_bias is not None:  # conv bias followed by a BN: BN(x + b) = BN'(x)
      mu = mu - prior_bias
    out[f"{key}.weight"] = _f32(gamma)
    out[f"{key}.bias"] = _f32(beta)
    out[f"{key}.running_mean"] = _f32(mu)
    out[f"{key}.running_var"] = _f32(var + eps - _FLAX_BN_EPS)

  def put_prelu(node: _Node, key: str, channels: int) -> None:
    a = np.asarray(param(node, 1), np.float32).reshape(-1)
    if a.size == 1:
      a = np.repeat(a, channels)
    if a.size != channels:
      raise bad(node, f"{key}: {a.size} slopes for {channels} channels")
    out[f"{key}.weight"] = a

  consumers: dict[str, list[_Node]] = {}
  for n in body:
    for i in n.inputs:
      consumers.setdefault(i, []).append(n)

  def bn_after(node: _Node) -> _Node | None:
    for c in consumers.get(node.outputs[0], []):
      if c.op == "BatchNormalization":
        return c
    return None

  used: set[int] = set()

  # --- stem
  stem = body[0]
  if stem.op != "Conv":
    raise bad(stem, "the network must start with a convolution")
  w0 = param(stem, 1)
  width0 = int(w0.shape[0])
  if [int(s) for s in stem.attrs.get("strides", [1, 1])] != [1, 1]:
    raise bad(stem, "the stem convolution has stride 1 in the layout")
  b = put_conv(stem, "conv1", 3)
  bn = bn_after(stem)
  put_bn(bn, "bn1", width0, b, stem)
  used.update({stem.index} | ({bn.index} if bn else set()))
  adds = [
      n
      for n in body
      if n.op == "Add"
      and sum(computed(i) for i in n.inputs) == 2
      and n.inputs[0] not in consts
      and n.inputs[1] not in consts
  ]
  if not adds:
    raise OnnxLayoutError(f"{p}: no residual Add node: not an IResNet")
  stem_prelu = [n for n in body if n.index < adds[0].index and n.op == "PRelu"]
  if not stem_prelu:
    raise OnnxLayoutError(f"{p}: no PRelu after the stem convolution")
  put_prelu(stem_prelu[0], "prelu", width0)
  used.add(stem_prelu[0].index)
  start = stem_prelu[0].index

  # --- blocks
  layers: list[int] = []
  widths: list[int] = []
  for add in adds:
    seg = [n for n in body if start < n.index < add.index and n.index not in used]
    convs3 = [n for n in seg if n.op == "Conv" and param(n, 1).shape[2:] == (3, 3)]
    convs1 = [n for n in seg if n.op == "Conv" and param(n, 1).shape[2:] == (1, 1)]
    others = [n for n in seg if n.op not in ("Conv", "BatchNormalization", "PRelu")]
    odd = [n for n in seg if n.op == "Conv" and n not in convs3 and n not in convs1]
    if len(convs3) != 2 or len(convs1) > 1 or others or odd:
      culprit = (odd or others or [n for n in seg if n.op == "Conv"] or [add])[0]
      raise bad(
          culprit,
          f"a block (ending at Add {add.name!r}) needs two 3x3 convolutions and "
          f"at most one 1x1 shortcut; found {len(convs3)} 3x3, {len(convs1)} 1x1, "
          f"{len(odd)} other kernels, other ops {[n.op for n in others]}",
      )
    c1, c2 = convs3
    stride = [int(s) for s in c2.attrs.get("strides", [1, 1])]
    if stride == [2, 2]:
      if not convs1:
        raise bad(c2, "a stride-2 block needs the 1x1 downsample shortcut")
      layers.append(0)
      widths.append(int(param(c2, 1).shape[0]))
    elif stride != [1, 1] or not layers or convs1:
      raise bad(
          c2 if not convs1 else convs1[0],
          "only the first block of a layer has stride 2 and a downsample shortcut",
      )
    key = f"layer{len(layers)}.{layers[-1]}"
    layers[-1] += 1
    planes = widths[-1]
    bns = {id(bn_after(c)): c for c in (c1, c2, *convs1) if bn_after(c) is not None}
    block_bn1 = [n for n in seg if n.op == "BatchNormalization" and id(n) not in bns]
    if len(block_bn1) != 1:
      culprit = block_bn1[1] if len(block_bn1) > 1 else c1
      raise bad(
          culprit,
          f"{key}: expected one BatchNormalization on the block input (bn1), "
          f"found {len(block_bn1)}",
      )
    inplanes = int(param(c1, 1).shape[1])
    put_bn(block_bn1[0], f"{key}.bn1", inplanes, None, block_bn1[0])
    put_bn(bn_after(c1), f"{key}.bn2", planes, put_conv(c1, f"{key}.conv1", 3), c1)
    put_bn(bn_after(c2), f"{key}.bn3", planes, put_conv(c2, f"{key}.conv2", 3), c2)
    if convs1:
      ds = convs1[0]
      put_bn(
          bn_after(ds), f"{key}.downsample.1", planes, put_conv(ds, f"{key}.downsample.0", 1), ds
      )
    prelus = [n for n in seg if n.op == "PRelu"]
    if len(prelus) != 1:
      raise bad(prelus[1] if prelus else c1, f"{key}: expected one PRelu, found {len(prelus)}")
    put_prelu(prelus[0], f"{key}.prelu", planes)
    start = add.index
  if len(layers) != 4:
    raise OnnxLayoutError(
        f"{p}: found {len(layers)} stride-2 layers, the IResNet has 4 "
        f"(blocks per layer found: {layers})"
    )

  # --- head: bn2 -> (flatten) -> fc -> features
  tail = [n for n in body if n.index > start]
  ops = [n for n in tail if n.op not in _STRUCTURAL]
  if not ops or ops[0].op != "BatchNormalization":
    raise bad(
        ops[0] if ops else adds[-1],
        "expected the final BatchNormalization (bn2) " "after the last block",
    )
  put_bn(ops[0], "bn2", widths[-1], None, ops[0])
  rest = ops[1:]
  if not rest:
    raise bad(ops[0], "no fully connected layer (fc) after bn2")
  fc = rest[0]
  if fc.op == "Gemm":
    w = param(fc, 1).astype(np.float32)
    if int(fc.attrs.get("transA", 0)):
      raise bad(fc, "fc: transA is not supported")
    if not int(fc.attrs.get("transB", 0)):
      w = w.T
    alpha, beta = float(fc.attrs.get("alpha", 1.0)), float(fc.attrs.get("beta", 1.0))
    w = w * alpha
    bias = (
        param(fc, 2).astype(np.float32) * beta
        if len(fc.inputs) > 2 and fc.inputs[2]
        else np.zeros(w.shape[0], np.float32)
    )
    after = rest[1:]
  elif fc.op == "MatMul":
    w = param(fc, 1).astype(np.float32).T
    after = rest[1:]
    if after and after[0].op == "Add" and any(i in consts for i in after[0].inputs):
      bias = [consts[i] for i in after[0].inputs if i in consts][0].astype(np.float32).reshape(-1)
      after = after[1:]
    else:
      bias = np.zeros(w.shape[0], np.float32)
  else:
    raise bad(fc, "expected the fc layer (Gemm or MatMul) after bn2")
  num_features = int(w.shape[0])
  map_area = w.shape[1] / widths[-1]
  map_size = int(round(map_area**0.5))
  if map_size * map_size * widths[-1] != w.shape[1]:
    raise bad(fc, f"fc: {w.shape[1]} inputs is not {widths[-1]} channels x a square map")
  if bias.shape != (num_features,):
    raise bad(fc, f"fc: bias shape {bias.shape}, expected ({num_features},)")
  out["fc.weight"] = _f32(w)
  feats = after[0] if after and after[0].op == "BatchNormalization" else None
  put_bn(feats, "features", num_features, bias if feats is None else None, fc)
  if feats is not None:
    out["fc.bias"] = _f32(bias)
  else:
    out["fc.bias"] = np.zeros(num_features, np.float32)
  leftover = after[1:] if feats is not None else after
  if leftover:
    raise bad(
        leftover[0],
        "unexpected op after the features BatchNormalization "
        "(the embedding is the features output)",
    )
  arch = {
      "layers": layers,
      "widths": [width0 if i == 0 else widths[i] for i in range(4)],
      "num_features": num_features,
      "map_size": map_size,
  }
  if widths[0] != width0:
    raise OnnxLayoutError(
        f"{p}: stem width {width0} differs from layer1's {widths[0]} "
        "(the layout has the same width)"
    )
  return ArcFaceOnnx(
      tensors=out,
      arch_config=arch,
      mean=tuple(float(v) for v in mean) if normalised else None,
      std=tuple(float(1.0 / v) for v in scale) if normalised else None,
      folded_bn=folded,
      input_name=x_name,
  )
