"""A user's library of RGBA occluder images (like the paper's 45 PNGs).

:class:`MaskLibrary` reads ``root/<category>/*.png`` (or a flat folder with a
``masks.json``) and places a random image of a category on a face by its
landmarks, scaled to a target coverage like the procedural occluders
(:mod:`deocc_jax.data.occluder_shapes`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from PIL import Image

from deocc_jax.data.masks import CATEGORIES, Occlusion
from deocc_jax.data.occluder_shapes import LandmarkFrame, fit_coverage


@dataclasses.dataclass(frozen=True)
class LibraryMask:
  """One RGBA mask image and where it goes on the face."""

  path: str
  category: str
  rgba: np.ndarray  # (h, w, 4) float32 in [0, 1]
  anchor: str  # 'lower' (nose-mouth-chin), 'eyes' or 'face'
  width: float  # width in inter-ocular distances at scale 1


_ANCHORS = {"lower": (0.0, 1.05), "eyes": (0.0, 0.0), "face": (0.0, 0.55)}
_DEFAULT_WIDTH = {"lower": 2.1, "eyes": 2.2, "face": 2.4}


class MaskLibrary:
  """A user's library of RGBA occluder images (like the paper's 45 PNGs).

  Layout: ``root/<category>/*.png`` with category in :data:`CATEGORIES`, or
  a flat folder with a ``masks.json`` listing
  ``{"file.png": {"category": "simple", "anchor": "lower", "width": 2.1}}``.
  ``anchor`` is ``lower`` (centred between nose and chin, default), ``eyes``
  or ``face``; ``width`` is the image width in inter-ocular distances.
  """

  def __init__(self, root: str):
    if not os.path.isdir(root):
      raise FileNotFoundError(f"mask library folder not found: {root}")
    meta: dict = {}
    meta_path = os.path.join(root, "masks.json")
    if os.path.exists(meta_path):
      try:
        with open(meta_path) as f:
          meta = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: invalid JSON ({e})") from e
    entries: list[tuple[str, str]] = []
    for name in sorted(os.listdir(root)):
      p = os.path.join(root, name)
      if os.path.isdir(p) and name in CATEGORIES:
        entries += [
            (os.path.join(p, f), name) for f in sorted(os.listdir(p)) if f.lower().endswith(".png")
        ]
      elif name.lower().endswith(".png"):
        cat = meta.get(name, {}).get("category")
        if cat is None:
          raise ValueError(
              f"{p}: mask image outside a category folder and not "
              f"listed in {meta_path} with a 'category'"
          )
        entries.append((p, cat))
    if not entries:
      raise ValueError(
          f"no PNG mask images found in {root} (expected "
          f"<category>/*.png with category in {CATEGORIES} or masks.json)"
      )
    self.masks: list[LibraryMask] = []
    for path, cat in entries:
      if cat not in CATEGORIES:
        raise ValueError(f"{path}: unknown category {cat!r}; choose from {CATEGORIES}")
      info = meta.get(os.path.basename(path), {})
      anchor = info.get("anchor", "lower")
      if anchor not in _ANCHORS:
        raise ValueError(f"{path}: unknown anchor {anchor!r}; choose from {sorted(_ANCHORS)}")
      try:
        with Image.open(path) as im:
          if im.mode != "RGBA":
            raise ValueError(
                f"{path}: mask images need an alpha channel (RGBA), " f"got mode {im.mode}"
            )
          rgba = np.asarray(im, np.float32) / 255.0
      except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable image ({e})") from e
      if not (rgba[..., 3] > 0).any():
        raise ValueError(f"{path}: alpha channel is empty")
      self.masks.append(
          LibraryMask(path, cat, rgba, anchor, float(info.get("width", _DEFAULT_WIDTH[anchor])))
      )

  def __len__(self) -> int:
    return len(self.masks)

  def for_category(self, category: str) -> list[LibraryMask]:
    return [m for m in self.masks if m.category == category]

  def place(
      self, rng, category, fr: LandmarkFrame, landmarks, face_region, target, coverage_range, shift
  ) -> Occlusion:
    """Warps a random library mask of ``category`` onto the face."""
    choices = self.for_category(category)
    m = choices[int(rng.integers(len(choices)))]
    flip = rng.random() < 0.5
    rgba = m.rgba[:, ::-1] if flip else m.rgba
    mh, mw = rgba.shape[:2]
    ax, ay = _ANCHORS[m.anchor]
    lo, hi = coverage_range

    def fn(u, v, _rgba=rgba):
      # Map landmark-frame coords to mask-image pixels (nearest neighbour).
      col = ((u - ax) / m.width + 0.5) * mw
      row = ((v - ay) / (m.width * mh / mw) + 0.5) * mh
      inside = (col >= 0) & (col < mw) & (row >= 0) & (row < mh)
      ci = np.clip(col.astype(np.int64), 0, mw - 1)
      ri = np.clip(row.astype(np.int64), 0, mh - 1)
      return np.where(inside, _rgba[ri, ci, 3], 0.0).astype(np.float32), ri, ci, inside

    alpha, scale = fit_coverage(
        lambda u, v: fn(u, v)[0], (ax, ay), shift, fr, face_region, target, lo, hi
    )
    u = (fr.u - shift[0] - ax) / scale + ax
    v = (fr.v - shift[1] - ay) / scale + ay
    _, ri, ci, inside = fn(u, v)
    rgb = np.where(inside[..., None], rgba[ri, ci, :3], 0.0).astype(np.float32)
    return Occlusion(
        rgb=rgb, alpha=alpha, category=category, kind=f"library:{os.path.basename(m.path)}"
    )
