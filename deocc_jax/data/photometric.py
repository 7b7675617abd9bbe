"""Photometric harmonisation of synthetic occluders with the face they cover.

A flat sticker is what makes synthetic occluders look synthetic. Before it is
pasted (``masks.composite``), an occluder's colour is matched to the photo:

* **shading** from the face's low-frequency luminance: the face's luminance,
  low-passed at about 1/3 of the inter-ocular distance (normalised
  convolution over the face region, so the background does not leak in) and
  divided by its median over the face, multiplies the occluder's colour. A
  mask worn in a side-lit photo is side-lit too.
* **blur matched to the image**: the face's *blur effect* (Crete-Roffet et
  al. 2007: the fraction of gradient energy a further 1 px Gaussian blur
  removes; small for an already soft image) is measured, and the occluder is
  blurred (premultiplied by its alpha, so no dark halo) with the Gaussian
  sigma whose result has the closest blur effect.
* **noise matched to the image**: the face's noise level (Immerkaer 1996's
  fast estimator) is added to the occluder as Gaussian noise.
* **skin tones sampled from the face** for body occluders (hands): the
  median colour of the face's skin (face region minus eyes and mouth)
  replaces the neutral albedo.

Only colours change: the alpha (and so the mask M = alpha > 0) is untouched,
so every pixel outside M stays exactly the clean face. Everything is
deterministic given the occluder's ``seed``.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
BLUR_SIGMAS = (0.0, 0.6, 1.2)


def luminance(rgb: np.ndarray) -> np.ndarray:
  """(H, W, 3) -> (H, W) Rec. 601 luma, same scale as the input."""
  return np.asarray(rgb, np.float32) @ _LUMA


@functools.lru_cache(maxsize=64)
def _kernel(sigma: float) -> np.ndarray:
  r = max(1, int(3.0 * sigma + 0.5))
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur over the two image axes (edges replicated)."""
  if sigma <= 0:
    return x
  k = _kernel(round(float(sigma), 4))
  x = ndimage.correlate1d(np.asarray(x, np.float32), k, axis=0, mode="nearest")
  return ndimage.correlate1d(x, k, axis=1, mode="nearest")


def low_frequency_shading(
    lum: np.ndarray, region: np.ndarray, sigma: float, lo: float = 0.35, hi: float = 1.6
) -> np.ndarray:
  """Relative illumination (H, W): low-passed face luminance / its face median.

  Normalised convolution restricted to ``region`` (weights in [0, 1]); pixels
  far from the face take the nearest face values through the low-pass.
  """
  w = np.clip(np.asarray(region, np.float32), 0, 1)
  if w.sum() < 1:
    return np.ones_like(lum, np.float32)
  # Low-pass at reduced resolution: sigma of a few pixels is all we need.
  step = max(1, int(sigma / 3))
  h, wd = lum.shape
  ls, ws = lum[::step, ::step] * w[::step, ::step], w[::step, ::step]
  num = _blur(ls, sigma / step)
  den = _blur(ws, sigma / step)
  lf = num / np.maximum(den, 1e-3)
  lf = np.where(den > 1e-3, lf, np.nan)
  fill = np.nanmedian(lf) if np.isfinite(lf).any() else 1.0
  lf = np.nan_to_num(lf, nan=fill)
  if step > 1:
    ys = np.minimum(np.arange(h) / step, lf.shape[0] - 1)
    xs = np.minimum(np.arange(wd) / step, lf.shape[1] - 1)
    lf = ndimage.map_coordinates(lf, np.meshgrid(ys, xs, indexing="ij"), order=1, mode="nearest")
  ref = float(np.median(lf[w > 0.5])) if (w > 0.5).any() else float(np.median(lf))
  return np.clip(lf / max(ref, 1e-3), lo, hi).astype(np.float32)


def noise_sigma(lum: np.ndarray, region: np.ndarray) -> float:
  """Immerkaer's (1996) noise standard deviation of ``lum`` over ``region``."""
  k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
  r = ndimage.convolve(np.asarray(lum, np.float32), k, mode="nearest")
  m = np.asarray(region) > 0.95
  m[:2], m[-2:], m[:, :2], m[:, -2:] = False, False, False, False
  if m.sum() < 16:
    return 0.0
  return float(np.sqrt(np.pi / 2.0) / 6.0 * np.abs(r[m]).mean())


def blur_effect(lum: np.ndarray, weight: np.ndarray) -> float:
  """Fraction of gradient energy removed by a further 1 px Gaussian blur.

  Near 0 for a soft image, larger for a sharp one (Crete-Roffet et al. 2007).
  """
  w = np.asarray(weight, np.float32)
  if w.sum() < 4:
    return 0.0

  wy, wx = w[1:] * w[:-1], w[:, 1:] * w[:, :-1]

  def grad_energy(x):
    return float(
        np.abs(np.diff(x, axis=0)).ravel() @ wy.ravel()
        + np.abs(np.diff(x, axis=1)).ravel() @ wx.ravel()
    )

  e0 = grad_energy(lum)
  if e0 <= 1e-6:
    return 0.0
  return 1.0 - grad_energy(_blur(lum, 1.0)) / e0


