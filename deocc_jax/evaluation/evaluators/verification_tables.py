"""The verification evaluator's tables and plots: recogniser x input
(``verification_<set>``, ``table2_<set>``, ``table2_best_threshold_<set>``,
``tar_<set>``), per-fold paired differences (``paired_<set>_{one,both}``), per
mask category (``by_category_<set>_{one,both}``), ROC and accuracy plots."""

from __future__ import annotations

import os
from typing import Any

from deocc_jax.evaluation import protocols, report
from deocc_jax.evaluation.evaluator import CATEGORY_INPUTS, INPUTS
from deocc_jax.runs.models import Models


def _pm(s: dict[str, float]) -> tuple[float, float]:
  return 100 * s["accuracy"], 100 * s["accuracy_std"]


def _by_input(mix: dict[str, Any], kinds: list[str], value: Any) -> dict[str, dict[str, Any]]:
  """Table 2's grid: {recogniser: {input kind: value(one-masked summary) or None}}."""
  return {
      r: {k: value(per[k]["one"]) if k in per else None for k in kinds} for r, per in mix.items()
  }


def _id_only_note(models: Models) -> str:
  """The verification titles' note on the identification-only rows (SR), if any."""
  if not models.identifiers:
    return ""
  names = ", ".join(models.display(r) for r in models.identifiers)
  return (
      f" Not here: {names}, a classifier over an identification gallery with no "
      "embedding to compare two faces by (identification tables only)."
  )


