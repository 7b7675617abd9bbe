"""The occluder bank of the device synthesis, built once on the host (numpy).

Every occluder today's host synthesis draws (``masks.synthesize_occlusion``)
is a function of the face's *landmark frame* (origin between the eyes, x
along the eye line, unit = inter-ocular distance; ``LandmarkFrame``) or, for
the landmark-fitted face masks, of the 68-point landmarks. So the bank renders
many random draws of each, once, with the host's own code, on a *canonical
frame*: a ``G x G`` grid over ``u in [-2.4, 2.4], v in [-1.7, 3.1]``
inter-ocular distances (face masks on dlib's mean face placed in that frame).
Each entry keeps

* ``rgb`` (uint8) and ``opacity`` (uint8: 1 for solid occluders, the lens
  opacity of sunglasses, a library image's alpha),
* ``sdf``: the signed distance (inter-ocular units, > 0 inside) to the
  shape's outline, so the device draws crisp anti-aliased edges at any scale,
* its kind, anchor (the point the coverage search scales about), whether it
  is skin (hands take the face's skin tone) and its palette skin colour.

``role_logits`` (one row per role: procedural simple / complex / body, face
mask simple / complex, sunglasses, the user library per category) give the
sampling probability of each entry, so the device draws kinds with the host's
probabilities. The device half is :mod:`deocc_jax.data.device_occluders`.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
from scipy import ndimage

from deocc_jax.data import face_masks as fm
from deocc_jax.data import masks as masks_lib
from deocc_jax.data import occluder_shapes as shapes
from deocc_jax.data.dense_landmarks import MEAN_FACE_68, _similarity, canonical5_from_68

U_RANGE = (-2.4, 2.4)
V_RANGE = (-1.7, 3.1)
ROLES = (
    "proc_simple",
    "proc_complex",
    "body",
    "facemask_simple",
    "facemask_complex",
    "sunglasses",
    "library_simple",
    "library_complex",
    "library_body",
    "library_hybrid",
)
LIBRARY_ROLE = {c: ROLES.index(f"library_{c}") for c in masks_lib.CATEGORIES}
# Host probabilities (occluder_shapes._man_made_shape, face_masks.render_face_mask).
_MAN_MADE_P = {
    "surgical": 0.25,
    "cloth": 0.2,
    "n95": 0.15,
    "bandana": 0.15,
    "scarf": 0.1,
    "patch": 0.15,
}
_TEXTURES = ("stripes", "checks", "dots", "camouflage", "noise", "gradient", "logo")
_BODY_P = {"hand": 0.6, "hair": 0.4}
_FM_SIMPLE_P = {"surgical": 0.4, "n95": 0.2, "kn95": 0.2, "cloth/solid": 0.2}
_FM_COMPLEX_P = {"cloth/stripes": 0.5, "cloth/print": 0.5}


@dataclasses.dataclass(frozen=True)
class BankSizes:
  """How many random draws of each role the bank renders."""

  grid: int = 192  # canonical grid side (40 px per inter-ocular distance)
  simple: int = 48
  complex: int = 126
  body: int = 40
  facemask_simple: int = 32
  facemask_complex: int = 16
  sunglasses: int = 24


@dataclasses.dataclass
class HostBank:
  """The bank in numpy (see the module docstring); ``to_device`` makes a pytree."""

  rgb: np.ndarray  # (N, G, G, 3) uint8
  opacity: np.ndarray  # (N, G, G) uint8
  sdf: np.ndarray  # (N, G, G) float16, inter-ocular units, > 0 inside
  anchor: np.ndarray  # (N, 2) float32 (u, v)
  is_skin: np.ndarray  # (N,) bool
  skin_ref: np.ndarray  # (N, 3) float32 palette skin colour (hands)
  kind: np.ndarray  # (N,) int32 index into kind_names
  kind_names: tuple[str, ...]
  role_logits: np.ndarray  # (len(ROLES), N) float32, -inf where not drawn
  canon5: np.ndarray  # (5, 2) canonical-grid pixels of the mean face's 5 points
  canon68: np.ndarray  # (68, 2) canonical-grid pixels of the mean face
  px_per_iod: float
  origin: tuple[float, float]  # canonical-grid pixel of (u, v) = (0, 0)
  config: masks_lib.MaskConfig

  @property
  def size(self) -> int:
    return len(self.kind)


def canonical_frame(grid: int) -> tuple[float, float, float]:
  """(pixels per inter-ocular distance, x0, y0): pixel (x, y) = (u, v) * s + (x0, y0)."""
  s = grid / (U_RANGE[1] - U_RANGE[0])
  return s, -U_RANGE[0] * s - 0.5, -V_RANGE[0] * s - 0.5


def _canonical_landmarks(grid: int) -> tuple[np.ndarray, np.ndarray]:
  """dlib's mean face with its eye centres at (u, v) = (-0.5, 0), (0.5, 0)."""
  s, x0, y0 = canonical_frame(grid)
  c5 = canonical5_from_68(MEAN_FACE_68)
  eyes = np.array([[x0 - 0.5 * s, y0], [x0 + 0.5 * s, y0]])
  m = _similarity(c5[:2], eyes)
  c68 = MEAN_FACE_68 @ m[:, :2].T + m[:, 2]
  return canonical5_from_68(c68), c68


