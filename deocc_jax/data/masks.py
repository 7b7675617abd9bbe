"""Occlusion (mask) synthesis, paper section 4.1.

Four categories, as in the paper (after Ge et al. 2017):

* ``simple``  - man-made objects of a pure colour: face masks fitted to the
  landmarks (surgical, N95, KN95, solid cloth; ``face_masks.py``), and
  procedural bandanas, scarves, cups, stickers/cards.
* ``complex`` - patterned cloth face masks (stripes, prints) and the
  procedural man-made shapes with textures: stripes, checks, dots,
  camouflage, gradients, value noise and random logo glyphs.
* ``body``    - human body: a hand (palm + fingers, in the face's own skin
  tone) or strands of hair falling across the face.
* ``hybrid``  - combinations: sunglasses (tinted, translucent lenses) over the
  eyes plus one of the above (a face mask among them), or two of the above.

Coverage: the procedural shapes are scaled so that their coverage of the
face region hits a target drawn from ``coverage_range`` (the paper: about
1/5). A face mask is *not* rescaled (a scaled-down surgical mask is a sticker
again): it covers what a worn mask covers, nose bridge to under the chin,
about half of the face region (measured: 0.45-0.7 of the synthetic faces'
skin region, mean 0.52; 0.50-0.63 of a real photo's elliptic region).
``MaskConfig.face_mask_prob`` sets how often a ``simple`` / ``complex`` /
``hybrid`` draw is a face mask (default 0.2, so the category means stay
under 0.3; 0 gives the paper's coverage exactly). Each example's actual
coverage is recorded (``coverage`` in the pipeline).

Photometric realism (``photometric.py``): every occluder has anti-aliased
soft edges, and ``composite`` shades it with the face's low-frequency
luminance, matches the image's blur and noise, and gives hands the face's
skin tone; the alpha is left as drawn, so ``M`` stays exact.

Every shape is placed in a *landmark frame* (origin between the eyes, x along
the eye line, unit = inter-ocular distance), so it follows the face's pose. A
shape's scale is searched so that its coverage of the face region hits a
target drawn from ``coverage_range`` (default mean 1/5 of the face).

The output occlusion is ``(rgb, alpha)``; the binary mask ``M`` is
``alpha > 0`` (1 inside the occluded region), so every pixel outside ``M`` is
exactly the clean face. A user's own library of RGBA mask images (like the
paper's 45 PNGs) is loaded by :class:`MaskLibrary` and placed the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from deocc_jax.data import face_masks as fm
from deocc_jax.data import photometric

CATEGORIES = ("simple", "complex", "body", "hybrid")
DEFAULT_COVERAGE_RANGE = (0.1, 0.3)

_MAN_MADE_COLOURS = np.array([
    [0.55, 0.75, 0.90], [0.95, 0.95, 0.95], [0.10, 0.10, 0.12], [0.35, 0.60, 0.85],
    [0.90, 0.55, 0.65], [0.30, 0.35, 0.50], [0.75, 0.75, 0.70], [0.20, 0.45, 0.30],
], np.float32)
_SKIN = np.array([[0.96, 0.80, 0.69], [0.80, 0.60, 0.45], [0.55, 0.38, 0.26],
                  [0.36, 0.24, 0.16]], np.float32)
_HAIR = np.array([[0.08, 0.06, 0.05], [0.30, 0.18, 0.09], [0.78, 0.64, 0.36],
                  [0.55, 0.22, 0.10]], np.float32)


@dataclasses.dataclass(frozen=True)
class LandmarkFrame:
  """Per-pixel coordinates in the landmark frame of one face."""
  u: np.ndarray  # (H, W) along the eye line, units of inter-ocular distance
  v: np.ndarray  # (H, W) perpendicular, pointing to the chin
  iod_px: float  # inter-ocular distance in pixels
  angle: float   # eye-line angle in radians

  @classmethod
  def from_landmarks(cls, landmarks: np.ndarray, height: int, width: int
                     ) -> "LandmarkFrame":
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (5, 2):
      raise ValueError(f"landmarks must have shape (5, 2), got {lm.shape}")
    le, re_ = lm[0], lm[1]
    centre = (le + re_) / 2
    eye_vec = re_ - le
    iod = float(np.hypot(*eye_vec))
    if iod < 1e-3:
      raise ValueError(f"degenerate landmarks: eyes coincide at {le}")
    ex = eye_vec / iod
    ey = np.array([-ex[1], ex[0]])
    gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = gx - np.float32(centre[0]), gy - np.float32(centre[1])
    u = (dx * np.float32(ex[0]) + dy * np.float32(ex[1])) / np.float32(iod)
    v = (dx * np.float32(ey[0]) + dy * np.float32(ey[1])) / np.float32(iod)
    return cls(u=u, v=v, iod_px=iod, angle=float(np.arctan2(ex[1], ex[0])))

  def to_pixels(self, pts: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, np.float64)
    centre = (lm[0] + lm[1]) / 2
    c, s = np.cos(self.angle), np.sin(self.angle)
    rot = np.array([[c, -s], [s, c]])
    return np.asarray(pts) * self.iod_px @ rot.T + centre


@dataclasses.dataclass
class Occlusion:
  """An occluder: colour, soft alpha, and the category / kind it came from.

  With ``seed`` set, :func:`composite` harmonises the colours with the face
  (``photometric.harmonize``, using ``landmarks`` / ``face_region``; ``skin``
  weights the face-sampled skin tone). ``alpha`` is never changed.
  """
  rgb: np.ndarray    # (H, W, 3) float32 in [0, 1]
  alpha: np.ndarray  # (H, W) float32 in [0, 1]
  category: str
  kind: str
  seed: int | None = None
  landmarks: np.ndarray | None = None    # (5, 2) pixel landmarks
  face_region: np.ndarray | None = None  # (H, W)
  skin: np.ndarray | None = None         # (H, W) weight of the face's skin tone

  @property
  def mask(self) -> np.ndarray:
    """Binary mask M, (H, W) float32, 1 inside the occluded region."""
    return (self.alpha > 0).astype(np.float32)


def coverage(mask: np.ndarray, face_region: np.ndarray) -> float:
  """Fraction of the face region covered by the mask."""
  area = float(face_region.sum())
  if area <= 0:
    raise ValueError("face_region is empty; cannot measure coverage")
  return float((mask > 0).astype(np.float32).ravel() @ face_region.ravel()) / area


def occluder_colours(clean: np.ndarray, occ: Occlusion) -> np.ndarray:
  """The occluder's final colours (H, W, 3) in [0, 1] on this face."""
  if occ.seed is None or occ.landmarks is None:
    return occ.rgb
  region = occ.face_region
  if region is None:
    region = face_region_from_landmarks(occ.landmarks, *clean.shape[:2])
  return photometric.harmonize(clean, occ.rgb, occ.alpha, occ.landmarks, region, occ.seed,
                               occ.skin)


