"""The spread of a paired comparison over seeds, against float64 loops."""

import math

import numpy as np
import pytest

from deocc_jax.evaluation import seed_spread


def _results(rng, recognizers, kinds, folds=10):
  mix = {
      r: {k: {"fold_accuracies_one": (0.8 + 0.15 * rng.random(folds)).tolist()} for k in kinds}
      for r in recognizers
  }
  return {"verification": {"synthetic": {"results": {"mixture": mix}}}}


def test_spread_matches_loops_over_folds_and_seeds():
  rng = np.random.default_rng(0)
  runs = [_results(rng, ["student_hard", "arcface_finetuned"], ["completed"]) for _ in range(3)]
  a, b = ("student_hard", "completed"), ("arcface_finetuned", "completed")
  got = seed_spread.spread(runs, a, b, "synthetic")
  means = []
  for s, run in enumerate(runs):
    mix = run["verification"]["synthetic"]["results"]["mixture"]
    xa = mix["student_hard"]["completed"]["fold_accuracies_one"]
    xb = mix["arcface_finetuned"]["completed"]["fold_accuracies_one"]
    d = [100.0 * (p - q) for p, q in zip(xa, xb)]
    m = sum(d) / len(d)
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / len(d))  # over folds: population sd
    assert got["runs"][s]["mean"] == pytest.approx(m, abs=1e-9)
    assert got["runs"][s]["std"] == pytest.approx(sd, abs=1e-9)
    assert got["runs"][s]["positive"] == sum(x > 0 for x in d)
    means.append(m)
  mm = sum(means) / 3
  sd_seeds = math.sqrt(sum((x - mm) ** 2 for x in means) / 2)  # over seeds: sample sd
  assert got["mean_over_seeds"] == pytest.approx(mm, abs=1e-9)
  assert got["std_over_seeds"] == pytest.approx(sd_seeds, abs=1e-9)
  assert got["runs_positive"] == sum(x > 0 for x in means)
  table = seed_spread.markdown([got], ["seed 0", "seed 1", "seed 2"])
  assert table.splitlines()[0].startswith("| a − b | seed 0 | seed 1 | seed 2 | over seeds")
  assert f"{mm:+.2f} ± {sd_seeds:.2f}" in table


def test_missing_recognizer_or_input_is_named():
  rng = np.random.default_rng(1)
  run = _results(rng, ["teacher"], ["clean"])
  with pytest.raises(KeyError, match="no recognizer 'student_hard'.*teacher"):
    seed_spread.spread([run], ("student_hard", "clean"), ("teacher", "clean"), "synthetic")
  with pytest.raises(KeyError, match="'teacher' has no input 'completed'"):
    seed_spread.spread([run], ("teacher", "completed"), ("teacher", "clean"), "synthetic")
  with pytest.raises(KeyError, match="no verification on 'lfw'"):
    seed_spread.spread([run], ("teacher", "clean"), ("teacher", "clean"), "lfw")
  with pytest.raises(ValueError, match="at least one run"):
    seed_spread.spread([], ("teacher", "clean"), ("teacher", "clean"), "synthetic")


def test_one_run_has_no_seed_spread():
  run = _results(np.random.default_rng(2), ["a", "b"], ["clean"])
  got = seed_spread.spread([run], ("a", "clean"), ("b", "clean"), "synthetic")
  assert got["std_over_seeds"] == 0.0 and len(got["runs"]) == 1
