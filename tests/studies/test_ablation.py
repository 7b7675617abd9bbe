"""The loss ablation of Fig. 5 (studies/ablation.py): its settings, the
held-out loss, and the runner on a tiny trained run."""

import copy
import csv
import shutil

import numpy as np
import pytest

from deocc_jax.configs import require
from deocc_jax.errors import ConfigError
from deocc_jax.studies import ablation
from tests.helpers import tiny_run as tiny_run_lib


def test_ablation_settings_table():
  d = require(tiny_run_lib.tiny_config(), "distillation")
  assert ablation.setting_overrides("ce", d) == {
      "use_ce": True,
      "instance": "none",
      "lambda_p": 0.0,
      "lambda_t": 0.0,
      "lambda_i": 0.0,
  }
  assert ablation.setting_overrides("ce_pair", d)["lambda_p"] == 1.0
  assert ablation.setting_overrides("ce_pair", d)["lambda_t"] == 0.0
  soft = ablation.setting_overrides("ce_pair_angle_soft", d)
  assert (soft["instance"], soft["lambda_t"], soft["lambda_i"]) == ("soft", 2.0, d.lambda_i)
  assert d.lambda_i > 0
  with pytest.raises(ConfigError, match="unknown setting 'ce_only'"):
    ablation.setting_overrides("ce_only", d)


def test_heldout_losses_match_direct_batches():
  from deocc_jax.losses import distillation

  rng = np.random.default_rng(0)
  t = rng.normal(size=(40, 8)).astype(np.float32)
  s = rng.normal(size=(40, 8)).astype(np.float32)
  lam = {"lambda_i": 1.0, "lambda_p": 1.0, "lambda_t": 2.0}
  got = ablation.heldout_losses(t, s, 16, lam)  # 2 full batches, the rest dropped
  parts = [
      distillation.total_distillation_loss(
          t[i : i + 16], s[i : i + 16], instance_mode="hard", **lam
      )
      for i in (0, 16)
  ]
  assert got["total"] == pytest.approx(np.mean([float(p[0]) for p in parts]), rel=1e-6)
  assert got["angle"] == pytest.approx(np.mean([float(p[1]["angle"]) for p in parts]), rel=1e-6)


@pytest.mark.slow
def test_ablation_runner_trains_and_evaluates_each_setting(tiny_run, tmp_path):
  config, workdir = tiny_run
  work = tmp_path / "run"
  shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("results"))
  c = copy.deepcopy(config)
  c.ablation.settings = ("ce", "ce_pair_angle_soft")
  c.ablation.num_steps = 4
  c.ablation.eval_every = 2
  c.ablation.num_pairs = 200
  res = ablation.run(c, str(work))
  assert list(res) == ["ce", "ce_pair_angle_soft"]
  for name, r in res.items():
    assert [p["step"] for p in r["curve"]] == [2, 4], name
    assert all(0.0 <= p["one"]["accuracy"] <= 1.0 for p in r["curve"])
    assert len(r["train"]["loss/total"][0]) >= 2
  # CE-only training has no relational terms in its loss; soft has all of them
  assert res["ce"]["overrides"]["lambda_t"] == 0.0
  assert res["ce"]["curve"][0]["heldout"] != res["ce_pair_angle_soft"]["curve"][0]["heldout"]
  with open(work / "results" / "ablation.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["loss setting"] for r in rows] == ["CE", "CE + pair + angle + soft instance"]
  assert float(rows[1]["acc. % (one masked)"]) == pytest.approx(
      100 * res["ce_pair_angle_soft"]["curve"][-1]["one"]["accuracy"], abs=1e-9
  )
  assert (work / "results" / "ablation_losses.png").exists()
  assert (work / "ablation" / "ce" / "checkpoints").is_dir()
