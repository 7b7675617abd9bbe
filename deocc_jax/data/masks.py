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

The procedural shapes (``occluder_shapes.py``) are drawn in a *landmark frame*
(origin between the eyes, x along the eye line, unit = inter-ocular distance),
so they follow the face's pose. A
shape's scale is searched so that its coverage of the face region hits a
target drawn from ``coverage_range`` (default mean 1/5 of the face).

The output occlusion is ``(rgb, alpha)``; the binary mask ``M`` is
``alpha > 0`` (1 inside the occluded region), so every pixel outside ``M`` is
exactly the clean face. A user's own library of RGBA mask images (like the
paper's 45 PNGs) is loaded by ``mask_library.MaskLibrary`` and placed the same way.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import numpy as np

from deocc_jax.data import face_masks as fm
from deocc_jax.data import occluder_shapes as shapes
from deocc_jax.data import photometric
from deocc_jax.data.dense_landmarks import dense_from_5
from deocc_jax.data.occluder_shapes import LandmarkFrame

if TYPE_CHECKING:
  from deocc_jax.data.mask_library import MaskLibrary

CATEGORIES = ("simple", "complex", "body", "hybrid")
DEFAULT_COVERAGE_RANGE = (0.1, 0.3)


@dataclasses.dataclass
class Occlusion:
  """An occluder: colour, soft alpha, and the category / kind it came from.

  With ``seed`` set, :func:`composite` harmonises the colours with the face
  (``photometric.harmonize``, using ``landmarks`` / ``face_region``; ``skin``
  weights the face-sampled skin tone). ``alpha`` is never changed.
  """

  rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
  alpha: np.ndarray  # (H, W) float32 in [0, 1]
  category: str
  kind: str
  seed: int | None = None
  landmarks: np.ndarray | None = None  # (5, 2) pixel landmarks
  face_region: np.ndarray | None = None  # (H, W)
  skin: np.ndarray | None = None  # (H, W) weight of the face's skin tone

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
  return photometric.harmonize(clean, occ.rgb, occ.alpha, occ.landmarks, region, occ.seed, occ.skin)


