"""How hard is the synthetic set? A simple recogniser on clean vs masked faces.

Fisherfaces (PCA then LDA, fit on *training* identities' clean faces) embed
held-out *test* identities; we report rank-1 identification (gallery: one
clean image per identity; probes: the others, clean or masked) and pair
verification accuracy (cosine similarity, best threshold) on clean/clean and
clean/masked pairs. A set where masking barely hurts would not exercise the
method; one where nothing is recognisable would not either.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from deocc_jax.data import masks as masks_lib
from deocc_jax.data.pipeline import SyntheticSplitSource, make_masked_pair


@dataclasses.dataclass
class Fisherfaces:
  mean: np.ndarray
  proj: np.ndarray

  @classmethod
  def fit(
      cls, x: np.ndarray, labels: np.ndarray, pca_dims: int = 150, lda_dims: int = 64
  ) -> "Fisherfaces":
    mean = x.mean(0)
    xc = x - mean
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    pca = vt[:pca_dims].T
    z = xc @ pca
    classes = np.unique(labels)
    mu = z.mean(0)
    sw = np.zeros((z.shape[1],) * 2)
    sb = np.zeros_like(sw)
    for c in classes:
      zc = z[labels == c]
      m = zc.mean(0)
      sw += (zc - m).T @ (zc - m)
      sb += len(zc) * np.outer(m - mu, m - mu)
    sw += 1e-3 * np.trace(sw) / len(sw) * np.eye(len(sw))
    evals, evecs = np.linalg.eig(np.linalg.solve(sw, sb))
    order = np.argsort(-evals.real)[:lda_dims]
    return cls(mean, pca @ evecs[:, order].real)

  def embed(self, x: np.ndarray) -> np.ndarray:
    e = (x - self.mean) @ self.proj
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def best_threshold_accuracy(scores: np.ndarray, same: np.ndarray) -> float:
  """Accuracy at the best threshold on these very pairs (an upper bound)."""
  order = np.argsort(-scores)
  same = same[order].astype(np.float64)
  tp = np.concatenate([[0], np.cumsum(same)])
  fp = np.concatenate([[0], np.cumsum(1 - same)])
  tn = (1 - same).sum() - fp
  return float(((tp + tn) / len(same)).max())


def _collect(source, rng, masked: bool, category: str | None):
  xs, ys = [], []
  for i in range(len(source)):
    rec = source[i]
    if masked:
      ex = make_masked_pair(rec, rng, flip=False, category=category)
      xs.append(ex["masked"])
    else:
      xs.append(rec["image"].astype(np.float32) / 127.5 - 1)
    ys.append(int(rec["identity"]))
  return np.stack(xs).reshape(len(xs), -1), np.array(ys)


def measure_difficulty(
    identities: int = 300, images_per_identity: int = 10, resolution: int = 32, seed: int = 0
) -> dict[str, float]:
  """Rank-1 and verification accuracy of Fisherfaces, clean vs masked."""
  train = SyntheticSplitSource.create("train", identities, images_per_identity, resolution, seed)
  test = SyntheticSplitSource.create("test", identities, images_per_identity, resolution, seed)
  rng = np.random.default_rng(seed)
  xtr, ytr = _collect(train, rng, masked=False, category=None)
  model = Fisherfaces.fit(xtr, ytr)
  clean, labels = _collect(test, rng, masked=False, category=None)
  e_clean = model.embed(clean)
  out: dict[str, float] = {}
  gallery = np.arange(0, len(labels), images_per_identity)
  probes = np.setdiff1d(np.arange(len(labels)), gallery)

  def rank1(e_probe):
    sims = e_probe[probes] @ e_clean[gallery].T
    return float(np.mean(labels[gallery][sims.argmax(1)] == labels[probes]))

  def verification(e_probe):
    i, j = np.triu_indices(len(labels), 1)
    pick = np.random.default_rng(1).choice(len(i), size=min(20000, len(i)), replace=False)
    i, j = i[pick], j[pick]
    same = labels[i] == labels[j]
    # balance positives and negatives
    pos, neg = np.nonzero(same)[0], np.nonzero(~same)[0]
    neg = neg[: len(pos)]
    sel = np.concatenate([pos, neg])
    s = np.sum(e_clean[i[sel]] * e_probe[j[sel]], 1)
    return best_threshold_accuracy(s, same[sel])

  out["rank1/clean"] = rank1(e_clean)
  out["verification/clean"] = verification(e_clean)
  for cat in (None,) + masks_lib.CATEGORIES:
    x, _ = _collect(test, rng, masked=True, category=cat)
    e = model.embed(x)
    name = cat or "mixed"
    out[f"rank1/masked_{name}"] = rank1(e)
    out[f"verification/masked_{name}"] = verification(e)
  return out
