"""Inference CLI: ``python -m deocc_jax.infer <command> ... --config=... --workdir=DIR``.

Commands (``deocc_jax/inference/`` does the work; ``--config`` defaults to
the run's ``WORKDIR/config.json`` (a given one that differs gets a warning); every JSON
result carries ``checkpoint_steps``, the restored step of each model)::

  verify IMG_A IMG_B [--mask_a=M] [--mask_b=M]   same person? prints JSON
      {"score", "threshold", "same", "mask_a": {"source", "coverage"}, ...}
  verify --pairs_file=FILE   scores every pair of FILE in one process (models
      loaded once, each distinct image embedded once, batched); FILE has one
      pair per line, ``IMG_A IMG_B [MASK_A [MASK_B]]`` (whitespace-separated,
      ``-`` = no mask, ``#`` comments, paths relative to FILE's folder); prints
      JSON {"count", "same_count", "pairs": [{"line", "image_a", "image_b",
      "score", "same", "mask_a", "mask_b"}], "seconds", "faces_per_second"}
  embed --folder=DIR --out=FILE.npz [--skip_errors]
      embeds every image under DIR (labels: first-level subfolders), writes
      FILE.npz atomically, prints JSON {"out", "count", "dim", "skipped", ...}
  identify PROBE... --gallery=DIR_or_NPZ [--top_k=5] [--skip_errors]
      prints JSON {"probes": [{"probe", "matches": [{"label", "score",
      "above_threshold"}]}], ...}, best first

Common flags: ``--recognizer`` (student_soft | student_hard | teacher |
arcface_finetuned), ``--checkpoint`` (latest | best | STEP | per stage),
``--threshold`` (overrides ``WORKDIR/results/calibration.json``, written by
``python -m deocc_jax.evaluate``), ``--input_kind`` (auto |
completed_predicted | completed | masked | clean), ``--align`` (none: images
are aligned square face crops; dlib / mtcnn: detect with dlib's HOG detector
/ MTCNN and align), ``--landmarks=FILE`` (``PATH x1 y1 ... x5 y5`` lines,
CelebA order: listed images are aligned by them, the others per ``--align``).

Exit status: 0 on success (whatever the decision); wrong usage raises
``app.UsageError`` (usage message, status 1); a bad input (missing or
undecodable file, no face, wrong sizes, missing calibration) prints one line
``error: <message naming the file>`` on stderr and exits with status 2.
Runs in one process, on its local devices.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

COMMANDS = ("verify", "embed", "identify")
EXIT_BAD_INPUT = 2

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "The run's experiment config file "
    "(with the run's --config.* overrides); default: "
    "the run's WORKDIR/config.json.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (checkpoints, results/).")
_RECOGNIZER = flags.DEFINE_enum(
    "recognizer",
    "student_soft",
    ["student_soft", "student_hard", "teacher", "arcface_finetuned"],
    "Which trained recogniser embeds the faces.",
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "latest", "latest | best | a step | per stage 'latest,distill_soft=best'."
)
_THRESHOLD = flags.DEFINE_float(
    "threshold",
    None,
    "Cosine threshold (default: the calibrated " "one in WORKDIR/results/calibration.json).",
)
_INPUT_KIND = flags.DEFINE_enum(
    "input_kind",
    "auto",
    ["auto", "completed_predicted", "completed", "masked", "clean"],
    "How faces are completed before embedding (and which " "calibrated threshold applies).",
)
_ALIGN = flags.DEFINE_enum(
    "align",
    "none",
    ["none", "dlib", "mtcnn"],
    "none: images are aligned square face crops; dlib / mtcnn: "
    "detect (dlib HOG / MTCNN) + align.",
)
_LANDMARKS = flags.DEFINE_string(
    "landmarks",
    None,
    "File of 'PATH x1 y1 ... x5 y5' lines "
    "(CelebA order): listed images are aligned by these "
    "landmarks, the others per --align.",
)
_MASK_A = flags.DEFINE_string("mask_a", None, "verify: occlusion mask of IMG_A (optional).")
_MASK_B = flags.DEFINE_string("mask_b", None, "verify: occlusion mask of IMG_B (optional).")
_PAIRS_FILE = flags.DEFINE_string(
    "pairs_file",
    None,
    "verify: file of 'IMG_A IMG_B [MASK_A " "[MASK_B]]' lines, scored in one process.",
)
_FOLDER = flags.DEFINE_string("folder", None, "embed: folder of images (subfolders = labels).")
_OUT = flags.DEFINE_string("out", None, "embed: output .npz file.")
_GALLERY = flags.DEFINE_string("gallery", None, "identify: gallery folder or .npz from 'embed'.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "identify: identities listed per probe.", lower_bound=1)
_SKIP_ERRORS = flags.DEFINE_bool(
    "skip_errors",
    False,
    "embed / identify: skip (and report) " "unusable gallery images instead of failing.",
)

_ONLY = {
    "mask_a": "verify",
    "mask_b": "verify",
    "pairs_file": "verify",
    "folder": "embed",
    "out": "embed",
    "gallery": "identify",
    "top_k": "identify",
    "skip_errors": ("embed", "identify"),
}


def _check_usage(argv: list[str]) -> tuple[str, list[str]]:
  """(command, positional arguments); ``app.UsageError`` on wrong usage."""
  if len(argv) < 2 or argv[1] not in COMMANDS:
    got = f" (got {argv[1]!r})" if len(argv) > 1 else ""
    raise app.UsageError(f"first argument must be a command: {' | '.join(COMMANDS)}{got}")
  cmd, args = argv[1], list(argv[2:])
  for name, allowed in _ONLY.items():
    if flags.FLAGS[name].present and cmd not in (
        allowed if isinstance(allowed, tuple) else (allowed,)
    ):
      raise app.UsageError(f"--{name} does not apply to '{cmd}'")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required (the trained run's directory)")
  if cmd == "verify" and _PAIRS_FILE.value:
    if args or _MASK_A.value or _MASK_B.value:
      raise app.UsageError(
          "verify --pairs_file takes no images / --mask_a / --mask_b (the " "file lists them)"
      )
  elif cmd == "verify" and len(args) != 2:
    raise app.UsageError(f"verify takes two images (IMG_A IMG_B), got {len(args)}: {args}")
  if cmd == "embed":
    if args:
      raise app.UsageError(f"embed takes no positional arguments (got {args}); use --folder")
    if not _FOLDER.value or not _OUT.value:
      raise app.UsageError("embed needs --folder=DIR and --out=FILE.npz")
  if cmd == "identify":
    if not _GALLERY.value:
      raise app.UsageError("identify needs --gallery=DIR_or_NPZ")
    if not args:
      raise app.UsageError("identify needs at least one probe image")
  return cmd, args


def _require_exists(paths: list[str], what: str) -> None:
  """Fails fast (before the models load) on a missing input file."""
  for p in paths:
    if p and not os.path.exists(p):
      raise FileNotFoundError(f"{what} not found: {p}")


def run_command(cmd: str, args: list[str]) -> dict[str, Any]:
  """Runs one command; returns the JSON-ready result."""
  import time
  from deocc_jax import inference

  pairs = None
  if cmd == "verify" and _PAIRS_FILE.value:
    pairs = inference.read_pairs_file(_PAIRS_FILE.value)  # fail before the models load
    for p in pairs:
      for path, what in (
          (p.image_a, "image file"),
          (p.image_b, "image file"),
          (p.mask_a, "mask file"),
          (p.mask_b, "mask file"),
      ):
        if path and not os.path.exists(path):
          raise FileNotFoundError(f"{_PAIRS_FILE.value}:{p.line}: {what} not found: {path}")
  elif cmd == "verify":
    _require_exists(args, "image file")
    _require_exists([_MASK_A.value or "", _MASK_B.value or ""], "mask file")
  elif cmd == "embed":
    if not os.path.isdir(_FOLDER.value):
      raise FileNotFoundError(f"image folder not found: {_FOLDER.value}")
    out_dir = os.path.dirname(os.path.abspath(_OUT.value))
    if not os.path.isdir(out_dir):
      raise FileNotFoundError(f"output folder does not exist: {out_dir}")
  else:
    _require_exists(args, "probe image")
    _require_exists([_GALLERY.value], "gallery")
  from deocc_jax import cli
  from deocc_jax.training import workdir as workdir_lib

  config = cli.config_value(_CONFIG)
  if config is None:  # the run's own config (written when training started)
    config = workdir_lib.read_config(_WORKDIR.value)
  else:
    workdir_lib.warn_if_different(_WORKDIR.value, config)
  table = inference.read_landmarks_file(_LANDMARKS.value) if _LANDMARKS.value else None
  fr = inference.FaceRecognizer.from_run(
      config,
      _WORKDIR.value,
      _RECOGNIZER.value,
      _CHECKPOINT.value,
      _THRESHOLD.value,
      _INPUT_KIND.value,
  )
  fr.landmarks_table = table
  head = {
      "command": cmd,
      "recognizer": fr.name,
      "input_kind": fr.input_kind,
      "threshold": fr.threshold,
      "checkpoint_steps": dict(fr.models.steps),
  }
  if pairs is not None:
    t0 = time.perf_counter()
    scores = fr.verify_pairs(pairs, align=_ALIGN.value)
    seconds = time.perf_counter() - t0
    faces = len({(p.image_a, p.mask_a) for p in pairs} | {(p.image_b, p.mask_b) for p in pairs})
    return {
        **head,
        "pairs_file": _PAIRS_FILE.value,
        "count": len(scores),
        "same_count": sum(s.same for s in scores),
        "pairs": [
            {"line": p.line, "image_a": p.image_a, "image_b": p.image_b, **s.to_dict()}
            for p, s in zip(pairs, scores)
        ],
        "seconds": seconds,
        "faces_per_second": faces / max(seconds, 1e-9),
    }
  if cmd == "verify":
    v = fr.verify(args[0], args[1], _MASK_A.value, _MASK_B.value, align=_ALIGN.value)
    return {**head, "image_a": args[0], "image_b": args[1], **v.to_dict()}
  if cmd == "embed":
    g = fr.embed_folder(
        _FOLDER.value, _OUT.value, align=_ALIGN.value, skip_errors=_SKIP_ERRORS.value
    )
    return {
        **head,
        "out": _OUT.value,
        "folder": _FOLDER.value,
        "count": len(g.paths),
        "dim": int(g.embeddings.shape[1]),
        "labels": len(set(g.labels)),
        "skipped": [{"path": p, "error": e} for p, e in g.skipped],
    }
  gallery = fr.load_gallery(_GALLERY.value, align=_ALIGN.value, skip_errors=_SKIP_ERRORS.value)
  matches = fr.identify(args, gallery, top_k=_TOP_K.value, align=_ALIGN.value)
  return {
      **head,
      "gallery": _GALLERY.value,
      "gallery_images": len(gallery.paths),
      "gallery_identities": len(set(gallery.identities())),
      "skipped": [{"path": p, "error": e} for p, e in gallery.skipped],
      "probes": [
          {
              "probe": p,
              "matches": [
                  {"label": m.label, "score": m.score, "above_threshold": m.score >= fr.threshold}
                  for m in ms
              ],
          }
          for p, ms in zip(args, matches)
      ],
  }


def main(argv: list[str]) -> None:
  cmd, args = _check_usage(list(argv))
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    result = run_command(cmd, args)
  except (FileNotFoundError, ValueError, ImportError) as e:  # incl. checkpoint errors
    # bad inputs (DatasetFormatError, NoFaceError, ImageErrors are ValueErrors):
    # one line naming the file, no traceback.
    msg = " ".join(str(e).split())
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  print(
      "restored checkpoints: "
      + ", ".join(f"{k} step {v}" for k, v in sorted(result["checkpoint_steps"].items())),
      file=sys.stderr,
  )
  print(json.dumps(result, indent=2))


def console_main() -> None:
  """The ``deocc-infer`` console command (``python -m deocc_jax.infer``)."""
  from deocc_jax import cli as _cli

  _cli.run_console(main, __name__)


if __name__ == "__main__":
  console_main()
