"""Stage outputs on a non-local workdir: render_data, teacher_embeddings, the
evaluation / ablation reports and calibration.json go through epath to
``gs://`` (fsspec's in-memory filesystem here) and nothing reaches the local
disk -- not even a folder named ``gs:``."""

import io
import json
import os
import types

import numpy as np
import pytest
from PIL import Image

from deocc_jax import main as main_lib
from tests.helpers.configs import tiny_config

RUN = "gs://bucket/runs/r"


def _png(fs, uri):
  return Image.open(io.BytesIO(fs.cat_file(uri)))


def test_render_data_writes_sheets_and_stats_to_gs(fake_gcs, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  c = tiny_config(
      stages=("render_data",),
      data={"categories": ("simple", "body")},
      render={"per_category": 4, "columns": 4, "stats_examples": 8},
  )
  main_lib.run(c, RUN)
  stats = json.loads(fake_gcs.cat_file(f"{RUN}/data/stats.json"))
  assert sorted(stats["categories"]) == ["body", "simple"]
  for cat in ("simple", "body"):
    uri = f"{RUN}/data/contact_{cat}.png"
    assert stats["categories"][cat]["contact_sheet"] == uri
    assert _png(fake_gcs, uri).size == (4 * (64 + 2) + 2, 32 + 2 + 2)
  assert os.listdir(tmp_path) == []  # nothing local, not even 'gs:'


def test_rehearsal_data_refuses_a_remote_root(fake_gcs, tmp_path, monkeypatch):
  from ml_collections import ConfigDict

  from deocc_jax.data import rehearsal
  from deocc_jax.errors import ConfigError

  monkeypatch.chdir(tmp_path)
  with pytest.raises(ConfigError, match="set config.rehearsal.root to a local"):
    rehearsal.run(ConfigDict({"rehearsal": {"root": ""}}), RUN)
  assert os.listdir(tmp_path) == []


def _centroids_loop(emb, labels, c):
  out = np.zeros((c, emb.shape[1]), np.float64)
  for k in range(c):
    rows = [emb[i].astype(np.float64) for i in range(len(labels)) if labels[i] == k]
    if rows:
      out[k] = sum(rows) / len(rows)
  return out


def test_teacher_embeddings_round_trip_on_gs(fake_gcs, tmp_path, monkeypatch):
  from deocc_jax.teachers import extract

  monkeypatch.chdir(tmp_path)
  rng = np.random.default_rng(0)
  out = f"{RUN}/teacher_embeddings"
  for n, c in ((12, 4), (9, 3)):  # the second overwrites the first
    emb = rng.normal(size=(n, 5)).astype(np.float32)
    labels = rng.integers(0, c, n).astype(np.int64)
    meta = extract.write_teacher_outputs(out, emb, labels, {"teacher": "t"}, num_classes=c)
    stored = np.load(io.BytesIO(fake_gcs.cat_file(f"{out}/centroids.npy")))
    np.testing.assert_allclose(stored, _centroids_loop(emb, labels, c), rtol=1e-6, atol=1e-6)
    back = extract.load_teacher_outputs(out)
    np.testing.assert_array_equal(back["embeddings"], emb)
    np.testing.assert_array_equal(back["labels"], labels)
    np.testing.assert_array_equal(back["centroids"], stored)
    np.testing.assert_array_equal(back["counts"], np.bincount(labels, minlength=c))
    assert back["metadata"] == meta and meta["num_records"] == n
  assert sorted(os.path.basename(p) for p in fake_gcs.ls(out, detail=False)) == [
      "centroids.npy",
      "counts.npy",
      "embeddings.npy",
      "labels.npy",
      "metadata.json",
  ]
  fake_gcs.rm(f"{out}/metadata.json")  # an interrupted write
  with pytest.raises(FileNotFoundError, match="metadata.json missing"):
    extract.load_teacher_outputs(out)
  # locally: still <out>.tmp + rename, nothing left behind
  extract.write_teacher_outputs(str(tmp_path / "te"), emb, labels, {}, num_classes=3)
  np.testing.assert_array_equal(extract.load_teacher_outputs(tmp_path / "te")["labels"], labels)
  assert sorted(os.listdir(tmp_path)) == ["te"]


def test_reports_and_calibration_on_gs(fake_gcs, tmp_path, monkeypatch, capsys):
  from deocc_jax import inference
  from deocc_jax.evaluation import job, report
  from deocc_jax.evaluation.evaluators import training_curves
  from deocc_jax.studies import ablation

  monkeypatch.chdir(tmp_path)
  res = f"{RUN}/results"
  md, csv_path = report.write_table(
      [{"m": "a", "acc": (93.25, 0.5)}, {"m": "b", "acc": 80.0}],
      [("m", "model"), ("acc", "accuracy")],
      f"{res}/table2_synthetic",
      title="T",
  )
  assert (md, csv_path) == (f"{res}/table2_synthetic.md", f"{res}/table2_synthetic.csv")
  assert "| a | 93.25 ± 0.50 |" in fake_gcs.cat_file(md).decode()
  assert fake_gcs.cat_file(csv_path).decode().splitlines()[1] == "a,93.25,0.5"
  fpr = np.linspace(0, 1, 11)
  report.plot_roc_curves({"a": (fpr, np.sqrt(fpr))}, f"{res}/roc_synthetic.png")
  assert _png(fake_gcs, f"{res}/roc_synthetic.png").format == "PNG"
  report.write_json({"v": np.float32(0.5), "a": np.arange(3)}, f"{res}/results.json")
  assert json.loads(fake_gcs.cat_file(f"{res}/results.json")) == {"v": 0.5, "a": [0, 1, 2]}
  # the job's own readers / writers: training curves from metrics.jsonl, the summary
  fake_gcs.pipe(
      f"{RUN}/teacher/logs/metrics.jsonl",
      b'{"step": 1, "loss/arcface": 3.0}\n{"step": 2, "loss/arcface": 2.0}\n',
  )
  training_curves.write(RUN, res)
  assert _png(fake_gcs, f"{res}/training_losses.png").size[0] > 0
  job._print_summary(res)
  assert "| a | 93.25 ± 0.50 |" in capsys.readouterr().out
  # the ablation's table / plot / JSON
  point = {
      "step": 2,
      "one": {"accuracy": 0.75, "accuracy_std": 0.1},
      "both": {"accuracy": 0.5, "accuracy_std": 0.1},
      "heldout": {"total": 1.5},
  }
  results = {
      "hard": {"label": "L_i", "curve": [point], "train": {"loss/total": [[1, 2], [2.0, 1.0]]}}
  }
  ablation._write(
      results, types.SimpleNamespace(clean=np.zeros(6), num_pairs=3, identities="test"), res
  )
  assert json.loads(fake_gcs.cat_file(f"{res}/ablation.json"))["hard"]["curve"] == [point]
  assert (
      "| L_i | 2 | 1.000 | 1.500 | 75.000 ± 10.000"
      in fake_gcs.cat_file(f"{res}/ablation.md").decode()
  )
  assert _png(fake_gcs, f"{res}/ablation_losses.png").format == "PNG"
  # calibration.json: written where inference reads it, and read back
  cal = {"set": "synthetic", "thresholds": {"student_soft": {"masked": 0.25}}, "resolution": 32}
  assert inference.calibration_path(RUN) == f"{res}/calibration.json"
  report.write_json(cal, inference.calibration_path(RUN))
  assert inference.read_calibration(RUN) == cal
  with pytest.raises(FileNotFoundError, match="no threshold calibration"):
    inference.read_calibration("gs://bucket/runs/other")
  assert os.listdir(tmp_path) == []  # nothing local, not even 'gs:'
