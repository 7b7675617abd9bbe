"""lambda_i and T chosen on a pool of identities set apart for it
(``studies/lambda_sweep.py``; CelebA's ``tuning_identities``)."""

from __future__ import annotations

import copy
import csv
import json
import shutil

import numpy as np
import pytest

from deocc_jax.configs import base
from deocc_jax.configs.experiments import paper_celeba
from deocc_jax.data import real_datasets as rd
from deocc_jax.data import rehearsal
from deocc_jax.data.synthetic_faces import SyntheticFaces
from deocc_jax.errors import ConfigError
from deocc_jax.studies import lambda_sweep


def _result(li: float, t: float, acc: float) -> dict:
  return {
      "overrides": {"lambda_i": li, "temperature": t},
      "curve": [{"one": {"accuracy": 0.1}}, {"one": {"accuracy": acc}}],
  }


def test_the_rule_reads_the_last_step_then_prefers_small_lambda_and_t_near_one():
  r = {"a": _result(0.02, 4.0, 0.80), "b": _result(0.005, 2.0, 0.81), "c": _result(0.08, 1, 0.7)}
  assert lambda_sweep.choose(r) == "b"
  r["d"] = _result(0.005, 1.0, 0.81)  # a tie: T = 1, the literal reading
  assert lambda_sweep.choose(r) == "d"
  r["e"] = _result(0.001, 4.0, 0.81)  # a tie: the smaller lambda_i first
  assert lambda_sweep.choose(r) == "e"


def test_the_grid_and_its_refusals():
  c = base.get_config()
  c.lambda_sweep.lambda_i = (0.01, 0.1)
  c.lambda_sweep.temperature = (1.0, 4.0)
  grid = lambda_sweep.settings(c)
  assert [n for n, _ in grid] == ["li0.01_T1", "li0.01_T4", "li0.1_T1", "li0.1_T4"]
  for _, over in grid:  # the full objective: CE + pair + angle + the soft instance term
    assert over["instance"] == "soft" and over["lambda_p"] == 1.0 and over["lambda_t"] == 2.0
  assert grid[3][1]["lambda_i"] == 0.1 and grid[3][1]["temperature"] == 4.0
  c.lambda_sweep.temperature = (1.0, 1.0)
  with pytest.raises(ConfigError, match="temperature must list distinct positive values"):
    lambda_sweep.settings(c)
  c.lambda_sweep.temperature = (1.0,)
  c.lambda_sweep.instance = "none"
  with pytest.raises(ConfigError, match="instance must be 'hard' or 'soft'"):
    lambda_sweep.settings(c)
  c.evaluate.split = "test"  # the tables' identities: refused before anything trains
  with pytest.raises(ConfigError, match="split='test' holds the identities the tables report"):
    lambda_sweep.run(c, "/nonexistent")
  p = paper_celeba.get_config("gpu8,lambda_sweep")
  assert p.evaluate.split == "tuning" and p.data.tuning_identities == 500
  assert p.stages[-1] == "lambda_sweep" and len(lambda_sweep.settings(p)) == 9


def test_celeba_tuning_identities_are_a_second_held_out_pool(tmp_path):
  root = str(tmp_path / "celeba")
  rehearsal.write_celeba(root, SyntheticFaces(12, 3, 64, 0), 0, 12, 3)
  kw = dict(partition="random_6_1", resolution=32, holdout_identities=3)
  before = rd.CelebA(root, "train", **kw)
  held = rd.CelebA(root, "heldout", **kw, tuning_identities=2)
  tune = rd.CelebA(root, "tuning", **kw, tuning_identities=2)
  train = rd.CelebA(root, "all", **kw, tuning_identities=2)  # train + validation images
  ids = lambda src: set(src.identity_names)  # noqa: E731
  assert len(ids(held)) == 3 and len(ids(tune)) == 2 and len(ids(train)) == 7
  assert not ids(tune) & ids(held) and not ids(tune) & ids(train) and not ids(held) & ids(train)
  assert len(tune) == 2 * 3 and ids(held) == ids(rd.CelebA(root, "heldout", **kw))
  # without a tuning pool the splits are as before
  assert rd.CelebA(root, "train", **kw, tuning_identities=0).paths == before.paths
  with pytest.raises(ValueError, match="split 'tuning' needs tuning_identities > 0"):
    rd.CelebA(root, "tuning", **kw)


def test_the_sweep_trains_one_student_per_setting_and_names_the_choice(tiny_run, tmp_path):
  config, workdir = tiny_run
  work = tmp_path / "run"
  shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("results"))
  c = copy.deepcopy(config)
  c.evaluate.split = "validation"  # the synthetic validation identities
  c.lambda_sweep.lambda_i = (0.001, 0.1)
  c.lambda_sweep.temperature = (1.0,)
  c.lambda_sweep.num_steps = 2
  c.lambda_sweep.eval_every = 2
  c.lambda_sweep.num_pairs = 200
  out = lambda_sweep.run(c, str(work))
  res = out["settings"]
  assert list(res) == ["li0.001_T1", "li0.1_T1"]
  accs = {n: r["curve"][-1]["one"]["accuracy"] for n, r in res.items()}
  assert out["chosen"] == max(
      accs, key=lambda n: (round(accs[n], 9), -res[n]["overrides"]["lambda_i"])
  )
  assert res["li0.1_T1"]["overrides"]["lambda_i"] == 0.1
  assert "validation" in out["identities"] or "disjoint" in out["identities"]
  assert (work / "lambda_sweep" / "li0.1_T1" / "checkpoints").is_dir()
  with open(work / "results" / "lambda_sweep.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["lambda_i"] for r in rows] == ["0.001", "0.1"]
  for r, name in zip(rows, res):
    assert float(r["acc. % (one masked, G-completed)"]) == pytest.approx(100 * accs[name], abs=0.01)
  md = (work / "results" / "lambda_sweep.md").read_text()
  li = out["chosen_overrides"]["distillation.lambda_i"]
  assert f"--config.distillation.lambda_i={li:g}" in md
  saved = json.loads((work / "results" / "lambda_sweep.json").read_text())
  assert saved["chosen"] == out["chosen"]
  assert np.isfinite(list(accs.values())).all()
