"""The difficulty measurement of the synthetic set."""

import numpy as np

from deocc_jax.data import difficulty as dif


def test_best_threshold_accuracy_matches_brute_force():
  rng = np.random.default_rng(0)
  for _ in range(5):
    s = rng.normal(size=60)
    same = rng.random(60) < 0.5
    s[same] += 1.0
    brute = max(np.mean((s >= t) == same) for t in np.concatenate([s, [np.inf]]))
    assert abs(dif.best_threshold_accuracy(s, same) - brute) < 1e-12


def test_identities_recognisable_and_masks_hurt():
  r = dif.measure_difficulty(identities=120, images_per_identity=6, resolution=32)
  chance = 1 / 12
  assert r["rank1/clean"] > 4 * chance
  assert r["rank1/masked_mixed"] < r["rank1/clean"]
  assert r["verification/masked_mixed"] < r["verification/clean"]
