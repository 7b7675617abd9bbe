"""Finding the face of an image before any recogniser loads: read, detect,
check (the model-free half of :meth:`FaceRecognizer.load`).

:func:`locate` reads an image once and returns its pixels with the 5
landmarks to align it by (given, listed in a landmarks file or detected), or
``None`` for an aligned crop (``align='none'``), after the input checks every
path shares (``deocc_jax.utils.face_warp``): a face at least
``MIN_EYE_DISTANCE`` (8) pixels between the eyes, an aligned crop square, at
least the model's input size and not blank. :func:`locate_all` does it for
many files, each read and detected once, so the CLI fails on a bad input (one
line, exit 2) before a model loads and the recogniser reuses what it found.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np

from deocc_jax.inference.images import ImageLike, NoFaceError, read_face_image
from deocc_jax.inference.input_files import lookup_landmarks
from deocc_jax.utils.face_warp import check_aligned_crop, check_face_size

__all__ = [
    "ALIGN_MODES",
    "WAYS_OUT",
    "Located",
    "DetectedFace",
    "align_mode",
    "detect_faces",
    "locate",
    "locate_all",
]

ALIGN_MODES = ("none", "landmarks", "dlib", "mtcnn")  # and 'mtcnn:FILE' (converted weights)
# Every other way to give a face, named when an image is not an aligned crop.
WAYS_OUT = (
    "detect and align the face (align='mtcnn' or 'dlib'; infer: --align=mtcnn / --align=dlib), "
    "give its 5 landmarks (landmarks=...; infer: --landmarks=FILE) or crop the face square "
    "to at least the model's input size yourself"
)


@dataclasses.dataclass(frozen=True)
class DetectedFace:
  """One detected face: box (x1, y1, x2, y2), 5 landmarks, detector score."""

  box: tuple[float, float, float, float]
  landmarks: np.ndarray  # (5, 2) float64
  score: float

  def to_dict(self) -> dict[str, Any]:
    return {
        "box": [round(float(v), 2) for v in self.box],
        "landmarks": [[round(float(v), 2) for v in p] for p in self.landmarks],
        "score": float(self.score),
        "eye_distance": round(float(np.hypot(*(self.landmarks[1] - self.landmarks[0]))), 2),
    }


@dataclasses.dataclass(frozen=True)
class Located:
  """An image read once, with the landmarks to align it by (None: an aligned crop)."""

  image: np.ndarray  # (H, W, 3) uint8
  landmarks: np.ndarray | None  # (5, 2) float64, CelebA order
  faces: tuple[DetectedFace, ...] = ()  # every face detected, largest first


def align_mode(align: str) -> tuple[str, str | None]:
  """(mode, MTCNN weights file or None) of an align spec: one of ``ALIGN_MODES``,
  or ``'mtcnn:FILE'`` for MTCNN on a converted ``.npz`` (or a facenet-pytorch
  ``.pt``) instead of the facenet-pytorch wheel's weights."""
  mode, sep, weights = str(align).partition(":")
  if mode not in ALIGN_MODES or (sep and (mode != "mtcnn" or not weights)):
    raise ValueError(f"align must be one of {ALIGN_MODES} or 'mtcnn:FILE', got {align!r}")
  return mode, (weights or None)


def detect_faces(img: np.ndarray, align: str) -> list[DetectedFace]:
  """Every face dlib ('dlib') or MTCNN ('mtcnn', 'mtcnn:FILE') finds, largest
  first (may be empty)."""
  mode, weights = align_mode(align)
  if mode == "mtcnn":  # weights load (or fail: MTCNNWeightsError) before detection
    from deocc_jax.detection import mtcnn

    d = mtcnn.default_detector(weights).detect(img)
    faces = [
        DetectedFace(tuple(map(float, d.boxes[i])), d.landmarks[i].astype(np.float64), float(p))
        for i, p in enumerate(d.scores)
    ]
  elif mode == "dlib":
    from deocc_jax.data import alignment

    try:
      lms = alignment.detect_landmarks_dlib(img)
    except ValueError:
      lms = np.zeros((0, 5, 2))
    faces = []
    for lm in lms:  # dlib's HOG detector gives no score: its box from the landmarks
      lo, hi = lm.min(0), lm.max(0)
      pad = 0.5 * (hi - lo).max()
      faces.append(DetectedFace((*(lo - pad), *(hi + pad)), lm, 1.0))
  else:
    raise ValueError(f"detection needs align 'dlib' or 'mtcnn', got {align!r}")

  def extent(f: DetectedFace) -> float:
    x, y = np.ptp(f.landmarks[:, 0]), np.ptp(f.landmarks[:, 1])
    return float(x * y + x + y)

  return sorted(faces, key=extent, reverse=True)


def locate(
    image: ImageLike,
    name: str,
    resolution: int,
    align: str | None = None,
    landmarks: np.ndarray | None = None,
    landmarks_table: dict[str, np.ndarray] | None = None,
) -> Located:
  """Reads ``image`` and finds the landmarks to align it by (see the module docstring).

  Raises ``FileNotFoundError`` / ``ValueError`` subclasses naming ``name``:
  undecodable or oversized file, :class:`NoFaceError`, a face too small, an
  image that is not a usable aligned crop, bad landmarks.
  """
  img = read_face_image(image, name)
  if landmarks is None and landmarks_table is not None and isinstance(image, (str, os.PathLike)):
    listed = lookup_landmarks(landmarks_table, os.fspath(image))
    if listed is not None:  # the landmarks file wins over detection
      landmarks, align = listed, "landmarks"
  if align is None:
    align = "none" if landmarks is None else "landmarks"
  mode = align_mode(align)[0]
  if mode == "none":
    if landmarks is not None:
      raise ValueError(f"{name}: landmarks given with align='none'; use align='landmarks'")
    check_aligned_crop(img, resolution, name, WAYS_OUT)
    return Located(img, None)
  faces: list[DetectedFace] = []
  if mode in ("dlib", "mtcnn"):
    if landmarks is not None:
      raise ValueError(f"{name}: landmarks given with align={align!r}; use align='landmarks'")
    faces = detect_faces(img, align)
    if not faces:
      who = "MTCNN" if mode == "mtcnn" else "dlib's frontal face detector"
      raise NoFaceError(
          f"{name}: no face found ({who} found no face in the "
          f"{img.shape[1]}x{img.shape[0]} image)"
      )
    landmarks = faces[0].landmarks  # the largest face
  elif landmarks is None:
    raise ValueError(f"{name}: align='landmarks' needs landmarks")
  lm = np.asarray(landmarks, np.float64)
  if lm.shape != (5, 2) or not np.isfinite(lm).all():
    raise ValueError(f"{name}: landmarks must be finite (5, 2) (x, y) pixels, got shape {lm.shape}")
  check_face_size(lm, name, resolution)
  return Located(img, lm, tuple(faces))


def locate_all(
    paths: Sequence[str],
    resolution: int,
    align: str | None,
    landmarks_table: dict[str, np.ndarray] | None = None,
    progress: Callable[[Sequence[str]], Any] | None = None,
) -> dict[str, Located | Exception]:
  """:func:`locate` of each distinct path once; a failure is kept as its
  exception (the caller raises it or, skipping errors, reports it)."""
  out: dict[str, Located | Exception] = {}
  todo = list(dict.fromkeys(os.fspath(p) for p in paths))
  for p in progress(todo) if progress else todo:
    try:
      out[p] = locate(p, p, resolution, align, None, landmarks_table)
    except (FileNotFoundError, ValueError) as e:
      out[p] = e
  return out
