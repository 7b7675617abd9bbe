"""Table 1's classical recognisers as rows of every table.

``config.evaluate.classical.recognizers`` names any of

* ``pca``: eigenfaces (Turk & Pentland 1991) on the faces' luminance;
* ``lpp``: Laplacianfaces (locality preserving projections, He & Niyogi 2003):
  PCA to ``lpp_pca_dims``, then ``dims`` LPP directions over a
  ``neighbours``-nearest-neighbour heat-kernel graph;
* ``gpca``: Gabor wavelets then PCA (GW+PCA): the magnitudes of a 5-scale x
  8-orientation bank, subsampled every ``gabor_stride`` px, then eigenfaces;
* ``sr``: sparse-representation classification (SRC, Wright et al. 2009), an
  *identification-only* row: its features are the luminance area-downsampled
  to ``sr_feature_size``, its dictionary the gallery of each identification
  protocol (what SRC is), each probe coded by FISTA (``sr_lambda``,
  ``sr_iters``, ``sr_occlusion``) and the identities ranked by class residual,
  smallest first. SRC has no embedding to compare two faces by, so it is absent
  from the verification tables (:func:`identifier`).

Each of the first three is a linear map fitted once on ``fit_faces`` clean faces of the run's
*training* split (the identities the deep models trained on; never an
evaluation identity) and used like any recogniser: L2-normalised embeddings,
cosine scores, the tables' own protocols. The classical papers fit on their
gallery and match by Euclidean nearest neighbour; fitting on the training faces
keeps every row of a table trained on the same data, and cosine keeps one
decision rule per table (docs/paper.md). The library: :mod:`deocc_jax.baselines`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from deocc_jax.baselines import gabor, src, subspace
from deocc_jax.configs import require
from deocc_jax.data.pipeline import to_unit_range
from deocc_jax.errors import ConfigError

NAMES = {
    "pca": "PCA (eigenfaces)",
    "lpp": "LPP (Laplacianfaces)",
    "gpca": "GW+PCA (Gabor)",
    "sr": "SR (sparse representation)",
}
ONLY_ID = ("classical_sr",)  # identification-only rows: no verification row

EmbedFn = Callable[[jax.Array], jax.Array]
# (gallery features, gallery labels, probe features) -> (identities (C,) sorted,
# scores (P, C), higher = better)
IdentifyFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def training_faces(source, n: int) -> jax.Array:
  """(n, H, W) luminance in [-1, 1] of the first ``n`` faces of ``source``."""
  n = min(int(n), len(source))
  if n < 2:
    raise ConfigError(
        f"config.evaluate.classical.fit_faces: the training split has {len(source)} faces, "
        "at least 2 are needed to fit the classical recognisers"
    )
  faces = np.stack([to_unit_range(np.asarray(source[i]["image"])) for i in range(n)])
  return gabor.luminance(jnp.asarray(faces))


def _normalised(fn: Callable[[jax.Array], jax.Array]) -> EmbedFn:
  def embed(x: jax.Array) -> jax.Array:
    e = fn(x)
    return e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)

  return embed


def keys(config: ConfigDict) -> list[str]:
  """The row keys ``classical_<name>`` the config names (checked, nothing fitted)."""
  names = tuple(str(n) for n in require(config, "evaluate.classical.recognizers"))
  unknown = [n for n in names if n not in NAMES]
  if unknown:
    raise ConfigError(
        f"config.evaluate.classical.recognizers: unknown {unknown}; choose from {list(NAMES)}"
    )
  return [f"classical_{n}" for n in names]


def fit(
    config: ConfigDict, make_source: Callable[[], object], wanted: tuple[str, ...]
) -> dict[str, tuple[str, EmbedFn]]:
  """{row key: (display name, embed fn)} of the ``wanted`` keys (of
  :func:`keys`), each fitted on the run's training split (``make_source()``)."""
  c = require(config, "evaluate.classical")
  out: dict[str, tuple[str, EmbedFn]] = {}
  if "classical_sr" in wanted:  # nothing to fit: its dictionary is each gallery
    size = tuple(int(v) for v in c.sr_feature_size)
    if len(size) != 2 or min(size) < 1:
      raise ConfigError(
          f"config.evaluate.classical.sr_feature_size={size} must be (height, width) >= 1"
      )
    out["classical_sr"] = (
        f"{NAMES['sr']}, gallery dictionary, {size[0]}x{size[1]} features",
        lambda x: src.src_features(x, size),
    )
  wanted = tuple(k for k in wanted if k not in out)
  if not wanted:
    return out
  gray = training_faces(make_source(), int(c.fit_faces))
  n, dims = gray.shape[0], int(c.dims)
  if not 1 <= dims < n:
    raise ConfigError(
        f"config.evaluate.classical.dims={dims} must be in [1, {n - 1}] for {n} fitting faces"
    )
  suffix = f", fitted on {n} training faces"
  for key in wanted:
    name = key[len("classical_") :]
    if name == "pca":
      model = subspace.fit_pca(gray, dims)
      fn = lambda x, m=model: subspace.embed(m, gabor.luminance(x))  # noqa: E731
    elif name == "lpp":
      pca_dims = int(c.lpp_pca_dims)
      if not dims <= pca_dims < n:
        raise ConfigError(
            f"config.evaluate.classical.lpp_pca_dims={pca_dims} must be in [dims={dims}, {n - 1}]"
        )
      model = subspace.fit_lpp(gray, dims, pca_dims, int(c.neighbours))
      fn = lambda x, m=model: subspace.embed(m, gabor.luminance(x))  # noqa: E731
    else:
      stride = int(c.gabor_stride)
      model = gabor.fit_gabor_pca(gray, dims, stride=stride)
      fn = lambda x, m=model, s=stride: gabor.embed_gabor_pca(m, gabor.luminance(x), s)  # noqa: E731
    out[key] = (NAMES[name] + suffix, _normalised(fn))
  return out


def identifier(config: ConfigDict) -> IdentifyFn:
  """The SR row's classifier: a gallery's features are the dictionary, each
  probe's score of an identity minus its class residual (smaller residual =
  better); ``config.evaluate.classical.sr_*``."""
  c = require(config, "evaluate.classical")
  lam, iters, occlusion = float(c.sr_lambda), int(c.sr_iters), bool(c.sr_occlusion)
  if lam <= 0 or iters < 1:
    raise ConfigError(
        f"config.evaluate.classical: sr_lambda={lam} must be > 0 and sr_iters={iters} >= 1"
    )

  def identify(
      gallery: np.ndarray, labels: np.ndarray, probes: np.ndarray
  ) -> tuple[np.ndarray, np.ndarray]:
    d = src.make_dictionary(gallery, labels)
    _, residuals = src.classify(d, probes, lam, iters, occlusion)
    return d.classes, -np.asarray(residuals, np.float64)

  return identify
