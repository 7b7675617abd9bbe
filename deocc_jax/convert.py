"""Convert a pretrained PyTorch face recogniser's weights into a Flax teacher checkpoint.

Usage::

    python -m deocc_jax.convert --arch inception_resnet_v1 \\
        --weights 20180402-114759-vggface2.pt --out teachers/facenet
    python -m deocc_jax.convert --arch vggface2_resnet50 \\
        --weights resnet50_ft_weight.pkl --out teachers/vggface2_r50
    python -m deocc_jax.convert --arch vggface2_senet50 \\
        --weights senet50_ft_weight.pkl --out teachers/vggface2_se50
    python -m deocc_jax.convert --arch iresnet \\
        --weights w600k_r50.onnx --out teachers/arcface_r50   # insightface ArcFace (ONNX)
    python -m deocc_jax.convert --arch iresnet50 \\
        --weights backbone.pth --out teachers/arcface_r50     # arcface_torch state dict
    python -m deocc_jax.convert --arch iresnet --weights backbone.pth \\
        --arch-config '{"layers": [2, 2, 2, 2], "widths": [8, 16, 32, 64], "num_features": 128}' \\
        --out teachers/arcface_small                         # other widths (a state dict)
    python -m deocc_jax.convert --arch vggface_vgg16 \\
        --weights vgg_face_dag.pth --out teachers/vggface      # VGGFace (VGG-16)
    python -m deocc_jax.convert --arch sphereface20 \\
        --weights sphere20a_20171020.pth --out teachers/sphereface  # SphereFace-20
    python -m deocc_jax.convert --arch mtcnn --out mtcnn.npz   # the MTCNN detector

The weights file is the user's own (nothing is downloaded): a torch state dict
(``.pt`` / ``.pth``; read without torch, with ``torch.load`` where torch is
installed) or the latin1 pickle of numpy arrays the VGGFace2-pytorch port
distributes, or for the ArcFace IResNets an insightface ``.onnx`` model (needs
onnx: ``pip install -e '.[convert]'`` in the repository; ``--arch iresnet``
reads the depth and widths from the graph, ``--arch iresnet50`` / ``iresnet100``
also checks them; :mod:`deocc_jax.conversion.onnx_arcface`). The classifier size
is read from the file (``logits.weight`` / ``fc.weight`` / ``fc8.weight`` rows,
the columns of SphereFace's ``fc6.weight``); a facenet-pytorch
``classify=False`` state dict without ``logits.*`` keys converts to a teacher
without a classifier (``num_classes`` null, no ``logits`` output). Every tensor
must map onto the architecture; otherwise the command exits with status 2 and one
message listing every missing / unexpected / shape-mismatched key. Load the result
with :func:`deocc_jax.conversion.checkpoint.load_converted_teacher`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

import jax.numpy as jnp

from deocc_jax.conversion.checkpoint import (
    ARCHITECTURES,
    CheckpointError,
    abstract_variables,
    build_metadata,
    save_converted_teacher,
    teacher_spec,
)
from deocc_jax.conversion.torch_weights import (
    WeightsFileError,
    WeightsMismatchError,
    file_sha256,
    read_weights_file,
    torch_to_flax,
)

__all__ = ["convert", "build_parser", "main"]


def _consistent_rows(tensors: dict, prefix: str, axis: int = 0) -> int | None:
  """Classes of ``prefix.weight`` (its size along ``axis``: rows of an
  ``nn.Linear``) when ``prefix.bias`` (if any) agrees; else None (the published
  size is expected and the strict check lists the mismatch)."""
  w, b = tensors.get(f"{prefix}.weight"), tensors.get(f"{prefix}.bias")
  if w is None or w.ndim != 2 or (b is not None and tuple(b.shape) != (w.shape[axis],)):
    return None
  return int(w.shape[axis])


def convert(
    arch: str,
    weights: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    overwrite: bool = False,
    arch_config: Mapping[str, Any] | None = None,
) -> Path:
  """Convert ``weights`` for architecture ``arch`` and write the teacher to ``out``.

  Args:
    arch: one of :data:`~deocc_jax.conversion.checkpoint.ARCHITECTURES`.
    weights: the PyTorch-layout weights file.
    out: destination directory (written atomically).
    num_classes: classifier size; default: the file's (``logits.weight`` /
      ``fc.weight`` / ``fc8.weight`` rows, SphereFace ``fc6.weight`` columns),
      none when the file has no classifier keys.
    overwrite: replace an existing ``out``.
    arch_config: hyper-parameters of ``arch`` other than the published ones
      (VGGFace ``widths`` / ``fc_features``, SphereFace ``widths`` /
      ``num_features``, IResNet ``layers`` / ``widths`` / ``num_features`` for a
      state dict); default the published model (an ONNX graph: read from it).

  Returns:
    The absolute output directory.

  Raises:
    WeightsFileError: unreadable / non-weights file.
    WeightsMismatchError: the tensors do not fit ``arch`` (all differences listed).
    FileExistsError: ``out`` exists and ``overwrite`` is false.
  """
  if Path(out).exists() and not overwrite:
    raise FileExistsError(f"{Path(out).absolute()} already exists (use --overwrite to replace it)")
  mean = std = None
  if os.fspath(weights).lower().endswith(".onnx"):
    if not arch.startswith("iresnet"):
      raise ValueError(
          f"{weights}: ONNX models convert with --arch iresnet (insightface "
          f"ArcFace), not {arch!r}"
      )
    if arch_config is not None:
      raise ValueError(f"{weights}: an ONNX model's arch_config is read from its graph")
    from deocc_jax.conversion.onnx_arcface import read_arcface_onnx

    graph = read_arcface_onnx(weights)
    tensors, fmt = graph.tensors, "onnx"
    arch_config, mean, std = graph.arch_config, graph.mean, graph.std
  else:
    if arch == "iresnet" and arch_config is None:
      raise ValueError(
          f"{weights}: --arch iresnet (layout from the graph) needs an .onnx "
          "model; name the depth (--arch iresnet50 / iresnet100) for a state dict"
      )
    tensors, fmt = read_weights_file(weights)
  spec = teacher_spec(arch, arch_config)
  file_classes = (
      None
      if spec.classifier is None
      else _consistent_rows(tensors, spec.classifier, spec.classifier_classes_axis)
  )
  if num_classes is not None:
    n_classes = int(num_classes)
  elif spec.classifier is None:
    n_classes = None
  elif file_classes is not None:  # the file's own head size
    n_classes = file_classes
  elif not any(k.startswith(spec.classifier + ".") for k in tensors):
    n_classes = None  # saved without the classifier (facenet-pytorch classify=False)
  else:
    n_classes = spec.default_num_classes
  module = spec.build(n_classes, jnp.float32)
  variables = torch_to_flax(
      tensors,
      abstract_variables(module, spec.input_size),
      source=os.fspath(weights),
      architecture=f"{arch} ({n_classes or 'no'} classes)",
  )
  meta = build_metadata(
      arch,
      num_classes=n_classes,
      source_file=weights,
      source_sha256=file_sha256(weights),
      source_format=fmt,
      arch_config=arch_config,
      mean=mean,
      std=std,
  )
  return save_converted_teacher(out, variables, meta, overwrite=overwrite)


class _OneLineParser(argparse.ArgumentParser):
  """Usage errors as one line ``error: ...`` and exit status 2 (like the other CLIs)."""

  def error(self, message: str) -> NoReturn:
    print(f"error: {' '.join(message.split())} (see --help)", file=sys.stderr)
    sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
  """The ``python -m deocc_jax.convert`` argument parser."""
  p = _OneLineParser(
      prog="python -m deocc_jax.convert",
      description="Convert PyTorch face-recogniser weights into a Flax/Orbax teacher checkpoint.",
  )
  p.add_argument(
      "--arch",
      required=True,
      choices=tuple(ARCHITECTURES) + ("mtcnn",),
      help="teacher architecture, or 'mtcnn' (the face detector: --weights is a "
      "folder with pnet.pt/rnet.pt/onet.pt, default the installed "
      "facenet-pytorch wheel's; --out FILE.npz)",
  )
  p.add_argument(
      "--weights",
      default=None,
      help="torch state dict (.pt/.pth), latin1 pickle of "
      "numpy arrays, or an insightface ArcFace .onnx model (--arch iresnet*)",
  )
  p.add_argument(
      "--out", required=True, help="output directory (must not exist unless --overwrite)"
  )
  p.add_argument(
      "--num-classes",
      type=int,
      default=None,
      help="classifier size (default: the file's; none if it has no classifier)",
  )
  p.add_argument(
      "--arch-config",
      default=None,
      metavar="JSON",
      help="hyper-parameters other than the published ones, for a state dict: IResNet "
      '\'{"layers": [2, 2, 2, 2], "widths": [16, 32, 64, 128], "num_features": 128}\' '
      "(with --arch iresnet), VGGFace / SphereFace widths (an ONNX graph carries its own)",
  )
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
  return p


def _arch_config(text: str | None) -> dict[str, Any] | None:
  """``--arch-config``: a JSON object, or None when not given."""
  if text is None:
    return None
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"--arch-config is not JSON ({e.msg} at character {e.pos}): {text!r}")
  if not isinstance(value, dict):
    raise ValueError(f"--arch-config must be a JSON object of hyper-parameters, got {text!r}")
  return value


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point; returns the exit status (0 ok, 2 bad input)."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.arch == "mtcnn":
    from deocc_jax.conversion.mtcnn_weights import MTCNNWeightsError, convert_mtcnn

    try:
      out = convert_mtcnn(args.out, args.weights, overwrite=args.overwrite)
    except (MTCNNWeightsError, FileExistsError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    print(f"converted MTCNN ({args.weights or 'facenet-pytorch wheel'}) -> {out}")
    return 0
  if args.weights is None:
    parser.error("--weights is required for the teacher architectures")
  try:
    out = convert(
        args.arch,
        args.weights,
        args.out,
        num_classes=args.num_classes,
        overwrite=args.overwrite,
        arch_config=_arch_config(args.arch_config),
    )
  except (
      WeightsFileError,
      WeightsMismatchError,
      FileExistsError,
      CheckpointError,
      FileNotFoundError,
      PermissionError,
      ValueError,
  ) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(f"converted {args.weights} ({args.arch}) -> {out}")
  return 0


def console_main() -> None:
  """The ``deocc-convert`` console command (``python -m deocc_jax.convert``)."""
  sys.exit(main())


if __name__ == "__main__":
  console_main()
