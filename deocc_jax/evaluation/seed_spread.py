"""How far a comparison between recognisers moves when the training seeds change.

A run's ``results.json`` holds per-fold verification accuracies of every
recogniser on every input. For one comparison ``a - b`` (two recognisers,
each on an input; the same pairs and folds), each run gives a per-fold paired
difference (:func:`verification.paired_difference`: mean and std over folds,
folds won). Over runs that differ only in their seeds, the spread of those
per-run means is the seed noise of the comparison: :func:`spread` reports the
mean and sample std over seeds of the per-seed means, with every seed's row.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from deocc_jax.evaluation import verification

# (recogniser, input) minus (recogniser, input): the embedded default's key
# comparisons (the students against the paper's baseline, each on G's
# completions with the true mask and with the predicted one; and the baseline's
# network against the teacher before fine-tuning, on clean faces).
KEY_COMPARISONS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("student_hard", "completed"), ("arcface_finetuned", "completed")),
    (("student_soft", "completed"), ("arcface_finetuned", "completed")),
    (("student_hard", "completed_predicted"), ("arcface_finetuned", "completed_predicted")),
    (("student_soft", "completed_predicted"), ("arcface_finetuned", "completed_predicted")),
    (("student_hard", "completed"), ("student_soft", "completed")),
    (("arcface_pretrained", "clean"), ("teacher", "clean")),
)


def fold_accuracies(
    results: dict[str, Any], recognizer: str, kind: str, dataset: str, side: str = "one"
) -> list[float]:
  """Per-fold accuracies of ``recognizer`` on ``kind`` (mixture of categories)
  from a run's ``results.json``; a clear KeyError naming what is missing."""
  try:
    mix = results["verification"][dataset]["results"]["mixture"]
  except KeyError as e:
    raise KeyError(f"results.json has no verification on {dataset!r} (mixture): {e}") from e
  if recognizer not in mix:
    raise KeyError(f"results.json has no recognizer {recognizer!r}; has {sorted(mix)}")
  if kind not in mix[recognizer]:
    raise KeyError(f"{recognizer!r} has no input {kind!r}; has {sorted(mix[recognizer])}")
  return list(mix[recognizer][kind][f"fold_accuracies_{side}"])


def spread(
    runs: Sequence[dict[str, Any]],
    a: tuple[str, str],
    b: tuple[str, str],
    dataset: str,
    side: str = "one",
) -> dict[str, Any]:
  """The paired comparison ``a - b`` (points) in each run, and over runs the
  mean and sample std (ddof 1; 0 for one run) of the per-run means."""
  if not runs:
    raise ValueError("spread needs at least one run's results")
  per_run = []
  for r in runs:
    d = verification.paired_difference(
        fold_accuracies(r, *a, dataset, side), fold_accuracies(r, *b, dataset, side)
    )
    per_run.append(
        {
            "mean": 100 * d["mean"],
            "std": 100 * d["std"],
            "positive": d["positive"],
            "folds": d["folds"],
        }
    )
  means = np.array([p["mean"] for p in per_run], np.float64)
  return {
      "a": list(a),
      "b": list(b),
      "runs": per_run,
      "mean_over_seeds": float(means.mean()),
      "std_over_seeds": float(means.std(ddof=1)) if len(means) > 1 else 0.0,
      "runs_positive": int((means > 0).sum()),
  }


def markdown(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
  """One table: a row per comparison, a column per run (mean ± std over
  folds, folds won), then the mean ± std over runs and the runs won."""
  head = ["a − b"] + list(labels) + ["over seeds", "seeds won"]
  out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in rows:
    name = f"{row['a'][0]} ({row['a'][1]}) − {row['b'][0]} ({row['b'][1]})"
    cells = [
        f"{p['mean']:+.2f} ± {p['std']:.2f} ({p['positive']}/{p['folds']})" for p in row["runs"]
    ]
    over = f"{row['mean_over_seeds']:+.2f} ± {row['std_over_seeds']:.2f}"
    won = f"{row['runs_positive']}/{len(row['runs'])}"
    out.append("| " + " | ".join([name] + cells + [over, won]) + " |")
  return "\n".join(out) + "\n"
