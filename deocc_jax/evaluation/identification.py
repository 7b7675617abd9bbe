"""Closed-set identification metrics (the AR face database protocol).

Each probe embedding is compared with every gallery embedding by cosine
similarity (float64). The gallery may hold several images per identity: an
identity's score for a probe is the **best** (maximum) cosine similarity over
that identity's gallery images. Identities are then ranked by score,
descending; a probe is correct at rank ``k`` when its true identity is among
the first ``k``.

Ties: identities are ordered by (score descending, label ascending), so a
probe's rank is ``1 + #{identities with a strictly higher score} + #{identities
with an equal score and a smaller label}``. This is deterministic and does not
depend on the order of the gallery rows.

Every probe identity must appear in the gallery (closed set); otherwise a
``ValueError`` names the missing labels.

A classifier over the gallery (SRC: smaller class residual = better) ranks by
its own per-identity scores through :func:`cmc_from_scores`, with the same
ranks and ties.
"""

from __future__ import annotations

import numpy as np

from deocc_jax.utils.face_geometry import identity_scores


def _normalise(x: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"{name} must be (N, D), got shape {x.shape}")
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _check(gallery_emb, gallery_labels, probe_emb, probe_labels):
  g = _normalise(gallery_emb, "gallery_emb")
  p = _normalise(probe_emb, "probe_emb")
  gl = np.asarray(gallery_labels).reshape(-1)
  pl = np.asarray(probe_labels).reshape(-1)
  if len(gl) != len(g):
    raise ValueError(f"{len(g)} gallery embeddings but {len(gl)} gallery labels")
  if len(pl) != len(p):
    raise ValueError(f"{len(p)} probe embeddings but {len(pl)} probe labels")
  if g.shape[1] != p.shape[1]:
    raise ValueError(f"gallery dim {g.shape[1]} != probe dim {p.shape[1]}")
  if len(g) == 0:
    raise ValueError("empty gallery")
  missing = np.setdiff1d(np.unique(pl), np.unique(gl))
  if len(missing):
    raise ValueError(
        f"{len(missing)} probe identities are absent from the gallery "
        f"(closed-set identification needs all of them): "
        f"{missing[:10].tolist()}{' ...' if len(missing) > 10 else ''}"
    )
  return g, gl, p, pl


def probe_ranks(gallery_emb, gallery_labels, probe_emb, probe_labels) -> np.ndarray:
  """1-based rank of each probe's true identity (ties broken by smaller label)."""
  g, gl, p, pl = _check(gallery_emb, gallery_labels, probe_emb, probe_labels)
  ids, scores = identity_scores(g, gl, p)
  return ranks_from_scores(ids, scores, pl)


def ranks_from_scores(ids, scores, probe_labels) -> np.ndarray:
  """1-based rank of each probe's true identity from per-identity ``scores``
  (P, C) of identities ``ids`` (C,) sorted ascending; higher = better, ties
  broken by the smaller label."""
  ids, scores = np.asarray(ids).reshape(-1), np.asarray(scores, np.float64)
  pl = np.asarray(probe_labels).reshape(-1)
  if scores.shape != (len(pl), len(ids)):
    raise ValueError(f"scores {scores.shape} must be (probes, identities) = {(len(pl), len(ids))}")
  if np.any(ids[1:] <= ids[:-1]):
    raise ValueError("the scores' identities must be sorted ascending, each once")
  missing = np.setdiff1d(np.unique(pl), ids)
  if len(missing):
    raise ValueError(
        f"{len(missing)} probe identities have no score (closed-set identification "
        f"needs all of them): {missing[:10].tolist()}"
    )
  col = np.searchsorted(ids, pl)
  true = scores[np.arange(len(pl)), col][:, None]
  higher = np.sum(scores > true, axis=1)
  tied_before = np.sum((scores == true) & (np.arange(len(ids))[None, :] < col[:, None]), axis=1)
  return (1 + higher + tied_before).astype(np.int64)


def cmc_curve(
    gallery_emb, gallery_labels, probe_emb, probe_labels, max_rank: int | None = None
) -> np.ndarray:
  """Cumulative match characteristic: ``cmc[k-1]`` = fraction of probes with rank <= k.

  ``max_rank`` defaults to the number of gallery identities.
  """
  ranks = probe_ranks(gallery_emb, gallery_labels, probe_emb, probe_labels)
  n_ids = len(np.unique(np.asarray(gallery_labels)))
  return _cmc(ranks, n_ids if max_rank is None else int(max_rank))


def cmc_from_scores(ids, scores, probe_labels, max_rank: int | None = None) -> np.ndarray:
  """:func:`cmc_curve` of a classifier's per-identity ``scores`` (P, C), higher =
  better (SRC: minus the class residuals), identities ``ids`` sorted ascending."""
  ranks = ranks_from_scores(ids, scores, probe_labels)
  return _cmc(ranks, len(np.asarray(ids).reshape(-1)) if max_rank is None else int(max_rank))


def _cmc(ranks: np.ndarray, max_rank: int) -> np.ndarray:
  if max_rank < 1:
    raise ValueError(f"max_rank must be >= 1, got {max_rank}")
  ks = np.arange(1, max_rank + 1)
  return np.mean(ranks[None, :] <= ks[:, None], axis=1)


def rank_k_accuracy(gallery_emb, gallery_labels, probe_emb, probe_labels, k: int = 1) -> float:
  """Fraction of probes whose identity is among the top ``k`` gallery identities."""
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  ranks = probe_ranks(gallery_emb, gallery_labels, probe_emb, probe_labels)
  return float(np.mean(ranks <= k))


def format_cmc_table(curves: dict[str, np.ndarray], ranks=(1, 5, 10)) -> str:
  """A Markdown table of rank-k accuracies (percent), one row per method."""
  ranks = tuple(int(r) for r in ranks)
  head = "| method | " + " | ".join(f"rank-{r}" for r in ranks) + " |"
  sep = "|---|" + "---:|" * len(ranks)
  rows = [head, sep]
  for name, cmc in curves.items():
    cmc = np.asarray(cmc)
    cells = [f"{100 * cmc[r - 1]:.2f}" if r <= len(cmc) else "-" for r in ranks]
    rows.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(rows)
