"""Occluders synthesised on the device: warp, fit, composite, harmonise (jax).

Today's host synthesis (``masks.synthesize_occlusion`` + ``composite``) costs
tens of ms per example in numpy. Here the host only builds a *bank* once
(:mod:`deocc_jax.data.device_occluders_bank`: many random draws of every
occluder kind, rendered by the host's own code on a canonical face frame,
with signed distances for crisp edges), and :func:`synthesize` does the rest
on the accelerator, batched, from an explicit ``jax.random`` key:

1. per example, the host's draw tree: category (``MaskConfig.categories`` /
   ``weights``), user library (``library_prob``), face mask
   (``face_mask_prob``), hybrid = sunglasses + one (60%) or two occluders,
   coverage target U(coverage_range), shift U(+-max_shift); the bank entry of
   each layer from the role's kind probabilities;
2. procedural occluders and sunglasses are placed on the face's landmark
   frame (eye line, inter-ocular unit; ``LandmarkFrame``) and each shape's
   scale is searched, like ``occluder_shapes.fit_coverage`` (6 steps), until
   its coverage of the face region hits the target;
3. face masks are warped piecewise-affinely from the canonical 68 points to
   the face's 68 (given, or estimated from five with the face region's jaw,
   ``dense_landmarks.dense_from_5``, here on the device);
4. composite ``X = Y (1 - a) + O a``, harmonised with the face
   (:mod:`deocc_jax.data.device_occluders_photometric`); pixels with
   ``a == 0`` are returned bit-exact.

Coverage is measured on ``face_region`` when given, else on the host's
elliptic region from the landmarks (``masks.face_region_from_landmarks``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from scipy.spatial import Delaunay

from deocc_jax.data import device_occluders_bank as bank_lib
from deocc_jax.data import device_occluders_photometric as photo
from deocc_jax.data import masks as masks_lib
from deocc_jax.data.dense_landmarks import MEAN_FACE_68, canonical5_from_68

CATEGORIES = masks_lib.CATEGORIES
# layer modes
OFF, FIT, EYES, FACEMASK = 0, 1, 2, 3
_ROLE = {r: i for i, r in enumerate(bank_lib.ROLES)}


@struct.dataclass
class Bank:
  """The bank on the device (a pytree; static settings are not leaves)."""

  rgb: jax.Array  # (N, G, G, 3) uint8
  opacity: jax.Array  # (N, G, G) uint8
  sdf: jax.Array  # (N, G, G) float16
  anchor: jax.Array  # (N, 2)
  is_skin: jax.Array  # (N,) bool
  skin_ref: jax.Array  # (N, 3)
  kind: jax.Array  # (N,) int32
  role_logits: jax.Array  # (R, N)
  category_logits: jax.Array  # (4,) over CATEGORIES (-inf = not drawn)
  has_library: jax.Array  # (4,) bool
  canon68: jax.Array  # (68 + 8, 2) canonical pixels of the mean face + a frame box
  triangles: jax.Array  # (T, 3) int32 over canon68
  px_per_iod: float = struct.field(pytree_node=False)
  origin: tuple[float, float] = struct.field(pytree_node=False)
  coverage_range: tuple[float, float] = struct.field(pytree_node=False)
  max_shift: float = struct.field(pytree_node=False)
  face_mask_prob: float = struct.field(pytree_node=False)
  library_prob: float = struct.field(pytree_node=False)
  photometric: bool = struct.field(pytree_node=False)
  kind_names: tuple[str, ...] = struct.field(pytree_node=False)


def to_device(hb: bank_lib.HostBank) -> Bank:
  """The host bank as a device pytree (plus the face-mask triangulation)."""
  cfg = hb.config
  g = hb.rgb.shape[1]
  box = np.array(
      [[x, y] for x in (0.0, 0.5, 1.0) for y in (0.0, 0.5, 1.0) if (x, y) != (0.5, 0.5)]
  ) * (g - 1)
  pts = np.concatenate([hb.canon68.astype(np.float64), box])
  tri = Delaunay(pts).simplices.astype(np.int32)
  w = np.zeros(len(CATEGORIES), np.float64)
  wts = cfg.weights if cfg.weights is not None else [1.0] * len(cfg.categories)
  for c, p in zip(cfg.categories, wts):
    w[CATEGORIES.index(c)] += p
  with np.errstate(divide="ignore"):
    cat_logits = np.log(w / w.sum()).astype(np.float32)
  has_lib = np.isfinite(hb.role_logits[[bank_lib.LIBRARY_ROLE[c] for c in CATEGORIES]]).any(1)
  return Bank(
      rgb=jnp.asarray(hb.rgb),
      opacity=jnp.asarray(hb.opacity),
      sdf=jnp.asarray(hb.sdf),
      anchor=jnp.asarray(hb.anchor),
      is_skin=jnp.asarray(hb.is_skin),
      skin_ref=jnp.asarray(hb.skin_ref),
      kind=jnp.asarray(hb.kind),
      role_logits=jnp.asarray(hb.role_logits),
      category_logits=jnp.asarray(cat_logits),
      has_library=jnp.asarray(has_lib),
      canon68=jnp.asarray(pts, jnp.float32),
      triangles=jnp.asarray(tri),
      px_per_iod=hb.px_per_iod,
      origin=hb.origin,
      coverage_range=tuple(float(x) for x in cfg.coverage_range),
      max_shift=float(cfg.max_shift),
      face_mask_prob=float(cfg.face_mask_prob),
      library_prob=float(cfg.effective_library_prob),
      photometric=bool(cfg.photometric),
      kind_names=hb.kind_names,
  )


def build(
    config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
    sizes: bank_lib.BankSizes = bank_lib.BankSizes(),
    seed: int = 0,
) -> Bank:
  """Renders the bank for ``config`` on the host and puts it on the device."""
  return to_device(bank_lib.build_bank(config, sizes, seed))


class Occluded(NamedTuple):
  """A batch of occluded faces (see :func:`synthesize_details`)."""

  masked: jax.Array  # (B, H, W, 3) like the input images
  mask: jax.Array  # (B, H, W, 1) float32, 1 inside the occluder (alpha > 0)
  category: jax.Array  # (B,) int32 index into CATEGORIES
  kind: jax.Array  # (B, 2) int32 index into bank.kind_names (layer 1, layer 2); -1 = none
  coverage: jax.Array  # (B,) float32 fraction of the face region covered
  alpha: jax.Array  # (B, H, W) float32 soft alpha


# ------------------------------------------------------------------ geometry


def _similarity(src: jax.Array, dst: jax.Array) -> jax.Array:
  """Least-squares similarity (2, 3), dst ~ s R src + t (proper rotation)."""
  ms, md = src.mean(0), dst.mean(0)
  a, b = src - ms, dst - md
  n = jnp.maximum(jnp.sum(a * a), 1e-12)
  c = jnp.sum(a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1]) / n
  s = jnp.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) / n
  m = jnp.array([[c, -s], [s, c]])
  return jnp.concatenate([m, (md - m @ ms)[:, None]], 1)


_MEAN5 = canonical5_from_68(MEAN_FACE_68).astype(np.float32)


def dense_from_5(lm5: jax.Array, region: jax.Array) -> jax.Array:
  """``dense_landmarks.dense_from_5`` on the device: mean face + the region's jaw."""
  m = _similarity(jnp.asarray(_MEAN5), lm5)
  pts = jnp.asarray(MEAN_FACE_68, jnp.float32) @ m[:, :2].T + m[:, 2]
  h, w = region.shape
  c = pts[29]
  ts = jnp.linspace(0.7, 1.4, 57)
  q = c + ts[None, :, None] * (pts[:17] - c)[:, None, :]  # (17, 57, 2)
  xi, yi = jnp.round(q[..., 0]).astype(jnp.int32), jnp.round(q[..., 1]).astype(jnp.int32)
  ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
  vals = jnp.where(ok, region[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)], 0.0)
  inside = vals >= 0.5
  k = jnp.argmin(inside, axis=1)
  move = inside[:, 0] & ~jnp.all(inside, axis=1)
  t = ts[jnp.maximum(k - 1, 0)]
  jaw = jnp.where(move[:, None], c + t[:, None] * (pts[:17] - c), pts[:17])
  return pts.at[:17].set(jaw)