def composite(clean: np.ndarray, occ: Occlusion) -> np.ndarray:
  """Pastes an occluder on a uint8 face; pixels outside M stay exact."""
  clean = np.asarray(clean)
  if clean.shape[:2] != occ.alpha.shape:
    raise ValueError(f"occluder is {occ.alpha.shape}, face is {clean.shape[:2]}")
  a = occ.alpha[..., None]
  out = clean.astype(np.float32) * (1.0 - a) + occluder_colours(clean, occ) * 255.0 * a
  out = np.where(a > 0, out, clean.astype(np.float32))
  return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def face_region_from_landmarks(landmarks: np.ndarray, height: int, width: int
                               ) -> np.ndarray:
  """An elliptic face region from five landmarks (for real photos)."""
  fr = LandmarkFrame.from_landmarks(landmarks, height, width)
  d = (fr.u / 1.15) ** 2 + ((fr.v - 0.55) / 1.45) ** 2
  return (d <= 1.0).astype(np.float32)


# ----------------------------------------------------------------- textures

def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
  """Bilinearly upsampled value noise in [0, 1]."""
  g = rng.random((cells + 1, cells + 1)).astype(np.float32)
  ys = np.linspace(0, cells, h, dtype=np.float32)
  xs = np.linspace(0, cells, w, dtype=np.float32)
  y0 = np.minimum(ys.astype(int), cells - 1)
  x0 = np.minimum(xs.astype(int), cells - 1)
  ty, tx = (ys - y0)[:, None], (xs - x0)[None, :]
  a = g[y0][:, x0]
  b = g[y0][:, x0 + 1]
  c = g[y0 + 1][:, x0]
  d = g[y0 + 1][:, x0 + 1]
  return (a * (1 - tx) + b * tx) * (1 - ty) + (c * (1 - tx) + d * tx) * ty


