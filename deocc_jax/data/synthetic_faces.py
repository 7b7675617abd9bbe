"""Procedural synthetic identity faces: the embedded default data set.

No download is needed: every face is rendered from a seed. Design
(documented at length in ``docs/synthetic_data.md``):

* **Identity** = a latent vector ``z`` (``LATENT_DIM`` Gaussian numbers) drawn
  from ``(seed, identity)``. Upper-face attributes (eye spacing, size, colour,
  brows, hairline, hair colour and style, face width) are functions of
  ``z_upper``. Lower-face attributes (nose, mouth, lips, jaw taper, chin,
  beard, a mole, cheek colour) are functions of
  ``z_lower = rho * A z_upper + sqrt(1 - rho^2) * eps``: correlated with the
  upper face (``rho`` = ``LOWER_FACE_CORRELATION``) but not predictable from it,
  so covering the lower face really removes identity information and a
  completion network can only partly restore it.
* **Nuisance** per image, drawn from ``(seed, identity, image)``: rotation,
  scale, shift, yaw-like horizontal squeeze, lighting direction / strength /
  colour, expression (smile, open mouth, blink, raised brows), background
  (two-colour gradient + low-frequency texture) and sensor noise.
* **Landmarks**: five points (left eye, right eye, nose tip, left mouth
  corner, right mouth corner; "left" = smaller x in the image, the CelebA
  convention) in pixel coordinates of the rendered image.

Rendering is vectorised numpy over the pixel grid (anti-aliased implicit
shapes), about 1 ms per 64 px face on one core.
"""

from __future__ import annotations

import dataclasses
import functools


import numpy as np

LATENT_DIM = 24
UPPER_DIMS = 12
LOWER_FACE_CORRELATION = 0.6
_SEED_SALT = 0x5EED_FACE

_SKIN_LIGHT = np.array([0.97, 0.82, 0.72])
_SKIN_DARK = np.array([0.33, 0.21, 0.14])
_HAIR_COLOURS = np.array(
    [
        [0.08, 0.06, 0.05],
        [0.25, 0.15, 0.08],
        [0.45, 0.30, 0.16],
        [0.80, 0.66, 0.38],
        [0.55, 0.22, 0.10],
        [0.62, 0.62, 0.62],
    ]
)
_IRIS_COLOURS = np.array(
    [
        [0.30, 0.18, 0.08],
        [0.16, 0.10, 0.05],
        [0.25, 0.45, 0.70],
        [0.30, 0.50, 0.30],
        [0.45, 0.40, 0.25],
    ]
)


@dataclasses.dataclass(frozen=True)
class IdentityParams:
  """Identity-defining geometry and colours, in the canonical face frame.

  The canonical frame has x to the right and y down; the head spans roughly
  x in [-0.65, 0.65] and y in [-0.9, 0.9].
  """

  face_w: float
  face_h: float
  jaw_taper: float
  skin: np.ndarray
  eye_dx: float
  eye_y: float
  eye_w: float
  eye_h: float
  iris: np.ndarray
  brow_gap: float
  brow_thick: float
  brow_tilt: float
  brow_len: float
  hair: np.ndarray
  hairline: float
  hair_style: int  # 0 short, 1 long, 2 fringe, 3 bald-ish
  nose_y: float
  nose_w: float
  nose_len: float
  mouth_y: float
  mouth_w: float
  lip_h: float
  lip: np.ndarray
  chin: float
  beard: float
  mole: np.ndarray  # (x, y, radius); radius 0 = none
  cheek: float
  ear: float


@dataclasses.dataclass(frozen=True)
class Nuisance:
  """Per-image nuisance variation."""

  angle: float
  scale: float
  shift: np.ndarray
  squeeze: float
  light_dir: np.ndarray
  light_strength: float
  light_tint: np.ndarray
  brightness: float
  smile: float
  mouth_open: float
  blink: float
  brow_raise: float
  bg0: np.ndarray
  bg1: np.ndarray
  bg_angle: float
  bg_freq: np.ndarray
  bg_phase: np.ndarray
  noise: float