def signed_distance(inside: np.ndarray, px_per_iod: float) -> np.ndarray:
  """Signed distance (inter-ocular units, > 0 inside) to a binary shape's outline."""
  inside = np.asarray(inside, bool)
  if not inside.any():
    return np.full(inside.shape, -1.0, np.float32)
  d_in = ndimage.distance_transform_edt(inside)
  d_out = ndimage.distance_transform_edt(~inside)
  # the outline lies half a pixel between an inside and an outside pixel centre
  sd = np.where(inside, d_in - 0.5, -(d_out - 0.5))
  return (sd / px_per_iod).astype(np.float32)


def _entry(rgb, alpha, opacity=None) -> dict:
  alpha = np.asarray(alpha, np.float32)
  op = np.ones_like(alpha) if opacity is None else np.asarray(opacity, np.float32)
  return {"rgb": rgb, "alpha": alpha, "opacity": op}


def _draw_procedural(rng, category: str, fr: shapes.LandmarkFrame):
  kind, fn, anchor, rgb, is_skin = shapes.man_made_or_body(rng, category, fr)
  alpha = shapes._antialiased(fn, fr)  # noqa: SLF001 (the host's own anti-aliasing)
  e = _entry(np.broadcast_to(rgb, alpha.shape + (3,)), alpha)
  e.update(kind=kind, anchor=anchor, is_skin=is_skin)
  return e


def _weights(kinds: list[str], probs: dict[str, float]) -> np.ndarray:
  """Per-entry probabilities so that kind k is drawn with probs[k] (renormalised)."""
  counts = {k: kinds.count(k) for k in set(kinds)}
  w = np.array([probs.get(k, 0.0) / counts[k] for k in kinds], np.float64)
  if w.sum() <= 0:
    raise ValueError(f"no bank entry of kinds {sorted(probs)}")
  return w / w.sum()


def _stratified(draw, n: int, keys: tuple[str, ...], key_of) -> list[dict]:
  """``n`` draws, re-drawing (up to 20 n tries) until every key in ``keys`` appears."""
  out, tries = [], 0
  while len(out) < n or (tries < 20 * n and not set(keys) <= {key_of(e) for e in out}):
    e = draw()
    tries += 1
    if len(out) < n:
      out.append(e)
    elif key_of(e) not in {key_of(x) for x in out}:
      # replace an entry of the most frequent key
      ks = [key_of(x) for x in out]
      common = max(sorted(set(ks)), key=ks.count)  # sorted: not the hash seed's order
      out[ks.index(common)] = e
  return out


