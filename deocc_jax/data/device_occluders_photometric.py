"""Photometric harmonisation of occluders on the device (jax; one face, vmapped).

The device twin of :func:`deocc_jax.data.photometric.harmonize`: the same four
steps on the same measurements, in static shapes.

* skin tone of hands: the median colour of the face's skin (face region minus
  eyes and mouth, luminance between its 20% and 90% quantiles; on a grid of at
  most 32 x 32 samples) times U(0.93, 1.05) replaces the palette's skin colour;
* shading: the face's luminance low-passed at 1/3 of the inter-ocular
  distance by normalised convolution over the face region (on a 32 x 32
  grid), divided by its median over the face, clipped to [0.35, 1.6], to the
  power U(0.7, 1.0), multiplies the occluder's colour;
* blur: of sigma 0, 0.6, 1.2 px the one whose blur effect (Crete-Roffet et
  al. 2007) over the occluder is closest to the face's around it (both
  measured in the occluder's bounding box grown by 0.6 inter-ocular
  distances, like the host);
* noise: the face's noise level (Immerkaer 1996) as Gaussian noise.

Only colours change: the alpha, so the mask, is the caller's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# numpy, not jnp: importing the module must not start a JAX backend (a
# multi-host job calls jax.distributed.initialize after its imports)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
BLUR_SIGMAS = (0.0, 0.6, 1.2)
_LOW = 32  # low-pass grid side
_LOW_RADIUS = 10  # low-pass kernel radius on that grid


def _kernel(sigma: float) -> list[float]:
  r = max(1, int(3.0 * sigma + 0.5))
  k = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-r, r + 1)]
  return [x / sum(k) for x in k]


def _conv1d(x: jax.Array, k, axis: int) -> jax.Array:
  """Correlation along ``axis`` (0 or 1) with edges replicated; ``k`` list or array."""
  r = (len(k) - 1) // 2
  pad = [(0, 0)] * x.ndim
  pad[axis] = (r, r)
  xp = jnp.pad(x, pad, mode="edge")
  n = x.shape[axis]
  out = 0.0
  for i in range(2 * r + 1):
    out = out + k[i] * jax.lax.slice_in_dim(xp, i, i + n, axis=axis)
  return out


def blur(x: jax.Array, sigma: float) -> jax.Array:
  """Separable Gaussian blur over the first two axes (static sigma; 0 = identity)."""
  if sigma <= 0:
    return x
  k = _kernel(sigma)
  return _conv1d(_conv1d(x, k, 0), k, 1)


def blur_effect(lum: jax.Array, w: jax.Array) -> jax.Array:
  """Fraction of weighted gradient energy removed by a further 1 px blur."""
  wy, wx = w[1:] * w[:-1], w[:, 1:] * w[:, :-1]

  def energy(x):
    return jnp.sum(jnp.abs(jnp.diff(x, axis=0)) * wy) + jnp.sum(jnp.abs(jnp.diff(x, axis=1)) * wx)

  e0 = energy(lum)
  ok = (jnp.sum(w) >= 4) & (e0 > 1e-6)
  return jnp.where(ok, 1.0 - energy(blur(lum, 1.0)) / jnp.maximum(e0, 1e-6), 0.0)


def _nanmedian(x: jax.Array, valid: jax.Array, default: float | jax.Array) -> jax.Array:
  m = jnp.nanmedian(jnp.where(valid, x, jnp.nan))
  return jnp.where(jnp.any(valid), m, default)


def skin_tone(img: jax.Array, region: jax.Array, lm5: jax.Array) -> jax.Array:
  """Median skin colour (3,) of the face (``photometric.sample_skin``)."""
  h, w = region.shape
  st = max(1, h // 32)
  im, reg = img[::st, ::st], region[::st, ::st]
  yy, xx = jnp.mgrid[0:h:st, 0:w:st].astype(jnp.float32)
  iod = jnp.maximum(jnp.hypot(*(lm5[1] - lm5[0])), 1.0)
  keep = reg > 0.8
  for c, r in ((lm5[0], 0.3), (lm5[1], 0.3), ((lm5[3] + lm5[4]) / 2, 0.45)):
    keep &= (xx - c[0]) ** 2 + (yy - c[1]) ** 2 > (r * iod) ** 2
  keep = jnp.where(jnp.sum(keep) >= 8 // (st * st) + 1, keep, reg > 0.5)
  lum = im @ _LUMA
  lo = jnp.nanquantile(jnp.where(keep, lum, jnp.nan), 0.2)
  hi = jnp.nanquantile(jnp.where(keep, lum, jnp.nan), 0.9)
  sel = keep & (lum >= lo) & (lum <= hi)
  sel = jnp.where(jnp.any(sel), sel, keep)
  tone = jax.vmap(lambda ch: _nanmedian(ch, sel, jnp.nan), in_axes=2)(im)
  return jnp.where(jnp.any(keep), tone, jnp.array([0.8, 0.6, 0.5], jnp.float32))


def shading(lum: jax.Array, region: jax.Array, sigma: jax.Array) -> jax.Array:
  """Relative illumination (H, W) (``photometric.low_frequency_shading``)."""
  h, w = lum.shape
  low = min(_LOW, h, w)
  wgt = jnp.clip(region, 0, 1)
  num = jax.image.resize(lum * wgt, (low, low), "linear", antialias=True)
  den = jax.image.resize(wgt, (low, low), "linear", antialias=True)
  s = jnp.maximum(sigma * low / h, 0.3)
  i = jnp.arange(-_LOW_RADIUS, _LOW_RADIUS + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * (i / s) ** 2)
  k = k / jnp.sum(k)
  num = _conv1d(_conv1d(num, k, 0), k, 1)
  den = _conv1d(_conv1d(den, k, 0), k, 1)
  lf = num / jnp.maximum(den, 1e-3)
  ok = den > 1e-3
  lf = jnp.where(ok, lf, _nanmedian(lf, ok, 1.0))
  reg_low = jax.image.resize(wgt, (low, low), "linear", antialias=True) > 0.5
  ref = jnp.where(jnp.any(reg_low), _nanmedian(lf, reg_low, 1.0), jnp.median(lf))
  rel = jnp.clip(lf / jnp.maximum(ref, 1e-3), 0.35, 1.6)
  rel = jax.image.resize(rel, (h, w), "linear")
  return jnp.where(jnp.sum(wgt) >= 1, rel, 1.0)


def noise_sigma(lum: jax.Array, region: jax.Array) -> jax.Array:
  """Immerkaer's noise standard deviation of ``lum`` over ``region``."""
  k = [1.0, -2.0, 1.0]
  r = _conv1d(_conv1d(lum, k, 0), k, 1)  # the 3x3 kernel is separable
  h, w = lum.shape
  yy, xx = jnp.mgrid[0:h, 0:w]
  m = (region > 0.95) & (yy >= 2) & (yy < h - 2) & (xx >= 2) & (xx < w - 2)
  n = jnp.sum(m)
  s = math.sqrt(math.pi / 2.0) / 6.0 * jnp.sum(jnp.abs(r) * m) / jnp.maximum(n, 1)
  return jnp.where(n >= 16, s, 0.0)


