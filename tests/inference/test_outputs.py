"""infer detect / CSV / --save_completions / embed --all_faces, each image read
and detected once per command, and the persistent compilation cache."""

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deocc_jax import inference
from deocc_jax.data import alignment
import importlib

from deocc_jax.conversion import mtcnn_weights
from deocc_jax.inference import cli_support, outputs

locate = importlib.import_module("deocc_jax.inference.locate")  # the module (the package
# exports its function `locate` under the same name)

from tests.helpers import paths

ROOT = str(paths.ROOT)
from tests.helpers import photos as photos_lib  # noqa: E402

TPL = np.array([[10, 12], [22, 12], [16, 18], [11, 24], [21, 24]], np.float64)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  d = tmp_path_factory.mktemp("photos")
  pics = photos_lib.face_photos()
  for n, img in pics.items():
    Image.fromarray(img).save(d / f"{n}.png")

  def small(img):  # 400 px high
    w = round(img.shape[1] * 400 / img.shape[0])
    return np.asarray(Image.fromarray(img).resize((w, 400), Image.Resampling.BILINEAR))

  group = np.concatenate([small(pics["obama"]), small(pics["biden"])], axis=1)  # two faces
  (d / "g").mkdir()
  Image.fromarray(group).save(d / "g" / "group.png")
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 90, 3), np.uint8)).save(
      d / "noise.png"
  )
  return d, pics