def _sig(x: np.ndarray | float) -> np.ndarray | float:
  return 1.0 / (1.0 + np.exp(-x))


def identity_latent(seed: int, identity: int) -> tuple[np.ndarray, np.ndarray]:
  """Returns ``(z_upper, z_lower)`` of one identity (Gaussian, correlated)."""
  rng = np.random.default_rng([_SEED_SALT, int(seed), int(identity)])
  z_upper = rng.standard_normal(UPPER_DIMS)
  eps = rng.standard_normal(LATENT_DIM - UPPER_DIMS)
  # A fixed random mixing matrix per seed: how the lower face follows the upper.
  mix_rng = np.random.default_rng([_SEED_SALT, int(seed), 0xA11])
  a = mix_rng.standard_normal((LATENT_DIM - UPPER_DIMS, UPPER_DIMS))
  a /= np.linalg.norm(a, axis=1, keepdims=True)
  rho = LOWER_FACE_CORRELATION
  z_lower = rho * (a @ z_upper) + np.sqrt(1.0 - rho**2) * eps
  return z_upper, z_lower


@functools.lru_cache(maxsize=4096)
def identity_params(seed: int, identity: int) -> IdentityParams:
  """Maps an identity's latent code to face attributes (memoised, pure)."""
  u, l = identity_latent(seed, identity)
  tone = _sig(1.3 * u[0])
  skin = tone * _SKIN_LIGHT + (1 - tone) * _SKIN_DARK
  skin = np.clip(skin + 0.03 * np.array([u[1], 0.3 * u[1], -u[1]]), 0, 1)
  hair_idx = int(np.floor(_sig(u[2]) * len(_HAIR_COLOURS) * 0.999))
  iris_idx = int(np.floor(_sig(u[3]) * len(_IRIS_COLOURS) * 0.999))
  lip = np.clip(
      skin * np.array([0.9, 0.55, 0.55]) + np.array([0.12, 0.0, 0.02]) + 0.05 * l[7], 0, 1
  )
  beard = float(np.clip(l[8] - 0.6, 0.0, 1.0))  # about 1/4 of ids have one
  mole_r = 0.035 if l[9] > 0.7 else 0.0
  return IdentityParams(
      face_w=0.53 + 0.05 * np.tanh(u[4]),
      face_h=0.76 + 0.04 * np.tanh(u[5]),
      jaw_taper=0.30 + 0.18 * np.tanh(l[0]),
      skin=skin,
      eye_dx=0.22 + 0.035 * np.tanh(u[6]),
      eye_y=-0.10 + 0.04 * np.tanh(u[7]),
      eye_w=0.095 + 0.02 * np.tanh(u[8]),
      eye_h=0.045 + 0.012 * np.tanh(u[9]),
      iris=_IRIS_COLOURS[iris_idx],
      brow_gap=0.11 + 0.03 * np.tanh(u[10]),
      brow_thick=0.022 + 0.012 * np.tanh(u[11]),
      brow_tilt=0.25 * np.tanh(u[1] - u[10]),
      brow_len=0.11 + 0.025 * np.tanh(u[9] + u[4]),
      hair=_HAIR_COLOURS[hair_idx],
      hairline=-0.45 + 0.10 * np.tanh(u[5] - u[2]),
      hair_style=int(np.floor(_sig(u[11] + u[3]) * 3.999)),
      nose_y=0.22 + 0.04 * np.tanh(l[1]),
      nose_w=0.075 + 0.022 * np.tanh(l[2]),
      nose_len=0.20 + 0.04 * np.tanh(l[3]),
      mouth_y=0.44 + 0.04 * np.tanh(l[4]),
      mouth_w=0.15 + 0.035 * np.tanh(l[5]),
      lip_h=0.032 + 0.013 * np.tanh(l[6]),
      lip=lip,
      chin=0.5 + 0.5 * np.tanh(l[10]),
      beard=beard,
      mole=np.array([0.25 * np.tanh(l[11]), 0.35 + 0.15 * np.tanh(l[7] - l[11]), mole_r]),
      cheek=0.5 * _sig(l[6] + l[1]),
      ear=0.08 + 0.02 * np.tanh(u[8] - u[6]),
  )


