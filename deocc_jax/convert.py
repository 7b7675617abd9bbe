"""Convert a pretrained PyTorch face recogniser's weights into a Flax teacher checkpoint.

Usage::

    python -m deocc_jax.convert --arch inception_resnet_v1 \\
        --weights 20180402-114759-vggface2.pt --out teachers/facenet
    python -m deocc_jax.convert --arch vggface2_resnet50 \\
        --weights resnet50_ft_weight.pkl --out teachers/vggface2_r50
    python -m deocc_jax.convert --arch vggface2_senet50 \\
        --weights senet50_ft_weight.pkl --out teachers/vggface2_se50
    python -m deocc_jax.convert --arch mtcnn --out mtcnn.npz   # the MTCNN detector

The weights file is the user's own (nothing is downloaded): a torch state dict
(``.pt`` / ``.pth``; needs torch, ``pip install 'deocc-jax[convert]'``) or the
latin1 pickle of numpy arrays the VGGFace2-pytorch port distributes. Every tensor
must map onto the architecture; otherwise the command exits with status 2 and one
message listing every missing / unexpected / shape-mismatched key. Load the result
with :func:`deocc_jax.conversion.checkpoint.load_converted_teacher`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, Sequence

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


def convert(
    arch: str,
    weights: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert ``weights`` for architecture ``arch`` and write the teacher to ``out``.

    Args:
      arch: one of :data:`~deocc_jax.conversion.checkpoint.ARCHITECTURES`.
      weights: the PyTorch-layout weights file.
      out: destination directory (written atomically).
      num_classes: classifier size; defaults to the published 8,631.
      overwrite: replace an existing ``out``.

    Returns:
      The absolute output directory.

    Raises:
      WeightsFileError: unreadable / non-weights file.
      WeightsMismatchError: the tensors do not fit ``arch`` (all differences listed).
      FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    spec = teacher_spec(arch)
    n_classes = spec.default_num_classes if num_classes is None else int(num_classes)
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{Path(out).absolute()} already exists (use --overwrite to replace it)")
    tensors, fmt = read_weights_file(weights)
    module = spec.build(n_classes, jnp.float32)
    variables = torch_to_flax(
        tensors,
        abstract_variables(module, spec.input_size),
        source=os.fspath(weights),
        architecture=f"{arch} ({n_classes} classes)",
    )
    meta = build_metadata(
        arch,
        num_classes=n_classes,
        source_file=weights,
        source_sha256=file_sha256(weights),
        source_format=fmt,
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
    p.add_argument("--arch", required=True, choices=tuple(ARCHITECTURES) + ("mtcnn",),
                   help="teacher architecture, or 'mtcnn' (the face detector: --weights is a "
                        "folder with pnet.pt/rnet.pt/onet.pt, default the installed "
                        "facenet-pytorch wheel's; --out FILE.npz)")
    p.add_argument("--weights", default=None, help="torch state dict (.pt/.pth) or latin1 pickle of numpy arrays")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the published 8631)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    return p


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
        out = convert(args.arch, args.weights, args.out, num_classes=args.num_classes, overwrite=args.overwrite)
    except (WeightsFileError, WeightsMismatchError, FileExistsError, CheckpointError,
            FileNotFoundError, PermissionError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"converted {args.weights} ({args.arch}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