def _texture(rng: np.random.Generator, fr: LandmarkFrame, base: np.ndarray
             ) -> tuple[np.ndarray, str]:
  """A textured / patterned / logo appearance on the landmark frame."""
  h, w = fr.u.shape
  other = _MAN_MADE_COLOURS[rng.integers(len(_MAN_MADE_COLOURS))]
  if np.allclose(other, base):
    other = 1.0 - base
  kind = rng.choice(["stripes", "checks", "dots", "camouflage", "noise",
                     "gradient", "logo"])
  u, v = fr.u, fr.v
  if kind == "stripes":
    th, f = rng.uniform(0, np.pi), rng.uniform(3, 9)
    t = (np.sin((u * np.cos(th) + v * np.sin(th)) * f * np.pi) > 0).astype(np.float32)
  elif kind == "checks":
    f = rng.uniform(2.5, 6)
    t = ((np.floor(u * f) + np.floor(v * f)) % 2).astype(np.float32)
  elif kind == "dots":
    f, r = rng.uniform(3, 7), rng.uniform(0.15, 0.3)
    t = ((((u * f) % 1 - 0.5) ** 2 + ((v * f) % 1 - 0.5) ** 2) < r * r).astype(np.float32)
  elif kind == "camouflage":
    t = (_smooth_noise(rng, h, w, int(rng.integers(3, 7))) > 0.5).astype(np.float32)
  elif kind == "noise":
    t = _smooth_noise(rng, h, w, int(rng.integers(4, 12)))
  elif kind == "gradient":
    th = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + 0.5 * (u * np.cos(th) + v * np.sin(th)), 0, 1)
  else:  # logo: a few random strokes and discs near the centre of the mask
    t = np.zeros((h, w), np.float32)
    cx, cy = rng.uniform(-0.3, 0.3), rng.uniform(0.7, 1.1)
    for _ in range(int(rng.integers(2, 5))):
      ox, oy = cx + rng.uniform(-0.15, 0.15), cy + rng.uniform(-0.1, 0.1)
      if rng.random() < 0.5:
        rr = rng.uniform(0.05, 0.14)
        t = np.maximum(t, (((u - ox) ** 2 + (v - oy) ** 2) < rr * rr).astype(np.float32))
      else:
        th = rng.uniform(0, np.pi)
        dist = np.abs((u - ox) * np.sin(th) - (v - oy) * np.cos(th))
        along = np.abs((u - ox) * np.cos(th) + (v - oy) * np.sin(th))
        t = np.maximum(t, ((dist < 0.03) & (along < 0.15)).astype(np.float32))
  rgb = base * (1 - t[..., None]) + other * t[..., None]
  return rgb.astype(np.float32), str(kind)


# ------------------------------------------------------------------- shapes
# Each shape function maps (u, v) (already scaled about its anchor) to alpha.

def _rounded_rect(u, v, cx, cy, hw, hh, r):
  qx = np.maximum(np.abs(u - cx) - (hw - r), 0)
  qy = np.maximum(np.abs(v - cy) - (hh - r), 0)
  return (qx * qx + qy * qy <= r * r).astype(np.float32)


def _man_made_shape(rng: np.random.Generator) -> tuple[str, Callable, tuple[float, float]]:
  """A random lower-face / patch shape; returns (kind, fn(u, v), anchor)."""
  kind = str(rng.choice(["surgical", "cloth", "n95", "bandana", "scarf", "patch"],
                        p=[0.25, 0.2, 0.15, 0.15, 0.1, 0.15]))
  top = rng.uniform(0.45, 0.75)
  bottom = rng.uniform(1.55, 1.9)
  half_w = rng.uniform(0.85, 1.05)
  if kind == "surgical":
    r = rng.uniform(0.05, 0.25)
    anchor = (0.0, (top + bottom) / 2)
    fn = lambda u, v: _rounded_rect(u, v, 0.0, (top + bottom) / 2, half_w,
                                    (bottom - top) / 2, r)
  elif kind == "cloth":
    anchor = (0.0, top + 0.55)
    fn = lambda u, v: (((u / half_w) ** 2 + ((v - top - 0.55) / 0.75) ** 2 <= 1)
                       & (v >= top)).astype(np.float32)
  elif kind == "n95":
    ry = rng.uniform(0.5, 0.65)
    anchor = (0.0, 1.05)
    fn = lambda u, v: ((u / (half_w * 0.8)) ** 2 + ((v - 1.05) / ry) ** 2 <= 1
                       ).astype(np.float32)
  elif kind == "bandana":
    tip = bottom + rng.uniform(0.2, 0.5)
    anchor = (0.0, (top + tip) / 2)
    fn = lambda u, v: ((v >= top) & (np.abs(u) <= half_w * 1.15 * (tip - v) / (tip - top))
                       ).astype(np.float32)
  elif kind == "scarf":
    anchor = (0.0, (top + 0.3 + bottom + 0.4) / 2)
    fn = lambda u, v: ((v >= top + 0.3) & (v <= bottom + 0.4)
                       & (np.abs(u) <= half_w * 1.2)).astype(np.float32)
  else:  # patch: a card / sticker anywhere on the face
    cx, cy = rng.uniform(-0.7, 0.7), rng.uniform(-0.4, 1.4)
    hw, hh, th = rng.uniform(0.25, 0.55), rng.uniform(0.2, 0.45), rng.uniform(0, np.pi)
    anchor = (cx, cy)
    c, s = np.cos(th), np.sin(th)
    fn = lambda u, v: _rounded_rect((u - cx) * c + (v - cy) * s, -(u - cx) * s + (v - cy) * c,
                                    0.0, 0.0, hw, hh, 0.05)
  return kind, fn, anchor