def sample_nuisance(seed: int, identity: int, image: int, strength: float = 1.0) -> Nuisance:
  """Per-image nuisance draw; ``strength`` scales the geometric variation."""
  rng = np.random.default_rng([_SEED_SALT, int(seed), int(identity), int(image), 7])
  s = strength
  ang = rng.uniform(0, 2 * np.pi)
  return Nuisance(
      angle=float(rng.normal(0, 0.10) * s),
      scale=float(np.exp(rng.normal(0, 0.06) * s)),
      shift=rng.normal(0, 0.04, size=2) * s,
      squeeze=float(1.0 - abs(rng.normal(0, 0.06)) * s),
      light_dir=np.array([np.cos(ang), np.sin(ang)]),
      light_strength=float(rng.uniform(0.0, 0.35)),
      light_tint=np.exp(rng.normal(0, 0.05, size=3)),
      brightness=float(np.exp(rng.normal(0, 0.12))),
      smile=float(rng.uniform(-0.3, 1.0)),
      mouth_open=float(max(0.0, rng.normal(0, 0.5))),
      blink=float(rng.uniform(0.0, 1.0) < 0.1),
      brow_raise=float(rng.normal(0, 0.02)),
      bg0=rng.uniform(0.05, 0.95, size=3),
      bg1=rng.uniform(0.05, 0.95, size=3),
      bg_angle=float(rng.uniform(0, 2 * np.pi)),
      bg_freq=rng.uniform(1.0, 6.0, size=2),
      bg_phase=rng.uniform(0, 2 * np.pi, size=2),
      noise=float(rng.uniform(0.0, 0.025)),
  )


@functools.lru_cache(maxsize=8)
def _pixel_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
  """Read-only (x, y) pixel-centre grids of a square image."""
  coords = np.arange(resolution, dtype=np.float32)
  gx, gy = np.meshgrid(coords, coords)
  gx.flags.writeable = False
  gy.flags.writeable = False
  return gx, gy


@functools.lru_cache(maxsize=8)
def _noise_bank(resolution: int, size: int = 16) -> np.ndarray:
  """A fixed bank of unit Gaussian noise images (sensor noise is drawn from it)."""
  bank = np.random.default_rng([_SEED_SALT, resolution]).standard_normal(
      (size, resolution, resolution, 3), dtype=np.float32
  )
  bank.flags.writeable = False
  return bank


