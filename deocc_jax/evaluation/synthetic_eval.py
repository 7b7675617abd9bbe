"""Verification on the synthetic default's held-out identities.

A fixed evaluation set: every image of the test split, with one occluder per
image drawn from a seed (so every recogniser sees the same masked faces), the
generator's completion of it, and LFW-style balanced pairs in 10
identity-disjoint folds. Conditions: the pair's second face (``one``) or
both faces (``both``) are masked / completed; the first is clean otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from deocc_jax.data import masks as masks_lib
from deocc_jax.data.pipeline import make_masked_pair
from deocc_jax.evaluation import verification


@dataclasses.dataclass
class EvalSet:
  clean: np.ndarray     # (N, H, W, 3) float32 [-1, 1]
  masked: np.ndarray
  mask: np.ndarray      # (N, H, W, 1)
  labels: np.ndarray    # (N,)
  category: np.ndarray  # (N,)
  pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # a, b, same, fold


def build_eval_set(source: Any, num_pairs: int = 6000, seed: int = 1234,
                   mask_config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
                   category: str | None = None, max_records: int | None = None) -> EvalSet:
  n = len(source) if max_records is None else min(len(source), max_records)
  clean, masked, mask, labels, cats = [], [], [], [], []
  for i in range(n):
    rec = source[i]
    ex = make_masked_pair(rec, np.random.default_rng([seed, i]), mask_config, flip=False,
                          category=category)
    clean.append(ex["clean"]); masked.append(ex["masked"]); mask.append(ex["mask"])
    labels.append(int(ex["identity"])); cats.append(int(ex["category"]))
  labels = np.array(labels)
  pairs = verification.make_pairs(labels, num_pairs, seed=seed)
  return EvalSet(np.stack(clean), np.stack(masked), np.stack(mask), labels, np.array(cats), pairs)


def batched(fn: Callable[..., jax.Array], *arrays: np.ndarray, batch_size: int = 256
            ) -> np.ndarray:
  jfn = jax.jit(fn)
  out = []
  for i in range(0, len(arrays[0]), batch_size):
    out.append(np.asarray(jfn(*(jnp.asarray(a[i:i + batch_size]) for a in arrays))))
  return np.concatenate(out)


def verify(emb_a: np.ndarray, emb_b: np.ndarray, es: EvalSet) -> verification.VerificationResult:
  a, b, same, fold = es.pairs
  return verification.evaluate_pairs(verification.cosine_scores(emb_a[a], emb_b[b]), same, fold)


def verification_table(embedders: dict[str, Callable[[jax.Array], jax.Array]],
                       complete_fn: Callable[[jax.Array, jax.Array], jax.Array] | None,
                       es: EvalSet, rows: list[tuple[str, str, str]],
                       batch_size: int = 256) -> list[dict[str, Any]]:
  """Evaluates rows of (label, embedder name, input) with input in
  {'clean', 'masked', 'completed'}; each row reports one-masked and
  both-masked accuracy (10-fold mean +- std), AUC, EER, TAR@FAR."""
  cache: dict[tuple[str, str], np.ndarray] = {}
  completed = None
  if complete_fn is not None and any(r[2] == "completed" for r in rows):
    completed = batched(complete_fn, es.masked, es.mask, batch_size=batch_size)

  def emb(name: str, kind: str) -> np.ndarray:
    if (name, kind) not in cache:
      images = {"clean": es.clean, "masked": es.masked, "completed": completed}[kind]
      if images is None:
        raise ValueError("row needs completed faces but no generator was given")
      cache[(name, kind)] = batched(embedders[name], images, batch_size=batch_size)
    return cache[(name, kind)]

  out = []
  for label, name, kind in rows:
    clean_emb = emb(name, "clean")
    probe = emb(name, kind)
    one = verify(clean_emb, probe, es)
    both = verify(probe, probe, es)
    out.append({"recognizer": label, "input": kind,
                "one_masked": one.summary(), "both_masked": both.summary()})
  return out


def format_table(results: list[dict[str, Any]]) -> str:
  lines = ["| recognizer | input | acc. (one masked) | acc. (both masked) | AUC (one) | "
           "EER (one) | TAR@FAR=1e-3 (one) |",
           "|---|---|---|---|---|---|---|"]
  for r in results:
    o, b = r["one_masked"], r["both_masked"]
    lines.append(f"| {r['recognizer']} | {r['input']} | {100 * o['accuracy']:.2f} ± "
                 f"{100 * o['accuracy_std']:.2f} | {100 * b['accuracy']:.2f} ± "
                 f"{100 * b['accuracy_std']:.2f} | {o['auc']:.4f} | {o['eer']:.4f} | "
                 f"{o['tar@far=0.001']:.4f} |")
  return "\n".join(lines)