def face_region_from_landmarks(lm5: jax.Array, h: int, w: int) -> jax.Array:
  """The host's elliptic face region (``masks.face_region_from_landmarks``)."""
  u, v = _eye_frame(lm5, h, w)
  return (((u / 1.15) ** 2 + ((v - 0.55) / 1.45) ** 2) <= 1.0).astype(jnp.float32)


def _eye_frame(lm5: jax.Array, h: int, w: int):
  """(u, v) per pixel in the landmark frame (``LandmarkFrame``) and the iod."""
  c = (lm5[0] + lm5[1]) / 2
  e = lm5[1] - lm5[0]
  iod = jnp.maximum(jnp.hypot(e[0], e[1]), 1e-3)
  ex = e / iod
  gy, gx = jnp.mgrid[0:h, 0:w].astype(jnp.float32)
  dx, dy = gx - c[0], gy - c[1]
  return (dx * ex[0] + dy * ex[1]) / iod, (-dx * ex[1] + dy * ex[0]) / iod


def _piecewise(bank: Bank, lm5: jax.Array, dense: jax.Array, h: int, w: int):
  """Canonical-grid coordinates (x, y) (H, W) of each pixel, piecewise affine
  over a triangulation of the 68 points (+ a box), and the local scale."""
  canon = bank.canon68
  to_img = _similarity(_canon5(bank), lm5)  # canonical -> image
  box_img = canon[68:] @ to_img[:, :2].T + to_img[:, 2]
  img_pts = jnp.concatenate([dense, box_img])
  tri = bank.triangles
  a, b, c = img_pts[tri[:, 0]], img_pts[tri[:, 1]], img_pts[tri[:, 2]]
  m = jnp.stack([b - a, c - a], -1)  # (T, 2, 2): columns
  det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
  det = jnp.where(jnp.abs(det) < 1e-6, 1e-6, det)
  inv = (
      jnp.stack(
          [jnp.stack([m[:, 1, 1], -m[:, 0, 1]], -1), jnp.stack([-m[:, 1, 0], m[:, 0, 0]], -1)], -2
      )
      / det[:, None, None]
  )
  st = max(1, h // 32, w // 32)
  hc, wc = -(-h // st), -(-w // st)
  # coarse samples where jax.image.resize puts its sample centres
  gy, gx = jnp.meshgrid(
      (jnp.arange(hc) + 0.5) * st - 0.5, (jnp.arange(wc) + 0.5) * st - 0.5, indexing="ij"
  )
  p = jnp.stack([gx, gy], -1)[..., None, :] - a  # (hc, wc, T, 2)
  l1 = p[..., 0] * inv[:, 0, 0] + p[..., 1] * inv[:, 0, 1]
  l2 = p[..., 0] * inv[:, 1, 0] + p[..., 1] * inv[:, 1, 1]
  score = jnp.minimum(jnp.minimum(l1, l2), 1 - l1 - l2)
  t = jnp.argmax(score, axis=-1)  # the triangle the pixel is (most) inside
  q = jnp.stack([gx, gy], -1) - a[t]  # barycentrics again, in the chosen triangle only
  l1 = q[..., 0] * inv[t, 0, 0] + q[..., 1] * inv[t, 0, 1]
  l2 = q[..., 0] * inv[t, 1, 0] + q[..., 1] * inv[t, 1, 1]
  ca, cb, cc = canon[tri[t, 0]], canon[tri[t, 1]], canon[tri[t, 2]]
  xy = ca + l1[..., None] * (cb - ca) + l2[..., None] * (cc - ca)
  if st > 1:  # the map is continuous: bilinear between the coarse samples
    xy = jax.image.resize(xy, (hc * st, wc * st, 2), "linear")[:h, :w]
  scale = jnp.hypot(to_img[0, 0], to_img[1, 0])  # image px per canonical px
  return xy[..., 0], xy[..., 1], scale


def _canon5(bank: Bank) -> jax.Array:
  return jnp.stack(
      [
          bank.canon68[36:42].mean(0),
          bank.canon68[42:48].mean(0),
          bank.canon68[30],
          bank.canon68[48],
          bank.canon68[54],
      ]
  )


def _sample(arr: jax.Array, n: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  """Bilinear sample of ``arr[n]`` (G, G, ...) at canonical pixels (x, y), as float32."""
  g = arr.shape[1]
  x = jnp.clip(x, 0.0, g - 1.0)
  y = jnp.clip(y, 0.0, g - 1.0)
  x0 = jnp.minimum(jnp.floor(x), g - 2).astype(jnp.int32)
  y0 = jnp.minimum(jnp.floor(y), g - 2).astype(jnp.int32)
  wx, wy = x - x0, y - y0
  flat = arr.reshape((-1,) + arr.shape[3:])
  base = n * g * g + y0 * g + x0

  def tap(off):
    return flat[base + off].astype(jnp.float32)

  if arr.ndim == 4:
    wx, wy = wx[..., None], wy[..., None]
  return (tap(0) * (1 - wx) + tap(1) * wx) * (1 - wy) + (tap(g) * (1 - wx) + tap(g + 1) * wx) * wy


# ------------------------------------------------------------------- drawing


def _categorical(u: jax.Array, logits: jax.Array) -> jax.Array:
  """Index drawn with probabilities softmax(logits) from one uniform ``u``."""
  p = jnp.exp(logits - jnp.max(logits))
  c = jnp.cumsum(p) / jnp.sum(p)
  return jnp.minimum(jnp.sum(c <= u), len(logits) - 1)


def _draw(bank: Bank, key: jax.Array, forced: jax.Array):
  """The host's draw tree for one example: category, two layers, target, shift.

  All numbers come from one vector of uniforms (one threefry call: fast to
  compile); the photometric noise from a second key.
  """
  k_u, k_photo = jax.random.split(key)
  u = jax.random.uniform(k_u, (16,))
  cat = jnp.where(forced >= 0, forced, _categorical(u[0], bank.category_logits))
  lo, hi = bank.coverage_range
  target = lo + (hi - lo) * u[1]
  shift = bank.max_shift * (2.0 * u[2:4] - 1.0)
  lib = bank.has_library[cat] & (u[4] < bank.library_prob)
  fm = u[5] < bank.face_mask_prob
  glasses = u[6] < 0.6
  sub = jnp.minimum(jnp.floor(u[7] * 3), 2).astype(jnp.int32)  # simple / complex / body
  first = jnp.minimum(jnp.floor(u[8] * 3), 2).astype(jnp.int32)
  other = jnp.minimum(jnp.floor(u[9] * 2), 1).astype(jnp.int32)
  pair = jnp.stack([first, jnp.where(other >= first, other + 1, other)])  # ordered, distinct
  proc = jnp.array([_ROLE["proc_simple"], _ROLE["proc_complex"], _ROLE["body"]])
  fmr = jnp.array([_ROLE["facemask_simple"], _ROLE["facemask_complex"], 0])
  lib_role = jnp.array([bank_lib.LIBRARY_ROLE[c] for c in CATEGORIES])
  hybrid = (cat == 3) & ~lib
  # layer 1: sunglasses, or the first of two occluders (half the target)
  mode1 = jnp.where(hybrid, jnp.where(glasses, EYES, FIT), OFF)
  role1 = jnp.where(glasses, _ROLE["sunglasses"], proc[pair[0]])
  # layer 2
  plain_sub = jnp.minimum(cat, 2)
  fm_plain = (cat < 2) & fm
  fm_hyb = glasses & (sub < 2) & fm
  role2 = jnp.where(
      lib,
      lib_role[cat],
      jnp.where(
          hybrid,
          jnp.where(glasses, jnp.where(fm_hyb, fmr[sub], proc[sub]), proc[pair[1]]),
          jnp.where(fm_plain, fmr[plain_sub], proc[plain_sub]),
      ),
  )
  mode2 = jnp.where((~lib) & jnp.where(hybrid, fm_hyb, fm_plain), FACEMASK, FIT)
  n1 = _categorical(u[10], bank.role_logits[role1])
  n2 = _categorical(u[11], bank.role_logits[role2])
  two = hybrid & ~glasses
  return dict(
      cat=cat,
      n1=n1,
      n2=n2,
      mode1=mode1,
      mode2=mode2,
      t1=target * 0.5,
      t2=target,
      shift1=shift,
      shift2=jnp.where(two, -shift, shift),
      photo_u=u[12:14],
      photo_key=k_photo,
  )


def _layer_coords(bank, n, mode, scale, shift, u, v, pw):
  """Canonical pixel coordinates of every image pixel for one layer, and the
  image pixels per canonical inter-ocular unit there."""
  s = bank.px_per_iod
  x0, y0 = bank.origin
  ax, ay = bank.anchor[n, 0], bank.anchor[n, 1]
  sc = jnp.where(mode == FIT, scale, 1.0)
  sh = jnp.where(mode == FIT, shift, 0.0)
  cu = (u - sh[0] - ax) / sc + ax
  cv = (v - sh[1] - ay) / sc + ay
  xe, ye = cu * s + x0, cv * s + y0
  fx, fy, fscale = pw
  use_fm = mode == FACEMASK
  return jnp.where(use_fm, fx, xe), jnp.where(use_fm, fy, ye), sc, use_fm, fscale


def _alpha(bank, n, x, y, unit_px):
  """Soft alpha from the signed distance (anti-aliased over 0.6 px) and opacity."""
  g = bank.sdf.shape[1]
  inside_grid = (x >= 0) & (x <= g - 1) & (y >= 0) & (y <= g - 1)
  sd = jnp.where(inside_grid, _sample(bank.sdf, n, x, y), -1.0) * unit_px
  op = _sample(bank.opacity, n, x, y) / 255.0
  return sd, jnp.clip(0.5 + sd / 0.6, 0, 1) * op


def _fit(bank, n, mode, target, shift, u, v, iod, region, area, fixed):
  """``occluder_shapes.fit_coverage``: 6 multiplicative steps on the scale."""
  lo, hi = bank.coverage_range
  s = bank.px_per_iod
  x0, y0 = bank.origin
  ax, ay = bank.anchor[n, 0], bank.anchor[n, 1]
  g = bank.sdf.shape[1]

  def cov_at(scale):
    x = ((u - shift[0] - ax) / scale + ax) * s + x0
    y = ((v - shift[1] - ay) / scale + ay) * s + y0
    ok = (x >= 0) & (x <= g - 1) & (y >= 0) & (y <= g - 1)
    hard = ok & (_sample(bank.sdf, n, x, y) > 0) & (_sample(bank.opacity, n, x, y) > 0)
    return jnp.sum((hard | fixed) * region) / area

  def step(_, st):
    scale, best_err, best_scale, done = st
    cov = cov_at(scale)
    err = jnp.abs(cov - target)
    better = (~done) & (err < best_err)
    best_err = jnp.where(better, err, best_err)
    best_scale = jnp.where(better, scale, best_scale)
    ok = (cov >= lo) & (cov <= hi) & (err < 0.02)
    new = jnp.where(
        cov <= 1e-4,
        scale * 1.6,
        scale * jnp.clip(jnp.sqrt(target / jnp.maximum(cov, 1e-4)), 0.5, 1.8),
    )
    return jnp.where(done | ok, scale, new), best_err, best_scale, done | ok

  init = (jnp.float32(1.0), jnp.float32(jnp.inf), jnp.float32(1.0), mode != FIT)
  return jax.lax.fori_loop(0, 6, step, init)[2]


def _one(bank: Bank, img, lm5, dense, region, key, forced):
  """One face: (masked 0..255 float, alpha, category, kinds, coverage)."""
  h, w = region.shape
  d = _draw(bank, key, forced)
  u, v = _eye_frame(lm5, h, w)
  iod = jnp.maximum(jnp.hypot(*(lm5[1] - lm5[0])), 1e-3)
  area = jnp.maximum(jnp.sum(region), 1.0)
  pw = _piecewise(bank, lm5, dense, h, w)
  unit = iod / bank.px_per_iod  # image px per canonical px at scale 1

  scale1 = _fit(
      bank,
      d["n1"],
      d["mode1"],
      d["t1"],
      d["shift1"],
      u,
      v,
      iod,
      region,
      area,
      jnp.zeros((h, w), bool),
  )
  x1, y1, sc1, fm1, fsc = _layer_coords(bank, d["n1"], d["mode1"], scale1, d["shift1"], u, v, pw)
  _, a1 = _alpha(bank, d["n1"], x1, y1, jnp.where(fm1, fsc, unit * sc1) * bank.px_per_iod)
  a1 = jnp.where(d["mode1"] == OFF, 0.0, a1)
  scale2 = _fit(bank, d["n2"], d["mode2"], d["t2"], d["shift2"], u, v, iod, region, area, a1 > 0)
  x2, y2, sc2, fm2, _ = _layer_coords(bank, d["n2"], d["mode2"], scale2, d["shift2"], u, v, pw)
  _, a2 = _alpha(bank, d["n2"], x2, y2, jnp.where(fm2, fsc, unit * sc2) * bank.px_per_iod)
  alpha = jnp.maximum(a1, a2)
  first = (a1 > 0) & (a1 >= a2 - 1e-6)
  rgb = (
      jnp.where(
          first[..., None], _sample(bank.rgb, d["n1"], x1, y1), _sample(bank.rgb, d["n2"], x2, y2)
      )
      / 255.0
  )
  skin1 = bank.is_skin[d["n1"]] & (d["mode1"] != OFF)
  skin2 = bank.is_skin[d["n2"]]
  skin = jnp.where(first, skin1, skin2).astype(jnp.float32) * alpha
  skin_ref = jnp.where(skin2, bank.skin_ref[d["n2"]], bank.skin_ref[d["n1"]])
  if bank.photometric:
    # materialise the warped layers once: else XLA fuses the gathers into every
    # tap of every blur (measured 8x slower on CPU)
    rgb, alpha, skin = jax.lax.optimization_barrier((rgb, alpha, skin))
    rgb = photo.harmonize(
        img / 255.0, rgb, alpha, skin, skin_ref, lm5, region, d["photo_u"], d["photo_key"]
    )
  a = alpha[..., None]
  out = jnp.clip(jnp.floor(img * (1 - a) + rgb * 255.0 * a + 0.5), 0, 255)
  out = jnp.where(a > 0, out, img)
  cov = jnp.sum((alpha > 0) * region) / area
  kinds = jnp.stack([jnp.where(d["mode1"] == OFF, -1, bank.kind[d["n1"]]), bank.kind[d["n2"]]])
  return out, alpha, d["cat"].astype(jnp.int32), kinds.astype(jnp.int32), cov


def synthesize_details(
    bank: Bank,
    images: jax.Array,
    landmarks: jax.Array,
    key: jax.Array,
    face_region: jax.Array | None = None,
    category: jax.Array | None = None,
) -> Occluded:
  """Occludes a batch on the device (jit it; see :func:`synthesize`).

  Args:
    bank: from :func:`build`.
    images: (B, H, W, 3) uint8 in [0, 255], or float in [-1, 1] (the
      pipeline's range); the output has the same dtype and range.
    landmarks: (B, 5, 2) pixel landmarks (CelebA order) or (B, 68, 2) dlib
      points (face masks then follow them exactly).
    key: a ``jax.random`` key; example i uses ``fold_in(key, i)``.
    face_region: optional (B, H, W) face area (float weights in [0, 1], or
      uint8 weights x 255) that coverage is measured on (and the jaw
      estimated from five landmarks); default the ellipse.
    category: optional (B,) int32 category ids to force (-1 = draw).
  """
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be (B, H, W, 3), got {images.shape}")
  b, h, w, _ = images.shape
  lm = jnp.asarray(landmarks, jnp.float32)
  if lm.shape not in ((b, 5, 2), (b, 68, 2)):
    raise ValueError(f"landmarks must be ({b}, 5, 2) or ({b}, 68, 2), got {lm.shape}")
  is_u8 = images.dtype == jnp.uint8
  img = images.astype(jnp.float32)
  img = img if is_u8 else (img + 1.0) * 127.5
  region = None
  if face_region is not None:
    region = jnp.asarray(face_region)
    if region.shape != (b, h, w):
      raise ValueError(f"face_region must be ({b}, {h}, {w}), got {region.shape}")
    if region.dtype == jnp.uint8:  # soft weights x 255 (device_occluders_host)
      region = region.astype(jnp.float32) / 255.0
    region = region.astype(jnp.float32)
  forced = jnp.full((b,), -1, jnp.int32) if category is None else jnp.asarray(category, jnp.int32)
  if forced.shape != (b,):
    raise ValueError(f"category must be ({b},), got {forced.shape}")
  out, alpha, cat, kinds, cov = _batch_jit(bank, img, lm, key, region, forced)
  if is_u8:
    masked = out.astype(jnp.uint8)
  else:  # the pipeline's to_unit_range; outside the mask the input bit for bit
    unit = jnp.clip(out * np.float32(2.0 / 255.0) - np.float32(1.0), -1.0, 1.0)
    masked = jnp.where(alpha[..., None] > 0, unit, images.astype(jnp.float32)).astype(images.dtype)
  mask = (alpha > 0).astype(jnp.float32)[..., None]
  return Occluded(masked, mask, cat, kinds, cov.astype(jnp.float32), alpha)


def _batch(bank: Bank, img, lm, key, region, forced):
  """The batch on float32 images in [0, 255] (one compile for uint8 and float inputs)."""
  b, h, w, _ = img.shape
  if lm.shape[1] == 68:
    dense = lm
    lm5 = jnp.stack(
        [lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], lm[:, 48], lm[:, 54]], 1
    )
  else:
    lm5, dense = lm, None
  if region is None:
    region = jax.vmap(lambda l: face_region_from_landmarks(l, h, w))(lm5)
  if dense is None:
    dense = jax.vmap(dense_from_5)(lm5, region)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b))
  return jax.vmap(lambda *a: _one(bank, *a))(img, lm5, dense, region, keys, forced)


_batch_jit = jax.jit(_batch)


def synthesize(
    bank: Bank, images: jax.Array, landmarks: jax.Array, key: jax.Array, face_region=None
):
  """(masked images, masks (B, H, W, 1), category ids (B,)): the training-step view."""
  o = synthesize_details(bank, images, landmarks, key, face_region)
  return o.masked, o.mask, o.category


synthesize_jit = jax.jit(synthesize_details)


def kind_name(bank: Bank, kinds) -> str:
  """Readable kind of one example's (layer 1, layer 2) kind ids."""
  k1, k2 = (int(k) for k in kinds)
  name2 = bank.kind_names[k2]
  return name2 if k1 < 0 else f"{bank.kind_names[k1]}+{name2}"
