"""Gabor wavelet features, and GW+PCA (the paper's "GPCA" row).

The bank is the standard one of Liu & Wechsler (2002), as used by the Gabor
face recognisers the paper cites: ``scales`` x ``orientations`` (5 x 8)
complex kernels

  psi_{u,v}(z) = (|k|^2 / s^2) exp(-|k|^2 |z|^2 / (2 s^2))
                 [exp(i k . z) - exp(-s^2 / 2)],
  k = k_v (cos phi_u, sin phi_u),  k_v = k_max / f^v,  phi_u = pi u / O,

with ``k_max = pi / 2``, ``f = sqrt(2)``, ``s = 2 pi``, sampled on a ``size`` x
``size`` grid centred on the kernel (``z`` in pixels, x right, y down).

Features (:func:`gabor_features`): the luminance image (ITU-R 601 weights
when RGB) is correlated with every kernel (edge-replicated borders), the
magnitudes are subsampled every ``stride`` pixels (starting at
``stride // 2``), each magnitude map is normalised to zero mean and unit
variance (Liu & Wechsler), and the maps are concatenated.
:func:`fit_gabor_pca` fits eigenfaces (:func:`subspace.fit_pca`) on these
features. The paper's citation for GPCA ([24], Lei et al. 2008) is a Gabor
volume + LBP method; its text describes the row as "Gabor wavelet-based
recognition (GW+PCA)", which is what is implemented here.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from deocc_jax.baselines import subspace

LUMA = (0.299, 0.587, 0.114)


class GaborBank(NamedTuple):
  """Real and imaginary parts of K kernels, each (K, size, size) float32."""

  real: jax.Array
  imag: jax.Array


def gabor_bank(
    size: int = 21,
    scales: int = 5,
    orientations: int = 8,
    k_max: float = math.pi / 2,
    f: float = math.sqrt(2.0),
    sigma: float = 2 * math.pi,
) -> GaborBank:
  """The ``scales * orientations`` kernels, scale-major (index v * O + u)."""
  if size < 1 or size % 2 == 0:
    raise ValueError(f"gabor kernel size must be odd and positive, got {size}")
  if scales < 1 or orientations < 1:
    raise ValueError(f"need >= 1 scale and orientation, got {scales} x {orientations}")
  r = np.arange(size, dtype=np.float64) - size // 2
  x, y = np.meshgrid(r, r)  # x: column offset, y: row offset
  kernels = []
  for v in range(scales):
    kv = k_max / f**v
    for u in range(orientations):
      phi = math.pi * u / orientations
      kx, ky = kv * math.cos(phi), kv * math.sin(phi)
      env = kv**2 / sigma**2 * np.exp(-(kv**2) * (x**2 + y**2) / (2 * sigma**2))
      kernels.append(env * (np.exp(1j * (kx * x + ky * y)) - np.exp(-(sigma**2) / 2)))
  k = np.stack(kernels)
  return GaborBank(jnp.asarray(k.real, jnp.float32), jnp.asarray(k.imag, jnp.float32))


def luminance(images: jax.Array) -> jax.Array:
  """(N, H, W) from (N, H, W), (N, H, W, 1) or (N, H, W, 3)."""
  x = jnp.asarray(images, jnp.float32)
  if x.ndim == 3:
    return x
  if x.ndim == 4 and x.shape[-1] == 1:
    return x[..., 0]
  if x.ndim == 4 and x.shape[-1] == 3:
    return jnp.tensordot(x, jnp.asarray(LUMA, jnp.float32), axes=1)
  raise ValueError(f"images must be (N, H, W) or (N, H, W, 1|3), got shape {x.shape}")


def gabor_magnitudes(images: jax.Array, bank: GaborBank) -> jax.Array:
  """(N, K, H, W) magnitudes of the correlation of each image with each kernel."""
  g = luminance(images)
  size = bank.real.shape[-1]
  p = size // 2
  g = jnp.pad(g, ((0, 0), (p, p), (p, p)), mode="edge")[:, None]  # (N, 1, H+2p, W+2p)
  w = jnp.concatenate([bank.real, bank.imag])[:, None]  # (2K, 1, S, S)
  out = jax.lax.conv_general_dilated(
      g, w, (1, 1), "VALID", precision=jax.lax.Precision.HIGHEST
  )  # cross-correlation, (N, 2K, H, W)
  k = bank.real.shape[0]
  return jnp.sqrt(out[:, :k] ** 2 + out[:, k:] ** 2)


@functools.partial(jax.jit, static_argnames=("stride",))
def gabor_features(images: jax.Array, bank: GaborBank, stride: int = 4) -> jax.Array:
  """(N, K * ceil(H / stride) * ceil(W / stride)) normalised, subsampled magnitudes."""
  if stride < 1:
    raise ValueError(f"gabor stride must be >= 1, got {stride}")
  m = gabor_magnitudes(images, bank)[:, :, stride // 2 :: stride, stride // 2 :: stride]
  mu = m.mean(axis=(2, 3), keepdims=True)
  sd = m.std(axis=(2, 3), keepdims=True)
  return ((m - mu) / jnp.maximum(sd, 1e-6)).reshape(m.shape[0], -1)


def fit_gabor_pca(
    images: jax.Array, dims: int, bank: GaborBank | None = None, stride: int = 4
) -> tuple[GaborBank, subspace.Subspace]:
  """GW+PCA: (bank, eigenfaces of the Gabor features of ``images``)."""
  bank = gabor_bank() if bank is None else bank
  return bank, subspace.fit_pca(gabor_features(images, bank, stride), dims)


def embed_gabor_pca(
    model: tuple[GaborBank, subspace.Subspace], images: jax.Array, stride: int = 4
) -> jax.Array:
  """(N, dims) GW+PCA embeddings (``stride`` as at fitting)."""
  bank, pca = model
  return subspace.embed(pca, gabor_features(images, bank, stride))