def test_detect_cli_json_csv_and_compilation_cache(photos, tmp_path):
  d, pics = photos
  env = dict(os.environ, JAX_PLATFORMS="cpu", DEOCC_JAX_CACHE_DIR=str(tmp_path / "cache"))
  cmd = [sys.executable, "-m", "deocc_jax.infer", "detect", "g/group.png", "noise.png"]

  def run(*extra):
    return subprocess.run(
        cmd + list(extra), cwd=d, env=env, capture_output=True, text=True, timeout=600
    )

  r = run()
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout)
  assert out["detector"] == "mtcnn" and [im["image"] for im in out["images"]] == [
      "g/group.png",
      "noise.png",
  ]
  faces = out["images"][0]["faces"]
  assert out["images"][1]["faces"] == [] and len(faces) >= 2
  # the two largest against dlib's landmarks (an independent detector)
  ref = alignment.detect_landmarks_dlib(np.asarray(Image.open(d / "g" / "group.png")))
  assert len(ref) == 2
  for f in faces[:2]:
    lm = np.asarray(f["landmarks"])
    near = min(np.abs(lm[:2] - r5[:2]).max() for r5 in ref)
    assert near < 8, near
    x1, y1, x2, y2 = f["box"]
    assert x1 <= lm[:, 0].min() and lm[:, 0].max() <= x2 and y1 <= lm[:, 1].min()
    assert 0.9 < f["score"] <= 1.0 and f["eye_distance"] > 20
  assert abs(faces[0]["landmarks"][0][0] - faces[1]["landmarks"][0][0]) > 150  # two people
  assert os.listdir(tmp_path / "cache")  # the persistent compilation cache was written
  r = run("--format=csv")
  assert r.returncode == 0, r.stderr[-3000:]
  rows = list(csv.DictReader(io.StringIO(r.stdout)))
  assert len(rows) == len(faces) and rows[0]["image"] == "g/group.png"
  assert float(rows[0]["box_x1"]) == pytest.approx(faces[0]["box"][0])
  assert float(rows[1]["lm5_y"]) == pytest.approx(faces[1]["landmarks"][4][1])
  # A converted MTCNN .npz (python -m deocc_jax.convert --arch mtcnn) finds the same faces.
  npz = tmp_path / "mtcnn.npz"
  mtcnn_weights.convert_mtcnn(npz)
  r = run("--align=mtcnn", f"--mtcnn_weights={npz}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads(r.stdout)["images"] == out["images"]
  r = run("--mtcnn_weights=nowhere.npz")
  assert r.returncode == 2 and "nowhere.npz" in r.stderr and r.stdout == "", r.stderr[-3000:]


def test_align_specs_name_the_mtcnn_weights():
  assert locate.align_mode("mtcnn") == ("mtcnn", None)
  assert locate.align_mode("mtcnn:w/m.npz") == ("mtcnn", "w/m.npz")
  assert locate.align_mode("dlib") == ("dlib", None)
  for bad in ("dlib:x.npz", "mtcnn:", "hog"):
    with pytest.raises(ValueError, match="align must be one of"):
      locate.align_mode(bad)
  img = np.zeros((64, 64, 3), np.uint8)
  with pytest.raises(mtcnn_weights.MTCNNWeightsError, match="missing.npz"):
    locate.detect_faces(img, "mtcnn:missing.npz")


def test_csv_rows_of_each_command():
  pairs = {
      "command": "verify",
      "pairs": [
          {
              "line": 1,
              "image_a": "a.png",
              "image_b": "b.png",
              "score": 0.5,
              "same": True,
              "mask_a": {"source": "none", "coverage": 0.0},
          }
      ],
  }
  rows = list(csv.DictReader(io.StringIO(outputs.to_csv(pairs))))
  assert rows == [
      {
          "line": "1",
          "image_a": "a.png",
          "image_b": "b.png",
          "score": "0.5",
          "same": "True",
          "mask_a_source": "none",
          "mask_a_coverage": "0.0",
      }
  ]
  ident = {
      "command": "identify",
      "probes": [{"probe": "p.png", "matches": [{"label": "x", "score": 0.9}, {"label": "y"}]}],
  }
  rows = list(csv.DictReader(io.StringIO(outputs.to_csv(ident))))
  assert [(r["probe"], r["rank"], r["label"]) for r in rows] == [
      ("p.png", "1", "x"),
      ("p.png", "2", "y"),
  ]


def test_save_completions_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  done = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  masks = (rng.uniform(size=(2, 8, 8, 1)) > 0.5).astype(np.float32)
  p = inference.Prepared(done, done, masks, ("predicted", "given"))
  paths = outputs.save_completions(str(tmp_path / "out"), ["x/a.jpg", "b.png"], p)
  assert [os.path.basename(q) for q in paths] == [
      "0_a_completed.png",
      "0_a_mask.png",
      "1_b_completed.png",
      "1_b_mask.png",
  ]
  got = np.asarray(Image.open(paths[2]), np.float64) / 127.5 - 1.0
  assert np.abs(got - done[1]).max() <= 1 / 127.5 + 1e-6
  np.testing.assert_array_equal(np.asarray(Image.open(paths[3])) > 127, masks[1, ..., 0] > 0.5)


def test_each_image_is_read_and_detected_once_per_pairs_file(photos, monkeypatch):
  d, _ = photos
  reads, detections = [], []
  real_read, real_detect = locate.read_face_image, locate.detect_faces
  monkeypatch.setattr(locate, "read_face_image", lambda x, n: reads.append(x) or real_read(x, n))
  monkeypatch.setattr(
      locate, "detect_faces", lambda img, a: detections.append(a) or real_detect(img, a)
  )
  names = [str(d / f"{n}.png") for n in ("obama", "obama2", "biden")]
  pairs = [(a, b) for a in names for b in names if a != b] * 3  # 18 pairs, 3 images
  fr = inference.FaceRecognizer(lambda x: x.reshape(len(x), -1)[:, :16], 32, 0.5, TPL)
  fr.located = inference.locate_all(names, 32, "dlib")
  scores = fr.verify_pairs(pairs, align="dlib")
  assert len(scores) == 18 and sorted(reads) == sorted(names) and len(detections) == 3
  # the same pair gives the same score as a fresh verify
  v = inference.FaceRecognizer(lambda x: x.reshape(len(x), -1)[:, :16], 32, 0.5, TPL).verify(
      names[0], names[2], align="dlib"
  )
  assert scores[1].score == pytest.approx(v.score, abs=1e-6)


@pytest.mark.slow
def test_embed_all_faces_with_dlib(photos, tmp_path):
  from deocc_jax.inference import pretrained

  d, _ = photos
  fr = pretrained.from_teacher("dlib")
  located = inference.locate_all([str(d / "g" / "group.png")], fr.resolution, "mtcnn")
  g = cli_support.embed_all_faces(fr, str(d / "g"), str(tmp_path / "g.npz"), located)
  assert g.paths[:2] == ("group.png#0", "group.png#1")
  single = fr.embed([str(d / "obama.png"), str(d / "biden.png")], align="mtcnn")
  sims = g.embeddings[:2] @ single.T
  # each face of the group photo is its own person's, not the other's
  assert sorted(np.argmax(sims, axis=1).tolist()) == [0, 1], sims
  assert sims.max(axis=1).min() > 0.95, sims
  assert inference.Gallery.load(str(tmp_path / "g.npz")).paths == g.paths
