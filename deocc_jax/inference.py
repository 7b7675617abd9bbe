"""Inference on face images: align -> (segment) -> complete -> embed -> score -> decide.

:class:`FaceRecognizer` freezes one trained recogniser of a run with the
run's generator ``G`` and occlusion segmenter, the resolution ``R`` and crop
layout the models were trained on, and the cosine-similarity threshold the
evaluation job calibrated (``<workdir>/results/calibration.json``)::

  fr = FaceRecognizer.from_run(workdir, recognizer="student_soft")  # config: WORKDIR/config.json
  v = fr.verify("a.png", "b.png", mask_b="b_mask.png")   # v.score, v.same
  fr.embed_folder("gallery/", "gallery.npz")
  fr.identify(["probe.png"], "gallery.npz", top_k=5)

Images: a file path or an (H, W, 3) / (H, W) / (H, W, 4) uint8 array (alpha
dropped). Alignment (``align``):

* ``'none'``: the image is already an aligned face crop like the training
  faces: it must be square; it is resized to R x R (bilinear, box
  pre-filter when shrinking more than 2x: ``alignment.warp_affine_pil``).
  The default when no landmarks are given.
* ``'landmarks'``: the (5, 2) landmarks given (x, y pixels, CelebA order:
  left eye, right eye, nose, left mouth, right mouth;
  ``alignment.CANONICAL_ORDER``) are mapped by a least-squares similarity onto
  the template -- the training crop's mean landmarks at R x R
  (``Models.mean_landmarks``). The default when landmarks are given.
* ``'dlib'``: dlib's detector finds the landmarks (the largest face when
  there are several); :class:`NoFaceError` names the file when none is found.
* ``'mtcnn'``: the same with MTCNN (``deocc_jax.detection.mtcnn``, Flax, on
  the facenet-pytorch wheel's weights), which finds masked faces that dlib's
  HOG detector misses (``benchmarks/results/masked_real_photos.md``).

A landmarks file (``read_landmarks_file``; set ``FaceRecognizer.landmarks_table``
or ``--landmarks`` in the CLI) gives the 5 landmarks of listed image files;
those images are aligned by them (``'landmarks'``) whatever ``align`` says.

Masks (the occluded pixels, when the user knows them): a path or an array,
grayscale, RGB (mean of the channels) or with an alpha channel (the alpha is
the mask); occluded where > 0.5 (> 127 for uint8 data, ``True`` for bool). A
mask has the image's *original* size and goes through the same alignment
warp as the face (bilinear, then > 0.5).

Completion (``input_kind``, which also picks the calibrated threshold):

* ``'completed_predicted'`` (default when the run has G and a segmenter):
  each face is completed by G with its given mask, else with the mask the
  segmenter predicts (blind de-occlusion; a clean face gets a (nearly)
  empty mask and comes back (nearly) unchanged).
* ``'completed'`` (default with G but no segmenter): faces with a given mask
  are completed with it; faces without one are embedded as they are.
* ``'masked'`` / ``'clean'`` (default without G): faces are embedded as they
  are; given masks are reported but not used.

Scores are cosine similarities in float64; ``same = score >= threshold``.
The calibration is the evaluation's "mixture, one face masked" protocol
(clean face vs occluded face), the use case of verification against an
enrolled clean face. ``threshold=`` overrides it.

Errors name the file at fault: ``FileNotFoundError`` (missing file),
``DatasetFormatError`` (a ``ValueError``: undecodable file), ``ValueError``
(non-square image with ``align='none'``, mask / image size mismatch, bad
landmarks), :class:`ImageTooLargeError` (a ``DatasetFormatError``: a file
over :data:`MAX_IMAGE_PIXELS` = 40 megapixels, checked from its header before
decoding, so decompression bombs cost nothing), :class:`NoFaceError` (a ``ValueError``), :class:`ImageErrors`
(a ``ValueError`` listing every unusable file of a folder). Inference runs in
one process (the models' mesh spans its local devices).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import tempfile
import zipfile
from typing import Any, Callable, NamedTuple, Sequence, Union

import numpy as np
from etils import epath

from deocc_jax.data import alignment
from deocc_jax.data.real_datasets import IMAGE_EXTENSIONS, DatasetFormatError, read_image

__all__ = [
    "FaceRecognizer",
    "Face",
    "Prepared",
    "Verification",
    "Match",
    "Gallery",
    "NoFaceError",
    "ImageErrors",
    "ImageTooLargeError",
    "MAX_IMAGE_PIXELS",
    "check_image_size",
    "IMAGE_EXTENSIONS",
    "INPUT_KINDS",
    "ALIGN_MODES",
    "calibration_path",
    "read_calibration",
    "read_landmarks_file",
    "lookup_landmarks",
    "Pair",
    "PairScore",
    "read_pairs_file",
    "list_images",
]

ImageLike = Union[str, os.PathLike, np.ndarray]
MaskLike = Union[str, os.PathLike, np.ndarray]

INPUT_KINDS = ("completed_predicted", "completed", "masked", "clean")
ALIGN_MODES = ("none", "landmarks", "dlib", "mtcnn")
MASK_SOURCES = ("given", "predicted", "none")


class NoFaceError(ValueError):
  """dlib found no face in an image (the message names the file)."""


class ImageErrors(ValueError):
  """Some images of a batch / folder could not be used; ``errors`` = [(path, message)]."""

  def __init__(self, message: str, errors: Sequence[tuple[str, str]]):
    super().__init__(message)
    self.errors = list(errors)


# ------------------------------------------------------------------ calibration

def calibration_path(workdir: str) -> str:
  return os.path.join(workdir, "results", "calibration.json")


def read_calibration(workdir: str) -> dict[str, Any]:
  """``<workdir>/results/calibration.json`` (written by ``python -m deocc_jax.evaluate``);
  ``workdir`` may be a local path or an epath URI (``gs://...``)."""
  path = calibration_path(workdir)
  if not epath.Path(path).exists():
    raise FileNotFoundError(
        f"no threshold calibration at {path}: run the evaluation first "
        f"(`python -m deocc_jax.evaluate --config=<the run's config> --workdir={workdir}`) "
        f"or pass an explicit threshold (threshold= / --threshold=)")
  try:
    cal = json.loads(epath.Path(path).read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: cannot read the calibration ({e})") from e
  if not isinstance(cal, dict) or not isinstance(cal.get("thresholds"), dict):
    raise ValueError(f"{path}: no 'thresholds' table; re-run `python -m deocc_jax.evaluate`")
  return cal


# ------------------------------------------------------------------ small helpers

def _name(x: Any, default: str) -> str:
  return os.fspath(x) if isinstance(x, (str, os.PathLike)) else default


def _as_rgb_uint8(image: np.ndarray, name: str) -> np.ndarray:
  img = np.asarray(image)
  if img.dtype != np.uint8:
    raise ValueError(f"{name}: image arrays must be uint8 (H, W, 3), got {img.dtype} "
                     f"{img.shape}")
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=-1)
  elif img.ndim == 3 and img.shape[2] == 1:
    img = np.repeat(img, 3, axis=-1)
  elif img.ndim == 3 and img.shape[2] == 4:
    img = img[..., :3]
  if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
    raise ValueError(f"{name}: image must be (H, W, 3) RGB, got shape {np.shape(image)}")
  return img


# Largest image (width x height) inference decodes; checked from the file's
# header before decoding, so a huge or decompression-bomb file costs nothing.
MAX_IMAGE_PIXELS = 40_000_000


class ImageTooLargeError(DatasetFormatError):
  """An image file over :data:`MAX_IMAGE_PIXELS` (or PIL's bomb limit)."""


def check_image_size(path: str, max_pixels: int | None = None, what: str = "image") -> None:
  """Reads only the header of ``path`` and raises :class:`ImageTooLargeError`
  if it has more than ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`) pixels."""
  import warnings

  from PIL import Image, UnidentifiedImageError
  cap = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{what} file not found: {path}")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(path) as im:  # lazy: parses the header only
        w, h = im.size
  except Image.DecompressionBombError as e:
    raise ImageTooLargeError(f"{path}: {what} is too large to decode ({e}); the cap is "
                             f"{cap} pixels (inference.MAX_IMAGE_PIXELS)") from None
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DatasetFormatError(f"{path}: cannot decode {what} ({e})") from e
  if w * h > cap:
    raise ImageTooLargeError(f"{path}: {what} is {w}x{h} = {w * h} pixels, over the cap of "
                             f"{cap} (inference.MAX_IMAGE_PIXELS); downscale it first")


def _read_mask_file(path: str) -> np.ndarray:
  """A mask file as float32 (H, W) in [0, 1]: its alpha channel when it has one,
  else its gray level."""
  from PIL import Image, UnidentifiedImageError
  if not os.path.exists(path):
    raise FileNotFoundError(f"mask file not found: {path}")
  check_image_size(path, what="mask image")
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
      if im.mode in ("RGBA", "LA", "PA"):
        return np.asarray(im.getchannel("A"), np.float32) / 255.0
      if im.mode in ("I;16", "I", "F", "1"):
        arr = np.asarray(im, np.float64)
        peak = {"I;16": 65535.0, "1": 1.0}.get(im.mode, max(float(arr.max()), 1.0))
        return (arr / peak).astype(np.float32)
      return np.asarray(im.convert("L"), np.float32) / 255.0
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DatasetFormatError(f"{path}: cannot decode mask image ({e})") from e


def _mask_array(mask: np.ndarray, name: str) -> np.ndarray:
  """A mask array -> float32 (H, W) in [0, 1]."""
  m = np.asarray(mask)
  if m.ndim == 3 and m.shape[2] == 4:
    m = m[..., 3]
  elif m.ndim == 3 and m.shape[2] in (1, 3):
    m = m.astype(np.float32).mean(axis=-1) if m.dtype != np.bool_ else m.any(axis=-1)
  if m.ndim != 2:
    raise ValueError(f"{name}: a mask must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                     f"got shape {np.shape(mask)}")
  if m.dtype == np.bool_:
    return m.astype(np.float32)
  if np.asarray(mask).dtype == np.uint8:
    return m.astype(np.float32) / 255.0
  if not np.issubdtype(m.dtype, np.number):
    raise ValueError(f"{name}: mask dtype {m.dtype} is not numeric")
  return m.astype(np.float32)


def _resize_matrix(size: int, out: int) -> np.ndarray:
  """Output->input map of a square resize ``size`` -> ``out`` (pixel centres aligned)."""
  s = size / out
  return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]], np.float64)