def write(
    res: dict[str, Any], vs: protocols.VerificationSet, models: Models, out_dir: str, plots: bool
) -> None:
  name = vs.name
  note = _id_only_note(models)
  mix = res["results"][protocols.MIXTURE]
  rows = []
  for r, per in mix.items():
    for kind, s in per.items():
      o, b = s["one"], s["both"]
      rows.append(
          {
              "recognizer": models.display(r),
              "input": INPUTS[kind],
              "one": _pm(o),
              "both": _pm(b),
              "auc": o["auc"],
              "eer": o["eer"],
              "tar3": o["tar@far=0.001"],
              "tar4": o["tar@far=0.0001"],
          }
      )
  head = (
      f"Verification on {name}: {len(vs.clean)} faces, {vs.num_pairs} pairs in 10 folds; "
      "occluders from every category (mixture), on the second face of each pair (one) or "
      "on both; accuracy = mean ± std over folds at the threshold chosen on the other 9. "
      f"AUC / EER / TAR@FAR with one face masked. Identities: {vs.identities or 'unstated'}." + note
  )
  report.write_table(
      rows,
      [
          ("recognizer", "recognizer"),
          ("input", "input"),
          ("one", "acc. % (one masked)"),
          ("both", "acc. % (both masked)"),
          ("auc", "AUC"),
          ("eer", "EER"),
          ("tar3", "TAR@FAR=1e-3"),
          ("tar4", "TAR@FAR=1e-4"),
      ],
      os.path.join(out_dir, f"verification_{name}"),
      title=head,
      float_format="{:.4f}",
  )
  # Table 2 / Fig. 4 shape: recogniser x completion method.
  kinds = [k for k in INPUTS if any(k in per for per in mix.values())]
  grid_columns = [("recognizer", "recognizer")] + [(k, INPUTS[k]) for k in kinds]

  def grid_rows(value: Any) -> list[dict[str, Any]]:
    return [
        {"recognizer": models.display(r), **cells}
        for r, cells in _by_input(mix, kinds, value).items()
    ]

  report.write_table(
      grid_rows(_pm),
      grid_columns,
      os.path.join(out_dir, f"table2_{name}"),
      title=f"Accuracy (%) on {name} by input (one face masked; mixture): 10-fold "
      "cross-validated (each fold at the threshold chosen on the other 9), mean ± std. "
      f"Identities: {vs.identities or 'unstated'}." + note,
  )
  # The paper's LFW accuracy: the single best threshold over all pairs (Sec. 4.2).
  report.write_table(
      grid_rows(lambda o: 100 * o["accuracy_best_threshold"]),
      grid_columns,
      os.path.join(out_dir, f"table2_best_threshold_{name}"),
      title=f"Accuracy (%) on {name} by input (one face masked; mixture) at the one "
      f"threshold with the highest accuracy over all {vs.num_pairs} pairs, scored on "
      "those pairs (the paper's protocol; optimistic: not cross-validated). "
      f"Identities: {vs.identities or 'unstated'}." + note,
  )
  # Every comparison as a per-fold paired difference (same pairs, same folds).
  for side in ("one", "both"):
    prow = [
        {
            "a": f"{models.display(c['a'][0])}, {INPUTS[c['a'][1]]}",
            "b": f"{models.display(c['b'][0])}, {INPUTS[c['b'][1]]}",
            "diff": (c["mean"], c["std"]),
            "positive": f"{c['positive']} / {c['folds']}",
        }
        for c in res["paired"][side]
    ]
    report.write_table(
        prow,
        [
            ("a", "A"),
            ("b", "B"),
            ("diff", "A - B (points, mean ± std over folds)"),
            ("positive", "folds A > B"),
        ],
        os.path.join(out_dir, f"paired_{name}_{side}"),
        title=f"Per-fold paired differences of verification accuracy on {name}, "
        f"{side} face(s) masked (mixture; same pairs and folds for A and B). "
        f"Identities: {vs.identities or 'unstated'}.",
    )
  # TAR@FAR=1e-3 in Table 2's shape (next to its accuracies).
  report.write_table(
      grid_rows(lambda o: 100 * o["tar@far=0.001"]),
      grid_columns,
      os.path.join(out_dir, f"tar_{name}"),
      title=f"TAR (%) at FAR=1e-3 on {name} by input (one face masked; mixture). "
      f"Identities: {vs.identities or 'unstated'}.",
  )
  # categories read off the mixture's pairs (evaluate.by_category='mixture'): their pair counts
  grouped = {
      c: next(s["num_pairs"] for per in rs.values() for s in per.values())
      for c, rs in res["results"].items()
      if c not in vs.views and rs
  }
  for side in ("one", "both"):
    cat_rows = []
    for r in models.recognizers:
      for kind in CATEGORY_INPUTS:
        row = {"recognizer": models.display(r), "input": INPUTS[kind]}
        for cond in res["results"]:
          s = res["results"][cond].get(r, {}).get(kind)
          row[cond] = _pm(s[side]) if s else None
        if any(v is not None for k, v in row.items() if k not in ("recognizer", "input")):
          cat_rows.append(row)
    conds = list(res["results"])
    report.write_table(
        cat_rows,
        [("recognizer", "recognizer"), ("input", "input")] + [(c, c) for c in conds],
        os.path.join(out_dir, f"by_category_{name}_{side}"),
        title=f"Accuracy (%) on {name} per mask category, {side} face(s) masked. "
        + (
            "Categories "
            + ", ".join(f"{c} ({n} pairs)" for c, n in grouped.items())
            + ": the mixture's pairs whose second face's occluder is of that category "
            "(both masked: the first face's occluder of any category). "
            if grouped
            else ""
        )
        + f"Identities: {vs.identities or 'unstated'}.",
    )
  if plots:
    report.plot_roc_curves(
        res["roc"],
        os.path.join(out_dir, f"roc_{name}.png"),
        title=f"ROC on {name} (one face masked, mixture)",
    )
    for key, suffix, how in (
        ("accuracy", "", "10-fold cross-validated"),
        ("accuracy_best_threshold", "_best_threshold", "best threshold over all pairs"),
    ):
      report.plot_grouped_bars(
          {
              models.display(r): {INPUTS[k]: 100 * v for k, v in cells.items() if v is not None}
              for r, cells in _by_input(mix, kinds, lambda o, key=key: o[key]).items()
          },
          os.path.join(out_dir, f"accuracy{suffix}_{name}.png"),
          title=f"Verification accuracy on {name} (one face masked), {how}",
          ylabel="accuracy (%)",
      )