def _capsule(u, v, a, b, r):
  """Disc-swept segment a->b with radius r."""
  px, py = u - a[0], v - a[1]
  bx, by = b[0] - a[0], b[1] - a[1]
  h = np.clip((px * bx + py * by) / max(bx * bx + by * by, 1e-6), 0, 1)
  dx, dy = px - h * bx, py - h * by
  return dx * dx + dy * dy <= r * r


def _hand_shape(rng: np.random.Generator):
  cx, cy = rng.uniform(-0.5, 0.5), rng.uniform(0.2, 1.3)
  th = rng.uniform(-0.8, 0.8) + (np.pi if rng.random() < 0.3 else 0.0)
  c, s = np.cos(th), np.sin(th)
  palm_r = rng.uniform(0.35, 0.45)
  spread = rng.uniform(0.1, 0.25)

  def fn(u, v):
    x = (u - cx) * c + (v - cy) * s
    y = -(u - cx) * s + (v - cy) * c
    m = (x / palm_r) ** 2 + (y / (palm_r * 1.15)) ** 2 <= 1
    for i, fx in enumerate((-0.27, -0.09, 0.09, 0.27)):
      length = (0.55, 0.65, 0.62, 0.5)[i]
      tip = (fx * (1 + spread * 3), -palm_r - length)
      m |= _capsule(x, y, (fx, -palm_r * 0.6), tip, 0.085)
    m |= _capsule(x, y, (palm_r * 0.7, 0.1), (palm_r + 0.45, -0.25), 0.09)
    return m.astype(np.float32)
  return "hand", fn, (cx, cy)


def _hair_shape(rng: np.random.Generator):
  n = int(rng.integers(3, 7))
  x0 = rng.uniform(-0.9, 0.6)
  strands = [(x0 + i * rng.uniform(0.08, 0.16), rng.uniform(0.05, 0.1),
              rng.uniform(0.1, 0.3), rng.uniform(2, 5)) for i in range(n)]
  length = rng.uniform(0.9, 1.8)

  def fn(u, v):
    m = np.zeros(u.shape, bool)
    for sx, width, amp, freq in strands:
      centre = sx + amp * np.sin(v * freq) + 0.25 * (v + 0.8)
      m |= (np.abs(u - centre) < width) & (v > -1.0) & (v < -1.0 + length)
    return m.astype(np.float32)
  return "hair", fn, (x0 + 0.3, -1.0 + length / 2)


_LENS_TINTS = np.array([[0.05, 0.05, 0.07], [0.22, 0.13, 0.06], [0.06, 0.16, 0.10],
                        [0.05, 0.10, 0.22], [0.20, 0.20, 0.22]], np.float32)


