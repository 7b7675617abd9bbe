"""Converted-teacher checkpoints: Orbax variables + a metadata JSON.

Layout of a converted teacher directory::

    DIR/
      metadata.json   architecture, input size, colour order, normalisation, embedding
                      size, num classes, source file + sha256, format version, ...
      variables/      Orbax (StandardCheckpointer) tree {'params', 'batch_stats'}

:func:`save_converted_teacher` writes the whole directory under a temporary
sibling name and renames it into place, so a reader never sees a half-written
teacher. :func:`load_converted_teacher` rebuilds the Flax module from the metadata
and restores the variables against the module's own abstract tree (a checkpoint
that does not fit the architecture is refused).

Supported architectures (:func:`teacher_spec`): ``inception_resnet_v1``
(facenet-pytorch, VGGFace2), ``vggface2_resnet50`` and ``vggface2_senet50``
(cydonia999/VGGFace2-pytorch), ``iresnet18`` .. ``iresnet200`` and ``iresnet``
(insightface's ArcFace backbones; ``iresnet`` = depth / widths read from the
ONNX graph, recorded in the metadata's ``arch_config``), ``vggface_vgg16`` (VGGFace,
Samuel Albanie's ``vgg_face_dag.py`` port) and ``sphereface20`` (clcarwin/
sphereface_pytorch ``sphere20a``), whose widths are an ``arch_config`` too (the
published ones by default).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from deocc_jax.models import inception_resnet_v1 as _irv1
from deocc_jax.models import iresnet as _ir
from deocc_jax.models import sphereface as _sphere
from deocc_jax.models import vgg_face as _vggface
from deocc_jax.models import vggface2_resnet as _vgg

__all__ = [
    "ARCHITECTURES",
    "METADATA_FILENAME",
    "VARIABLES_DIRNAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "TeacherSpec",
    "teacher_spec",
    "abstract_variables",
    "build_metadata",
    "save_converted_teacher",
    "load_metadata",
    "load_converted_teacher",
    "preprocess_from_metadata",
]

#: Architecture names accepted by :func:`teacher_spec` and the converter CLI.
ARCHITECTURES: tuple[str, ...] = (
    "inception_resnet_v1",
    "vggface2_resnet50",
    "vggface2_senet50",
    *_ir.IRESNET_LAYERS,
    "iresnet",
    "vggface_vgg16",
    "sphereface20",
)
METADATA_FILENAME = "metadata.json"
VARIABLES_DIRNAME = "variables"
FORMAT_VERSION = 1

_REQUIRED_METADATA = (
    "format_version",
    "architecture",
    "input_size",
    "colour_order",
    "mean",
    "std",
    "embedding_size",
    "num_classes",
)


class CheckpointError(ValueError):
  """A converted-teacher directory is missing, incomplete or inconsistent."""


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
  """Static description of a convertible teacher architecture.

  Attributes:
    name: architecture name (one of :data:`ARCHITECTURES`).
    input_size: ``(height, width)`` the published weights expect.
    colour_order: ``'RGB'`` or ``'BGR'`` channel order of the network input.
    mean: per-channel mean subtracted, in ``colour_order``.
    std: per-channel divisor, in ``colour_order``.
    embedding_size: size of the ``'embedding'`` output.
    embedding_l2_normalised: whether the model already L2-normalises it.
    default_num_classes: classes of the published classifier head (None: the
      published model has none).
    reference: where the PyTorch layout comes from.
    build: ``(num_classes, dtype) -> flax module`` (``num_classes`` None: no head).
    preprocess: ``rgb_uint8 -> network input``.
    classifier: PyTorch module name of the classifier head (its ``.weight`` is
      ``(num_classes, D)``), None if the architecture has none.
    classifier_classes_axis: axis of ``<classifier>.weight`` that counts the
      classes: 0 (``nn.Linear``), 1 (SphereFace's ``AngleLinear``, ``(D, num_classes)``).
    arch_config: architecture hyper-parameters recorded in the metadata
      (IResNet: ``layers``, ``widths``, ``num_features``; VGGFace: ``widths``,
      ``fc_features``; SphereFace: ``widths``, ``num_features``); None otherwise.
  """

  name: str
  input_size: tuple[int, int]
  colour_order: str
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  embedding_size: int
  embedding_l2_normalised: bool
  default_num_classes: int
  reference: str
  build: Callable[[int | None, Any], nn.Module]
  preprocess: Callable[[Any], jnp.ndarray]
  classifier: str | None = None
  classifier_classes_axis: int = 0
  arch_config: dict[str, Any] | None = None


def _iresnet_spec(architecture: str, arch_config: Mapping[str, Any] | None) -> TeacherSpec:
  if arch_config is None:
    if architecture not in _ir.IRESNET_LAYERS:
      raise ValueError(
          "architecture 'iresnet' needs its arch_config (layers, widths, "
          "num_features), read from an ONNX graph"
      )
    arch_config = {
        "layers": list(_ir.IRESNET_LAYERS[architecture]),
        "widths": list(_ir.IRESNET_WIDTHS),
        "num_features": 512,
        "map_size": 7,
    }
  cfg = {
      "layers": [int(v) for v in arch_config["layers"]],
      "widths": [int(v) for v in arch_config["widths"]],
      "num_features": int(arch_config["num_features"]),
      "map_size": int(arch_config.get("map_size", 7)),
  }
  if (
      architecture in _ir.IRESNET_LAYERS
      and tuple(cfg["layers"]) != _ir.IRESNET_LAYERS[architecture]
  ):
    raise ValueError(
        f"{architecture} has blocks per layer {_ir.IRESNET_LAYERS[architecture]}, "
        f"the arch_config says {tuple(cfg['layers'])}"
    )
  size = 16 * cfg["map_size"]
  return TeacherSpec(
      name=architecture,
      input_size=(size, size),
      colour_order="RGB",
      mean=_ir.ARCFACE_MEAN,
      std=_ir.ARCFACE_STD,
      embedding_size=cfg["num_features"],
      embedding_l2_normalised=False,
      default_num_classes=None,
      reference="deepinsight/insightface recognition/arcface_torch/backbones/iresnet.py "
      "(backbone.pth, or the ONNX export of the model zoo)",
      build=lambda num_classes, dtype: _ir.IResNet(
          layers=tuple(cfg["layers"]),
          widths=tuple(cfg["widths"]),
          num_features=cfg["num_features"],
          dtype=dtype,
      ),
      preprocess=_ir.preprocess,
      classifier=None,
      arch_config=cfg,
  )


def _widths_config(
    architecture: str,
    arch_config: Mapping[str, Any] | None,
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
  """``defaults`` (``widths`` list + one int field) overridden by ``arch_config``,
  checked: the same keys, as many widths, positive integers."""
  cfg = dict(defaults)
  if arch_config is not None:
    unknown = sorted(set(arch_config) - set(defaults))
    if unknown:
      raise ValueError(
          f"{architecture}: unknown arch_config keys {unknown} (known: {sorted(defaults)})"
      )
    cfg.update(arch_config)
  out = {k: [int(v) for v in cfg[k]] if k == "widths" else int(cfg[k]) for k in defaults}
  sizes = out["widths"] + [v for k, v in out.items() if k != "widths"]
  if len(out["widths"]) != len(defaults["widths"]) or min(sizes) < 1:
    raise ValueError(
        f"{architecture}: arch_config {out} needs {len(defaults['widths'])} positive widths "
        "and a positive size"
    )
  return out


def _vggface_spec(architecture: str, arch_config: Mapping[str, Any] | None) -> TeacherSpec:
  cfg = _widths_config(
      architecture,
      arch_config,
      {"widths": list(_vggface.VGGFACE_WIDTHS), "fc_features": _vggface.VGGFACE_FC_FEATURES},
  )
  return TeacherSpec(
      name=architecture,
      input_size=(_vggface.VGGFACE_INPUT_SIZE, _vggface.VGGFACE_INPUT_SIZE),
      colour_order="RGB",
      mean=_vggface.VGGFACE_MEAN_RGB,
      std=_vggface.VGGFACE_STD,
      embedding_size=cfg["fc_features"],
      embedding_l2_normalised=False,
      default_num_classes=_vggface.VGGFACE_NUM_CLASSES,
      reference="Samuel Albanie's MatConvNet port of the Oxford VGG Face model, "
      "vgg_face_dag.py (vgg_face_dag.pth)",
      build=lambda num_classes, dtype: _vggface.VGGFace(
          widths=tuple(cfg["widths"]),
          fc_features=cfg["fc_features"],
          num_classes=num_classes,
          dtype=dtype,
      ),
      preprocess=_vggface.preprocess,
      classifier="fc8",
      arch_config=cfg,
  )


def _sphereface_spec(architecture: str, arch_config: Mapping[str, Any] | None) -> TeacherSpec:
  cfg = _widths_config(
      architecture,
      arch_config,
      {
          "widths": list(_sphere.SPHEREFACE_WIDTHS),
          "num_features": _sphere.SPHEREFACE_EMBEDDING_SIZE,
      },
  )
  return TeacherSpec(
      name=architecture,
      input_size=_sphere.SPHEREFACE_INPUT_SIZE,
      colour_order="BGR",
      mean=_sphere.SPHEREFACE_MEAN,
      std=_sphere.SPHEREFACE_STD,
      embedding_size=cfg["num_features"],
      embedding_l2_normalised=False,
      default_num_classes=_sphere.SPHEREFACE_NUM_CLASSES,
      reference="clcarwin/sphereface_pytorch net_sphere.py sphere20a (sphere20a_20171020.pth)",
      build=lambda num_classes, dtype: _sphere.SphereFace20(
          widths=tuple(cfg["widths"]),
          num_features=cfg["num_features"],
          num_classes=num_classes,
          dtype=dtype,
      ),
      preprocess=_sphere.preprocess,
      classifier="fc6",
      classifier_classes_axis=1,
      arch_config=cfg,
  )


def teacher_spec(architecture: str, arch_config: Mapping[str, Any] | None = None) -> TeacherSpec:
  """The :class:`TeacherSpec` of ``architecture``; ``ValueError`` if unknown.

  ``arch_config``: the metadata's ``arch_config`` (IResNet depth / widths,
  VGGFace / SphereFace widths), if any.
  """
  if architecture in _ir.IRESNET_LAYERS or architecture == "iresnet":
    return _iresnet_spec(architecture, arch_config)
  if architecture == "vggface_vgg16":
    return _vggface_spec(architecture, arch_config)
  if architecture == "sphereface20":
    return _sphereface_spec(architecture, arch_config)
  if architecture == "inception_resnet_v1":
    return TeacherSpec(
        name=architecture,
        input_size=(_irv1.FACENET_INPUT_SIZE, _irv1.FACENET_INPUT_SIZE),
        colour_order="RGB",
        mean=_irv1.FACENET_MEAN,
        std=_irv1.FACENET_STD,
        embedding_size=_irv1.FACENET_EMBEDDING_SIZE,
        embedding_l2_normalised=True,
        default_num_classes=_irv1.FACENET_NUM_CLASSES,
        reference="timesler/facenet-pytorch models/inception_resnet_v1.py (20180402-114759-vggface2.pt)",
        build=lambda num_classes, dtype: _irv1.InceptionResnetV1(
            num_classes=num_classes, dtype=dtype
        ),
        preprocess=_irv1.preprocess,
        classifier="logits",
    )
  if architecture in ("vggface2_resnet50", "vggface2_senet50"):
    se = architecture == "vggface2_senet50"
    return TeacherSpec(
        name=architecture,
        input_size=(_vgg.VGGFACE2_INPUT_SIZE, _vgg.VGGFACE2_INPUT_SIZE),
        colour_order="BGR",
        mean=_vgg.VGGFACE2_MEAN_BGR,
        std=_vgg.VGGFACE2_STD,
        embedding_size=_vgg.VGGFACE2_EMBEDDING_SIZE,
        embedding_l2_normalised=False,
        default_num_classes=_vgg.VGGFACE2_NUM_CLASSES,
        reference=f"cydonia999/VGGFace2-pytorch models/{'senet' if se else 'resnet'}.py",
        build=lambda num_classes, dtype: _vgg.VGGFace2ResNet(
            se=se, num_classes=num_classes, dtype=dtype
        ),
        preprocess=_vgg.preprocess,
        classifier="fc",
    )
  raise ValueError(
      f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}"
  )


def abstract_variables(module: nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
  """Shapes/dtypes of ``module``'s variables (no computation, no memory)."""
  h, w = input_size
  x = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  return dict(jax.eval_shape(module.init, jax.random.PRNGKey(0), x))


