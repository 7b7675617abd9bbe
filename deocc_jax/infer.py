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

  detect IMG... [--align=mtcnn|dlib]   every face (no model, no run): JSON
      {"images": [{"image", "width", "height", "faces": [{"box", "landmarks",
      "score", "eye_distance"}]}]}, largest face first

``--format=csv`` prints CSV rows instead (one per pair / match / face /
embedded image); ``verify --save_completions=DIR`` writes each face's
completion and mask as PNGs; ``embed --all_faces`` embeds every detected face
(``PATH#K``). Progress bars go to stderr on a terminal. The JAX compilation
cache persists in ``~/.cache/deocc_jax/jax_cache`` (``$DEOCC_JAX_CACHE_DIR``;
``off`` disables it).

Common flags: ``--recognizer`` (student_soft | student_hard | teacher |
arcface_finetuned | arcface_pretrained | teacher_finetuned of the run in ``--workdir``; or ``dlib``: dlib's face ResNet
from the face-recognition-models wheel, no run needed, aligned by dlib's own
chip protocol, threshold 0.905 cosine = dlib's 0.6 distance), ``--teacher_kind=converted
--teacher_path=DIR --threshold=T`` (a VGGFace2 / facenet / insightface ArcFace
model converted by ``python -m deocc_jax.convert``, aligned to its own
template), ``--checkpoint`` (latest | best | STEP, of every model),
``--threshold`` (overrides ``WORKDIR/results/calibration.json``, written by
``python -m deocc_jax.evaluate``), ``--input_kind`` (auto |
completed_predicted | completed | masked | clean), ``--align`` (none: images
are aligned square face crops; dlib / mtcnn: detect with dlib's HOG detector
/ MTCNN and align; ``--mtcnn_weights=FILE.npz``: MTCNN on converted weights),
``--landmarks=FILE`` (``PATH x1 y1 ... x5 y5`` lines,
CelebA order: listed images are aligned by them, the others per ``--align``).

Every input image is read, detected and checked once, before any model
loads: a face needs at least 8 pixels between its eye centres (0.15 R for
models under 54 px: 4.8 px at R = 32); with ``--align=none`` an image must be
a square aligned crop, at least the model's input size and not blank.
Galleries record the checkpoint steps that embedded them; a probe embedded
with other steps is refused. A run trained on synthetic faces warns when it
embeds photos. ``--help`` exits 0.

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

COMMANDS = ("verify", "embed", "identify", "detect")
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
    [
        "student_soft",
        "student_hard",
        "teacher",
        "arcface_finetuned",
        "arcface_pretrained",
        "teacher_finetuned",
        "dlib",
    ],
    "Which recogniser embeds the faces: one of the run's (--workdir), or 'dlib' "
    "(dlib's face ResNet, shipped with face-recognition-models: no run needed; "
    "for photos).",
)
_TEACHER_KIND = flags.DEFINE_enum(
    "teacher_kind",
    None,
    ["dlib", "converted"],
    "A pretrained recogniser instead of a run's: 'dlib' (= --recognizer=dlib) or "
    "'converted' (a VGGFace2 / facenet / insightface ArcFace model converted by "
    "`python -m deocc_jax.convert`, folder --teacher_path; needs --threshold).",
)
_TEACHER_PATH = flags.DEFINE_string(
    "teacher_path", None, "--teacher_kind: the converted folder (or dlib's .dat file)."
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "latest", "latest | best | a step, of every model restored."
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
_MTCNN_WEIGHTS = flags.DEFINE_string(
    "mtcnn_weights",
    None,
    "--align=mtcnn (and detect): MTCNN weights to use instead of the "
    "facenet-pytorch wheel's: a .npz written by 'python -m deocc_jax.convert "
    "--arch mtcnn' or facenet-pytorch's pnet/rnet/onet .pt directory.",
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

_FORMAT = flags.DEFINE_enum("format", "json", ["json", "csv"], "Output on stdout: JSON or CSV.")
_SAVE_COMPLETIONS = flags.DEFINE_string(
    "save_completions",
    None,
    "verify: folder to write each face's completion and mask as PNGs "
    "(<k>_<name>_completed.png, <k>_<name>_mask.png).",
)
_ALL_FACES = flags.DEFINE_bool(
    "all_faces",
    False,
    "embed: every detected face of each image (entries PATH#K, largest face "
    "first), not only the largest; needs --align=mtcnn or dlib.",
)

_ONLY = {
    "save_completions": "verify",
    "all_faces": "embed",
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
  if _MTCNN_WEIGHTS.value and _ALIGN.value != "mtcnn":
    if cmd != "detect" or flags.FLAGS["align"].present:
      raise app.UsageError("--mtcnn_weights needs --align=mtcnn")
  if cmd == "detect":
    if not args:
      raise app.UsageError("detect needs at least one image")
    for name in ("workdir", "recognizer", "teacher_kind", "checkpoint", "threshold"):
      if flags.FLAGS[name].present:
        raise app.UsageError(f"--{name} does not apply to 'detect' (no recogniser runs)")
    if _ALIGN.value not in ("mtcnn", "dlib"):
      if flags.FLAGS["align"].present:
        raise app.UsageError("detect needs a detector: --align=mtcnn (default) or --align=dlib")
    return cmd, args
  if _ALL_FACES.value and _ALIGN.value not in ("mtcnn", "dlib"):
    raise app.UsageError("--all_faces needs a detector: --align=mtcnn or --align=dlib")
  if _TEACHER_KIND.value == "converted" and not _TEACHER_PATH.value:
    raise app.UsageError("--teacher_kind=converted needs --teacher_path=DIR")
  if _TEACHER_PATH.value and not _TEACHER_KIND.value:
    raise app.UsageError("--teacher_path needs --teacher_kind (dlib | converted)")
  if pretrained_kind():
    for name in ("workdir", "checkpoint", "input_kind", "config"):
      if flags.FLAGS[name].present:
        raise app.UsageError(f"--{name} does not apply to a pretrained recogniser")
  elif not _WORKDIR.value:
    raise app.UsageError(
        "--workdir is required (the trained run's directory), or use a pretrained "
        "recogniser: --recognizer=dlib / --teacher_kind=converted --teacher_path=DIR"
    )
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


def pretrained_kind() -> str | None:
  """'dlib' / 'converted' for a pretrained recogniser, None for a run's."""
  if _TEACHER_KIND.value:
    return _TEACHER_KIND.value
  return "dlib" if _RECOGNIZER.value == "dlib" else None


def _require_exists(paths: list[str], what: str) -> None:
  """Fails fast (before the models load) on a missing input file."""
  for p in paths:
    if p and not os.path.exists(p):
      raise FileNotFoundError(f"{what} not found: {p}")


def _input_images(cmd: str, args: list[str], pairs: Any) -> list[str]:
  """Every image file the command reads (each once), in order."""
  from deocc_jax import inference

  if pairs is not None:
    return list(dict.fromkeys(x for p in pairs for x in (p.image_a, p.image_b)))
  if cmd == "verify":
    return list(args)
  if cmd == "embed":
    return [os.path.join(_FOLDER.value, p) for p in inference.list_images(_FOLDER.value)]
  gallery = []
  if os.path.isdir(_GALLERY.value):
    gallery = [os.path.join(_GALLERY.value, p) for p in inference.list_images(_GALLERY.value)]
  return list(args) + gallery


def _align(align: str | None = None) -> str:
  """The align spec the library takes: ``align`` (default --align), or
  'mtcnn:FILE' for MTCNN with --mtcnn_weights."""
  align = _ALIGN.value if align is None else align
  if _MTCNN_WEIGHTS.value and align == "mtcnn":
    return f"mtcnn:{_MTCNN_WEIGHTS.value}"
  return align


def preflight(cmd: str, args: list[str], pairs: Any, resolution: int) -> dict[str, Any]:
  """Reads, detects and checks every input image once, before any model loads:
  the first unusable one raises (one line, exit 2), folders' per --skip_errors.
  Returns ``{path: Located | Exception}`` for ``FaceRecognizer.located``."""
  from deocc_jax import inference

  table = inference.read_landmarks_file(_LANDMARKS.value) if _LANDMARKS.value else None
  paths = _input_images(cmd, args, pairs)
  located = inference.locate_all(paths, resolution, _align(), table, progress=_progress)
  folder = _FOLDER.value if cmd == "embed" else None
  if cmd == "identify" and os.path.isdir(_GALLERY.value):
    folder = _GALLERY.value
  for p in paths:
    in_folder = folder is not None and os.path.abspath(p).startswith(os.path.abspath(folder))
    if isinstance(located[p], Exception) and not (in_folder and p not in args):
      e = located[p]
      if pairs is not None and type(e) in (FileNotFoundError, ValueError):
        line = next(q.line for q in pairs if p in (q.image_a, q.image_b))
        raise type(e)(f"{_PAIRS_FILE.value}:{line}: {e}")
      raise e
  if folder is not None:
    from deocc_jax.inference import cli_support

    cli_support.folder_errors(folder, located, _SKIP_ERRORS.value)
  masks = []
  if pairs is not None:
    masks = [(q.mask_a, q.image_a) for q in pairs] + [(q.mask_b, q.image_b) for q in pairs]
  elif cmd == "verify":
    masks = [(_MASK_A.value, args[0]), (_MASK_B.value, args[1])]
  for mask, image in masks:  # sizes from the mask files' headers
    if mask:
      inference.check_image_size(mask, what="mask image")
      from PIL import Image

      with Image.open(mask) as im:
        w, h = im.size
      ih, iw = located[image].image.shape[:2]
      if (h, w) != (ih, iw):
        raise ValueError(
            f"mask {mask} is {w}x{h} but image {image} is {iw}x{ih}: a mask must have "
            f"its image's size"
        )
  return located


def _progress(items: list[str], desc: str = "reading faces") -> Any:
  """A progress bar on stderr (shown when stderr is a terminal)."""
  from tqdm import tqdm

  return tqdm(items, desc=desc, unit="img", file=sys.stderr, disable=None, leave=False)


def _run_recognizer(cmd: str, args: list[str], pairs: Any) -> tuple[Any, dict[str, Any], str]:
  """(FaceRecognizer of the run, located inputs, the run's data source); inputs
  are checked before the models load."""
  from deocc_jax import cli, inference
  from deocc_jax.runs import workdir as workdir_lib

  config = cli.config_value(_CONFIG)
  if config is None:  # the run's own config (written when training started)
    config = workdir_lib.read_config(_WORKDIR.value)
  else:
    workdir_lib.warn_if_different(_WORKDIR.value, config)
  workdir_lib.validate_config(config)
  located = preflight(cmd, args, pairs, int(config.data.resolution))
  source = str(config.data.source)
  photos = (
      _ALIGN.value != "none"
      or _LANDMARKS.value
      or any(
          not isinstance(v, Exception) and v.image.shape[0] > config.data.resolution
          for v in located.values()
      )
  )
  if source == "synthetic" and photos:
    print(
        "warning: this run was trained on synthetic faces (config.data.source='synthetic'): "
        "on real photos it is near chance; use --recognizer=dlib for photos",
        file=sys.stderr,
    )
  fr = inference.FaceRecognizer.from_run(
      config,
      _WORKDIR.value,
      _RECOGNIZER.value,
      _CHECKPOINT.value,
      _THRESHOLD.value,
      _INPUT_KIND.value,
  )
  return fr, located, source


def run_detect(images: list[str]) -> dict[str, Any]:
  """``detect``: every face of each image (box, 5 landmarks, score), largest first."""
  from deocc_jax import inference
  from deocc_jax.inference.images import read_face_image

  _require_exists(images, "image file")
  align = _align(_ALIGN.value if _ALIGN.value in ("mtcnn", "dlib") else "mtcnn")
  out = []
  for path in _progress(images, "detecting"):
    img = read_face_image(path, path)
    faces = inference.detect_faces(img, align)
    out.append(
        {
            "image": path,
            "width": int(img.shape[1]),
            "height": int(img.shape[0]),
            "faces": [f.to_dict() for f in faces],
        }
    )
  return {"command": "detect", "detector": align, "checkpoint_steps": {}, "images": out}


def run_command(cmd: str, args: list[str]) -> dict[str, Any]:
  """Runs one command; returns the JSON-ready result."""
  if _MTCNN_WEIGHTS.value:  # read (or refuse, naming the file) before any image
    from deocc_jax.detection import mtcnn

    mtcnn.default_detector(_MTCNN_WEIGHTS.value)
  import time

  from deocc_jax import inference

  if cmd == "detect":
    return run_detect(args)
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
  kind = pretrained_kind()
  if kind:
    from deocc_jax.data import alignment
    from deocc_jax.inference import pretrained

    if kind == "converted" and not os.path.isdir(_TEACHER_PATH.value):
      raise FileNotFoundError(f"converted recogniser folder not found: {_TEACHER_PATH.value}")
    size = int(alignment.get_template("dlib").size[0]) if kind == "dlib" else None
    if size is None:  # the converted model's template size (from its metadata)
      from deocc_jax.inference import cli_support

      size = cli_support.converted_size(_TEACHER_PATH.value)
    located = preflight(cmd, args, pairs, size)
    fr = pretrained.from_teacher(kind, _TEACHER_PATH.value, _THRESHOLD.value)
    source = "pretrained"
  else:
    fr, located, source = _run_recognizer(cmd, args, pairs)
  fr.located = located
  head = {
      "command": cmd,
      "recognizer": fr.name,
      "input_kind": fr.input_kind,
      "threshold": fr.threshold,
      "checkpoint_steps": dict(fr.models.steps),
      "trained_on": source,
  }
  if pairs is not None:
    t0 = time.perf_counter()
    scores = fr.verify_pairs(pairs, align=_align())
    seconds = time.perf_counter() - t0
    saved = []
    if _SAVE_COMPLETIONS.value and fr.last_prepared is not None:
      from deocc_jax.inference import outputs

      saved = outputs.save_completions(_SAVE_COMPLETIONS.value, *fr.last_prepared)
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
        **({"saved": saved} if saved else {}),
    }
  if cmd == "verify":
    v = fr.verify(args[0], args[1], _MASK_A.value, _MASK_B.value, align=_align())
    saved = []
    if _SAVE_COMPLETIONS.value:
      import numpy as np

      from deocc_jax.inference import outputs

      done = np.stack(v.completed)
      p = inference.Prepared(done, done, np.stack(v.masks), v.mask_sources)
      saved = outputs.save_completions(_SAVE_COMPLETIONS.value, args, p)
    return {
        **head,
        "image_a": args[0],
        "image_b": args[1],
        **v.to_dict(),
        **({"saved": saved} if saved else {}),
    }
  if cmd == "embed":
    if _ALL_FACES.value:
      from deocc_jax.inference import cli_support

      g = cli_support.embed_all_faces(fr, _FOLDER.value, _OUT.value, located)
    else:
      g = fr.embed_folder(_FOLDER.value, _OUT.value, align=_align(), skip_errors=_SKIP_ERRORS.value)
    return {
        **head,
        "out": _OUT.value,
        "folder": _FOLDER.value,
        "count": len(g.paths),
        "dim": int(g.embeddings.shape[1]),
        "labels": len(set(g.labels)),
        "skipped": [{"path": p, "error": e} for p, e in g.skipped],
        "embedded": [[p, lab] for p, lab in zip(g.paths, g.labels)],
    }
  gallery = fr.load_gallery(_GALLERY.value, align=_align(), skip_errors=_SKIP_ERRORS.value)
  matches = fr.identify(args, gallery, top_k=_TOP_K.value, align=_align())
  return {
      **head,
      "gallery": _GALLERY.value,
      "gallery_images": len(gallery.paths),
      "gallery_checkpoint_steps": dict(gallery.checkpoint_steps),
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
    from deocc_jax.inference import cli_support

    cli_support.enable_compilation_cache()
    result = run_command(cmd, args)
  except (FileNotFoundError, ValueError, ImportError, OSError) as e:  # incl. checkpoint errors
    # bad inputs (DatasetFormatError, NoFaceError, ImageErrors are ValueErrors):
    # one line naming the file, no traceback.
    msg = " ".join(str(e).split())
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  if result["checkpoint_steps"]:
    print(
        "restored checkpoints: "
        + ", ".join(f"{k} step {v}" for k, v in sorted(result["checkpoint_steps"].items())),
        file=sys.stderr,
    )
  if _FORMAT.value == "csv":
    from deocc_jax.inference import outputs

    sys.stdout.write(outputs.to_csv(result))
  else:
    print(json.dumps(result, indent=2))


HELP_FLAGS = ("-h", "--help", "-?", "--helpshort", "--helpfull", "--helpxml")


def console_main() -> None:
  """The ``deocc-infer`` console command (``python -m deocc_jax.infer``);
  ``--help`` exits 0 (absl's help flags exit 1)."""
  from deocc_jax import cli as _cli

  try:
    _cli.run_console(main, __name__)
  except SystemExit as e:
    if e.code == 1 and any(a in HELP_FLAGS for a in sys.argv[1:]):
      sys.exit(0)
    raise


if __name__ == "__main__":
  console_main()