def sample_skin(image01: np.ndarray, region: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
  """Median skin colour (3,) of the face: region minus eyes and mouth."""
  lm = np.asarray(landmarks, np.float64)
  h, w = region.shape
  iod = max(float(np.hypot(*(lm[1] - lm[0]))), 1.0)
  yy, xx = np.mgrid[0:h, 0:w]
  keep = np.asarray(region) > 0.8
  for c, r in ((lm[0], 0.3), (lm[1], 0.3), ((lm[3] + lm[4]) / 2, 0.45)):
    keep &= (xx - c[0]) ** 2 + (yy - c[1]) ** 2 > (r * iod) ** 2
  px = image01[keep] if keep.sum() >= 8 else image01[np.asarray(region) > 0.5]
  if len(px) == 0:
    return np.array([0.8, 0.6, 0.5], np.float32)
  lum = px @ _LUMA
  lo, hi = np.quantile(lum, [0.2, 0.9])
  sel = px[(lum >= lo) & (lum <= hi)]
  return np.median(sel if len(sel) else px, axis=0).astype(np.float32)


def harmonize(
    clean: np.ndarray,
    rgb: np.ndarray,
    alpha: np.ndarray,
    landmarks: np.ndarray,
    region: np.ndarray,
    seed: int,
    skin: np.ndarray | None = None,
) -> np.ndarray:
  """The occluder's colours (H, W, 3) in [0, 1] matched to the clean face.

  Args:
    clean: (H, W, 3) uint8 face the occluder goes on.
    rgb: (H, W, 3) float32 occluder colours in [0, 1] (where ``skin`` > 0:
      relative albedo that multiplies the face's skin colour).
    alpha: (H, W) occluder alpha; only pixels with alpha > 0 matter.
    landmarks: (5, 2) pixel landmarks (the low-pass scale is 1/3 of the
      inter-ocular distance).
    region: (H, W) face region.
    seed: the occluder's seed (shading strength, noise draw).
    skin: optional (H, W) weight in [0, 1] of face-sampled skin colour.
  """
  img = np.asarray(clean, np.float32) / 255.0
  a = np.asarray(alpha, np.float32)
  out = np.array(rgb, np.float32)
  if not (a > 0).any():
    return out
  rng = np.random.default_rng([int(seed), 0xF070])
  lm = np.asarray(landmarks, np.float64)
  iod = max(float(np.hypot(*(lm[1] - lm[0]))), 2.0)
  # Work on the occluder's bounding box plus a margin (real photos are large).
  ys, xs = np.nonzero(a > 0)
  m = int(np.ceil(0.6 * iod)) + 4
  h, w = a.shape
  y0, y1 = max(ys.min() - m, 0), min(ys.max() + m + 1, h)
  x0, x1 = max(xs.min() - m, 0), min(xs.max() + m + 1, w)
  sl = (slice(y0, y1), slice(x0, x1))
  lum = luminance(img)
  if skin is not None and (np.asarray(skin) > 0).any():
    tone = sample_skin(img, region, lm) * np.float32(rng.uniform(0.93, 1.05))
    s = np.asarray(skin, np.float32)[..., None]
    ref = np.median(out[(s[..., 0] > 0) & (a > 0)], axis=0)  # the palette skin colour
    out = out * (1 - s) + np.clip(out / np.maximum(ref, 1e-3) * tone, 0, 1) * s
  shade = low_frequency_shading(lum, region, sigma=iod / 3.0)
  gamma = np.float32(rng.uniform(0.7, 1.0))
  out = np.clip(out * shade[..., None] ** gamma, 0, 1)
  # Blur: match the face's blur effect (measured on its region in the box);
  # candidates are compared on luminance, the chosen blur is applied to RGB.
  crop = out[sl]
  ac = a[sl]
  lum_c = lum[sl]
  face_w = np.asarray(region, np.float32)[sl] * (ac == 0)
  if face_w.sum() < 16:
    face_w = np.asarray(region, np.float32)[sl]
  target = blur_effect(lum_c, face_w)
  occ_lum = luminance(crop)
  occ_w = (ac > 0).astype(np.float32)
  best_sig, best_err = 0.0, np.inf
  for sig in BLUR_SIGMAS:
    den = _blur(ac, sig)
    cand = np.where(den > 1e-4, _blur(occ_lum * ac, sig) / np.maximum(den, 1e-4), occ_lum)
    err = abs(blur_effect(lum_c * (1 - ac) + cand * ac, occ_w) - target)
    if err < best_err:
      best_sig, best_err = sig, err
  if best_sig > 0:
    den = _blur(ac, best_sig)[..., None]
    out[sl] = np.where(
        den > 1e-4, _blur(crop * ac[..., None], best_sig) / np.maximum(den, 1e-4), crop
    )
  sigma_n = noise_sigma(lum, region)
  if sigma_n > 0:
    out[sl] += rng.standard_normal(out[sl].shape).astype(np.float32) * np.float32(sigma_n)
  return np.clip(out, 0, 1).astype(np.float32)