def build_metadata(
    architecture: str,
    *,
    num_classes: int | None,
    source_file: str | os.PathLike[str],
    source_sha256: str,
    source_format: str,
    arch_config: Mapping[str, Any] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> dict[str, Any]:
  """The metadata dict written next to the converted variables.

  ``num_classes`` None: no classifier head. ``mean`` / ``std`` override the
  architecture's normalisation (an ONNX graph that normalises inside).
  """
  spec = teacher_spec(architecture, arch_config)
  meta = {
      "format_version": FORMAT_VERSION,
      "architecture": spec.name,
      "input_size": list(spec.input_size),
      "colour_order": spec.colour_order,
      "input_range": [0, 255],
      "mean": [float(v) for v in (spec.mean if mean is None else mean)],
      "std": [float(v) for v in (spec.std if std is None else std)],
      "normalisation": "(x[colour_order] - mean) / std, x in [0, 255]",
      "embedding_size": spec.embedding_size,
      "embedding_l2_normalised": spec.embedding_l2_normalised,
      "num_classes": None if not num_classes else int(num_classes),
      "layout": "NHWC",
      "reference": spec.reference,
      "source_file": os.path.abspath(os.fspath(source_file)),
      "source_sha256": source_sha256,
      "source_format": source_format,
      "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
  }
  if spec.arch_config is not None:
    meta["arch_config"] = dict(spec.arch_config)
  return meta


def save_converted_teacher(
    out_dir: str | os.PathLike[str],
    variables: Mapping[str, Any],
    metadata: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
  """Write ``variables`` (Orbax) and ``metadata`` (JSON) atomically to ``out_dir``.

  Everything is written to a temporary sibling directory that is renamed to
  ``out_dir`` at the end; on failure the temporary directory is removed.

  Args:
    out_dir: destination directory (must not exist unless ``overwrite``).
    variables: ``{'params': ..., 'batch_stats': ...}`` of numpy / jax arrays.
    metadata: JSON-serialisable dict (see :func:`build_metadata`).
    overwrite: replace an existing ``out_dir``.

  Returns:
    The absolute path of ``out_dir``.
  """
  out = Path(out_dir).absolute()
  if out.exists() and not overwrite:
    raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    tmp.mkdir()
    tree = jax.tree_util.tree_map(np.asarray, dict(variables))
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(tmp / VARIABLES_DIRNAME, tree)
      ckptr.wait_until_finished()
    with open(tmp / METADATA_FILENAME, "w", encoding="utf-8") as f:
      json.dump(dict(metadata), f, indent=2, sort_keys=True)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    if out.exists():
      old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
      os.rename(out, old)
      os.rename(tmp, out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, out)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  return out


def load_metadata(ckpt_dir: str | os.PathLike[str]) -> dict[str, Any]:
  """Read and validate ``metadata.json`` of a converted teacher."""
  d = Path(ckpt_dir)
  path = d / METADATA_FILENAME
  if not path.is_file():
    raise CheckpointError(f"{d}: not a converted teacher (no {METADATA_FILENAME})")
  try:
    meta = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path}: unreadable metadata ({e})") from e
  lacking = [k for k in _REQUIRED_METADATA if k not in meta]
  if lacking:
    raise CheckpointError(f"{path}: metadata lacks {', '.join(lacking)}")
  if meta["format_version"] != FORMAT_VERSION:
    raise CheckpointError(
        f"{path}: format_version {meta['format_version']} (this code reads {FORMAT_VERSION})"
    )
  if meta["architecture"] not in ARCHITECTURES:
    raise CheckpointError(f"{path}: unknown architecture {meta['architecture']!r}")
  return meta


def load_converted_teacher(
    ckpt_dir: str | os.PathLike[str], *, dtype: Any = jnp.float32
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
  """Load a converted teacher written by :func:`save_converted_teacher`.

  Args:
    ckpt_dir: the converted teacher directory.
    dtype: computation dtype of the rebuilt module (variables stay float32).

  Returns:
    ``(module, variables, metadata)``; run it with
    ``module.apply(variables, preprocess_from_metadata(metadata, rgb_uint8))``,
    which returns ``{'embedding', 'logits'}``.
  """
  d = Path(ckpt_dir).absolute()
  meta = load_metadata(d)
  try:
    spec = teacher_spec(meta["architecture"], meta.get("arch_config"))
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"{d / METADATA_FILENAME}: bad arch_config ({e})") from e
  num_classes = None if meta["num_classes"] is None else int(meta["num_classes"])
  module = spec.build(num_classes, dtype)
  abstract = abstract_variables(module, spec.input_size)
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract
  )
  vdir = d / VARIABLES_DIRNAME
  if not vdir.is_dir():
    raise CheckpointError(f"{d}: no {VARIABLES_DIRNAME}/ directory")
  try:
    with ocp.StandardCheckpointer() as ckptr:
      variables = ckptr.restore(vdir, target)
  except Exception as e:  # orbax raises assorted types on structure/shape mismatch
    raise CheckpointError(
        f"{vdir}: variables do not fit architecture {meta['architecture']!r} "
        f"with {meta['num_classes']} classes ({type(e).__name__}: {e})"
    ) from e
  return module, dict(variables), meta


def preprocess_from_metadata(metadata: Mapping[str, Any], rgb_uint8: Any) -> jnp.ndarray:
  """Preprocess ``(..., H, W, 3)`` RGB [0, 255] images as ``metadata`` describes.

  Applies the colour order, mean and std recorded in the metadata (so it also
  works for checkpoints whose constants differ from the current defaults).
  """
  x = jnp.asarray(rgb_uint8).astype(jnp.float32)
  if x.shape[-1] != 3:
    raise ValueError(f"expected (..., H, W, 3) RGB images, got shape {x.shape}")
  order = metadata["colour_order"]
  if order == "BGR":
    x = x[..., ::-1]
  elif order != "RGB":
    raise ValueError(f"unknown colour order {order!r}")
  mean = jnp.asarray(metadata["mean"], jnp.float32)
  std = jnp.asarray(metadata["std"], jnp.float32)
  return (x - mean) / std