def composite(clean: np.ndarray, occ: Occlusion) -> np.ndarray:
  """Pastes an occluder on a uint8 face; pixels outside M stay exact."""
  clean = np.asarray(clean)
  if clean.shape[:2] != occ.alpha.shape:
    raise ValueError(f"occluder is {occ.alpha.shape}, face is {clean.shape[:2]}")
  a = occ.alpha[..., None]
  out = clean.astype(np.float32) * (1.0 - a) + occluder_colours(clean, occ) * 255.0 * a
  out = np.where(a > 0, out, clean.astype(np.float32))
  return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def face_region_from_landmarks(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
  """An elliptic face region from five landmarks (for real photos)."""
  fr = LandmarkFrame.from_landmarks(landmarks, height, width)
  d = (fr.u / 1.15) ** 2 + ((fr.v - 0.55) / 1.45) ** 2
  return (d <= 1.0).astype(np.float32)


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
      raise ValueError(
          f"weights has {len(self.weights)} entries for " f"{len(self.categories)} categories"
      )
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


def _face_mask(rng, landmarks, dense, face_region, category: str) -> fm.FaceMask:
  """A landmark-fitted face mask (plain for 'simple', patterned for 'complex')."""
  h, w = face_region.shape
  pts = dense if dense is not None else dense_from_5(landmarks, face_region)
  return fm.render_face_mask(rng, pts, h, w, textured=category == "complex")


def face_mask_occlusion(
    rng: np.random.Generator,
    landmarks: np.ndarray,
    face_region: np.ndarray,
    kind: str | None = None,
    dense_landmarks: np.ndarray | None = None,
    pattern: str | None = None,
    photometric_on: bool = True,
) -> Occlusion:
  """One landmark-fitted face mask of ``kind`` (``face_mask_geometry.FACE_MASK_KINDS``).

  Category: ``complex`` for patterned cloth, else ``simple``.
  """
  h, w = face_region.shape
  LandmarkFrame.from_landmarks(landmarks, h, w)  # validates the 5 landmarks
  pts = (
      np.asarray(dense_landmarks, np.float64)
      if dense_landmarks is not None
      else dense_from_5(landmarks, face_region)
  )
  m = fm.render_face_mask(rng, pts, h, w, kind=kind, pattern=pattern)
  seed = int(rng.integers(2**31)) if photometric_on else None
  category = "complex" if m.kind in ("cloth/stripes", "cloth/print") else "simple"
  return Occlusion(
      rgb=m.rgb,
      alpha=m.alpha,
      category=category,
      kind=f"facemask:{m.kind}",
      seed=seed,
      landmarks=np.asarray(landmarks, np.float32),
      face_region=face_region,
  )


def synthesize_occlusion(
    rng: np.random.Generator,
    landmarks: np.ndarray,
    face_region: np.ndarray,
    config: MaskConfig = MaskConfig(),
    category: str | None = None,
    dense_landmarks: np.ndarray | None = None,
) -> Occlusion:
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
      (``dense_landmarks.dense_from_5``).
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
  seed = int(rng.integers(2**31)) if config.photometric else None
  extra = dict(seed=seed, landmarks=np.asarray(landmarks, np.float32), face_region=face_region)

  if (
      config.library is not None
      and len(config.library.for_category(category))
      and rng.random() < config.effective_library_prob
  ):
    occ = config.library.place(rng, category, fr, landmarks, face_region, target, (lo, hi), shift)
    return dataclasses.replace(occ, **extra)

  if category in ("simple", "complex") and rng.random() < config.face_mask_prob:
    m = _face_mask(rng, landmarks, dense_landmarks, face_region, category)
    return Occlusion(
        rgb=m.rgb, alpha=m.alpha, category=category, kind=f"facemask:{m.kind}", **extra
    )

  if category in ("simple", "complex", "body"):
    kind, fn, anchor, rgb, is_skin = shapes.man_made_or_body(rng, category, fr)
    alpha, _ = shapes.fit_coverage(fn, anchor, shift, fr, face_region, target, lo, hi)
    skin = alpha if is_skin else None
    return Occlusion(
        rgb=np.ascontiguousarray(rgb), alpha=alpha, category=category, kind=kind, skin=skin, **extra
    )

  # hybrid: sunglasses + another occluder (a face mask among them), or two occluders.
  if rng.random() < 0.6:
    g_alpha, g_rgb = shapes.sunglasses(rng, fr, translucent=config.photometric)
    sub = str(rng.choice(["simple", "complex", "body"]))
    if sub != "body" and rng.random() < config.face_mask_prob:
      m = _face_mask(rng, landmarks, dense_landmarks, face_region, sub)
      alpha = np.maximum(m.alpha, g_alpha)
      rgb = np.where((g_alpha >= m.alpha)[..., None], g_rgb, m.rgb)
      return Occlusion(
          rgb=rgb.astype(np.float32),
          alpha=alpha,
          category="hybrid",
          kind=f"sunglasses+facemask:{m.kind}",
          **extra,
      )
    kind, fn, anchor, rgb, is_skin = shapes.man_made_or_body(rng, sub, fr)
    alpha, _ = shapes.fit_coverage(
        fn, anchor, shift, fr, face_region, target, lo, hi, fixed=g_alpha
    )
    glasses = (g_alpha >= alpha - 1e-6) & (g_alpha > 0)
    rgb = np.where(glasses[..., None], g_rgb, rgb)
    skin = np.where(glasses, 0.0, alpha).astype(np.float32) if is_skin else None
    return Occlusion(
        rgb=rgb.astype(np.float32),
        alpha=alpha,
        category="hybrid",
        kind=f"sunglasses+{kind}",
        skin=skin,
        **extra,
    )
  subs = rng.choice(["simple", "complex", "body"], size=2, replace=False)
  k1, f1, a1, rgb1, s1 = shapes.man_made_or_body(rng, str(subs[0]), fr)
  k2, f2, a2, rgb2, s2 = shapes.man_made_or_body(rng, str(subs[1]), fr)
  half_target = target * 0.5
  first, _ = shapes.fit_coverage(f1, a1, shift, fr, face_region, half_target, lo * 0.5, hi * 0.5)
  alpha, _ = shapes.fit_coverage(f2, a2, -shift, fr, face_region, target, lo, hi, fixed=first)
  on_first = first >= alpha - 1e-6
  rgb = np.where(on_first[..., None], rgb1, rgb2)
  skin = None
  if s1 or s2:
    skin = np.where(on_first, float(s1), float(s2)).astype(np.float32) * alpha
  return Occlusion(
      rgb=rgb.astype(np.float32),
      alpha=alpha,
      category="hybrid",
      kind=f"{k1}+{k2}",
      skin=skin,
      **extra,
  )


# ------------------------------------------------------ AR-style occluders

AR_OCCLUSIONS = ("sunglasses", "scarf")


def synthesize_ar_occlusion(
    rng: np.random.Generator, landmarks: np.ndarray, height: int, width: int, kind: str
) -> Occlusion:
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
    alpha, rgb = shapes.sunglasses(rng, fr)
    return Occlusion(rgb=rgb, alpha=alpha, category="hybrid", kind="sunglasses")
  top = rng.uniform(0.45, 0.6)
  half_w = rng.uniform(1.2, 1.4)
  alpha = ((fr.v >= top) & (fr.v <= 2.6) & (np.abs(fr.u) <= half_w)).astype(np.float32)
  base = shapes.MAN_MADE_COLOURS[rng.integers(len(shapes.MAN_MADE_COLOURS))]
  rgb, tex = shapes.texture(rng, fr, base)
  return Occlusion(
      rgb=np.ascontiguousarray(rgb, np.float32),
      alpha=alpha,
      category="complex",
      kind=f"scarf/{tex}",
  )
