"""Readers for the user's real data sets, in their native on-disk formats.

Nothing is downloaded: point each reader at the folder you already have.

* CelebA: ``img_align_celeba/``, ``identity_CelebA.txt``,
  ``list_eval_partition.txt``, ``list_landmarks_align_celeba.txt``; official
  partition, or the paper's random 6:1 train/validation split.
* LFW: ``lfw/<Name>/<Name>_NNNN.jpg`` and ``pairs.txt`` (10 folds of 300
  matched + 300 mismatched pairs).
* AR face database: files named ``<m|w>-<person:03d>-<index:02d>.<ext>``;
  indices 1-13 (session 1) and 14-26 (session 2); 8-10 / 21-23 sunglasses,
  11-13 / 24-26 scarf, the rest unoccluded.
* A generic one-folder-per-identity layout, with an optional landmarks file.

CelebA can hold out a seeded set of identities (``holdout_identities``):
their images leave every other split and form the split ``'heldout'``, the
only CelebA faces the evaluation's verification / identification tables use
(the 6:1 image split shares every identity between train and validation).

LFW, AR and folders get CelebA's preprocessing (paper Sec. 4.1) when given
``align_to``, the training crop's 5-point template at the training
resolution: each face is warped by the least-squares similarity that maps its
5 landmarks (from the set's landmarks file, else from ``detector``) onto the
template, and the warped landmarks place the occluders.

Every reader is a random-access :class:`~deocc_jax.data.pipeline.FaceSource`
whose records (``image`` uint8 (R, R, 3), ``landmarks`` (5, 2), ``identity``)
feed the same grain pipeline as the synthetic faces. Bad input raises an
error naming the file (and line); grayscale, palette and RGBA images are
converted to RGB (the file formats are parsed by
:mod:`deocc_jax.data.dataset_formats`).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from deocc_jax.data import alignment
from deocc_jax.data.dataset_formats import (
    IMAGE_EXTENSIONS,
    DatasetFormatError,
    parse_ar_name,
    parse_landmarks_file,
    parse_lfw_pairs,
    parse_two_columns,
    read_image,
)
from deocc_jax.utils import face_geometry

# image (H, W, 3) uint8 -> (5, 2) landmarks (x, y) in CANONICAL_ORDER, or raises
# ValueError when it finds no face.
Detector = Callable[[np.ndarray], np.ndarray]

# Mean CelebA landmarks (left eye, right eye, nose, left / right mouth corner)
# relative to the default 178 x 178 crop; used where a set has no landmarks.
DEFAULT_RELATIVE_LANDMARKS = np.array(
    [[0.388, 0.511], [0.601, 0.511], [0.494, 0.646], [0.404, 0.742], [0.590, 0.742]], np.float32
)


def crop_and_resize(
    image: np.ndarray,
    landmarks: np.ndarray | None,
    box: tuple[float, float, float, float] | None,
    resolution: int,
) -> tuple[np.ndarray, np.ndarray | None]:
  """Crops ``box`` = (left, top, right, bottom) and resizes to a square."""
  h, w = image.shape[:2]
  if box is None:
    side = min(h, w)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
  l, t, r, b = box
  out = Image.fromarray(image).resize((resolution, resolution), Image.BILINEAR, box=(l, t, r, b))
  lm = None
  if landmarks is not None:
    lm = (np.asarray(landmarks, np.float32) - np.array([l, t], np.float32)) * np.array(
        [resolution / (r - l), resolution / (b - t)], np.float32
    )
  return np.asarray(out, np.uint8), lm


def largest_face(faces: np.ndarray) -> np.ndarray:
  """(F, 5, 2) detections -> the (5, 2) landmarks of the widest face."""
  faces = np.asarray(faces, np.float64)
  if faces.ndim == 2:
    return faces
  if faces.ndim != 3 or faces.shape[1:] != (5, 2) or not len(faces):
    raise ValueError(f"a detector must return (F, 5, 2) or (5, 2) landmarks, got {faces.shape}")
  span = faces[:, :, 0].max(1) - faces[:, :, 0].min(1)
  return faces[int(np.argmax(span))]


def detect_celeba5_dlib(image: np.ndarray) -> np.ndarray:
  """The widest face's five CelebA points from dlib's HOG detector and 68-point predictor."""
  from deocc_jax.data import dense_landmarks

  faces = alignment.detect_landmarks68_dlib(image)
  return largest_face(np.stack([dense_landmarks.canonical5_from_68(f) for f in faces]))


def make_detector(spec: str | Detector | None) -> Detector | None:
  """A landmark detector from a config value.

  ``''`` / ``'none'``: no detector; ``'dlib'``: dlib's HOG detector and its
  68-point predictor, reduced to CelebA's five points (eye centres, nose tip,
  mouth corners: ``dense_landmarks.canonical5_from_68``; dlib's own 5-point
  predictor marks eye corners and the nose base, not CelebA's points)
  (``pip install -e '.[dlib]'``; the widest face); ``'mtcnn'``: MTCNN on
  the installed facenet-pytorch wheel's weights, ``'mtcnn:PATH'`` on a converted
  ``.npz`` (``python -m deocc_jax.convert --arch mtcnn --out FILE.npz``) or a
  pnet/rnet/onet.pt folder (the widest face); ``'pkg.mod:fn'``:
  any function ``image (H, W, 3) uint8 -> (5, 2) or (F, 5, 2)`` landmarks
  (e.g. an MTCNN); a callable is returned as is.
  """
  if spec is None or callable(spec):
    return spec
  spec = str(spec).strip()
  if spec in ("", "none"):
    return None
  if spec == "dlib":
    return detect_celeba5_dlib
  if spec == "mtcnn" or spec.startswith("mtcnn:"):
    from deocc_jax.detection import mtcnn

    source = spec.partition(":")[2] or None
    mtcnn.default_detector(source)  # cached; a missing / unreadable file fails here, named
    return lambda image: largest_face(mtcnn.detect_landmarks_mtcnn(image, source))
  if ":" in spec:
    module, _, name = spec.partition(":")
    try:
      fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
      raise ValueError(
          f"landmark detector {spec!r}: cannot import {name!r} from " f"{module!r} ({e})"
      ) from e
    return lambda image: largest_face(fn(image))
  raise ValueError(
      f"unknown landmark detector {spec!r}; use '', 'dlib', 'mtcnn', 'mtcnn:FILE.npz' "
      "or 'package.module:fn'"
  )


def align_to_template(
    image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
  """Warps ``image`` so its 5 ``landmarks`` fit ``template`` (least squares
  similarity) in a ``resolution`` square; returns (face, its landmarks)."""
  m = face_geometry.estimate_similarity(template, landmarks)  # crop -> image
  out = alignment.warp_affine(image, m, (resolution, resolution))
  lm = face_geometry.apply_transform(face_geometry.invert_transform(m), landmarks)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8), lm.astype(np.float32)


@dataclasses.dataclass
class _ImageRecords:
  """Shared random-access logic: paths, labels, landmarks, crop, resolution.

  With ``align_to`` ((5, 2) template in output pixels) every face is aligned
  by its landmarks (file, else ``detector``); a face the detector misses falls
  back to the set's default layout in ``crop`` and is listed in
  ``undetected``. Without it, ``crop`` is cut out and resized.
  """

  paths: list[str]
  labels: np.ndarray
  landmarks: list[np.ndarray | None]
  resolution: int
  crop: tuple[float, float, float, float] | None
  align_to: np.ndarray | None = None
  detector: Detector | None = None

  def __post_init__(self):
    self.undetected: set[str] = set()
    if self.align_to is not None:
      self.align_to = np.asarray(self.align_to, np.float32)
      if self.align_to.shape != (5, 2):
        raise ValueError(
            f"align_to must be a (5, 2) landmark template, got " f"{self.align_to.shape}"
        )

  def __len__(self) -> int:
    return len(self.paths)

  @property
  def num_classes(self) -> int:
    return int(self.labels.max()) + 1 if len(self.labels) else 0

  def __repr__(self) -> str:
    # grain validates a restored iterator against repr(source): keep it stable.
    first = self.paths[0] if self.paths else ""
    aligned = "" if self.align_to is None else f", align_to={np.round(self.align_to, 2).tolist()}"
    return (
        f"{type(self).__name__}(records={len(self.paths)}, first={first!r}, "
        f"resolution={self.resolution}, crop={self.crop}{aligned})"
    )

  def _default_landmarks(self, image: np.ndarray) -> np.ndarray:
    """The mean CelebA layout inside ``crop`` (whole image centre square if None)."""
    h, w = image.shape[:2]
    l, t, r, b = (
        self.crop
        if self.crop is not None
        else ((w - min(h, w)) / 2, (h - min(h, w)) / 2, (w + min(h, w)) / 2, (h + min(h, w)) / 2)
    )
    return DEFAULT_RELATIVE_LANDMARKS * np.array([r - l, b - t], np.float32) + np.array(
        [l, t], np.float32
    )

  def _locate(self, index: int, image: np.ndarray) -> np.ndarray:
    """The landmarks face ``index`` is aligned by: its file's, else the
    detector's (kept, so a face is detected once), else the default layout
    (the face is listed in ``undetected``)."""
    lm = self.landmarks[index]
    if lm is None and self.detector is not None and self.paths[index] not in self.undetected:
      try:
        lm = largest_face(self.detector(image))
        self.landmarks[index] = lm = np.asarray(lm)
      except ValueError:  # no face found
        lm = None
    if lm is None:
      self.undetected.add(self.paths[index])
      lm = self._default_landmarks(image)
    return lm

  def locate(self, indices: Iterable[int] | None = None) -> None:
    """Finds the landmarks of faces ``indices`` (default all) now, keeping only
    the points, so ``undetected`` is complete before any face is read for use
    (an evaluation reads its faces batch by batch, each host only its own)."""
    if self.align_to is None or self.detector is None:
      return
    for i in range(len(self)) if indices is None else indices:
      i = int(i)
      if self.landmarks[i] is None and self.paths[i] not in self.undetected:
        self._locate(i, read_image(self.paths[i]))

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range [0, {len(self)})")
    path = self.paths[index]
    image = read_image(path)
    if self.align_to is not None:
      lm = self._locate(index, image)
      img, lm_out = align_to_template(
          image, np.asarray(lm, np.float64), self.align_to, self.resolution
      )
      return {
          "image": img,
          "landmarks": lm_out,
          "identity": np.int32(self.labels[index]),
          "path": path,
      }
    img, lm_out = crop_and_resize(image, self.landmarks[index], self.crop, self.resolution)
    if lm_out is None:
      lm_out = DEFAULT_RELATIVE_LANDMARKS * self.resolution
    return {
        "image": img,
        "landmarks": lm_out.astype(np.float32),
        "identity": np.int32(self.labels[index]),
        "path": self.paths[index],
    }


def _contiguous(labels: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
  names = sorted(set(labels))
  index = {n: i for i, n in enumerate(names)}
  return np.array([index[l] for l in labels], np.int32), names


class CelebA(_ImageRecords):
  """CelebA (aligned & cropped) in its native layout.

  Args:
    root: folder holding ``img_align_celeba/`` and the three annotation files.
    split: 'train' | 'validation' | 'test' | 'all' | 'heldout' | 'tuning'.
    partition: 'official' (``list_eval_partition.txt``: 0 train, 1 val,
      2 test) or 'random_6_1' (the paper: a random 6:1 train/validation split
      of all images; 'test' is then empty).
    resolution: output side; crop: box in the 178 x 218 image (default: the
      central 178 x 178 square, rows 20-198).
    holdout_identities: identities removed from every split before
      partitioning (a fraction in (0, 1) of all identities, or a count >= 1),
      drawn with ``seed``; their images are the split 'heldout'. The
      evaluation's tables use only these (no trained model saw them).
    tuning_identities: a second seeded pool (fraction or count of the
      identities not held out), likewise removed from every split: the split
      'tuning', where hyperparameters are chosen (``lambda_sweep``) without
      touching the held-out identities of the tables.
  """

  def __init__(
      self,
      root: str,
      split: str = "train",
      partition: str = "official",
      resolution: int = 64,
      seed: int = 0,
      crop: tuple[float, float, float, float] | None = (0, 20, 178, 198),
      holdout_identities: float = 0,
      tuning_identities: float = 0,
  ):
    img_dir = os.path.join(root, "img_align_celeba")
    if not os.path.isdir(img_dir):
      raise FileNotFoundError(f"CelebA image folder not found: {img_dir}")
    ids = parse_two_columns(os.path.join(root, "identity_CelebA.txt"))
    lms = parse_landmarks_file(os.path.join(root, "list_landmarks_align_celeba.txt"))
    files = sorted(ids)
    held = heldout_identity_set(sorted(set(ids.values())), holdout_identities, seed)
    rest = sorted(set(ids.values()) - held)
    tuning = heldout_identity_set(
        rest, tuning_identities, seed, salt=0x7E5E, name="tuning_identities"
    )
    self.heldout_identities = held
    self.tuning_identities = tuning
    if split in ("heldout", "tuning"):
      pool, field = (held, "holdout") if split == "heldout" else (tuning, "tuning")
      if not pool:
        raise ValueError(
            f"split {split!r} needs {field}_identities > 0 (config.data.{field}_identities)"
        )
      files = [f for f in files if ids[f] in pool]
      partition = "none"
    else:
      files = [f for f in files if ids[f] not in held and ids[f] not in tuning]
    if partition == "none":
      pass
    elif partition == "official":
      parts = parse_two_columns(os.path.join(root, "list_eval_partition.txt"))
      want = {"train": {0}, "validation": {1}, "test": {2}, "all": {0, 1, 2}}
      if split not in want:
        raise ValueError(f"unknown split {split!r}; choose train/validation/test/all")
      missing = [f for f in files if f not in parts]
      if missing:
        raise DatasetFormatError(
            f"{os.path.join(root, 'list_eval_partition.txt')}: "
            f"no partition for {missing[:5]} ({len(missing)} files)"
        )
      files = [f for f in files if parts[f] in want[split]]
    elif partition == "random_6_1":
      perm = np.random.default_rng([int(seed), 61]).permutation(len(files))
      n_train = int(round(len(files) * 6 / 7))
      chosen = {
          "train": perm[:n_train],
          "validation": perm[n_train:],
          "test": perm[:0],
          "all": perm,
      }
      if split not in chosen:
        raise ValueError(f"unknown split {split!r}; choose train/validation/test/all")
      files = [files[i] for i in np.sort(chosen[split])]
    else:
      raise ValueError(f"unknown partition {partition!r}; choose 'official' or 'random_6_1'")
    no_lm = [f for f in files if f not in lms]
    if no_lm:
      raise DatasetFormatError(
          f"{os.path.join(root, 'list_landmarks_align_celeba.txt')}: "
          f"no landmarks for {no_lm[:5]} ({len(no_lm)} files)"
      )
    labels, self.identity_names = _contiguous([ids[f] for f in files])
    super().__init__(
        [os.path.join(img_dir, f) for f in files], labels, [lms[f] for f in files], resolution, crop
    )


def heldout_identity_set(
    identities: Sequence[Any],
    holdout: float,
    seed: int,
    salt: int = 0x4E1D,
    name: str = "holdout_identities",
) -> set[Any]:
  """A seeded subset of ``identities``: a fraction (0 < holdout < 1) or a count."""
  holdout = float(holdout)
  n = len(identities)
  if holdout < 0 or (holdout >= 1 and holdout != int(holdout)):
    raise ValueError(f"{name} must be a fraction in [0, 1) or a whole count, got {holdout}")
  k = int(round(holdout * n)) if holdout < 1 else int(holdout)
  if holdout > 0 and not 0 < k < n:
    raise ValueError(
        f"{name}={holdout} holds out {k} of {n} identities; " "need at least 1 and fewer than all"
    )
  perm = np.random.default_rng([int(seed), int(salt)]).permutation(n)
  return {identities[i] for i in perm[:k]}


class ImageFolder(_ImageRecords):
  """Generic layout ``root/<identity>/<image>``, optional landmarks file.

  ``landmarks_file`` uses the CelebA row format with paths relative to root.
  Without landmarks, faces are assumed centred and the mean CelebA landmark
  layout is used (relative to the crop).
  """

  def __init__(
      self,
      root: str,
      resolution: int = 64,
      crop: tuple[float, float, float, float] | None = None,
      landmarks_file: str | None = None,
      min_images: int = 1,
      align_to: np.ndarray | None = None,
      detector: Detector | None = None,
  ):
    if not os.path.isdir(root):
      raise FileNotFoundError(f"image folder not found: {root}")
    paths, names = [], []
    for ident in sorted(os.listdir(root)):
      d = os.path.join(root, ident)
      if not os.path.isdir(d):
        continue
      imgs = sorted(f for f in os.listdir(d) if f.lower().endswith(IMAGE_EXTENSIONS))
      if len(imgs) < min_images:
        continue
      paths += [os.path.join(d, f) for f in imgs]
      names += [ident] * len(imgs)
    if not paths:
      raise DatasetFormatError(
          f"{root}: no images found in <identity>/ sub-folders " f"(extensions {IMAGE_EXTENSIONS})"
      )
    lms: list[np.ndarray | None] = [None] * len(paths)
    if landmarks_file is not None:
      table = parse_landmarks_file(landmarks_file)
      rel = [os.path.relpath(p, root) for p in paths]
      missing = [r for r in rel if r not in table]
      if missing:
        raise DatasetFormatError(
            f"{landmarks_file}: no landmarks for {missing[:5]} " f"({len(missing)} images)"
        )
      lms = [table[r] for r in rel]
    labels, self.identity_names = _contiguous(names)
    super().__init__(paths, labels, lms, resolution, crop, align_to, detector)


# ------------------------------------------------------------------- LFW


class LFW(ImageFolder):
  """LFW images (``lfw/<Name>/<Name>_NNNN.jpg``) plus its verification pairs.

  Default crop: the central 150 x 150 of the 250 x 250 images (the face);
  with ``align_to`` (the paper's preprocessing) faces are aligned by their
  landmarks instead (``landmarks_file``, else ``detector``).
  """

  def __init__(
      self,
      root: str,
      pairs_file: str | None = None,
      resolution: int = 64,
      crop: tuple[float, float, float, float] | None = (50, 50, 200, 200),
      landmarks_file: str | None = None,
      align_to: np.ndarray | None = None,
      detector: Detector | None = None,
  ):
    super().__init__(root, resolution, crop, landmarks_file, align_to=align_to, detector=detector)
    self.pairs = parse_lfw_pairs(pairs_file, root) if pairs_file else []
    self._index = {p: i for i, p in enumerate(self.paths)}

  def index_of(self, path: str) -> int:
    try:
      return self._index[path]
    except KeyError:
      raise KeyError(f"{path} is not an image of this LFW folder") from None


# -------------------------------------------------------------------- AR

AR_SUBSETS = {
    "clean": (1, 2, 3, 4, 5, 6, 7, 14, 15, 16, 17, 18, 19, 20),
    "neutral": (1, 14),
    "sunglasses": (8, 9, 10, 21, 22, 23),
    "scarf": (11, 12, 13, 24, 25, 26),
}


class ARFace(_ImageRecords):
  """The AR face database (one folder, AR file naming), one subset.

  Args:
    subset: 'clean', 'neutral', 'sunglasses' or 'scarf' (or an iterable of
      image indices).
  Identities are labelled by person (``m-001`` ...) across subsets, using the
  sorted list of all people in the folder, so gallery and probe labels agree.
  """

  def __init__(
      self,
      root: str,
      subset: str | Iterable[int] = "clean",
      resolution: int = 64,
      crop: tuple[float, float, float, float] | None = None,
      landmarks_file: str | None = None,
      align_to: np.ndarray | None = None,
      detector: Detector | None = None,
  ):
    if not os.path.isdir(root):
      raise FileNotFoundError(f"AR folder not found: {root}")
    indices = AR_SUBSETS.get(subset) if isinstance(subset, str) else tuple(subset)
    if indices is None:
      raise ValueError(f"unknown AR subset {subset!r}; choose from {sorted(AR_SUBSETS)}")
    files = sorted(f for f in os.listdir(root) if f.lower().endswith(IMAGE_EXTENSIONS))
    parsed = [(f, *parse_ar_name(os.path.join(root, f))) for f in files]
    if not parsed:
      raise DatasetFormatError(f"{root}: no AR images found")
    people = sorted({p for _, p, _, _ in parsed})
    label_of = {p: i for i, p in enumerate(people)}
    chosen = [(f, p) for f, p, _, idx in parsed if idx in indices]
    lms: list[np.ndarray | None] = [None] * len(chosen)
    if landmarks_file is not None:
      table = parse_landmarks_file(landmarks_file)
      missing = [f for f, _ in chosen if f not in table]
      if missing:
        raise DatasetFormatError(f"{landmarks_file}: no landmarks for {missing[:5]}")
      lms = [table[f] for f, _ in chosen]
    self.people = people
    super().__init__(
        [os.path.join(root, f) for f, _ in chosen],
        np.array([label_of[p] for _, p in chosen], np.int32),
        lms,
        resolution,
        crop,
        align_to,
        detector,
    )

  @property
  def num_classes(self) -> int:
    return len(self.people)
