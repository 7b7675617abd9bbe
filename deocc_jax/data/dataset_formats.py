"""On-disk formats of the real data sets: images, annotation files, names.

* images: any Pillow-readable file (:data:`IMAGE_EXTENSIONS`), decoded to RGB;
* CelebA's two-column tables (``identity_CelebA.txt``,
  ``list_eval_partition.txt``) and its landmark rows
  (``list_landmarks_align_celeba.txt``, also used for LFW, AR and folders);
* LFW's ``pairs.txt`` (10 folds of 300 matched + 300 mismatched pairs);
* AR face file names ``<m|w>-<person:03d>-<index:02d>.<ext>``.

Bad input raises :class:`DatasetFormatError` (or FileNotFoundError) naming the
file (and line). The readers that use these are in
:mod:`deocc_jax.data.real_datasets`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".gif",
    ".webp",
)


class DatasetFormatError(ValueError):
  """A data set file does not have the expected format (names file + line)."""


def read_image(path: str) -> np.ndarray:
  """Reads an image as (H, W, 3) uint8 RGB.

  Grayscale, palette, CMYK and RGBA (alpha dropped) are converted to RGB.
  Raises FileNotFoundError / DatasetFormatError naming the file.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"image file not found: {path}")
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode in ("I;16", "I", "F"):
        arr = np.asarray(im, np.float64)
        arr = (255.0 * (arr - arr.min()) / max(np.ptp(arr), 1e-9)).astype(np.uint8)
        im = Image.fromarray(arr)
      if im.mode != "RGB":
        im = im.convert("RGB")
      return np.asarray(im, np.uint8).copy()
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DatasetFormatError(f"{path}: cannot decode image ({e})") from e


def _read_lines(path: str) -> list[str]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"annotation file not found: {path}")
  with open(path, encoding="utf-8", errors="replace") as f:
    return f.read().splitlines()


def parse_two_columns(path: str, value_type=int) -> dict[str, Any]:
  """Rows ``<file> <value>`` -> {file: value_type(value)}; errors name file:line."""
  out = {}
  for n, line in enumerate(_read_lines(path), start=1):
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 2:
      raise DatasetFormatError(f"{path}:{n}: expected '<file> <value>', got {line!r}")
    try:
      out[parts[0]] = value_type(parts[1])
    except ValueError as e:
      raise DatasetFormatError(f"{path}:{n}: bad value {parts[1]!r} ({e})") from e
  return out


def parse_landmarks_file(path: str, has_header: bool = True) -> dict[str, np.ndarray]:
  """CelebA ``list_landmarks_align_celeba.txt``: count, header, then rows
  ``<file> lx ly rx ry nx ny lmx lmy rmx rmy``."""
  lines = _read_lines(path)
  start = 0
  if has_header and lines and re.fullmatch(r"\s*\d+\s*", lines[0]):
    start = 2 if len(lines) > 1 and "lefteye_x" in lines[1] else 1
  out = {}
  for n, line in enumerate(lines[start:], start=start + 1):
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 11:
      raise DatasetFormatError(
          f"{path}:{n}: expected a file name and 10 coordinates, got {len(parts)} fields"
      )
    try:
      out[parts[0]] = np.array(parts[1:], np.float32).reshape(5, 2)
    except ValueError as e:
      raise DatasetFormatError(f"{path}:{n}: non-numeric landmark ({e})") from e
  return out


# ------------------------------------------------------------------- LFW


@dataclasses.dataclass(frozen=True)
class VerificationPair:
  path_a: str
  path_b: str
  same: bool
  fold: int


def parse_lfw_pairs(
    pairs_file: str, lfw_root: str, check_files: bool = True
) -> list[VerificationPair]:
  """Parses LFW's ``pairs.txt``: a header ``<folds> <n>``, then per fold
  ``n`` matched lines ``name i j`` and ``n`` mismatched lines
  ``name1 i name2 j``. Errors name the file and line."""
  lines = _read_lines(pairs_file)
  if not lines:
    raise DatasetFormatError(f"{pairs_file}:1: empty pairs file")
  head = lines[0].split()
  try:
    folds, per = int(head[0]), int(head[1])
    if len(head) != 2:
      raise ValueError
  except (ValueError, IndexError):
    raise DatasetFormatError(
        f"{pairs_file}:1: expected header '<folds> <pairs per " f"fold>', got {lines[0]!r}"
    ) from None
  body = [(n, l) for n, l in enumerate(lines[1:], start=2) if l.strip()]
  if len(body) != folds * 2 * per:
    raise DatasetFormatError(
        f"{pairs_file}: header promises {folds} folds x 2 x {per} "
        f"= {folds * 2 * per} pairs, found {len(body)} lines"
    )

  def img(name: str, num: str, n: int) -> str:
    try:
      k = int(num)
    except ValueError:
      raise DatasetFormatError(
          f"{pairs_file}:{n}: image number {num!r} is not an " "integer"
      ) from None
    return os.path.join(lfw_root, name, f"{name}_{k:04d}.jpg")

  pairs = []
  for i, (n, line) in enumerate(body):
    fold, within = divmod(i, 2 * per)
    parts = line.split()
    expect_same = within < per
    if expect_same:
      if len(parts) != 3:
        raise DatasetFormatError(
            f"{pairs_file}:{n}: expected a matched pair 'name i j' " f"(fold {fold}), got {line!r}"
        )
      pairs.append(
          VerificationPair(img(parts[0], parts[1], n), img(parts[0], parts[2], n), True, fold)
      )
    else:
      if len(parts) != 4:
        raise DatasetFormatError(
            f"{pairs_file}:{n}: expected a mismatched pair "
            f"'name1 i name2 j' (fold {fold}), got {line!r}"
        )
      pairs.append(
          VerificationPair(img(parts[0], parts[1], n), img(parts[2], parts[3], n), False, fold)
      )
  if check_files:
    for pair, (n, _) in zip(pairs, body):
      for p in (pair.path_a, pair.path_b):
        if not os.path.exists(p):
          raise FileNotFoundError(f"{pairs_file}:{n}: image not found: {p}")
  return pairs


# -------------------------------------------------------------------- AR

AR_NAME = re.compile(r"^([mw])-(\d{3})-(\d{1,2})\.([a-z]+)$", re.IGNORECASE)


def parse_ar_name(path: str) -> tuple[str, int, int]:
  """``m-001-08.bmp`` -> ('m-001', session 1, index 8)."""
  name = os.path.basename(path)
  m = AR_NAME.match(name)
  if not m or ("." + m.group(4).lower()) not in IMAGE_EXTENSIONS:
    raise DatasetFormatError(
        f"{path}: not an AR face file name " "('<m|w>-<person 3 digits>-<index 1..26>.<image ext>')"
    )
  idx = int(m.group(3))
  if not 1 <= idx <= 26:
    raise DatasetFormatError(f"{path}: AR image index {idx} outside 1..26")
  person = f"{m.group(1).lower()}-{m.group(2)}"
  return person, 1 if idx <= 13 else 2, idx
