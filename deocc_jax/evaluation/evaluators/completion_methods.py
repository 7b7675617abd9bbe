"""Table 2 of the paper ("Choice of completion methods", Sec. 4.4): every
recogniser retrained on one completion method's faces, scored on that method's
own completions.

    completion_methods_<set>.md/.csv         rows ArcFace fine-tuned / OUR-Hard / OUR-Soft,
                                             columns GFC / GA w/o attention / IDGAN /
                                             GA w/ attention
    completion_methods_paired_<set>.md/.csv  each cell minus its row's GA-w/-attention
                                             cell, per fold (same pairs, same folds)

Cells come from the verification results the evaluation already holds
(mixture, one face masked, the true mask, 10-fold accuracies): the cell of
row ``distill_hard`` and column GFC is recogniser ``student_hard_gfc`` (stage
``distill_hard_gfc``) on input ``completed_gfc``; the GA-w/-attention column
is the base stage's recogniser (``student_hard``) on ``completed``. A cell
whose stages did not run is "—". ``config.evaluate.retrained_inputs`` 'own'
(``evaluator.sees``): the retrained recognisers are embedded only where their cell needs.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from deocc_jax.evaluation import report, verification
from deocc_jax.evaluation.evaluator import INPUT_OF
from deocc_jax.runs import kinds

# the paper's columns: de-occlusion stage -> column name; the last is the reference
COLUMNS = {
    "deocclusion_gfc": "GFC",
    "deocclusion_noca": "GA w/o attention",
    "deocclusion_idgan": "IDGAN",
    "deocclusion": "GA w/ attention",
}
REFERENCE = "deocclusion"
# the paper's rows: the stage retrained on each completion (kinds.RETRAINED) -> row name
ROWS = {
    "finetune_arcface": "ArcFace fine-tuned",
    "distill_hard": "OUR-Hard",
    "distill_soft": "OUR-Soft",
}
MISSING = "—"


def cell_keys(row: str, column: str) -> tuple[str, str]:
  """(recogniser key, input key) of the cell ``row`` x ``column``."""
  return kinds.get(kinds.on_completion(row, column)).recognizer, INPUT_OF[column]


def fold_accuracies(mix: dict[str, Any], row: str, column: str) -> np.ndarray | None:
  """The cell's 10 fold accuracies (one face masked), or None when it was not scored."""
  rec, kind = cell_keys(row, column)
  s = mix.get(rec, {}).get(kind)
  return None if s is None else np.asarray(s["fold_accuracies_one"], np.float64)


def table(mix: dict[str, Any]) -> dict[str, dict[str, tuple[float, float] | None]]:
  """{row: {column: (mean, std) of the fold accuracies in points, or None}}."""
  out: dict[str, dict[str, tuple[float, float] | None]] = {}
  for row in ROWS:
    out[row] = {}
    for col in COLUMNS:
      acc = fold_accuracies(mix, row, col)
      out[row][col] = None if acc is None else (100 * acc.mean(), 100 * acc.std())
  return out


def paired(mix: dict[str, Any]) -> dict[str, dict[str, dict[str, float] | None]]:
  """{row: {column: ``verification.paired_difference`` (cell minus the row's
  GA-w/-attention cell) or None}}, every column but the reference."""
  out: dict[str, dict[str, dict[str, float] | None]] = {}
  for row in ROWS:
    ref = fold_accuracies(mix, row, REFERENCE)
    out[row] = {}
    for col in COLUMNS:
      if col == REFERENCE:
        continue
      acc = fold_accuracies(mix, row, col)
      both = acc is not None and ref is not None
      out[row][col] = verification.paired_difference(acc, ref) if both else None
  return out


def _describe() -> str:
  cols = "; ".join(
      f"{name}: " + ", ".join(cell_keys(r, c)[0] for r in ROWS) + f" on {INPUT_OF[c]}"
      for c, name in COLUMNS.items()
  )
  rows = ", ".join(f"{name} = {r} stages" for r, name in ROWS.items())
  return f"Rows: {rows}. Cells (recognisers by row, input): {cols}. {MISSING}: stage not run."


def write(mix: dict[str, Any], name: str, identities: str, out_dir: str) -> None:
  """Writes both tables of set ``name`` from its mixture results ``mix``."""
  cells, diffs = table(mix), paired(mix)
  rows = [
      {"row": label, **{c: cells[r][c] or MISSING for c in COLUMNS}} for r, label in ROWS.items()
  ]
  head = (
      f"Table 2 on {name}: each recogniser retrained on one completion method's faces and "
      "scored on that method's completions (one face masked, mixture, true mask); accuracy "
      f"(%), 10-fold cross-validated, mean ± std over folds. {_describe()} "
      f"Identities: {identities or 'unstated'}."
  )
  cols = [("row", "recogniser")] + [(c, n) for c, n in COLUMNS.items()]
  report.write_table(rows, cols, os.path.join(out_dir, f"completion_methods_{name}"), head)

  def fmt(d: dict[str, float] | None) -> str:
    if d is None:
      return MISSING
    return f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f} ({d['positive']} / {d['folds']} folds >)"

  prows = [{"row": label, **{c: fmt(d) for c, d in diffs[r].items()}} for r, label in ROWS.items()]
  report.write_table(
      prows,
      [cols[0]] + [(c, f"{n} - GA w/ attention") for c, n in COLUMNS.items() if c != REFERENCE],
      os.path.join(out_dir, f"completion_methods_paired_{name}"),
      f"Table 2 on {name} as per-fold paired differences (points): each cell minus the "
      "GA-w/-attention cell of its row, on the same pairs and folds; mean ± std over folds "
      f"and the folds where the cell wins. {_describe()} Identities: {identities or 'unstated'}.",
  )
