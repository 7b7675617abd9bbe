"""Face masks drawn on a face: surgical, N95, KN95, cloth.

Each mask's outline, ear loops and seams come from
:mod:`deocc_jax.data.face_mask_geometry` (fitted to 68 landmarks, detected or
estimated from five by :mod:`deocc_jax.data.dense_landmarks`); this module
colours it (pleats and a nose wire, radial shading and a valve, seams, fabric
patterns) and rasterises it.

Edges are anti-aliased from the exact signed distance to the outline (alpha
= coverage of the pixel by the outline), so ``M = alpha > 0`` marks every
pixel the mask touches.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from matplotlib.path import Path

from deocc_jax.data.face_mask_geometry import (
    FACE_MASK_KINDS,
    FaceAxes,
    MaskGeometry,
    mask_geometry,
)

CLOTH_PATTERNS = ("solid", "stripes", "print")

_SURGICAL_COLOURS = np.array(
    [
        [0.55, 0.75, 0.90],
        [0.93, 0.94, 0.95],
        [0.12, 0.12, 0.14],
        [0.40, 0.70, 0.68],
        [0.92, 0.70, 0.78],
    ],
    np.float32,
)
_RESPIRATOR_COLOURS = np.array(
    [[0.95, 0.95, 0.93], [0.90, 0.90, 0.88], [0.15, 0.15, 0.17], [0.75, 0.78, 0.80]], np.float32
)
_CLOTH_COLOURS = np.array(
    [
        [0.10, 0.10, 0.12],
        [0.20, 0.25, 0.45],
        [0.55, 0.12, 0.15],
        [0.25, 0.45, 0.30],
        [0.85, 0.80, 0.70],
        [0.45, 0.45, 0.48],
        [0.90, 0.55, 0.20],
        [0.55, 0.40, 0.65],
        [0.95, 0.95, 0.95],
        [0.15, 0.35, 0.60],
    ],
    np.float32,
)


# ------------------------------------------------------------ rasterising


def _segment_distance(
    gx: np.ndarray, gy: np.ndarray, pts: np.ndarray, closed: bool, reach: float = np.inf
) -> np.ndarray:
  """Distance from pixel centres (a regular grid) to a polyline / closed polygon.

  Distances beyond ``reach`` pixels are only bounded (they stay >= reach):
  each segment updates only the pixels of its bounding box grown by ``reach``.
  """
  a = pts if closed else pts[:-1]
  b = np.roll(pts, -1, axis=0) if closed else pts[1:]
  d2 = np.full(gx.shape, np.inf if not np.isfinite(reach) else reach * reach + 1.0)
  x0, y0 = gx[0, 0], gy[0, 0]
  hh, ww = gx.shape
  for (ax, ay), (bx, by) in zip(a, b):
    if np.isfinite(reach):
      c0 = int(max(np.floor(min(ax, bx) - reach - x0), 0))
      c1 = int(min(np.ceil(max(ax, bx) + reach - x0) + 1, ww))
      r0 = int(max(np.floor(min(ay, by) - reach - y0), 0))
      r1 = int(min(np.ceil(max(ay, by) + reach - y0) + 1, hh))
      if c1 <= c0 or r1 <= r0:
        continue
      sub = (slice(r0, r1), slice(c0, c1))
    else:
      sub = (slice(None), slice(None))
    px, py = gx[sub], gy[sub]
    vx, vy = bx - ax, by - ay
    ll = vx * vx + vy * vy
    t = np.clip(((px - ax) * vx + (py - ay) * vy) / max(ll, 1e-12), 0, 1)
    dx, dy = px - ax - t * vx, py - ay - t * vy
    np.minimum(d2[sub], dx * dx + dy * dy, out=d2[sub])
  return np.sqrt(d2)


def _box(pts: np.ndarray, h: int, w: int, pad: float) -> tuple[slice, slice] | None:
  x0 = int(max(np.floor(pts[:, 0].min() - pad), 0))
  x1 = int(min(np.ceil(pts[:, 0].max() + pad) + 1, w))
  y0 = int(max(np.floor(pts[:, 1].min() - pad), 0))
  y1 = int(min(np.ceil(pts[:, 1].max() + pad) + 1, h))
  if x1 <= x0 or y1 <= y0:
    return None
  return slice(y0, y1), slice(x0, x1)


def polygon_alpha(poly: np.ndarray, h: int, w: int) -> np.ndarray:
  """Anti-aliased coverage (H, W) of a closed polygon (x, y pixel centres)."""
  out = np.zeros((h, w), np.float32)
  sl = _box(poly, h, w, 2.0)
  if sl is None:
    return out
  gy, gx = np.mgrid[sl[0], sl[1]].astype(np.float64)
  inside = Path(poly).contains_points(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(gx.shape)
  d = _segment_distance(gx, gy, poly, closed=True, reach=1.0)
  sd = np.where(inside, d, -d)
  out[sl] = np.clip(0.5 + sd, 0.0, 1.0)
  return out


def polyline_alpha(line: np.ndarray, h: int, w: int, width: float) -> np.ndarray:
  """Anti-aliased coverage (H, W) of a stroke of ``width`` pixels."""
  out = np.zeros((h, w), np.float32)
  sl = _box(line, h, w, width + 2.0)
  if sl is None:
    return out
  gy, gx = np.mgrid[sl[0], sl[1]].astype(np.float64)
  d = _segment_distance(gx, gy, line, closed=False, reach=width / 2.0 + 1.0)
  out[sl] = np.clip(width / 2.0 + 0.5 - d, 0.0, 1.0) * min(1.0, width)
  return out


# ------------------------------------------------------------- appearance


def _mask_coords(p: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray, FaceAxes]:
  """(s, t) pixel coordinates in the face axes, origin at the nose tip, unit = iod."""
  ax = FaceAxes.from_dense(p)
  gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
  dx, dy = gx - np.float32(p[30, 0]), gy - np.float32(p[30, 1])
  s = (dx * np.float32(ax.ex[0]) + dy * np.float32(ax.ex[1])) / np.float32(ax.iod)
  t = (dx * np.float32(ax.ey[0]) + dy * np.float32(ax.ey[1])) / np.float32(ax.iod)
  return s, t, ax


def _fabric(rng, s, t, base, pattern) -> np.ndarray:
  h, w = s.shape
  if pattern == "solid":
    rgb = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
  elif pattern == "stripes":
    other = _CLOTH_COLOURS[rng.integers(len(_CLOTH_COLOURS))]
    if np.allclose(other, base):
      other = 1.0 - base
    th, f = rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]), rng.uniform(4, 9)
    q = np.sin((s * np.cos(th) + t * np.sin(th)) * f * np.pi)
    k = np.clip(q * 3.0 + 0.5, 0, 1)[..., None]
    rgb = base * (1 - k) + other * k
  else:  # print: scattered small motifs (dots / flowers) in two colours
    rgb = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    cols = _CLOTH_COLOURS[rng.integers(len(_CLOTH_COLOURS), size=2)]
    f = rng.uniform(5, 9)
    jitter = rng.uniform(0, 1, size=2)
    cu, cv = (s * f + jitter[0]) % 1 - 0.5, (t * f + jitter[1]) % 1 - 0.5
    row = np.floor(t * f + jitter[1]).astype(int)
    cu = np.where(row % 2 == 0, cu, (cu + 1.0) % 1 - 0.5)
    r = np.sqrt(cu**2 + cv**2)
    ang = np.arctan2(cv, cu)
    petal = 0.28 + 0.08 * np.cos(5 * ang)
    k1 = np.clip((petal - r) * 40, 0, 1)[..., None]
    k2 = np.clip((0.1 - r) * 40, 0, 1)[..., None]
    rgb = rgb * (1 - k1) + cols[0] * k1
    rgb = rgb * (1 - k2) + cols[1] * k2
  weave = 1.0 + 0.04 * np.sin(s * 90.0) * np.sin(t * 90.0)
  return np.clip(rgb * weave[..., None], 0, 1).astype(np.float32)


@dataclasses.dataclass
class FaceMask:
  """A rendered face mask: colours, anti-aliased alpha, its kind."""

  rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
  alpha: np.ndarray  # (H, W) float32 in [0, 1]
  kind: str  # 'surgical', 'n95', 'kn95', 'cloth/<pattern>'
  geometry: MaskGeometry


def render_face_mask(
    rng: np.random.Generator,
    dense: np.ndarray,
    height: int,
    width: int,
    kind: str | None = None,
    pattern: str | None = None,
    textured: bool | None = None,
) -> FaceMask:
  """Draws one face mask fitted to 68 landmarks.

  Args:
    rng: numpy generator.
    dense: (68, 2) pixel landmarks (detected or ``dense_landmarks.dense_from_5``).
    height, width: image size.
    kind: one of :data:`FACE_MASK_KINDS` (random when None).
    pattern: cloth pattern, one of :data:`CLOTH_PATTERNS` (random when None).
    textured: force a patterned (True: cloth stripes / print) or plain
      (False: surgical / respirator / solid cloth) mask; None = any.
  """
  p = np.asarray(dense, np.float64)
  if p.shape != (68, 2) or not np.isfinite(p).all():
    raise ValueError(f"dense landmarks must be finite (68, 2), got {p.shape}")
  if textured is True:
    kind = "cloth"
    pattern = pattern or str(rng.choice(["stripes", "print"]))
  elif textured is False and kind is None:
    kind = str(rng.choice(FACE_MASK_KINDS, p=[0.4, 0.2, 0.2, 0.2]))
    if kind == "cloth":
      pattern = "solid"
  if kind is None:
    kind = str(rng.choice(FACE_MASK_KINDS, p=[0.35, 0.15, 0.15, 0.35]))
  geo = mask_geometry(p, kind, rng)
  h, w = int(height), int(width)
  body = polygon_alpha(geo.outline, h, w)
  s, t, ax = _mask_coords(p, h, w)
  lw = max(0.6, 0.012 * ax.iod)
  # curvature: the mask wraps around the face (darker towards its sides)
  half = 0.5 * float((p[14] - p[2]) @ ax.ex) / ax.iod
  wrap = 1.0 - 0.22 * np.clip(np.abs(s) / max(half, 1e-3), 0, 1.2) ** 2
  if kind == "surgical":
    base = _SURGICAL_COLOURS[rng.integers(len(_SURGICAL_COLOURS))]
    rgb = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    # pleats: three folds, parallel to the top edge
    t_top = float(((geo.top - p[30]) @ ax.ey).mean()) / ax.iod
    t_bot = float(((p[8] - p[30]) @ ax.ey)) / ax.iod
    u = (t - t_top) / max(t_bot - t_top, 1e-3)
    folds = np.zeros_like(u)
    for c in (0.3, 0.5, 0.7):
      folds += np.exp(-(((u - c) / 0.025) ** 2)) - 0.5 * np.exp(-(((u - c - 0.04) / 0.03) ** 2))
    rgb *= (1.0 - 0.12 * folds)[..., None]
    wire = polyline_alpha(geo.top + 0.025 * ax.iod * ax.ey, h, w, lw * 1.5)
    rgb = rgb * (1 - 0.25 * wire[..., None]) + 0.25 * wire[..., None]
    kind_name = "surgical"
  elif kind in ("n95", "kn95"):
    base = _RESPIRATOR_COLOURS[rng.integers(len(_RESPIRATOR_COLOURS))]
    rgb = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    if kind == "n95":
      c = geo.outline.mean(0)
      r = np.hypot(
          (s - float((c - p[30]) @ ax.ex) / ax.iod), (t - float((c - p[30]) @ ax.ey) / ax.iod)
      )
      rgb *= (1.05 - 0.18 * np.clip(r / 0.9, 0, 1) ** 2)[..., None]
      if geo.valve is not None:
        vc, vr = geo.valve
        valve = polygon_alpha(
            vc
            + vr
            * np.stack(
                [
                    np.cos(np.linspace(0, 2 * np.pi, 24, False)),
                    np.sin(np.linspace(0, 2 * np.pi, 24, False)),
                ],
                1,
            ),
            h,
            w,
        )
        vcol = np.array([0.35, 0.37, 0.4], np.float32) * rng.uniform(0.7, 1.3)
        rgb = rgb * (1 - valve[..., None]) + np.clip(vcol, 0, 1) * valve[..., None]
    for seam in geo.seams:
      k = polyline_alpha(seam, h, w, lw * 1.2)[..., None]
      rgb = rgb * (1 - 0.35 * k)
    inset = geo.outline.mean(0) + 0.9 * (geo.outline - geo.outline.mean(0))
    k = polyline_alpha(np.concatenate([inset, inset[:1]]), h, w, lw)[..., None]
    rgb = rgb * (1 - 0.15 * k)
    kind_name = kind
  else:
    pattern = pattern or str(rng.choice(CLOTH_PATTERNS))
    if pattern not in CLOTH_PATTERNS:
      raise ValueError(f"unknown cloth pattern {pattern!r}; choose from {CLOTH_PATTERNS}")
    base = _CLOTH_COLOURS[rng.integers(len(_CLOTH_COLOURS))]
    rgb = _fabric(rng, s, t, base, pattern)
    kind_name = f"cloth/{pattern}"
  rgb = np.clip(rgb * wrap[..., None], 0, 1)
  # ear loops (thin, the mask's own colour or white)
  loop_alpha = np.zeros((h, w), np.float32)
  for line in geo.loops:
    loop_alpha = np.maximum(loop_alpha, polyline_alpha(line, h, w, lw))
  loop_alpha = loop_alpha * (body < 1)
  loop_col = (
      np.array([0.95, 0.95, 0.95], np.float32)
      if kind != "cloth"
      else np.asarray(base, np.float32) * 0.9
  )
  alpha = np.maximum(body, loop_alpha)
  sel = (loop_alpha > body)[..., None]
  rgb = np.where(sel, loop_col, rgb).astype(np.float32)
  return FaceMask(np.ascontiguousarray(rgb), alpha.astype(np.float32), kind_name, geo)