def _sunglasses(rng: np.random.Generator, fr: LandmarkFrame, translucent: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
  """Sunglasses over the eyes: two lenses, a bridge and temple arms.

  With ``translucent``, the lenses are tinted glass (alpha 0.8-0.95, the eyes
  faintly visible through them) in a solid frame; edges anti-aliased.
  """
  rx, ry = rng.uniform(0.25, 0.33), rng.uniform(0.17, 0.26)
  dv = rng.uniform(-0.05, 0.05)
  round_ = rng.random() < 0.5
  opacity = rng.uniform(0.8, 0.95) if translucent else 1.0
  frame_w = rng.uniform(0.025, 0.05)

  def lens_fn(u, v):
    v = v - dv
    m = np.zeros(u.shape, bool)
    for sx in (-0.5, 0.5):
      if round_:
        m |= ((u - sx) / rx) ** 2 + (v / ry) ** 2 <= 1
      else:
        m |= _rounded_rect(u, v, sx, 0.0, rx, ry, 0.08) > 0
    return m

  def frame_fn(u, v):
    v = v - dv
    m = (np.abs(u) < 0.25) & (np.abs(v + 0.05) < 0.03)
    m |= (np.abs(u) > 0.7) & (np.abs(u) < 1.05) & (np.abs(v + 0.05) < 0.035)
    if translucent:  # rims around the lenses
      for sx in (-0.5, 0.5):
        if round_:
          d = ((u - sx) / (rx + frame_w)) ** 2 + (v / (ry + frame_w)) ** 2
          m |= (d <= 1) & ~(((u - sx) / rx) ** 2 + (v / ry) ** 2 <= 1)
        else:
          m |= (_rounded_rect(u, v, sx, 0.0, rx + frame_w, ry + frame_w, 0.1) > 0) & ~(
              _rounded_rect(u, v, sx, 0.0, rx, ry, 0.08) > 0)
    return m

  lens_a = _antialiased(lambda u, v: lens_fn(u, v).astype(np.float32), fr)
  frame_a = _antialiased(lambda u, v: frame_fn(u, v).astype(np.float32), fr)
  u, v = fr.u, fr.v - dv
  tint = _LENS_TINTS[rng.integers(len(_LENS_TINTS))] if translucent else (
      np.array([0.05, 0.05, 0.07], np.float32) + rng.uniform(0, 0.25, 3).astype(np.float32) * 0.4)
  shine = np.clip(1.0 - ((u + 0.1) ** 2 + (v + 0.1) ** 2), 0, 1)[..., None] * 0.08
  lens_rgb = np.broadcast_to(tint, u.shape + (3,)) + shine
  frame_col = np.array([0.04, 0.04, 0.05], np.float32) * rng.uniform(0.5, 3.0)
  alpha = np.maximum(lens_a * opacity, frame_a)
  rgb = np.where((frame_a >= lens_a * opacity)[..., None], frame_col, lens_rgb)
  return alpha.astype(np.float32), np.clip(rgb, 0, 1).astype(np.float32)


# ---------------------------------------------------------------- synthesis

@dataclasses.dataclass(frozen=True)
class MaskConfig:
  """What occluders to draw.

  Attributes:
    categories: category names to sample from (uniformly unless ``weights``).
    weights: optional sampling probabilities, one per category.
    coverage_range: (min, max) fraction of the face region to cover; a
      target is drawn uniformly from it (the paper: about 1/5 on average).
      Face masks are fitted to the landmarks instead (module docstring).
    max_shift: random shift of the occluder, in inter-ocular distances.
    library: optional :class:`MaskLibrary` of user RGBA masks.
    library_prob: probability to draw from ``library`` instead of a
      procedural occluder; None (default) means 1.0 when a library is given
      (the paper drew all its occluders from its 45 PNGs).
    face_mask_prob: probability that a ``simple`` / ``complex`` draw, or the
      second occluder of a sunglasses ``hybrid``, is a landmark-fitted face
      mask (``face_masks.py``); 0 = procedural shapes only.
    photometric: harmonise occluders with the face in :func:`composite`
      (shading, blur, noise, skin tone; ``photometric.py``).
  """
  categories: Sequence[str] = CATEGORIES
  weights: Sequence[float] | None = None
  coverage_range: tuple[float, float] = DEFAULT_COVERAGE_RANGE
  max_shift: float = 0.15
  library: "MaskLibrary | None" = None
  library_prob: float | None = None
  face_mask_prob: float = 0.2
  photometric: bool = True

  def __post_init__(self):
    bad = [c for c in self.categories if c not in CATEGORIES]
    if bad or not self.categories:
      raise ValueError(f"unknown mask categories {bad}; choose from {CATEGORIES}")
    lo, hi = self.coverage_range
    if not 0.0 < lo <= hi < 1.0:
      raise ValueError(f"coverage_range must satisfy 0 < min <= max < 1, got {self.coverage_range}")
    if self.weights is not None and len(self.weights) != len(self.categories):
      raise ValueError(f"weights has {len(self.weights)} entries for "
                       f"{len(self.categories)} categories")
    if self.library_prob is not None and not 0.0 <= self.library_prob <= 1.0:
      raise ValueError(f"library_prob must be in [0, 1], got {self.library_prob}")
    if not 0.0 <= self.face_mask_prob <= 1.0:
      raise ValueError(f"face_mask_prob must be in [0, 1], got {self.face_mask_prob}")

  @property
  def effective_library_prob(self) -> float:
    """The rate at which library masks replace procedural occluders."""
    if self.library is None:
      return 0.0
    return 1.0 if self.library_prob is None else float(self.library_prob)


_SUBPIXEL = tuple((ox, oy) for ox in (-0.25, 0.25) for oy in (-0.25, 0.25))


def _antialiased(fn, fr: LandmarkFrame) -> np.ndarray:
  """Coverage of a binary shape ``fn(u, v)`` averaged over 2x2 sub-pixel samples."""
  c, s = np.cos(fr.angle), np.sin(fr.angle)
  acc = np.zeros(fr.u.shape, np.float32)
  for ox, oy in _SUBPIXEL:
    du = np.float32((ox * c + oy * s) / fr.iod_px)
    dv = np.float32((-ox * s + oy * c) / fr.iod_px)
    acc += fn(fr.u + du, fr.v + dv)
  return acc / np.float32(len(_SUBPIXEL))


def _render_scaled(fn, anchor, scale, shift, fr: LandmarkFrame) -> np.ndarray:
  ax, ay = anchor
  u = (fr.u - shift[0] - ax) / scale + ax
  v = (fr.v - shift[1] - ay) / scale + ay
  return fn(u, v)


def _fit_coverage(fn, anchor, shift, fr, face_region, target, lo, hi,
                  fixed: np.ndarray | None = None) -> tuple[np.ndarray, float]:
  """Searches the shape's scale so that the union coverage is near ``target``.

  Returns the alpha (union with ``fixed``) and the scale that gave it.
  """
  face_area = float(face_region.sum())
  scale = 1.0
  best_err, best_scale = np.inf, 1.0
  for _ in range(6):
    a = _render_scaled(fn, anchor, scale, shift, fr)
    if fixed is not None:
      a = np.maximum(a, fixed)
    cov = float((a > 0).astype(np.float32).ravel() @ face_region.ravel()) / face_area
    err = abs(cov - target)
    if err < best_err:
      best_err, best_scale = err, scale
    if lo <= cov <= hi and err < 0.02:
      break
    if cov <= 1e-4:
      scale *= 1.6
    else:
      scale *= float(np.clip(np.sqrt(target / cov), 0.5, 1.8))
  # soft, anti-aliased edges at the chosen scale
  ax, ay = anchor
  soft = _antialiased(lambda u, v: fn((u - shift[0] - ax) / best_scale + ax,
                                      (v - shift[1] - ay) / best_scale + ay), fr)
  if fixed is not None:
    soft = np.maximum(soft, fixed)
  return soft.astype(np.float32), best_scale


def _man_made_or_body(rng, category: str, fr: LandmarkFrame):
  """(kind, shape fn, anchor, rgb, skin) for a simple, complex or body occluder.

  ``skin`` is True for hands (their colour is re-sampled from the face).
  """
  h, w = fr.u.shape
  if category == "body":
    if rng.random() < 0.6:
      kind, fn, anchor = _hand_shape(rng)
      skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.05)
      shade = np.clip(1.0 - 0.15 * _smooth_noise(rng, h, w, 4), 0, 1)[..., None]
      rgb = np.clip(skin * shade, 0, 1)
      return kind, fn, anchor, rgb.astype(np.float32), True
    kind, fn, anchor = _hair_shape(rng)
    hair = _HAIR[rng.integers(len(_HAIR))]
    rgb = hair * (0.8 + 0.4 * _smooth_noise(rng, h, w, 10))[..., None]
    return kind, fn, anchor, rgb.astype(np.float32), False
  kind, fn, anchor = _man_made_shape(rng)
  base = _MAN_MADE_COLOURS[rng.integers(len(_MAN_MADE_COLOURS))]
  if category == "simple":
    rgb = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
  else:
    rgb, tex = _texture(rng, fr, base)
    kind = f"{kind}/{tex}"
  return kind, fn, anchor, rgb, False


