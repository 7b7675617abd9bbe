"""The verification evaluator (the paper's Fig. 4 / Table 2 protocol): pairs of
faces compared by the cosine of their embeddings, accuracy over 10 folds at the
threshold chosen on the other 9, per-fold paired differences; its tables are
written by :mod:`deocc_jax.evaluation.evaluators.verification_tables`."""

from __future__ import annotations

from typing import Any

import numpy as np

from deocc_jax.data import masks as masks_lib
from deocc_jax.evaluation import protocols
from deocc_jax.evaluation import verification as pair_metrics
from deocc_jax.evaluation.evaluator import (
    CATEGORY_INPUTS,
    INPUTS,
    Evaluator,
    verification_recognizers,
)


def results(
    ev: Evaluator,
    vs: protocols.VerificationSet,
    inputs: tuple[str, ...],
    categories: tuple[str, ...] = (),
) -> dict[str, Any]:
  """{condition: {recognizer: {input: {'one': summary, 'both': summary}}}} plus ROC data
  and the paired comparisons on the mixture (:func:`paired_comparisons`, per side).

  Conditions: every view of ``vs`` (the mixture, and a category occluding
  every face when the set has that view), then each of ``categories``
  without a view of its own, from the mixture's scores: the pairs whose
  second face's occluder is of that category (both faces masked: the first
  face's occluder is of any category)."""
  ev.stream_verification(vs, inputs)  # one pass: every embedding below
  a, b, same, fold = vs.pairs
  out: dict[str, Any] = {}
  roc: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  thresholds: dict[str, dict[str, float]] = {}
  grouped = [c for c in categories if c not in vs.views]
  mix_view = vs.views[protocols.MIXTURE]
  if grouped and mix_view.category is None:
    raise ValueError(f"{vs.name}: the mixture has no occluder categories to group pairs by")
  # pair selections of the grouped categories (a category needs same- and
  # different-identity pairs to be scored; a small set may lack them)
  groups = {c: mix_view.category[b] == masks_lib.CATEGORIES.index(c) for c in grouped}
  groups = {c: sel for c, sel in groups.items() if same[sel].any() and (~same[sel]).any()}

  def evaluate(
      one: np.ndarray, both: np.ndarray, sel: Any = slice(None)
  ) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """(summaries, ROC of 'one') of the pairs ``sel``."""
    res_one = pair_metrics.evaluate_pairs(one[sel], same[sel], fold[sel])
    res_both = pair_metrics.evaluate_pairs(both[sel], same[sel], fold[sel])
    summary = {
        "one": res_one.summary(),
        "both": res_both.summary(),
        "fold_accuracies_one": res_one.fold_accuracies,
        "fold_accuracies_both": res_both.fold_accuracies,
    }
    return summary, (res_one.roc_far, res_one.roc_tar)

  for cond, view in vs.views.items():
    kinds = (
        inputs if cond == protocols.MIXTURE else tuple(k for k in CATEGORY_INPUTS if k in inputs)
    )
    out[cond] = {}
    for r in verification_recognizers(ev.models):
      clean = ev.embed(r, vs.clean, (id(vs), "clean"))
      out[cond][r] = {}
      for kind in kinds:
        if kind == "clean":
          one = both = pair_metrics.cosine_scores(clean[a], clean[b])
        elif not ev.available(view, kind) or not ev.wanted(r, kind):
          continue
        else:
          probe = ev.embed_view(r, view, kind)
          one = pair_metrics.cosine_scores(clean[a], probe[b])
          both = pair_metrics.cosine_scores(probe[a], probe[b])
        out[cond][r][kind], roc_curve = evaluate(one, both)
        if cond != protocols.MIXTURE:
          continue
        thresholds.setdefault(r, {})[kind] = pair_metrics.best_threshold(one, same)[0]
        if kind in ("clean", "masked", "completed", "completed_predicted"):
          roc[f"{ev.models.display(r)}, {INPUTS[kind]}"] = roc_curve
        if kind in CATEGORY_INPUTS:
          for c, sel in groups.items():
            g, _ = evaluate(one, both, sel)
            out.setdefault(c, {}).setdefault(r, {})[kind] = {**g, "num_pairs": int(sel.sum())}
  # the grouped categories after the views, in the order asked for
  out.update({c: out.pop(c) for c in grouped if c in out})
  mix = out.get(protocols.MIXTURE, {})
  paired = {side: paired_comparisons(mix, side) for side in ("one", "both")}
  return {"results": out, "roc": roc, "thresholds": thresholds, "paired": paired}


REFERENCES = ("arcface_finetuned", "teacher")  # what the paired table compares against


def paired_comparisons(mix: dict[str, dict[str, Any]], side: str = "one") -> list[dict[str, Any]]:
  """Per-fold paired differences (points) on the mixture: every recogniser
  minus each reference recogniser (the fine-tuned baseline, the teacher) on
  the same input, and every completed / filled input minus 'masked' for the
  same recogniser; ``side`` 'one' or 'both' faces masked."""
  key = f"fold_accuracies_{side}"
  rows = []

  def add(ra: str, ka: str, rb: str, kb: str) -> None:
    a, b = mix.get(ra, {}).get(ka), mix.get(rb, {}).get(kb)
    if a is None or b is None or key not in a or key not in b:
      return
    d = pair_metrics.paired_difference(a[key], b[key])
    rows.append(
        {
            "a": (ra, ka),
            "b": (rb, kb),
            "mean": 100 * d["mean"],
            "std": 100 * d["std"],
            "positive": d["positive"],
            "folds": d["folds"],
        }
    )

  for ref in REFERENCES:
    for r in mix:
      if r == ref:
        continue
      for kind in INPUTS:
        add(r, kind, ref, kind)
  for r in mix:
    for kind in INPUTS:
      if kind not in ("clean", "masked"):
        add(r, kind, r, "masked")
  return rows