def build_bank(
    config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
    sizes: BankSizes = BankSizes(),
    seed: int = 0,
) -> HostBank:
  """Renders the bank for ``config`` (numpy, once; about 1 s per 100 entries at G=192)."""
  g = int(sizes.grid)
  if g < 32:
    raise ValueError(f"bank grid must be >= 32 px, got {g}")
  rng = np.random.default_rng([int(seed), 0xBA4C])
  s, x0, y0 = canonical_frame(g)
  canon5, canon68 = _canonical_landmarks(g)
  fr = shapes.LandmarkFrame.from_landmarks(
      np.array([[x0 - 0.5 * s, y0], [x0 + 0.5 * s, y0], [x0, y0], [x0, y0], [x0, y0]]), g, g
  )
  groups: dict[str, list[dict]] = {}
  probs: dict[str, dict[str, float]] = {}
  full_p = {f"{k}/{t}": p / len(_TEXTURES) for k, p in _MAN_MADE_P.items() for t in _TEXTURES}
  groups["proc_simple"] = _stratified(
      lambda: _draw_procedural(rng, "simple", fr),
      sizes.simple,
      tuple(_MAN_MADE_P),
      lambda e: e["kind"],
  )
  probs["proc_simple"] = _MAN_MADE_P
  groups["proc_complex"] = _stratified(
      lambda: _draw_procedural(rng, "complex", fr),
      sizes.complex,
      tuple(full_p),
      lambda e: e["kind"],
  )
  probs["proc_complex"] = full_p
  groups["body"] = _stratified(
      lambda: _draw_procedural(rng, "body", fr), sizes.body, tuple(_BODY_P), lambda e: e["kind"]
  )
  probs["body"] = _BODY_P

  def face_mask(textured: bool):
    m = fm.render_face_mask(rng, canon68, g, g, textured=textured)
    e = _entry(m.rgb, m.alpha)
    e.update(kind=f"facemask:{m.kind}", anchor=(0.0, 0.0), is_skin=False)
    return e

  fm_key = lambda e: e["kind"].split(":", 1)[1]  # noqa: E731
  groups["facemask_simple"] = _stratified(
      lambda: face_mask(False), sizes.facemask_simple, tuple(_FM_SIMPLE_P), fm_key
  )
  probs["facemask_simple"] = {f"facemask:{k}": p for k, p in _FM_SIMPLE_P.items()}
  groups["facemask_complex"] = _stratified(
      lambda: face_mask(True), sizes.facemask_complex, tuple(_FM_COMPLEX_P), fm_key
  )
  probs["facemask_complex"] = {f"facemask:{k}": p for k, p in _FM_COMPLEX_P.items()}

  def glasses():
    replay = copy.deepcopy(rng)
    replay.uniform(), replay.uniform(), replay.uniform(), replay.random()
    op = replay.uniform(0.8, 0.95) if config.photometric else 1.0
    alpha, rgb = shapes.sunglasses(rng, fr, translucent=config.photometric)
    opacity = np.where(alpha > op + 1e-3, 1.0, op)
    e = _entry(rgb, alpha / np.maximum(opacity, 1e-3), opacity)
    e.update(kind="sunglasses", anchor=(0.0, 0.0), is_skin=False)
    return e

  groups["sunglasses"] = [glasses() for _ in range(sizes.sunglasses)]
  probs["sunglasses"] = {"sunglasses": 1.0}
  if config.library is not None:
    for cat in masks_lib.CATEGORIES:
      lib = _library_entries(config.library, cat, fr)
      if lib:
        groups[f"library_{cat}"] = lib
        probs[f"library_{cat}"] = {e["kind"]: 1.0 for e in lib}

  entries, role_rows = [], []
  for role in ROLES:
    row_start = len(entries)
    ents = groups.get(role, [])
    entries += ents
    role_rows.append((row_start, ents, probs.get(role, {})))
  n = len(entries)
  logits = np.full((len(ROLES), n), -np.inf, np.float32)
  for r, (start, ents, p) in enumerate(role_rows):
    if ents:
      w = _weights([e["kind"] for e in ents], {k: v for k, v in p.items()} or {})
      with np.errstate(divide="ignore"):
        logits[r, start : start + len(ents)] = np.log(w)
  kind_names = tuple(sorted({e["kind"] for e in entries}))
  sdf = np.stack([signed_distance(e["alpha"] >= 0.5, s) for e in entries])
  edge = np.zeros(sdf.shape[1:], bool)  # shapes never reach the grid's border
  edge[:2], edge[-2:], edge[:, :2], edge[:, -2:] = True, True, True, True
  sdf[:, edge] = np.minimum(sdf[:, edge], -4.0 / s)
  rgb = np.stack([np.clip(np.asarray(e["rgb"], np.float32), 0, 1) for e in entries])
  skin_ref = np.zeros((n, 3), np.float32)
  for i, e in enumerate(entries):
    if e["is_skin"]:
      skin_ref[i] = np.median(rgb[i][e["alpha"] > 0], axis=0)
  return HostBank(
      rgb=np.round(rgb * 255).astype(np.uint8),
      opacity=np.round(np.stack([e["opacity"] for e in entries]) * 255).astype(np.uint8),
      sdf=sdf.astype(np.float16),
      anchor=np.array([e["anchor"] for e in entries], np.float32),
      is_skin=np.array([e["is_skin"] for e in entries], bool),
      skin_ref=skin_ref,
      kind=np.array([kind_names.index(e["kind"]) for e in entries], np.int32),
      kind_names=kind_names,
      role_logits=logits,
      canon5=canon5.astype(np.float32),
      canon68=canon68.astype(np.float32),
      px_per_iod=float(s),
      origin=(float(x0), float(y0)),
      config=config,
  )


def _library_entries(library, category: str, fr: shapes.LandmarkFrame) -> list[dict]:
  """A user's RGBA images of ``category`` on the canonical frame (each also mirrored)."""
  from deocc_jax.data.mask_library import _ANCHORS  # noqa: PLC0415 (private table)

  out = []
  for m in library.for_category(category):
    for flip in (False, True):
      rgba = m.rgba[:, ::-1] if flip else m.rgba
      mh, mw = rgba.shape[:2]
      ax, ay = _ANCHORS[m.anchor]
      col = ((fr.u - ax) / m.width + 0.5) * mw
      row = ((fr.v - ay) / (m.width * mh / mw) + 0.5) * mh
      inside = (col >= 0) & (col < mw) & (row >= 0) & (row < mh)
      ci = np.clip(col.astype(np.int64), 0, mw - 1)
      ri = np.clip(row.astype(np.int64), 0, mh - 1)
      a = np.where(inside, rgba[ri, ci, 3], 0.0).astype(np.float32)
      rgb = np.where(inside[..., None], rgba[ri, ci, :3], 0.0).astype(np.float32)
      e = _entry(rgb, (a > 0).astype(np.float32), a)
      e.update(kind=f"library:{os.path.basename(m.path)}", anchor=(ax, ay), is_skin=False)
      out.append(e)
  return out