class _Canvas:
  """A float32 RGB canvas with the pixel grid expressed in the face frame.

  Shapes are evaluated only inside their pixel bounding box, which keeps a
  64 px face at about a millisecond.
  """

  def __init__(self, resolution: int, lin: np.ndarray, off: np.ndarray):
    r = resolution
    self.r = r
    self.lin, self.off = lin, off
    inv = np.linalg.inv(lin)
    gx, gy = _pixel_grid(r)
    dx, dy = gx - np.float32(off[0]), gy - np.float32(off[1])
    self.gx, self.gy = gx, gy
    self.x = (inv[0, 0] * dx + inv[0, 1] * dy).astype(np.float32)
    self.y = (inv[1, 0] * dx + inv[1, 1] * dy).astype(np.float32)
    self.px = float(1.0 / np.sqrt(abs(np.linalg.det(lin))))  # face units per pixel
    self.img = np.zeros((r, r, 3), np.float32)

  def box(self, cx: float, cy: float, rmax: float) -> tuple[slice, slice]:
    """Pixel bounding box (rows, cols) of a disc in the face frame."""
    c = self.lin @ np.array([cx, cy]) + self.off
    rp = rmax / self.px * 1.1 + 2.0
    x0, x1 = int(max(0, np.floor(c[0] - rp))), int(min(self.r, np.ceil(c[0] + rp) + 1))
    y0, y1 = int(max(0, np.floor(c[1] - rp))), int(min(self.r, np.ceil(c[1] + rp) + 1))
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))

  def paint(self, sl, alpha: np.ndarray, colour) -> None:
    """Alpha-composites ``colour`` ((3,) or (h, w, 3)) into the box ``sl``."""
    a = alpha[..., None]
    view = self.img[sl]
    view *= 1.0 - a
    view += a * np.asarray(colour, np.float32)

  def ellipse(self, cx, cy, rx, ry, theta: float = 0.0, sl=None):
    """(box, coverage) of an anti-aliased (rotated) ellipse."""
    if sl is None:
      sl = self.box(cx, cy, max(rx, ry))
    x, y = self.x[sl] - cx, self.y[sl] - cy
    if theta:
      c, s = np.cos(theta), np.sin(theta)
      x, y = x * c + y * s, -x * s + y * c
    d = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    return sl, np.clip((1.0 - d) * (min(rx, ry) / self.px) + 0.5, 0.0, 1.0)

  def paint_ellipse(self, cx, cy, rx, ry, colour, opacity: float = 1.0, theta: float = 0.0) -> None:
    sl, a = self.ellipse(cx, cy, rx, ry, theta)
    if a.size:
      self.paint(sl, a * opacity, colour)


def canonical_landmarks(p: IdentityParams, n: Nuisance) -> np.ndarray:
  """Five landmarks in the canonical face frame, with expression applied."""
  mouth_corner_y = p.mouth_y - 0.03 * n.smile
  mouth_w = p.mouth_w * (1.0 + 0.12 * n.smile)
  return np.array(
      [
          [-p.eye_dx, p.eye_y],
          [p.eye_dx, p.eye_y],
          [0.0, p.nose_y],
          [-mouth_w, mouth_corner_y],
          [mouth_w, mouth_corner_y],
      ]
  )


def _frame_transform(n: Nuisance, resolution: int):
  """Similarity (+ squeeze) from the canonical frame to pixel coordinates."""
  c, s = np.cos(n.angle), np.sin(n.angle)
  half = resolution / 2.0
  lin = np.array([[c, -s], [s, c]]) @ np.diag([n.squeeze, 1.0]) * n.scale * 0.95
  return lin * half, (n.shift + 1.0) * half - 0.5