def _face_mask(rng, landmarks, dense, face_region, category: str) -> fm.FaceMask:
  """A landmark-fitted face mask (plain for 'simple', patterned for 'complex')."""
  h, w = face_region.shape
  pts = dense if dense is not None else fm.dense_from_5(landmarks, face_region)
  return fm.render_face_mask(rng, pts, h, w, textured=category == "complex")


def face_mask_occlusion(rng: np.random.Generator, landmarks: np.ndarray,
                        face_region: np.ndarray, kind: str | None = None,
                        dense_landmarks: np.ndarray | None = None,
                        pattern: str | None = None, photometric_on: bool = True) -> Occlusion:
  """One landmark-fitted face mask of ``kind`` (``face_masks.FACE_MASK_KINDS``).

  Category: ``complex`` for patterned cloth, else ``simple``.
  """
  h, w = face_region.shape
  LandmarkFrame.from_landmarks(landmarks, h, w)  # validates the 5 landmarks
  pts = (np.asarray(dense_landmarks, np.float64) if dense_landmarks is not None
         else fm.dense_from_5(landmarks, face_region))
  m = fm.render_face_mask(rng, pts, h, w, kind=kind, pattern=pattern)
  seed = int(rng.integers(2 ** 31)) if photometric_on else None
  category = "complex" if m.kind in ("cloth/stripes", "cloth/print") else "simple"
  return Occlusion(rgb=m.rgb, alpha=m.alpha, category=category, kind=f"facemask:{m.kind}",
                   seed=seed, landmarks=np.asarray(landmarks, np.float32),
                   face_region=face_region)


