"""The evaluation job on a tiny trained run: tables, brute-force checks,
checkpoint selection, device counts and the CLI."""

import copy
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ml_collections import ConfigDict

from deocc_jax.errors import CheckpointNotFoundError, ConfigError
from deocc_jax.evaluation import evaluator, job, protocols
from deocc_jax.runs import factories
from deocc_jax.runs.models import checkpoint_choice, config_checkpoints, restore_models
from tests.helpers import paths

ROOT = str(paths.ROOT)


def _results(workdir):
  with open(os.path.join(workdir, "results", "results.json")) as f:
    return json.load(f)


def _brute_force_10_fold(scores, same, fold):
  """LFW accuracy with an explicit loop over every candidate threshold."""
  accs = []
  for f in np.unique(fold):
    tr, te = fold != f, fold == f
    best_t, best_acc = None, -1.0
    for t in sorted(set(scores[tr].tolist())) + [np.inf]:
      acc = np.mean([(s >= t) == y for s, y in zip(scores[tr], same[tr])])
      if acc > best_acc:
        best_t, best_acc = t, acc
    accs.append(np.mean([(s >= best_t) == y for s, y in zip(scores[te], same[te])]))
  return float(np.mean(accs))


def _cos64(a, b):
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return np.array([x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)])


def test_tables_and_plots_written(tiny_run):
  _, workdir = tiny_run
  out = os.path.join(workdir, "results")
  for stem in (
      "verification_synthetic",
      "table2_synthetic",
      "table2_best_threshold_synthetic",
      "by_category_synthetic_one",
      "by_category_synthetic_both",
      "identification_synthetic",
      "segmentation_iou",
  ):
    assert os.path.getsize(os.path.join(out, stem + ".md")) > 100, stem
    assert os.path.getsize(os.path.join(out, stem + ".csv")) > 50, stem
  for png in (
      "roc_synthetic",
      "cmc_synthetic",
      "accuracy_synthetic",
      "accuracy_best_threshold_synthetic",
      "completions_synthetic",
      "training_losses",
  ):
    with open(os.path.join(out, png + ".png"), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", png
  res = _results(workdir)
  mix = res["verification"]["synthetic"]["results"]["mixture"]
  assert set(mix) == {
      "teacher",
      "arcface_pretrained",
      "arcface_finetuned",
      "student_hard",
      "student_soft",
  }
  # the tiny run trains no 'deocclusion_noca' / '_gfc' / '_idgan' stage, so their
  # inputs are absent; the RPCA / GL fills are opt-in (config.evaluate.inputs)
  skipped = {"completed_noca", "completed_gfc", "completed_idgan", "rpca_fill", "gl_fill"}
  ran_inputs = set(evaluator.INPUTS) - skipped
  assert set(mix["student_soft"]) == ran_inputs
  # Table 2 proper: only its GA-w/-attention column (the base rows on G's completions)
  with open(os.path.join(out, "completion_methods_synthetic.csv")) as f:
    cm = list(csv.DictReader(f))
  assert [r["recogniser"] for r in cm] == ["ArcFace fine-tuned", "OUR-Hard", "OUR-Soft"]
  assert all(r[c] == "—" for r in cm for c in ("GFC", "GA w/o attention", "IDGAN")), cm
  acc = 100 * np.asarray(mix["student_hard"]["completed"]["fold_accuracies_one"])
  assert float(cm[1]["GA w/ attention"]) == pytest.approx(acc.mean(), abs=1e-9)
  assert float(cm[1]["GA w/ attention std"]) == pytest.approx(acc.std(), abs=1e-9)
  # the Table 2 CSV holds exactly the results' numbers
  with open(os.path.join(out, "table2_synthetic.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["recognizer"] for r in rows] == [
      "teacher (arcface)",
      "student-sized ArcFace (clean faces only)",
      "student-sized ArcFace fine-tuned",
      "student (hard)",
      "student (soft)",
  ]
  got = float(rows[3]["G, true mask"])
  assert got == pytest.approx(100 * mix["student_hard"]["completed"]["one"]["accuracy"], abs=1e-9)
  # ... and the paper's best-threshold accuracy its own table, named in its title
  with open(os.path.join(out, "table2_best_threshold_synthetic.csv")) as f:
    best = list(csv.DictReader(f))
  one = mix["student_hard"]["completed"]["one"]
  assert float(best[3]["G, true mask"]) == pytest.approx(
      100 * one["accuracy_best_threshold"], abs=1e-9
  )
  title = open(os.path.join(out, "table2_best_threshold_synthetic.md")).read()
  assert "highest accuracy over all 200 pairs" in title and "not cross-validated" in title
  assert "10-fold cross-validated" in open(os.path.join(out, "table2_synthetic.md")).read()
  # per category: only the category inputs, every category present
  cats = res["verification"]["synthetic"]["results"]
  assert set(cats) == {"mixture", "simple", "complex", "body", "hybrid"}
  assert set(cats["body"]["teacher"]) == set(evaluator.CATEGORY_INPUTS)
  # identification: rank-1 == cmc[0], cmc monotone to 1
  ident = res["identification"]["synthetic"]["student_soft"]["AR2 scarf"]["completed"]
  cmc = np.array(ident["cmc"])
  assert ident["rank1"] == cmc[0] and np.all(np.diff(cmc) >= 0) and cmc[-1] == 1.0
  seg = res["segmentation_iou"]["synthetic"]
  assert set(seg) == {"mixture", "simple", "complex", "body", "hybrid"}
  assert all(0.0 <= v <= 1.0 for v in seg.values())
  cal = json.load(open(os.path.join(out, "calibration.json")))
  assert cal["resolution"] == 32 and np.array(cal["mean_landmarks"]).shape == (5, 2)
  assert set(cal["thresholds"]["student_soft"]) == ran_inputs


def test_accuracy_and_rank1_match_brute_force(tiny_run):
  """Independent embeddings (the teacher applied directly, unsharded), then
  float64 loops: 10-fold accuracy and rank-1 equal the job's numbers."""
  config, workdir = tiny_run
  res = _results(workdir)
  models = restore_models(config, workdir, recognizers=("teacher",))
  embed = lambda x: np.concatenate(
      [
          np.asarray(models.recognizers["teacher"](x[i : i + 40]))  # noqa
          for i in range(0, len(x), 40)
      ]
  )
  e = config.evaluate
  vs = protocols.synthetic_verification_set(
      factories.make_source(config, "test"),
      e.num_pairs,
      e.seed,
      factories.mask_config(config),
      ("mixture",),
  )
  a, b, same, fold = vs.pairs
  clean, masked = embed(vs.clean), embed(vs.views["mixture"].masked)
  acc = _brute_force_10_fold(_cos64(clean[a], masked[b]), same, fold)
  job_acc = res["verification"]["synthetic"]["results"]["mixture"]["teacher"]["masked"]
  assert acc == pytest.approx(job_acc["one"]["accuracy"], abs=1e-9)
  # per category (evaluate.by_category='mixture'): the mixture's pairs whose
  # second face carries an occluder of that category
  from deocc_jax.data import masks as masks_lib

  for cat in ("simple", "body"):
    sel = vs.views["mixture"].category[b] == masks_lib.CATEGORIES.index(cat)
    got = res["verification"]["synthetic"]["results"][cat]["teacher"]["masked"]
    assert got["num_pairs"] == int(sel.sum()) and 0 < sel.sum() < len(sel)
    for side, s in (
        ("one", _cos64(clean[a], masked[b])),
        ("both", _cos64(masked[a], masked[b])),
    ):
      want = _brute_force_10_fold(s[sel], same[sel], fold[sel])
      assert want == pytest.approx(got[side]["accuracy"], abs=1e-9), (cat, side)
  # TAR at the smallest FAR grid point: brute force over thresholds
  s = _cos64(masked[a], masked[b])
  neg = np.sort(s[~same])
  far = 1.0 / len(neg)  # one false accept allowed
  tars = [np.mean(s[same] >= t) for t in np.unique(s) if np.mean(neg >= t) <= far]
  from deocc_jax.evaluation import verification

  assert verification.tar_at_far(s, same, far) == pytest.approx(max(tars), abs=1e-12)

  ids = protocols.synthetic_identification_set(factories.make_source(config, "test"), e.seed)
  g = embed(ids.gallery)
  p = embed(ids.probes["AR1 sunglasses"].masked)
  correct = 0
  for k in range(len(p)):
    best = max(range(len(g)), key=lambda j: (_cos64(p[k : k + 1], g[j : j + 1])[0], -j))
    correct += ids.gallery_labels[best] == ids.probe_labels["AR1 sunglasses"][k]
  rank1 = res["identification"]["synthetic"]["teacher"]["AR1 sunglasses"]["masked"]["rank1"]
  assert correct / len(p) == pytest.approx(rank1, abs=1e-12)


def _small(config, **kw):
  c = copy.deepcopy(config)
  c.evaluate.recognizers = ("student_hard",)
  c.evaluate.inputs = ("masked", "completed")
  c.evaluate.categories = ()
  c.evaluate.identification = False
  c.evaluate.plots = False
  for k, v in kw.items():
    c.evaluate[k] = v
  return c


def _at(config, **checkpoints):
  """``_small`` with per-stage choices in config.evaluate.checkpoints."""
  c = _small(config)
  for stage, which in checkpoints.items():
    c.evaluate.checkpoints[stage] = which
  return c


def test_checkpoint_selection_and_device_counts(tiny_run, tmp_path):
  config, workdir = tiny_run
  full = job.run(_small(config), workdir, results_dir=str(tmp_path / "a"))
  c1 = _small(config)
  c1.mesh.num_devices = 1
  one_dev = job.run(c1, workdir, results_dir=str(tmp_path / "b"))
  r8 = full["verification"]["synthetic"]["results"]["mixture"]["student_hard"]
  r1 = one_dev["verification"]["synthetic"]["results"]["mixture"]["student_hard"]
  for kind in ("masked", "completed"):
    assert r8[kind]["one"]["accuracy"] == pytest.approx(r1[kind]["one"]["accuracy"], abs=1e-9)
    assert r8[kind]["one"]["auc"] == pytest.approx(r1[kind]["one"]["auc"], abs=1e-5)
  assert full["checkpoint_steps"]["distill_hard"] == 4
  early = job.run(_at(config, distill_hard="2"), workdir, results_dir=str(tmp_path / "c"))
  assert early["checkpoint_steps"]["distill_hard"] == 2
  assert early["checkpoint_steps"]["deocclusion"] == 4
  re = early["verification"]["synthetic"]["results"]["mixture"]["student_hard"]
  assert re["completed"]["one"]["auc"] != r8["completed"]["one"]["auc"]
  with pytest.raises(CheckpointNotFoundError, match="no checkpoint 'best'"):
    job.run(_at(config, distill_hard="best"), workdir, results_dir=str(tmp_path / "d"))
  with pytest.raises(CheckpointNotFoundError, match=r"no checkpoint 3 .*available steps: \[2, 4\]"):
    job.run(_at(config, distill_hard="3"), workdir, results_dir=str(tmp_path / "d"))
  flag = job.run(_at(config, distill_hard="2"), workdir, "latest", str(tmp_path / "e"))
  assert flag["checkpoint_steps"]["distill_hard"] == 4  # --checkpoint: every stage's


def test_category_tables_from_views(tiny_run, tmp_path):
  """evaluate.by_category='views': every face occluded once more with the
  category (not the mixture's pairs); the occluders are of that category."""
  config, workdir = tiny_run
  c = _small(config, categories=("body",), by_category="views")
  res = job.run(c, workdir, results_dir=str(tmp_path / "views"))["verification"]["synthetic"]
  assert set(res["results"]) == {"mixture", "body"}
  body = res["results"]["body"]["student_hard"]
  assert set(body) == {"masked", "completed"} and "num_pairs" not in body["masked"]
  mixed = job.run(
      _small(config, categories=("body",)), workdir, results_dir=str(tmp_path / "mixture")
  )["verification"]["synthetic"]["results"]
  grouped = mixed["body"]["student_hard"]["masked"]
  assert grouped["num_pairs"] < res["num_pairs"]
  assert grouped["one"]["accuracy"] != body["masked"]["one"]["accuracy"]
  with pytest.raises(ConfigError, match="by_category is 'faces'"):
    job.run(_small(config, by_category="faces"), workdir, results_dir=str(tmp_path / "x"))
  with pytest.raises(ConfigError, match=r"unknown categories \['scarf'\]"):
    job.run(_small(config, categories=("scarf",)), workdir, results_dir=str(tmp_path / "x"))


def test_bad_requests(tiny_run, tmp_path):
  config, workdir = tiny_run
  with pytest.raises(ConfigError, match=r"unknown stage\(s\) \['distil_hard'\]"):
    checkpoint_choice({"default": "latest", "distil_hard": "best"})
  with pytest.raises(ConfigError, match="'newest'"):
    checkpoint_choice("newest")
  with pytest.raises(ConfigError, match="needs 'default'"):
    checkpoint_choice({"teacher": "3"})
  assert checkpoint_choice({"default": "best", "teacher": "3", "distill_hard": ""}) == {
      "*": "best",
      "teacher": 3,
  }
  assert checkpoint_choice(_small(config).evaluate.checkpoints) == {"*": "latest"}
  # the former string form: refused, with the overrides that say the same
  with pytest.raises(
      ConfigError, match=r"checkpoints.default=best --config.evaluate.checkpoints.teacher=3"
  ):
    checkpoint_choice("best,teacher=3")
  old = _small(config).to_dict()
  old["evaluate"]["checkpoint"] = "latest,distill_soft=best"  # an older run's config.json
  with pytest.raises(
      ConfigError, match=r'"checkpoints": \{"default": "latest", "distill_soft": "best"\}'
  ):
    config_checkpoints(ConfigDict(old))
  with pytest.raises(ConfigError, match="is no longer read"):
    job.run(ConfigDict(old), workdir, results_dir=str(tmp_path))
  with pytest.raises(ConfigError, match="unknown input.*'inpainted'"):
    job.run(_small(config, inputs=("inpainted",)), workdir, results_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    job.run(_small(config), str(tmp_path / "nowhere"))
  partial = tmp_path / "partial"
  shutil.copytree(workdir, partial, ignore=shutil.ignore_patterns("distill_soft", "results"))
  with pytest.raises(FileNotFoundError, match="'student_soft' needs stage 'distill_soft'"):
    job.run(_small(config, recognizers=("student_soft",)), str(partial))


@pytest.mark.slow
def test_evaluate_cli_on_one_device(tiny_run, tmp_path):
  """``python -m deocc_jax.evaluate`` in a fresh process with one CPU device
  restores the checkpoints written on 8 and reproduces the numbers."""
  config, workdir = tiny_run
  cfg = tmp_path / "tiny_cfg.py"
  cfg.write_text(
      "from tests.helpers import tiny_run as tiny_run_lib\n\n\n"
      "def get_config():\n  return tiny_run_lib.tiny_config()\n"
  )
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  out = tmp_path / "cli"
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "deocc_jax.evaluate",
          f"--config={cfg}",
          f"--workdir={workdir}",
          f"--results_dir={out}",
          "--config.evaluate.plots=False",
          "--config.evaluate.identification=False",
          "--config.evaluate.categories=()",
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "evaluation results in" in proc.stdout
  cli = json.loads((out / "results.json").read_text())["verification"]["synthetic"]["results"]
  ref = _results(workdir)["verification"]["synthetic"]["results"]
  for r in ("teacher", "student_soft"):
    for kind in ("masked", "completed", "diffusion_fill"):
      assert cli["mixture"][r][kind]["one"]["accuracy"] == pytest.approx(
          ref["mixture"][r][kind]["one"]["accuracy"], abs=1e-9
      ), (r, kind)


def test_real_lfw_and_ar_tables(tiny_run, tmp_path):
  """The same job on real-format LFW (pairs.txt) and AR folders: LFW gets the
  verification tables; AR's real occlusions (no true mask) get the blind
  pipeline only (segmenter mask for G and the fills)."""
  from tests.helpers.real_fixtures import make_ar, make_lfw

  config, workdir = tiny_run
  lfw_root, pairs = make_lfw(tmp_path)
  c = _small(
      config,
      lfw_root=str(lfw_root),
      lfw_pairs=str(pairs),
      ar_root=str(make_ar(tmp_path)),
      inputs=("masked", "mean_fill", "completed_predicted", "completed"),
      identification=True,
  )
  c.evaluate.held_out = False  # only the real sets
  res = job.run(c, workdir, results_dir=str(tmp_path / "out"))
  lfw = res["verification"]["lfw"]
  assert lfw["num_pairs"] == 8 and lfw["num_faces"] == 7  # the images pairs.txt uses
  assert set(lfw["results"]["mixture"]["student_hard"]) == {
      "masked",
      "mean_fill",
      "completed_predicted",
      "completed",
  }
  ar = res["identification"]["ar"]["student_hard"]
  assert set(ar) == {"AR1 sunglasses", "AR2 scarf"}
  assert set(ar["AR2 scarf"]) == {"masked", "mean_fill", "completed_predicted"}  # no true mask
  for name in ("verification_lfw.md", "table2_lfw.csv", "identification_ar.md"):
    assert (tmp_path / "out" / name).exists(), name
