"""The shapes of face masks fitted to dense (68-point) landmarks.

A worn mask is not a sticker scaled to a coverage target: it runs from the
nose bridge over the cheeks to under the chin and follows the jaw line. Its
outline is built from the 68-point landmarks (:mod:`deocc_jax.data.dense_landmarks`;
iBUG 300-W order: 0-16 jaw, 27-30 nose bridge, 30 nose tip, 36-47 eyes, 48-67
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

The masks are drawn by :mod:`deocc_jax.data.face_masks`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FACE_MASK_KINDS = ("surgical", "n95", "kn95", "cloth")


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
    out.append(
        0.5
        * (
            (2 * p1)
            + (-p0 + p2) * t
            + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
            + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
        )
    )
  if not closed:
    out.append(p[-2][None])
  return np.concatenate(out)


@dataclasses.dataclass(frozen=True)
class FaceAxes:
  """The face's own axes from dense landmarks (pixels)."""

  ex: np.ndarray  # unit vector along the eye line (image left -> right)
  ey: np.ndarray  # unit vector towards the chin
  iod: float  # inter-ocular distance
  height: float  # nose bridge (27) to chin (8) along ey
  eye_low: float  # lowest lower-lid point (36-47) along ey from point 27

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

  outline: np.ndarray  # (N, 2) closed polygon
  loops: list[np.ndarray]  # polylines
  seams: list[np.ndarray]  # polylines drawn darker on the mask
  top: np.ndarray  # top edge polyline (left -> right)
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
    offs = [
        0.02,
        0.03,
        0.04,
        0.05 + hang / 2,
        0.04 + hang,
        0.03 + hang,
        0.03 + hang,
        0.04 + hang,
        0.05 + hang / 2,
        0.04,
        0.03,
        0.02,
        0.02,
    ]
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
    loops_at = (
        c - 0.9 * half_w * ax.ex - 0.4 * half_h * ax.ey,
        c - 0.95 * half_w * ax.ex + 0.3 * half_h * ax.ey,
        c + 0.9 * half_w * ax.ex - 0.4 * half_h * ax.ey,
        c + 0.95 * half_w * ax.ex + 0.3 * half_h * ax.ey,
    )
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
    loops.append(
        _catmull_rom(
            np.stack(
                [a, 0.5 * (a + ear) - 0.04 * H * ax.ey, ear, 0.5 * (b + ear) + 0.06 * H * ax.ey, b]
            ),
            8,
        )
    )
  return MaskGeometry(outline, loops, seams, top, valve)