def harmonize(
    img: jax.Array,
    rgb: jax.Array,
    alpha: jax.Array,
    skin: jax.Array,
    skin_ref: jax.Array,
    lm5: jax.Array,
    region: jax.Array,
    u: jax.Array,
    key: jax.Array,
) -> jax.Array:
  """The occluder's colours (H, W, 3) in [0, 1] matched to the face ``img`` in [0, 1].

  ``skin`` (H, W) weights the face's skin tone (hands), ``skin_ref`` (3,) is
  the palette colour it replaces; ``u`` (2,) uniforms draw the skin tone's
  and the shading's strength, ``key`` the noise.
  """
  h, w = alpha.shape
  lum = img @ _LUMA
  iod = jnp.maximum(jnp.hypot(*(lm5[1] - lm5[0])), 2.0)
  tone = skin_tone(img, region, lm5) * (0.93 + 0.12 * u[0])
  s = skin[..., None]
  out = rgb * (1 - s) + jnp.clip(rgb / jnp.maximum(skin_ref, 1e-3) * tone, 0, 1) * s
  gamma = 0.7 + 0.3 * u[1]
  out = jnp.clip(out * shading(lum, region, iod / 3.0)[..., None] ** gamma, 0, 1)
  # materialise: else XLA CPU fuses the shading's resize into every blur tap
  out, lum = jax.lax.optimization_barrier((out, lum))
  # the occluder's bounding box grown by 0.6 iod + 4 px: where blur is measured
  occ = alpha > 0
  yy, xx = jnp.mgrid[0:h, 0:w]
  big = jnp.int32(1 << 20)
  margin = jnp.ceil(0.6 * iod).astype(jnp.int32) + 4
  y0 = jnp.min(jnp.where(occ, yy, big)) - margin
  y1 = jnp.max(jnp.where(occ, yy, -big)) + margin
  x0 = jnp.min(jnp.where(occ, xx, big)) - margin
  x1 = jnp.max(jnp.where(occ, xx, -big)) + margin
  box = ((yy >= y0) & (yy <= y1) & (xx >= x0) & (xx <= x1)).astype(jnp.float32)
  face_w = region * box * (alpha == 0)
  face_w = jnp.where(jnp.sum(face_w) < 16, region * box, face_w)
  target = blur_effect(lum, face_w)
  occ_lum = out @ _LUMA
  occ_w = occ.astype(jnp.float32)
  errs, cands = [], []
  for sig in BLUR_SIGMAS:
    cand, cl = out, occ_lum
    if sig > 0:
      den = blur(alpha, sig)
      ok = (den > 1e-4)[..., None]
      cand = jnp.where(
          ok, blur(out * alpha[..., None], sig) / jnp.maximum(den, 1e-4)[..., None], out
      )
      cl = cand @ _LUMA
    errs.append(jnp.abs(blur_effect(lum * (1 - alpha) + cl * alpha, occ_w) - target))
    cands.append(cand)
  best = jnp.argmin(jnp.stack(errs))
  out = jnp.select([best == i for i in range(len(cands))], cands)
  sigma_n = noise_sigma(lum, region)
  out = out + jax.random.normal(key, out.shape) * sigma_n
  return jnp.clip(out, 0, 1)