def synthesize_occlusion(rng: np.random.Generator, landmarks: np.ndarray,
                         face_region: np.ndarray, config: MaskConfig = MaskConfig(),
                         category: str | None = None,
                         dense_landmarks: np.ndarray | None = None) -> Occlusion:
  """Draws one occluder for a face.

  Args:
    rng: numpy random generator (the caller owns determinism).
    landmarks: (5, 2) pixel landmarks, CelebA order (left eye, right eye, nose,
      left mouth corner, right mouth corner).
    face_region: (H, W) face area used to measure coverage.
    config: categories, coverage range, shift, optional user library.
    category: force a category (else drawn from ``config``).
    dense_landmarks: optional (68, 2) landmarks (dlib / iBUG order) that face
      masks are fitted to; without them the five landmarks are used
      (``face_masks.dense_from_5``).
  """
  h, w = face_region.shape
  fr = LandmarkFrame.from_landmarks(landmarks, h, w)
  if dense_landmarks is not None:
    dense_landmarks = np.asarray(dense_landmarks, np.float64)
    if dense_landmarks.shape != (68, 2):
      raise ValueError(f"dense_landmarks must have shape (68, 2), got {dense_landmarks.shape}")
  if category is None:
    probs = None if config.weights is None else np.asarray(config.weights) / np.sum(config.weights)
    category = str(rng.choice(list(config.categories), p=probs))
  if category not in CATEGORIES:
    raise ValueError(f"unknown mask category {category!r}; choose from {CATEGORIES}")
  lo, hi = config.coverage_range
  target = rng.uniform(lo, hi)
  shift = rng.uniform(-config.max_shift, config.max_shift, size=2)
  seed = int(rng.integers(2 ** 31)) if config.photometric else None
  extra = dict(seed=seed, landmarks=np.asarray(landmarks, np.float32), face_region=face_region)

  if config.library is not None and len(config.library.for_category(category)) \
      and rng.random() < config.effective_library_prob:
    occ = config.library.place(rng, category, fr, landmarks, face_region, target,
                               (lo, hi), shift)
    return dataclasses.replace(occ, **extra)

  if category in ("simple", "complex") and rng.random() < config.face_mask_prob:
    m = _face_mask(rng, landmarks, dense_landmarks, face_region, category)
    return Occlusion(rgb=m.rgb, alpha=m.alpha, category=category, kind=f"facemask:{m.kind}",
                     **extra)

  if category in ("simple", "complex", "body"):
    kind, fn, anchor, rgb, is_skin = _man_made_or_body(rng, category, fr)
    alpha, _ = _fit_coverage(fn, anchor, shift, fr, face_region, target, lo, hi)
    skin = alpha if is_skin else None
    return Occlusion(rgb=np.ascontiguousarray(rgb), alpha=alpha, category=category, kind=kind,
                     skin=skin, **extra)

  # hybrid: sunglasses + another occluder (a face mask among them), or two occluders.
  if rng.random() < 0.6:
    g_alpha, g_rgb = _sunglasses(rng, fr, translucent=config.photometric)
    sub = str(rng.choice(["simple", "complex", "body"]))
    if sub != "body" and rng.random() < config.face_mask_prob:
      m = _face_mask(rng, landmarks, dense_landmarks, face_region, sub)
      alpha = np.maximum(m.alpha, g_alpha)
      rgb = np.where((g_alpha >= m.alpha)[..., None], g_rgb, m.rgb)
      return Occlusion(rgb=rgb.astype(np.float32), alpha=alpha, category="hybrid",
                       kind=f"sunglasses+facemask:{m.kind}", **extra)
    kind, fn, anchor, rgb, is_skin = _man_made_or_body(rng, sub, fr)
    alpha, _ = _fit_coverage(fn, anchor, shift, fr, face_region, target, lo, hi,
                             fixed=g_alpha)
    glasses = (g_alpha >= alpha - 1e-6) & (g_alpha > 0)
    rgb = np.where(glasses[..., None], g_rgb, rgb)
    skin = np.where(glasses, 0.0, alpha).astype(np.float32) if is_skin else None
    return Occlusion(rgb=rgb.astype(np.float32), alpha=alpha, category="hybrid",
                     kind=f"sunglasses+{kind}", skin=skin, **extra)
  subs = rng.choice(["simple", "complex", "body"], size=2, replace=False)
  k1, f1, a1, rgb1, s1 = _man_made_or_body(rng, str(subs[0]), fr)
  k2, f2, a2, rgb2, s2 = _man_made_or_body(rng, str(subs[1]), fr)
  half_target = target * 0.5
  first, _ = _fit_coverage(f1, a1, shift, fr, face_region, half_target, lo * 0.5,
                           hi * 0.5)
  alpha, _ = _fit_coverage(f2, a2, -shift, fr, face_region, target, lo, hi, fixed=first)
  on_first = first >= alpha - 1e-6
  rgb = np.where(on_first[..., None], rgb1, rgb2)
  skin = None
  if s1 or s2:
    skin = np.where(on_first, float(s1), float(s2)).astype(np.float32) * alpha
  return Occlusion(rgb=rgb.astype(np.float32), alpha=alpha, category="hybrid",
                   kind=f"{k1}+{k2}", skin=skin, **extra)