def render_face(
    p: IdentityParams, n: Nuisance, resolution: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Renders one face.

  Returns:
    image: (R, R, 3) uint8 RGB.
    landmarks: (5, 2) float32 pixel coordinates (x, y), CelebA order.
    face_region: (R, R) float32 in [0, 1], the skin area of the face (used to
      measure occlusion coverage).
  """
  r = int(resolution)
  lin, off = _frame_transform(n, r)
  cv = _Canvas(r, lin, off)
  x, y, px, gx, gy = cv.x, cv.y, cv.px, cv.gx, cv.gy
  full = (slice(0, r), slice(0, r))

  # Background: two-colour gradient plus low-frequency texture.
  t = np.clip(0.5 + 0.5 * (np.cos(n.bg_angle) * gx + np.sin(n.bg_angle) * gy) / r, 0, 1)
  tex = 0.06 * (
      np.sin(np.float32(n.bg_freq[0] * 2 * np.pi / r) * gx + n.bg_phase[0])
      * np.cos(np.float32(n.bg_freq[1] * 2 * np.pi / r) * gy + n.bg_phase[1])
  )
  cv.img[:] = (
      (1 - t)[..., None] * n.bg0.astype(np.float32)
      + t[..., None] * n.bg1.astype(np.float32)
      + tex[..., None]
  )

  # Hair behind the head (long style reaches the shoulders).
  long_hair = p.hair_style == 1
  sl, hair_back = cv.ellipse(
      0.0, 0.1 if long_hair else -0.12, p.face_w * 1.18, p.face_h * (1.25 if long_hair else 0.95)
  )
  yb = y[sl]
  if p.hair_style == 3:
    hair_back = hair_back * np.clip((-0.55 - yb) / 0.1, 0, 1) * 0.5
  elif not long_hair:
    hair_back = hair_back * np.clip((0.15 - yb) / 0.05, 0, 1)
  cv.paint(sl, hair_back, p.hair)

  # Ears.
  for sgn in (-1.0, 1.0):
    cv.paint_ellipse(sgn * p.face_w * 0.98, p.eye_y + 0.08, p.ear, p.ear * 1.6, p.skin * 0.92)

  # Face with a jaw that narrows towards the chin.
  cy = 0.02
  yy = (y - cy) / p.face_h
  taper = 1.0 - p.jaw_taper * np.clip(yy, 0, 1) ** (1.5 + p.chin)
  d = np.sqrt((x / (p.face_w * taper)) ** 2 + yy**2)
  face = np.clip((1.0 - d) * (p.face_w / px) + 0.5, 0.0, 1.0).astype(np.float32)
  shade = 1.0 - 0.10 * np.clip(d, 0, 1) ** 4
  cv.paint(full, face, p.skin.astype(np.float32) * shade[..., None])
  face_region = face.copy()

  # Cheeks, beard, mole (lower-face identity cues).
  if p.cheek > 0.05:
    for sgn in (-1.0, 1.0):
      sl, a = cv.ellipse(sgn * 0.30, 0.28, 0.10, 0.07)
      cv.paint(sl, 0.35 * p.cheek * a * face[sl], np.array([0.85, 0.35, 0.35]))
  if p.beard > 0:
    beard = face * np.clip((y - p.nose_y - 0.08) / 0.08, 0, 1) * (0.85 * np.sqrt(p.beard))
    cv.paint(full, beard, p.hair * 0.9)
  if p.mole[2] > 0:
    sl, a = cv.ellipse(p.mole[0], p.mole[1], p.mole[2], p.mole[2])
    cv.paint(sl, a * face[sl], np.array([0.25, 0.15, 0.1]))

  # Eyes: white, iris, pupil, lid; blink closes them. Brows.
  open_ = 0.12 if n.blink else 1.0
  for sgn in (-1.0, 1.0):
    ex = sgn * p.eye_dx
    sl = cv.box(ex, p.eye_y, p.eye_w * 1.2 + 0.03)
    _, white = cv.ellipse(ex, p.eye_y, p.eye_w, p.eye_h * open_, sl=sl)
    cv.paint(sl, white, np.array([0.95, 0.95, 0.93]))
    _, iris = cv.ellipse(ex, p.eye_y, p.eye_h * 0.95, p.eye_h * 0.95, sl=sl)
    cv.paint(sl, iris * white, p.iris)
    _, pupil = cv.ellipse(ex, p.eye_y, p.eye_h * 0.45, p.eye_h * 0.45, sl=sl)
    cv.paint(sl, pupil * white, np.array([0.03, 0.03, 0.03]))
    _, lid = cv.ellipse(
        ex, p.eye_y - p.eye_h * 0.35 * open_, p.eye_w * 1.05, p.eye_h * 0.75 * open_ + 0.01, sl=sl
    )
    cv.paint(sl, np.clip(lid - white, 0, 1) * 0.6, p.skin * 0.45)
    cv.paint_ellipse(
        ex,
        p.eye_y - p.brow_gap - n.brow_raise,
        p.brow_len,
        p.brow_thick,
        p.hair * 0.8,
        theta=sgn * p.brow_tilt,
    )

  # Nose: bridge shading, tip highlight, nostrils.
  cv.paint_ellipse(
      0.0, p.nose_y - p.nose_len / 2, p.nose_w * 0.45, p.nose_len / 2, p.skin * 0.7, opacity=0.25
  )
  cv.paint_ellipse(
      0.0, p.nose_y - 0.01, p.nose_w * 0.7, 0.04, np.minimum(p.skin * 1.12, 1.0), opacity=0.35
  )
  for sgn in (-1.0, 1.0):
    cv.paint_ellipse(
        sgn * p.nose_w * 0.55, p.nose_y + 0.02, p.nose_w * 0.28, 0.016, p.skin * 0.35, opacity=0.8
    )

  # Mouth: lips bent by the smile, dark inside when open.
  mouth_w = p.mouth_w * (1.0 + 0.12 * n.smile)
  sl = cv.box(0.0, p.mouth_y, mouth_w + 0.05)
  xm = x[sl]
  ym = y[sl] - p.mouth_y + 0.03 * n.smile * (1.0 - (xm / mouth_w) ** 2)

  def lip_shape(rx, ry):
    d = np.sqrt((xm / rx) ** 2 + (ym / ry) ** 2)
    return np.clip((1.0 - d) * (min(rx, ry) / px) + 0.5, 0.0, 1.0)

  cv.paint(sl, lip_shape(mouth_w, p.lip_h * (1.0 + 0.6 * n.mouth_open)), p.lip)
  if n.mouth_open > 0.05:
    cv.paint(
        sl, lip_shape(mouth_w * 0.8, p.lip_h * 0.6 * n.mouth_open), np.array([0.2, 0.05, 0.05])
    )
  else:
    cv.paint(sl, lip_shape(mouth_w, 0.006), p.lip * 0.5)

  # Front hair: cap above the hairline, or a fringe.
  sl, top = cv.ellipse(0.0, -0.1, p.face_w * 1.12, p.face_h * 0.98)
  yt = y[sl]
  if p.hair_style == 2:
    front = top * np.clip((p.hairline + 0.12 - yt) / 0.03, 0, 1)
  elif p.hair_style == 3:
    front = top * np.clip((p.hairline - 0.2 - yt) / 0.03, 0, 1) * 0.6
  else:
    front = top * np.clip((p.hairline - yt) / 0.03, 0, 1)
  cv.paint(sl, front, p.hair)
  face_region[sl] *= 1.0 - front

  # Lighting (directional, on the head), tint, brightness, noise.
  light = 1.0 + n.light_strength * (n.light_dir[0] * x + n.light_dir[1] * y)
  img = cv.img * light[..., None] * (n.light_tint * n.brightness).astype(np.float32)
  if n.noise > 0:
    bank = _noise_bank(r)
    img += bank[int(1e6 * n.noise) % len(bank)] * np.float32(n.noise)
  image = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

  lm = canonical_landmarks(p, n) @ lin.T + off
  return image, lm.astype(np.float32), face_region


@dataclasses.dataclass(frozen=True)
class SyntheticFaces:
  """Deterministic random-access synthetic face set.

  ``identities`` x ``images_per_identity`` faces; record ``i`` is image
  ``i % images_per_identity`` of identity ``i // images_per_identity``.
  """

  identities: int = 1000
  images_per_identity: int = 20
  resolution: int = 64
  seed: int = 0
  nuisance_strength: float = 1.0

  def __post_init__(self):
    if not 32 <= self.resolution <= 256:
      raise ValueError(f"resolution must be in [32, 256], got {self.resolution}")
    if self.identities < 1 or self.images_per_identity < 1:
      raise ValueError(
          "identities and images_per_identity must be >= 1, got "
          f"{self.identities} x {self.images_per_identity}"
      )

  def __len__(self) -> int:
    return self.identities * self.images_per_identity

  def render(self, identity: int, image: int) -> dict[str, np.ndarray]:
    if not 0 <= identity < self.identities:
      raise IndexError(f"identity {identity} out of range [0, {self.identities})")
    p = identity_params(self.seed, identity)
    n = sample_nuisance(self.seed, identity, image, self.nuisance_strength)
    img, lm, region = render_face(p, n, self.resolution)
    return {"image": img, "landmarks": lm, "face_region": region, "identity": np.int32(identity)}

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range [0, {len(self)})")
    return self.render(index // self.images_per_identity, index % self.images_per_identity)
