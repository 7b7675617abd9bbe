"""The text files inference reads: landmarks files (``PATH x1 y1 ... x5 y5``)
and pairs files (``IMG_A IMG_B [MASK_A [MASK_B]]``)."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

__all__ = ["read_landmarks_file", "lookup_landmarks", "Pair", "read_pairs_file"]


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
      raise ValueError(
          f"{path}:{no}: expected 'PATH x1 y1 ... x5 y5' (11 fields), " f"got {len(tok)}"
      )
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
      raise ValueError(
          f"{path}:{no}: expected 'IMG_A IMG_B [MASK_A [MASK_B]]' (2 to 4 "
          f"fields), got {len(tok)}"
      )
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
    if len(kp) > best_len and parts[-len(kp) :] == kp:
      best, best_len = lm, len(kp)
  return best