# ------------------------------------------------------ AR-style occluders

AR_OCCLUSIONS = ("sunglasses", "scarf")


def synthesize_ar_occlusion(rng: np.random.Generator, landmarks: np.ndarray,
                            height: int, width: int, kind: str) -> Occlusion:
  """The AR face database's two real occlusions, drawn on a synthetic face.

  ``'sunglasses'`` (AR1): dark lenses over both eyes with bridge and arms;
  ``'scarf'`` (AR2): a textured band from just below the eyes to past the
  chin, across the whole face width (AR scarves hide nose, mouth and chin).
  Category: sunglasses count as ``hybrid`` (the paper's glasses class),
  scarves as ``complex`` (textured man-made).
  """
  if kind not in AR_OCCLUSIONS:
    raise ValueError(f"unknown AR occlusion {kind!r}; choose from {AR_OCCLUSIONS}")
  fr = LandmarkFrame.from_landmarks(landmarks, height, width)
  if kind == "sunglasses":
    alpha, rgb = _sunglasses(rng, fr)
    return Occlusion(rgb=rgb, alpha=alpha, category="hybrid", kind="sunglasses")
  top = rng.uniform(0.45, 0.6)
  half_w = rng.uniform(1.2, 1.4)
  alpha = ((fr.v >= top) & (fr.v <= 2.6) & (np.abs(fr.u) <= half_w)).astype(np.float32)
  base = _MAN_MADE_COLOURS[rng.integers(len(_MAN_MADE_COLOURS))]
  rgb, tex = _texture(rng, fr, base)
  return Occlusion(rgb=np.ascontiguousarray(rgb, np.float32), alpha=alpha, category="complex",
                   kind=f"scarf/{tex}")


# ------------------------------------------------------------- user library

@dataclasses.dataclass(frozen=True)
class LibraryMask:
  """One RGBA mask image and where it goes on the face."""
  path: str
  category: str
  rgba: np.ndarray  # (h, w, 4) float32 in [0, 1]
  anchor: str       # 'lower' (nose-mouth-chin), 'eyes' or 'face'
  width: float      # width in inter-ocular distances at scale 1


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
        entries += [(os.path.join(p, f), name) for f in sorted(os.listdir(p))
                    if f.lower().endswith(".png")]
      elif name.lower().endswith(".png"):
        cat = meta.get(name, {}).get("category")
        if cat is None:
          raise ValueError(f"{p}: mask image outside a category folder and not "
                           f"listed in {meta_path} with a 'category'")
        entries.append((p, cat))
    if not entries:
      raise ValueError(f"no PNG mask images found in {root} (expected "
                       f"<category>/*.png with category in {CATEGORIES} or masks.json)")
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
            raise ValueError(f"{path}: mask images need an alpha channel (RGBA), "
                             f"got mode {im.mode}")
          rgba = np.asarray(im, np.float32) / 255.0
      except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable image ({e})") from e
      if not (rgba[..., 3] > 0).any():
        raise ValueError(f"{path}: alpha channel is empty")
      self.masks.append(LibraryMask(path, cat, rgba, anchor,
                                    float(info.get("width", _DEFAULT_WIDTH[anchor]))))

  def __len__(self) -> int:
    return len(self.masks)

  def for_category(self, category: str) -> list[LibraryMask]:
    return [m for m in self.masks if m.category == category]

  def place(self, rng, category, fr: LandmarkFrame, landmarks, face_region, target,
            coverage_range, shift) -> Occlusion:
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

    alpha, scale = _fit_coverage(lambda u, v: fn(u, v)[0], (ax, ay), shift, fr,
                                 face_region, target, lo, hi)
    u = (fr.u - shift[0] - ax) / scale + ax
    v = (fr.v - shift[1] - ay) / scale + ay
    _, ri, ci, inside = fn(u, v)
    rgb = np.where(inside[..., None], rgba[ri, ci, :3], 0.0).astype(np.float32)
    return Occlusion(rgb=rgb, alpha=alpha, category=category,
                     kind=f"library:{os.path.basename(m.path)}")