def _hw(shape: Sequence[int]) -> str:
  return f"{shape[1]}x{shape[0]}"


def list_images(folder: str) -> list[str]:
  """Image files under ``folder`` (recursive, ``IMAGE_EXTENSIONS``), relative
  paths with '/' separators, sorted; hidden files and folders are skipped."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"image folder not found: {folder}")
  out = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for f in files:
      if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
        out.append(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/"))
  return sorted(out)


def _label_of(rel_path: str) -> str:
  parts = rel_path.split("/")
  return parts[0] if len(parts) > 1 else ""


# ------------------------------------------------------------------ batched jit

class _Batched:
  """Runs a batch function jitted, in chunks padded to power-of-two sizes (a
  multiple of the mesh's device count; few compilations), sharded over ``mesh``."""

  def __init__(self, fn: Callable[..., Any], num_args: int, mesh: Any = None,
               batch_size: int = 32):
    import jax
    self.multiple = 1
    if mesh is None:
      self.jit = jax.jit(fn)
    else:
      from deocc_jax.training import sharding as shard_lib
      self.multiple = int(mesh.devices.size)
      data = shard_lib.data_sharding(mesh)
      self.jit = jax.jit(fn, in_shardings=(data,) * num_args,
                         out_shardings=shard_lib.replicated(mesh))
    m = self.multiple
    self.max_batch = max(m, -(-int(batch_size) // m) * m)

  def _bucket(self, n: int) -> int:
    b = self.multiple
    while b < n:
      b *= 2
    return min(b, self.max_batch)  # n <= max_batch

  def __call__(self, *arrays: np.ndarray) -> np.ndarray:
    import jax
    n = len(arrays[0])
    outs = []
    for start in range(0, n, self.max_batch):
      chunk = [np.asarray(a[start:start + self.max_batch], np.float32) for a in arrays]
      k = len(chunk[0])
      size = self._bucket(k)
      if size > k:  # pad by repeating the last row
        chunk = [np.concatenate([c, np.repeat(c[-1:], size - k, axis=0)]) for c in chunk]
      outs.append(np.asarray(jax.device_get(self.jit(*chunk)))[:k])
    return np.concatenate(outs).astype(np.float32)


# ------------------------------------------------------------------ results

@dataclasses.dataclass(frozen=True)
class Face:
  """An aligned face (and its aligned mask, when one was given)."""
  face: np.ndarray              # (R, R, 3) float32 in [-1, 1]
  mask: np.ndarray | None       # (R, R, 1) float32 {0, 1}, or None
  source: str                   # file path, or a name for arrays
  shape: tuple[int, int]        # original (H, W)
  transform: np.ndarray         # (2, 3) crop -> original image pixel map
  landmarks: np.ndarray | None  # (5, 2) landmarks in the original image (given / detected)


@dataclasses.dataclass(frozen=True)
class Prepared:
  """Faces ready for the recogniser."""
  faces: np.ndarray             # (N, R, R, 3) the aligned inputs
  completed: np.ndarray         # (N, R, R, 3) what is embedded
  masks: np.ndarray             # (N, R, R, 1) the masks used (zeros for 'none')
  mask_sources: tuple[str, ...]  # per face: 'given' | 'predicted' | 'none'


@dataclasses.dataclass(frozen=True)
class Verification:
  score: float                  # cosine similarity (float64)
  threshold: float
  same: bool                    # score >= threshold
  masks: tuple[np.ndarray, np.ndarray]          # (R, R, 1) masks used
  mask_sources: tuple[str, str]                 # 'given' | 'predicted' | 'none'
  completed: tuple[np.ndarray, np.ndarray]      # (R, R, 3) the faces embedded

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready summary (scores and mask summaries, no arrays)."""
    return {"score": self.score, "threshold": self.threshold, "same": self.same,
            "mask_a": {"source": self.mask_sources[0],
                       "coverage": float(np.mean(self.masks[0] > 0.5))},
            "mask_b": {"source": self.mask_sources[1],
                       "coverage": float(np.mean(self.masks[1] > 0.5))}}


class Match(NamedTuple):
  label: str
  score: float


@dataclasses.dataclass(frozen=True)
class Gallery:
  """Embedded images: ``labels`` are first-level subfolder names ('' at the root)."""
  embeddings: np.ndarray        # (N, D) float32
  paths: tuple[str, ...]        # relative to the folder, '/' separators
  labels: tuple[str, ...]
  skipped: tuple[tuple[str, str], ...] = ()   # (relative path, error) left out
  recognizer: str = ""
  input_kind: str = ""
  source: str = ""              # where it came from (folder or .npz)

  def identities(self) -> tuple[str, ...]:
    """Identity key per image: the label, or the path for images at the root."""
    return tuple(lab if lab else p for lab, p in zip(self.labels, self.paths))

  def save(self, out_path: str) -> None:
    """Writes an .npz atomically (temporary file + ``os.replace``)."""
    out_path = os.fspath(out_path)
    d = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(d):
      raise FileNotFoundError(f"output folder does not exist: {d}")
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".npz", dir=d)
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(f, embeddings=np.asarray(self.embeddings, np.float32),
                 paths=np.array(self.paths, dtype=str).reshape(-1),
                 labels=np.array(self.labels, dtype=str).reshape(-1),
                 skipped_paths=np.array([p for p, _ in self.skipped], dtype=str).reshape(-1),
                 skipped_errors=np.array([e for _, e in self.skipped], dtype=str).reshape(-1),
                 recognizer=np.array(self.recognizer), input_kind=np.array(self.input_kind))
      os.replace(tmp, out_path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise

  @classmethod
  def load(cls, path: str) -> Gallery:
    """Reads an .npz written by :meth:`save` / ``embed_folder``."""
    path = os.fspath(path)
    if not os.path.exists(path):
      raise FileNotFoundError(f"gallery file not found: {path}")
    try:
      with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise DatasetFormatError(f"{path}: not a gallery .npz ({e})") from e
    missing = [k for k in ("embeddings", "paths", "labels") if k not in data]
    if missing:
      raise DatasetFormatError(f"{path}: not a gallery .npz (missing {missing}; write one "
                               f"with `python -m deocc_jax.infer embed`)")
    emb = data["embeddings"]
    n = len(emb)
    if emb.ndim != 2 or len(data["paths"]) != n or len(data["labels"]) != n:
      raise DatasetFormatError(f"{path}: embeddings {emb.shape}, {len(data['paths'])} paths "
                               f"and {len(data['labels'])} labels do not match")
    return cls(emb.astype(np.float32), tuple(str(p) for p in data["paths"]),
               tuple(str(lab) for lab in data["labels"]),
               tuple((str(p), str(e)) for p, e in zip(data.get("skipped_paths", ()),
                                                      data.get("skipped_errors", ()))),
               str(data.get("recognizer", "")), str(data.get("input_kind", "")), path)


# ------------------------------------------------------------------ the recogniser

def read_landmarks_file(path: str) -> dict[str, np.ndarray]:
  """Reads ``PATH x1 y1 ... x5 y5`` lines (CelebA order, pixels) into a table.

  CelebA's ``list_landmarks_align_celeba.txt`` header (a count line and a
  line of column names) is skipped. An image matches an entry when its path
  ends with the entry's path components (``a.jpg`` matches ``dir/a.jpg``;
  the longest match wins); see :func:`lookup_landmarks`.
  """
  table: dict[str, np.ndarray] = {}
  try:
    with open(path) as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise FileNotFoundError(f"landmarks file not found or unreadable: {path} ({e})") from e
  for no, line in enumerate(lines, 1):
    tok = line.split()
    if not tok or (no <= 2 and (len(tok) == 1 or len(tok) == 10)):
      continue  # blank, or CelebA's count / column-name header
    if len(tok) != 11:
      raise ValueError(f"{path}:{no}: expected 'PATH x1 y1 ... x5 y5' (11 fields), "
                       f"got {len(tok)}")
    try:
      lm = np.array([float(t) for t in tok[1:]], np.float64).reshape(5, 2)
    except ValueError as e:
      raise ValueError(f"{path}:{no}: landmark values must be numbers ({e})") from e
    if not np.isfinite(lm).all():
      raise ValueError(f"{path}:{no}: landmarks must be finite")
    table[os.path.normpath(tok[0])] = lm
  if not table:
    raise ValueError(f"{path}: no landmark lines ('PATH x1 y1 ... x5 y5')")
  return table


class Pair(NamedTuple):
  """One line of a pairs file (paths resolved; masks None when not given)."""
  image_a: str
  image_b: str
  mask_a: str | None = None
  mask_b: str | None = None
  line: int = 0


class PairScore(NamedTuple):
  """The decision on one pair of :meth:`FaceRecognizer.verify_pairs` (no arrays)."""
  score: float
  threshold: float
  same: bool
  mask_sources: tuple[str, str]
  mask_coverages: tuple[float, float]

  def to_dict(self) -> dict[str, Any]:
    """The same fields as :meth:`Verification.to_dict`."""
    return {"score": self.score, "threshold": self.threshold, "same": self.same,
            "mask_a": {"source": self.mask_sources[0], "coverage": self.mask_coverages[0]},
            "mask_b": {"source": self.mask_sources[1], "coverage": self.mask_coverages[1]}}


def read_pairs_file(path: str) -> list[Pair]:
  """Reads a pairs file: one pair per line, ``IMG_A IMG_B [MASK_A [MASK_B]]``.

  Fields are separated by whitespace (paths without spaces); ``-`` stands for
  "no mask" (``a.png b.png - b_mask.png``); blank lines and lines starting with
  ``#`` are skipped. Relative paths are relative to the pairs file's folder.
  Errors name the file and line.
  """
  try:
    with open(path) as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise FileNotFoundError(f"pairs file not found or unreadable: {path} ({e})") from e
  base = os.path.dirname(os.path.abspath(path))

  def resolve(p: str) -> str | None:
    return None if p == "-" else os.path.normpath(os.path.join(base, p))

  pairs = []
  for no, line in enumerate(lines, 1):
    tok = line.split()
    if not tok or tok[0].startswith("#"):
      continue
    if not 2 <= len(tok) <= 4:
      raise ValueError(f"{path}:{no}: expected 'IMG_A IMG_B [MASK_A [MASK_B]]' (2 to 4 "
                       f"fields), got {len(tok)}")
    if "-" in tok[:2]:
      raise ValueError(f"{path}:{no}: '-' stands for a missing mask, not an image")
    a, b = resolve(tok[0]), resolve(tok[1])
    ma = resolve(tok[2]) if len(tok) > 2 else None
    mb = resolve(tok[3]) if len(tok) > 3 else None
    pairs.append(Pair(a, b, ma, mb, no))
  if not pairs:
    raise ValueError(f"{path}: no pairs ('IMG_A IMG_B [MASK_A [MASK_B]]' lines)")
  return pairs


def lookup_landmarks(table: dict[str, np.ndarray], image_path: str) -> np.ndarray | None:
  """The landmarks of ``image_path`` in ``table`` (longest path-suffix match) or None."""
  parts = os.path.normpath(os.fspath(image_path)).split(os.sep)
  best, best_len = None, 0
  for key, lm in table.items():
    kp = key.split(os.sep)
    if len(kp) > best_len and parts[-len(kp):] == kp:
      best, best_len = lm, len(kp)
  return best


class FaceRecognizer:
  """Frozen pipeline: align -> (segment) -> complete -> embed -> cosine score -> decide.

  Args:
    embed: (B, R, R, 3) float32 [-1, 1] -> (B, D) L2-normalised embeddings.
    resolution: R.
    threshold: cosine threshold, ``same = score >= threshold``.
    template_landmarks: (5, 2) landmarks of the training crop at R x R.
    complete: G, (masked (B,R,R,3), mask (B,R,R,1)) -> completed, or None.
    segment: masked (B,R,R,3) -> binary mask (B,R,R,1), or None.
    name: the recogniser's key (checked against saved galleries).
    input_kind: 'auto' or one of ``INPUT_KINDS`` (see the module docstring).
    mesh: a device mesh to shard batches over (None: the default device).
    batch_size: largest batch run at once.

  ``landmarks_table`` (default None): from :func:`read_landmarks_file`; image
  files found in it are aligned by its landmarks.
  """
  landmarks_table: dict[str, np.ndarray] | None = None

  def __init__(self, embed: Callable[[Any], Any], resolution: int, threshold: float,
               template_landmarks: np.ndarray, complete: Callable[[Any, Any], Any] | None = None,
               segment: Callable[[Any], Any] | None = None, name: str = "",
               input_kind: str = "auto", mesh: Any = None, batch_size: int = 32):
    self.resolution = int(resolution)
    if self.resolution < 2:
      raise ValueError(f"resolution must be >= 2, got {resolution}")
    self.threshold = float(threshold)
    if not math.isfinite(self.threshold):
      raise ValueError(f"threshold must be finite, got {threshold}")
    tpl = np.asarray(template_landmarks, np.float64)
    if tpl.shape != (5, 2) or not np.isfinite(tpl).all():
      raise ValueError(f"template_landmarks must be finite (5, 2), got {tpl.shape}")
    self.template_landmarks = tpl
    self.input_kind = self.resolve_input_kind(input_kind, complete is not None,
                                              segment is not None)
    self.name = str(name)
    self.models: Any = None        # evaluation.models.Models when built by from_run
    self.calibration: dict[str, Any] | None = None
    self._embed = _Batched(embed, 1, mesh, batch_size)
    self._complete = None if complete is None else _Batched(complete, 2, mesh, batch_size)
    self._segment = None if segment is None else _Batched(segment, 1, mesh, batch_size)

  @staticmethod
  def resolve_input_kind(input_kind: str, has_generator: bool, has_segmenter: bool) -> str:
    """'auto' -> 'completed_predicted' (G + segmenter), 'completed' (G) or 'masked'."""
    if input_kind == "auto":
      if has_generator:
        return "completed_predicted" if has_segmenter else "completed"
      return "masked"
    if input_kind not in INPUT_KINDS:
      raise ValueError(f"input_kind must be 'auto' or one of {INPUT_KINDS}, got {input_kind!r}")
    if input_kind in ("completed", "completed_predicted") and not has_generator:
      raise ValueError(f"input_kind {input_kind!r} needs the de-occlusion generator "
                       "(stage 'deocclusion'), which this run does not have")
    if input_kind == "completed_predicted" and not has_segmenter:
      raise ValueError("input_kind 'completed_predicted' needs the occlusion segmenter "
                       "(stage 'segmentation'), which this run does not have")
    return input_kind

  @classmethod
  def from_run(cls, config: Any = None, workdir: str | os.PathLike | None = None,
               recognizer: str = "student_soft", checkpoint: str | int = "latest",
               threshold: float | None = None, input_kind: str = "auto",
               batch_size: int = 32) -> FaceRecognizer:
    """Restores ``recognizer`` (and G, the segmenter) of the run in ``workdir``.

    ``FaceRecognizer.from_run(workdir)`` (or ``config=None``) reads the run's
    own config, ``<workdir>/config.json`` (written when training started);
    ``from_run(config, workdir)`` uses the given one. The threshold is
    ``thresholds[recognizer][input_kind]`` of ``<workdir>/results/calibration.json``
    unless ``threshold`` is given.
    """
    from deocc_jax.evaluation.models import RECOGNIZERS, restore_models
    from deocc_jax.training import stages
    if workdir is None and isinstance(config, (str, os.PathLike, epath.Path)):
      config, workdir = None, config  # from_run(workdir)
    if workdir is None:
      raise ValueError("from_run needs the run's workdir")
    if recognizer not in RECOGNIZERS:
      raise ValueError(f"unknown recognizer {recognizer!r}; choose from {list(RECOGNIZERS)}")
    workdir = os.fspath(workdir)
    if not epath.Path(workdir).is_dir():
      raise FileNotFoundError(f"workdir {workdir!r} does not exist")
    if config is None:
      from deocc_jax.training import workdir as workdir_lib
      config = workdir_lib.read_config(workdir)
    cal = None
    if threshold is None:
      cal = read_calibration(workdir)  # fail before the slow restore
    models = restore_models(config, workdir, checkpoint, recognizers=(recognizer,))
    kind = cls.resolve_input_kind(input_kind, models.complete is not None,
                                  models.segment is not None)
    if cal is not None:
      path = calibration_path(workdir)
      if "resolution" in cal and int(cal["resolution"]) != models.resolution:
        raise ValueError(f"{path} was calibrated at resolution {cal['resolution']}, the "
                         f"config's is {models.resolution}: re-run `python -m "
                         f"deocc_jax.evaluate` or check --config")
      per = cal["thresholds"].get(recognizer)
      if per is None:
        raise ValueError(f"{path} has no thresholds for recognizer {recognizer!r} (it has "
                         f"{sorted(cal['thresholds'])}); re-run `python -m deocc_jax.evaluate` "
                         f"or pass threshold=")
      if kind not in per:
        raise ValueError(f"{path} has no {recognizer!r} threshold for input {kind!r} (it has "
                         f"{sorted(per)}); pass input_kind= or threshold=")
      threshold = float(per[kind])
    fr = cls(models.recognizers[recognizer], models.resolution, float(threshold),
             models.mean_landmarks, models.complete, models.segment, name=recognizer,
             input_kind=kind, mesh=stages.make_mesh(config), batch_size=batch_size)
    fr.models = models
    fr.calibration = cal
    return fr

  def with_threshold(self, threshold: float) -> FaceRecognizer:
    """A copy deciding with another threshold (models shared, nothing recompiled)."""
    t = float(threshold)
    if not math.isfinite(t):
      raise ValueError(f"threshold must be finite, got {threshold}")
    out = copy.copy(self)
    out.threshold = t
    return out

  # ---------------------------------------------------------------- loading

  def _transform(self, img: np.ndarray, name: str, landmarks: np.ndarray | None,
                 align: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(crop -> image map, landmarks used) for one image."""
    r = self.resolution
    if align is None:
      align = "none" if landmarks is None else "landmarks"
    if align not in ALIGN_MODES:
      raise ValueError(f"align must be one of {ALIGN_MODES}, got {align!r}")
    if align == "none":
      if landmarks is not None:
        raise ValueError(f"{name}: landmarks given with align='none'; use align='landmarks'")
      h, w = img.shape[:2]
      if h != w:
        raise ValueError(f"{name} is {_hw(img.shape)}, not square: with align='none' an "
                         f"image must be an aligned square face crop (it is resized to "
                         f"{r}x{r}); use align='dlib' or give landmarks")
      return _resize_matrix(h, r), None
    if align in ("dlib", "mtcnn"):
      if landmarks is not None:
        raise ValueError(f"{name}: landmarks given with align={align!r}; use align='landmarks'")
      if align == "dlib":
        detect = alignment.detect_landmarks_dlib
      else:  # weights load (or fail: MTCNNWeightsError) before detection
        from deocc_jax.detection import mtcnn
        detect = mtcnn.default_detector().detect
      try:
        faces = detect(img)
        if align == "mtcnn":
          if len(faces) == 0:
            raise ValueError(f"MTCNN found no face in the {img.shape[1]}x{img.shape[0]} image")
          faces = faces.landmarks.astype(np.float64)
      except ValueError as e:
        raise NoFaceError(f"{name}: no face found ({e})") from e
      # the largest face: biggest landmark extent
      extent = [np.ptp(f[:, 0]) * np.ptp(f[:, 1]) + np.ptp(f[:, 0]) + np.ptp(f[:, 1])
                for f in faces]
      landmarks = faces[int(np.argmax(extent))]
    else:
      if landmarks is None:
        raise ValueError(f"{name}: align='landmarks' needs landmarks")
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (5, 2) or not np.isfinite(lm).all():
      raise ValueError(f"{name}: landmarks must be finite (5, 2) (x, y) pixels, got "
                       f"shape {lm.shape}")
    try:
      m = alignment.estimate_similarity(self.template_landmarks, lm)
    except ValueError as e:
      raise ValueError(f"{name}: cannot align to these landmarks ({e})") from e
    return m, lm

  def load(self, image: ImageLike, mask: MaskLike | None = None,
           landmarks: np.ndarray | None = None, align: str | None = None,
           name: str | None = None) -> Face:
    """Reads and aligns one face (and its mask, warped the same way)."""
    src = name or _name(image, "image")
    if isinstance(image, (str, os.PathLike)):
      check_image_size(os.fspath(image))  # header only, before decoding
      img = read_image(os.fspath(image))
    else:
      img = _as_rgb_uint8(image, src)
    if (landmarks is None and self.landmarks_table is not None
        and isinstance(image, (str, os.PathLike))):
      listed = lookup_landmarks(self.landmarks_table, os.fspath(image))
      if listed is not None:  # the landmarks file wins over detection
        landmarks, align = listed, "landmarks"
    m, lm = self._transform(img, src, landmarks, align)
    r = self.resolution
    face = alignment.warp_affine_pil(img, m, (r, r), antialias=True)
    face = (face * np.float32(2.0 / 255.0) - np.float32(1.0)).astype(np.float32)
    aligned_mask = None
    if mask is not None:
      aligned_mask = self.load_mask(mask, img.shape[:2], src, m)
    return Face(face, aligned_mask, src, tuple(img.shape[:2]), m, lm)

  def load_face(self, image: ImageLike, landmarks: np.ndarray | None = None,
                align: str | None = None) -> np.ndarray:
    """(R, R, 3) float32 [-1, 1] aligned face (see the module docstring for ``align``)."""
    return self.load(image, landmarks=landmarks, align=align).face

  def load_mask(self, mask: MaskLike, like_shape: Sequence[int], source_name: str = "image",
                transform: np.ndarray | None = None) -> np.ndarray:
    """(R, R, 1) float32 {0, 1} mask of an image of original size ``like_shape``
    (H, W), warped by ``transform`` (the face's crop -> image map; default:
    the square resize of align='none')."""
    mname = _name(mask, "(array)")
    raw = _read_mask_file(os.fspath(mask)) if isinstance(mask, (str, os.PathLike)) \
        else _mask_array(mask, mname)
    h, w = int(like_shape[0]), int(like_shape[1])
    if raw.shape != (h, w):
      raise ValueError(f"mask {mname} is {_hw(raw.shape)} but image {source_name} is "
                       f"{w}x{h}: a mask must have its image's size")
    if transform is None:
      if h != w:
        raise ValueError(f"image {source_name} is {w}x{h}, not square: pass its transform")
      transform = _resize_matrix(h, self.resolution)
    binary = (raw > 0.5).astype(np.float32)
    r = self.resolution
    warped = alignment.warp_affine_pil(binary, transform, (r, r), antialias=True)
    return (warped > 0.5).astype(np.float32)[..., None]

  def load_many(self, images: Sequence[ImageLike] | np.ndarray,
                masks: Sequence[MaskLike | None] | None = None,
                landmarks: Sequence[np.ndarray | None] | None = None,
                align: str | None = None, names: Sequence[str] | None = None) -> list[Face]:
    """:meth:`load` over a list (or an (N, H, W, 3) uint8 array)."""
    n = len(images)
    for what, seq in (("masks", masks), ("landmarks", landmarks), ("names", names)):
      if seq is not None and len(seq) != n:
        raise ValueError(f"{n} images but {len(seq)} {what}")
    return [self.load(images[i], None if masks is None else masks[i],
                      None if landmarks is None else landmarks[i], align,
                      None if names is None else names[i] if names[i] else None)
            for i in range(n)]

  # ---------------------------------------------------------------- models

  def predict_masks(self, faces: np.ndarray) -> np.ndarray:
    """The segmenter's binary masks (N, R, R, 1) of aligned faces (N, R, R, 3)."""
    if self._segment is None:
      raise ValueError("this run has no occlusion segmenter (stage 'segmentation')")
    return self._segment(self._check_faces(faces))

  def _check_faces(self, faces: Any) -> np.ndarray:
    x = np.asarray(faces, np.float32)
    r = self.resolution
    if x.ndim == 3:
      x = x[None]
    if x.ndim != 4 or x.shape[1:] != (r, r, 3):
      raise ValueError(f"aligned faces must be (N, {r}, {r}, 3) float in [-1, 1], got "
                       f"{np.shape(faces)}; load images with load_face()")
    return x

  def prepare(self, faces: Sequence[Face] | np.ndarray,
              masks: Sequence[np.ndarray | None] | np.ndarray | None = None) -> Prepared:
    """Completes aligned faces per ``input_kind``: given masks first (``Face.mask``
    or ``masks``, (R, R, 1) each or None), else the segmenter's."""
    if len(faces) and isinstance(faces[0], Face):
      if masks is None:
        masks = [f.mask for f in faces]
      faces = np.stack([f.face for f in faces])
    x = self._check_faces(faces)
    n, r = len(x), self.resolution
    given: list[np.ndarray | None] = [None] * n if masks is None else list(masks)
    if len(given) != n:
      raise ValueError(f"{n} faces but {len(given)} masks")
    m = np.zeros((n, r, r, 1), np.float32)
    sources = ["none"] * n
    for i, g in enumerate(given):
      if g is not None:
        g = np.asarray(g, np.float32)
        if g.shape == (r, r):
          g = g[..., None]
        if g.shape != (r, r, 1):
          raise ValueError(f"mask {i} must be ({r}, {r}, 1) (aligned; see load_mask), got "
                           f"{g.shape}")
        m[i] = g > 0.5
        sources[i] = "given"
    if self.input_kind == "completed_predicted":
      todo = [i for i in range(n) if sources[i] == "none"]
      if todo:
        m[todo] = self._segment(x[todo])
        for i in todo:
          sources[i] = "predicted"
    completed = x.copy()
    if self.input_kind in ("completed", "completed_predicted"):
      todo = [i for i in range(n) if sources[i] != "none"]
      if todo:
        completed[todo] = self._complete(x[todo], m[todo])
    return Prepared(x, completed, m, tuple(sources))

  def embed_prepared(self, images: np.ndarray) -> np.ndarray:
    """(N, D) float32 embeddings of (N, R, R, 3) images, as they are."""
    return self._embed(self._check_faces(images))

  def embed(self, images: Sequence[ImageLike] | np.ndarray,
            masks: Sequence[MaskLike | None] | None = None, align: str | None = None,
            landmarks: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """(N, D) float32 embeddings: load -> prepare -> embed."""
    faces = self.load_many(images, masks, landmarks, align)
    if not faces:
      raise ValueError("no images to embed")
    return self.embed_prepared(self.prepare(faces).completed)

  # ---------------------------------------------------------------- decisions

  @staticmethod
  def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na = np.maximum(np.linalg.norm(a, axis=-1), 1e-12)
    nb = np.maximum(np.linalg.norm(b, axis=-1), 1e-12)
    return np.sum(a * b, axis=-1) / (na * nb)

  def verify(self, image_a: ImageLike, image_b: ImageLike, mask_a: MaskLike | None = None,
             mask_b: MaskLike | None = None, align: str | None = None,
             landmarks_a: np.ndarray | None = None,
             landmarks_b: np.ndarray | None = None) -> Verification:
    """Same person? ``score`` = cosine of the two embeddings, ``same = score >= threshold``."""
    fa = self.load(image_a, mask_a, landmarks_a, align, name=_name(image_a, "image_a"))
    fb = self.load(image_b, mask_b, landmarks_b, align, name=_name(image_b, "image_b"))
    p = self.prepare([fa, fb])
    e = self.embed_prepared(p.completed)
    score = float(self.cosine(e[0], e[1]))
    return Verification(score, self.threshold, bool(score >= self.threshold),
                        (p.masks[0], p.masks[1]), (p.mask_sources[0], p.mask_sources[1]),
                        (p.completed[0], p.completed[1]))

  def verify_pairs(self, pairs: Sequence[Pair | tuple[str, ...]], align: str | None = None,
                   chunk: int = 256) -> list[PairScore]:
    """:meth:`verify` for many pairs in one pass: every distinct (image, mask)
    is loaded and embedded once, in batches of ``chunk`` pairs.

    Errors name the image and, for :class:`Pair` items, the pairs-file line.
    """
    items = [p if isinstance(p, Pair) else Pair(*p) for p in pairs]
    out: list[PairScore] = []
    for start in range(0, len(items), max(1, int(chunk))):
      part = items[start:start + max(1, int(chunk))]
      keys: dict[tuple[str, str | None], int] = {}
      faces: list[Face] = []
      for p in part:
        for img, mask in ((p.image_a, p.mask_a), (p.image_b, p.mask_b)):
          if (img, mask) not in keys:
            try:
              faces.append(self.load(img, mask, align=align))
            except (FileNotFoundError, ValueError) as e:
              if p.line and type(e) in (FileNotFoundError, ValueError):
                raise type(e)(f"pairs line {p.line}: {e}") from e
              raise  # subclasses (undecodable file, no face) already name the file
            keys[(img, mask)] = len(faces) - 1
      prepared = self.prepare(faces)
      emb = self.embed_prepared(prepared.completed)
      for p in part:
        i, j = keys[(p.image_a, p.mask_a)], keys[(p.image_b, p.mask_b)]
        score = float(self.cosine(emb[i], emb[j]))
        out.append(PairScore(score, self.threshold, bool(score >= self.threshold),
                             (prepared.mask_sources[i], prepared.mask_sources[j]),
                             (float(np.mean(prepared.masks[i] > 0.5)),
                              float(np.mean(prepared.masks[j] > 0.5)))))
    return out

  def gallery_from_folder(self, folder: str, align: str | None = None,
                          skip_errors: bool = False) -> Gallery:
    """Embeds every image under ``folder`` (labels: first-level subfolders).

    Unusable files raise one :class:`ImageErrors` listing all of them, or
    with ``skip_errors`` are left out and listed in ``Gallery.skipped``.
    """
    folder = os.fspath(folder)
    rel = list_images(folder)
    if not rel:
      raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
    faces, kept, errors = [], [], []
    for p in rel:
      try:
        faces.append(self.load(os.path.join(folder, p), align=align))
        kept.append(p)
      except (FileNotFoundError, ValueError) as e:  # DatasetFormatError, NoFaceError, size
        errors.append((p, str(e)))
    if errors and not skip_errors:
      listed = "; ".join(msg for _, msg in errors[:20])  # messages name the files
      more = f"; ... ({len(errors) - 20} more)" if len(errors) > 20 else ""
      raise ImageErrors(f"{len(errors)} of {len(rel)} images under {folder} cannot be used "
                        f"(nothing written; skip them with skip_errors=True / --skip_errors): "
                        f"{listed}{more}", errors)
    if not faces:
      raise ImageErrors(f"none of the {len(rel)} images under {folder} can be used: "
                        + "; ".join(msg for _, msg in errors[:20]), errors)
    emb = self.embed_prepared(self.prepare(faces).completed)
    return Gallery(emb, tuple(kept), tuple(_label_of(p) for p in kept), tuple(errors),
                   self.name, self.input_kind, folder)

  def embed_folder(self, folder: str, out_path: str, align: str | None = None,
                   skip_errors: bool = False) -> Gallery:
    """Embeds a folder (:meth:`gallery_from_folder`) and writes ``out_path`` (.npz,
    atomically): ``embeddings`` (N, D) float32, ``paths`` (relative), ``labels``,
    ``skipped_paths`` / ``skipped_errors``, ``recognizer``, ``input_kind``.
    Nothing is written on error."""
    g = self.gallery_from_folder(folder, align, skip_errors)
    g.save(out_path)
    return dataclasses.replace(g, source=os.fspath(out_path))

  def load_gallery(self, gallery: str | Gallery, align: str | None = None,
                   skip_errors: bool = False) -> Gallery:
    """A :class:`Gallery`, an .npz from :meth:`embed_folder`, or a folder to embed."""
    if isinstance(gallery, Gallery):
      g = gallery
    elif os.path.isdir(os.fspath(gallery)):
      g = self.gallery_from_folder(gallery, align, skip_errors)
    else:
      g = Gallery.load(gallery)
    if g.recognizer and self.name and g.recognizer != self.name:
      raise ValueError(f"gallery {g.source or '(in memory)'} was embedded by recognizer "
                       f"{g.recognizer!r}, not {self.name!r}: embeddings of different "
                       f"recognizers are not comparable; re-embed it")
    if len(g.embeddings) == 0:
      raise ValueError(f"gallery {g.source or '(in memory)'} is empty")
    return g

  def identify(self, probes: Sequence[ImageLike] | np.ndarray, gallery: str | Gallery,
               top_k: int = 5, masks: Sequence[MaskLike | None] | None = None,
               align: str | None = None, landmarks: Sequence[np.ndarray | None] | None = None,
               skip_errors: bool = False) -> list[list[Match]]:
    """Per probe, the ``top_k`` gallery identities, best first: (label, score) with an
    identity's score the max cosine over its gallery images (ties: smaller label
    first). Images at the gallery's root are each their own identity (their path)."""
    if int(top_k) < 1:
      raise ValueError(f"top_k must be >= 1, got {top_k}")
    g = self.load_gallery(gallery, align, skip_errors)
    p = self.embed(probes, masks, align, landmarks)
    if p.shape[1] != g.embeddings.shape[1]:
      raise ValueError(f"gallery {g.source or '(in memory)'} has {g.embeddings.shape[1]}-d "
                       f"embeddings, this recognizer {p.shape[1]}-d: re-embed it")
    from deocc_jax.evaluation import identification
    ids, scores = identification.identity_scores(g.embeddings, np.array(g.identities()), p)
    k = min(int(top_k), len(ids))
    out = []
    for row in scores:
      order = np.lexsort((np.arange(len(ids)), -row))[:k]  # score desc, label asc
      out.append([Match(str(ids[j]), float(row[j])) for j in order])
    return out
