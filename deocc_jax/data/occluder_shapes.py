"""Procedural occluders drawn on a face's landmark frame (paper section 4.1).

Every shape is a function of the *landmark frame* (:class:`LandmarkFrame`:
origin between the eyes, x along the eye line, unit = inter-ocular distance),
so it follows the face's pose: man-made lower-face shapes and patches with
plain colours or textures, hands and hair strands, sunglasses.
:func:`fit_coverage` scales a shape about its anchor until its coverage of the
face region hits a target and returns its anti-aliased alpha. The sampler
that chooses among them is :mod:`deocc_jax.data.masks`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

#: Plain colours of man-made occluders (RGB in [0, 1]).
MAN_MADE_COLOURS = np.array(
    [
        [0.55, 0.75, 0.90],
        [0.95, 0.95, 0.95],
        [0.10, 0.10, 0.12],
        [0.35, 0.60, 0.85],
        [0.90, 0.55, 0.65],
        [0.30, 0.35, 0.50],
        [0.75, 0.75, 0.70],
        [0.20, 0.45, 0.30],
    ],
    np.float32,
)
_SKIN = np.array(
    [[0.96, 0.80, 0.69], [0.80, 0.60, 0.45], [0.55, 0.38, 0.26], [0.36, 0.24, 0.16]], np.float32
)
_HAIR = np.array(
    [[0.08, 0.06, 0.05], [0.30, 0.18, 0.09], [0.78, 0.64, 0.36], [0.55, 0.22, 0.10]], np.float32
)


@dataclasses.dataclass(frozen=True)
class LandmarkFrame:
  """Per-pixel coordinates in the landmark frame of one face."""

  u: np.ndarray  # (H, W) along the eye line, units of inter-ocular distance
  v: np.ndarray  # (H, W) perpendicular, pointing to the chin
  iod_px: float  # inter-ocular distance in pixels
  angle: float  # eye-line angle in radians

  @classmethod
  def from_landmarks(cls, landmarks: np.ndarray, height: int, width: int) -> "LandmarkFrame":
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


def texture(
    rng: np.random.Generator, fr: LandmarkFrame, base: np.ndarray
) -> tuple[np.ndarray, str]:
  """A textured / patterned / logo appearance on the landmark frame."""
  h, w = fr.u.shape
  other = MAN_MADE_COLOURS[rng.integers(len(MAN_MADE_COLOURS))]
  if np.allclose(other, base):
    other = 1.0 - base
  kind = rng.choice(["stripes", "checks", "dots", "camouflage", "noise", "gradient", "logo"])
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
  kind = str(
      rng.choice(
          ["surgical", "cloth", "n95", "bandana", "scarf", "patch"],
          p=[0.25, 0.2, 0.15, 0.15, 0.1, 0.15],
      )
  )
  top = rng.uniform(0.45, 0.75)
  bottom = rng.uniform(1.55, 1.9)
  half_w = rng.uniform(0.85, 1.05)
  if kind == "surgical":
    r = rng.uniform(0.05, 0.25)
    anchor = (0.0, (top + bottom) / 2)
    fn = lambda u, v: _rounded_rect(u, v, 0.0, (top + bottom) / 2, half_w, (bottom - top) / 2, r)
  elif kind == "cloth":
    anchor = (0.0, top + 0.55)
    fn = lambda u, v: (
        ((u / half_w) ** 2 + ((v - top - 0.55) / 0.75) ** 2 <= 1) & (v >= top)
    ).astype(np.float32)
  elif kind == "n95":
    ry = rng.uniform(0.5, 0.65)
    anchor = (0.0, 1.05)
    fn = lambda u, v: ((u / (half_w * 0.8)) ** 2 + ((v - 1.05) / ry) ** 2 <= 1).astype(np.float32)
  elif kind == "bandana":
    tip = bottom + rng.uniform(0.2, 0.5)
    anchor = (0.0, (top + tip) / 2)
    fn = lambda u, v: ((v >= top) & (np.abs(u) <= half_w * 1.15 * (tip - v) / (tip - top))).astype(
        np.float32
    )
  elif kind == "scarf":
    anchor = (0.0, (top + 0.3 + bottom + 0.4) / 2)
    fn = lambda u, v: ((v >= top + 0.3) & (v <= bottom + 0.4) & (np.abs(u) <= half_w * 1.2)).astype(
        np.float32
    )
  else:  # patch: a card / sticker anywhere on the face
    cx, cy = rng.uniform(-0.7, 0.7), rng.uniform(-0.4, 1.4)
    hw, hh, th = rng.uniform(0.25, 0.55), rng.uniform(0.2, 0.45), rng.uniform(0, np.pi)
    anchor = (cx, cy)
    c, s = np.cos(th), np.sin(th)
    fn = lambda u, v: _rounded_rect(
        (u - cx) * c + (v - cy) * s, -(u - cx) * s + (v - cy) * c, 0.0, 0.0, hw, hh, 0.05
    )
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
  strands = [
      (
          x0 + i * rng.uniform(0.08, 0.16),
          rng.uniform(0.05, 0.1),
          rng.uniform(0.1, 0.3),
          rng.uniform(2, 5),
      )
      for i in range(n)
  ]
  length = rng.uniform(0.9, 1.8)

  def fn(u, v):
    m = np.zeros(u.shape, bool)
    for sx, width, amp, freq in strands:
      centre = sx + amp * np.sin(v * freq) + 0.25 * (v + 0.8)
      m |= (np.abs(u - centre) < width) & (v > -1.0) & (v < -1.0 + length)
    return m.astype(np.float32)

  return "hair", fn, (x0 + 0.3, -1.0 + length / 2)


_LENS_TINTS = np.array(
    [
        [0.05, 0.05, 0.07],
        [0.22, 0.13, 0.06],
        [0.06, 0.16, 0.10],
        [0.05, 0.10, 0.22],
        [0.20, 0.20, 0.22],
    ],
    np.float32,
)


def sunglasses(
    rng: np.random.Generator, fr: LandmarkFrame, translucent: bool = False
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
              _rounded_rect(u, v, sx, 0.0, rx, ry, 0.08) > 0
          )
    return m

  lens_a = _antialiased(lambda u, v: lens_fn(u, v).astype(np.float32), fr)
  frame_a = _antialiased(lambda u, v: frame_fn(u, v).astype(np.float32), fr)
  u, v = fr.u, fr.v - dv
  tint = (
      _LENS_TINTS[rng.integers(len(_LENS_TINTS))]
      if translucent
      else (
          np.array([0.05, 0.05, 0.07], np.float32)
          + rng.uniform(0, 0.25, 3).astype(np.float32) * 0.4
      )
  )
  shine = np.clip(1.0 - ((u + 0.1) ** 2 + (v + 0.1) ** 2), 0, 1)[..., None] * 0.08
  lens_rgb = np.broadcast_to(tint, u.shape + (3,)) + shine
  frame_col = np.array([0.04, 0.04, 0.05], np.float32) * rng.uniform(0.5, 3.0)
  alpha = np.maximum(lens_a * opacity, frame_a)
  rgb = np.where((frame_a >= lens_a * opacity)[..., None], frame_col, lens_rgb)
  return alpha.astype(np.float32), np.clip(rgb, 0, 1).astype(np.float32)


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


def fit_coverage(
    fn, anchor, shift, fr, face_region, target, lo, hi, fixed: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
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
  soft = _antialiased(
      lambda u, v: fn((u - shift[0] - ax) / best_scale + ax, (v - shift[1] - ay) / best_scale + ay),
      fr,
  )
  if fixed is not None:
    soft = np.maximum(soft, fixed)
  return soft.astype(np.float32), best_scale


def man_made_or_body(rng, category: str, fr: LandmarkFrame):
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
  base = MAN_MADE_COLOURS[rng.integers(len(MAN_MADE_COLOURS))]
  if category == "simple":
    rgb = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
  else:
    rgb, tex = texture(rng, fr, base)
    kind = f"{kind}/{tex}"
  return kind, fn, anchor, rgb, False
