"""infer's input checks run before any model loads (a run folder holding only
its config.json: a check that ran later would fail on the missing checkpoints),
--help exits 0, and galleries refuse probes of other checkpoint steps."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deocc_jax import inference
from deocc_jax.configs import base
from deocc_jax.runs import workdir as workdir_lib
from tests.helpers import paths

ROOT = str(paths.ROOT)
from tests.helpers import photos as photos_lib  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """A run folder with only its config (R = 32, synthetic) and test images."""
  d = tmp_path_factory.mktemp("checks")
  run = d / "run"
  run.mkdir()
  workdir_lib.write_config(str(run), base.get_config())
  rng = np.random.default_rng(0)
  imgs = {
      "tiny.png": np.zeros((1, 1, 3), np.uint8),
      "white.png": np.full((64, 64, 3), 255, np.uint8),
      "wide.png": rng.integers(0, 256, (40, 64, 3), dtype=np.uint8),
      "small.png": rng.integers(0, 256, (20, 20, 3), dtype=np.uint8),
      "noise.png": rng.integers(0, 256, (120, 120, 3), dtype=np.uint8),
      "face.jpg": photos_lib.face_photos()["obama"],
  }
  for name, a in imgs.items():
    Image.fromarray(a).save(d / name)
  return d


def _infer(files, *argv):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "deocc_jax.infer", *argv]
  if not any(a.startswith("--help") for a in argv):
    cmd.append(f"--workdir={files / 'run'}")
  return subprocess.run(cmd, cwd=files, env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(r, *needles):
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  assert "Traceback" not in r.stderr
  lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
  assert len(lines) == 1, r.stderr
  for n in needles:
    assert n in lines[0], (n, lines[0])
  assert "checkpoint" not in lines[0] and "calibration" not in lines[0]  # no model loaded
  return lines[0]


def test_aligned_crops_are_checked_before_any_model_loads(files):
  _one_error_line(_infer(files, "verify", "tiny.png", "white.png"), "tiny.png", "1x1", "32x32")
  _one_error_line(_infer(files, "verify", "white.png", "noise.png"), "white.png", "blank")
  line = _one_error_line(_infer(files, "verify", "wide.png", "noise.png"), "wide.png", "64x40")
  for way in ("--align=mtcnn", "--align=dlib", "--landmarks=FILE", "crop the face square"):
    assert way in line, (way, line)
  _one_error_line(_infer(files, "verify", "noise.png", "small.png"), "small.png", "20x20")


def test_faces_are_required_and_big_enough(files):
  _one_error_line(
      _infer(files, "verify", "noise.png", "face.jpg", "--align=dlib"), "noise.png", "no face"
  )
  # a landmarks file whose face is 4 px between the eyes
  lm = np.array([[50, 50], [54, 50], [52, 53], [50.5, 56], [53.5, 56]])
  (files / "lm.txt").write_text("noise.png " + " ".join(f"{v:g}" for v in lm.ravel()) + "\n")
  _one_error_line(
      _infer(files, "verify", "noise.png", "face.jpg", "--align=dlib", "--landmarks=lm.txt"),
      "noise.png",
      "too small: 4.0 px between the eye centres",
      "minimum is 4.8 px",
  )
  # a pairs file: the line is named
  (files / "pairs.txt").write_text("face.jpg face.jpg\nface.jpg tiny.png\n")
  _one_error_line(_infer(files, "verify", "--pairs_file=pairs.txt"), "pairs.txt:1", "not square")


def test_help_exits_zero(files):
  r = _infer(files, "--help")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "verify" in r.stdout + r.stderr and "--align" in r.stdout + r.stderr


def test_gallery_records_checkpoint_steps_and_refuses_other_steps(tmp_path):
  tpl = np.array([[10, 12], [22, 12], [16, 18], [11, 24], [21, 24]], np.float64)

  class Models:  # what FaceRecognizer.from_run sets: the restored steps
    steps = {"distill_soft": 40, "deocclusion": 20}

  fr = inference.FaceRecognizer(lambda x: x.reshape(len(x), -1)[:, :8], 32, 0.5, tpl, name="s")
  fr.models = Models()
  rng = np.random.default_rng(3)
  (tmp_path / "g" / "a").mkdir(parents=True)
  for i in range(2):
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        tmp_path / "g" / "a" / f"{i}.png"
    )
  g = fr.embed_folder(str(tmp_path / "g"), str(tmp_path / "g.npz"))
  assert g.checkpoint_steps == {"deocclusion": 20, "distill_soft": 40}
  loaded = inference.Gallery.load(str(tmp_path / "g.npz"))
  assert loaded.checkpoint_steps == g.checkpoint_steps
  np.testing.assert_array_equal(loaded.embeddings, g.embeddings)
  probe = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  assert fr.identify([probe], str(tmp_path / "g.npz"))[0][0].label == "a"

  class Later:
    steps = {"distill_soft": 80, "deocclusion": 20}

  fr.models = Later()
  with pytest.raises(
      ValueError,
      match=r"checkpoint steps deocclusion=20, distill_soft=40.*" r"distill_soft=80.*re-embed",
  ):
    fr.identify([probe], str(tmp_path / "g.npz"))
