"""Inference speed-ups: the PIL warp, teachers jitted once, ``verify --pairs_file``,
``FaceRecognizer.from_run(workdir)`` without a config."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from deocc_jax import inference
from deocc_jax.data import alignment
from deocc_jax.teachers import api

from tests.helpers import paths

ROOT = str(paths.ROOT)
from tests.helpers import tiny_run as tiny_run_lib  # noqa: E402


def _rotation(theta: float, scale: float, tx: float, ty: float) -> np.ndarray:
  c, s = np.cos(theta) * scale, np.sin(theta) * scale
  return np.array([[c, -s, tx], [s, c, ty]], np.float64)


def _bilinear_f64(img: np.ndarray, m: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
  """Independent float64 loop reference: output (x, y) <- bilinear img at m @ [x, y, 1]."""
  h, w = img.shape[:2]
  out = np.zeros(out_hw + img.shape[2:], np.float64)
  for y in range(out_hw[0]):
    for x in range(out_hw[1]):
      sx, sy = m @ np.array([x, y, 1.0])
      x0, y0 = int(np.floor(sx)), int(np.floor(sy))
      fx, fy = sx - x0, sy - y0
      acc = 0.0
      for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
          xi, yi = x0 + dx, y0 + dy
          v = img[yi, xi].astype(np.float64) if (0 <= xi < w and 0 <= yi < h) else 0.0
          acc = acc + wy * wx * v
      out[y, x] = acc
  return out


def test_pil_warp_matches_float64_reference_and_old_warp():
  rng = np.random.default_rng(0)
  img = rng.uniform(0, 255, (37, 41, 3))
  m = _rotation(0.4, 1.3, 9.5, -3.25)
  ref = _bilinear_f64(img, m, (24, 22))
  inside = np.zeros((24, 22), bool)  # pixels whose 2x2 neighbourhood is inside the image
  for y in range(24):
    for x in range(22):
      sx, sy = m @ np.array([x, y, 1.0])
      inside[y, x] = 0 <= sx <= 39.999 and 0 <= sy <= 35.999
  assert inside.sum() > 200
  new_f = alignment.warp_affine_pil(img.astype(np.float32), m, (24, 22), antialias=False)
  assert np.max(np.abs(new_f - ref)[inside]) < 1e-3  # 32-bit float path
  old = alignment.warp_affine(img, m, (24, 22), antialias=False)
  assert np.max(np.abs(new_f - old)[inside]) < 1e-3
  img8 = np.round(img).astype(np.uint8)
  new_8 = alignment.warp_affine_pil(img8, m, (24, 22), antialias=False)
  ref_8 = _bilinear_f64(img8, m, (24, 22))
  assert np.max(np.abs(new_8 - ref_8)[inside]) < 1e-3  # uint8 input, float warp: no rounding
  # Grayscale and masks (float, 2-D) take the same map.
  g = alignment.warp_affine_pil(img[..., 0].astype(np.float32), m, (24, 22), antialias=False)
  assert g.shape == (24, 22) and np.max(np.abs(g - ref[..., 0])[inside]) < 1e-3


def test_pil_warp_reduces_before_strong_downscaling():
  """A 1-pixel checkerboard shrunk 6.5x: the box pre-filter removes it (grey, like
  the old binomial pyramid); plain bilinear sampling aliases it."""
  yy, xx = np.mgrid[0:400, 0:400]
  board = (((xx + yy) % 2) * 255).astype(np.uint8)
  board = np.repeat(board[..., None], 3, axis=-1)
  m = _rotation(0.2, 6.5, 80.0, 20.0)  # samples inside the 400 x 400 image
  new = alignment.warp_affine_pil(board, m, (40, 40))
  old = alignment.warp_affine(board, m, (40, 40))
  plain = alignment.warp_affine_pil(board, m, (40, 40), antialias=False)
  assert np.std(plain) > 40  # aliasing without the reduction
  assert np.std(new) < 8 and abs(np.mean(new) - 127.5) < 8
  # An identity map (up to 1e-12, as a fitted similarity gives) is exact.
  img = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  eye = np.eye(2, 3) + np.array([[1e-13, 0, -1e-12], [0, -1e-13, 1e-12]])
  np.testing.assert_allclose(alignment.warp_affine_pil(img, eye, (32, 32)), img, atol=1e-4)
  # A smooth photo-like image: new vs old pyramid within a few grey levels.
  smooth = (127.5 + 100 * np.sin(xx / 23.0) * np.cos(yy / 31.0)).astype(np.uint8)
  smooth = np.repeat(smooth[..., None], 3, axis=-1)
  d = np.abs(
      alignment.warp_affine_pil(smooth, m, (40, 40)) - alignment.warp_affine(smooth, m, (40, 40))
  )
  assert np.max(d) < 4.0, np.max(d)


def test_recognizer_load_uses_the_pil_warp(tmp_path):
  rng = np.random.default_rng(1)
  photo = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
  path = str(tmp_path / "p.png")
  Image.fromarray(photo).save(path)
  tpl = np.array([[10, 12], [22, 12], [16, 18], [11, 24], [21, 24]], np.float64)
  fr = inference.FaceRecognizer(lambda x: x.reshape(x.shape[0], -1)[:, :8], 32, 0.5, tpl)
  face = fr.load(path, mask=np.ones((300, 300), np.uint8) * 255)
  m = face.transform
  want = alignment.warp_affine_pil(photo, m, (32, 32)) * (2.0 / 255.0) - 1.0
  np.testing.assert_allclose(face.face, want, atol=1e-6)
  assert face.mask.shape == (32, 32, 1) and face.mask.min() == 1.0


def test_teacher_apply_is_jitted_once():
  """Teacher.embed used to build a new jax.jit per call (a retrace every call)."""
  traces = []

  def apply(params, images):
    traces.append(images.shape)
    return {"embedding": images.reshape(images.shape[0], -1)[:, :4] * params}

  t = api.Teacher("toy", jnp.float32(2.0), apply, 4, 8, {})
  x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
  a = t.embed(x)
  b = t.embed(x)
  np.testing.assert_allclose(a, b)
  np.testing.assert_allclose(
      a, (x.astype(np.float32) / 127.5 - 1.0).reshape(3, -1)[:, :4] * 2, atol=1e-6
  )
  assert len(traces) == 1, traces


def test_read_pairs_file(tmp_path):
  f = tmp_path / "sub" / "pairs.txt"
  f.parent.mkdir()
  f.write_text("# comment\n\na.png b.png\nc.png d.png - d_mask.png\n" "/abs/e.png f.png e_m.png\n")
  pairs = inference.read_pairs_file(str(f))
  base = str(f.parent)
  assert pairs[0] == inference.Pair(f"{base}/a.png", f"{base}/b.png", None, None, 3)
  assert pairs[1].mask_a is None and pairs[1].mask_b == f"{base}/d_mask.png" and pairs[1].line == 4
  assert pairs[2].image_a == "/abs/e.png" and pairs[2].mask_a == f"{base}/e_m.png"
  f.write_text("a.png b.png\nonly_one.png\n")
  with pytest.raises(ValueError, match=r"pairs\.txt:2: expected 'IMG_A IMG_B"):
    inference.read_pairs_file(str(f))
  f.write_text("# nothing\n")
  with pytest.raises(ValueError, match="no pairs"):
    inference.read_pairs_file(str(f))


def test_from_run_without_config_and_pairs_file_cli(tiny_run, tmp_path):
  """from_run(workdir) reads WORKDIR/config.json; `verify --pairs_file` scores
  every pair in one process, equal to verify() pair by pair."""
  _, workdir = tiny_run
  source = tiny_run_lib.held_out_source()
  paths = []
  for i in range(5):
    p = tmp_path / f"f{i}.png"
    Image.fromarray(source[i]["image"]).save(p)
    paths.append(str(p))
  mask = np.zeros((32, 32), np.uint8)
  mask[16:, :] = 255
  Image.fromarray(mask).save(tmp_path / "m.png")
  (tmp_path / "pairs.txt").write_text(
      "f0.png f1.png\nf0.png f2.png - m.png\n# skipped\nf3.png f4.png m.png\nf1.png f1.png\n"
  )
  cmd = [
      sys.executable,
      "-m",
      "deocc_jax.infer",
      "verify",
      f"--pairs_file={tmp_path / 'pairs.txt'}",
      f"--workdir={workdir}",
      "--recognizer=student_soft",
  ]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  bad = tmp_path / "bad.txt"
  bad.write_text("f0.png f1.png\nf0.png missing.png\n")
  proc_bad = subprocess.Popen(
      cmd[:4] + [f"--pairs_file={bad}", f"--workdir={workdir}"],
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  fr = inference.FaceRecognizer.from_run(workdir, recognizer="student_soft")  # no config
  assert fr.name == "student_soft" and fr.resolution == 32
  m = str(tmp_path / "m.png")
  want = [
      fr.verify(paths[0], paths[1]),
      fr.verify(paths[0], paths[2], mask_b=m),
      fr.verify(paths[3], paths[4], mask_a=m),
      fr.verify(paths[1], paths[1]),
  ]
  stdout, stderr, rc = (*proc.communicate(timeout=600), proc.returncode)
  assert rc == 0, stderr
  got = json.loads(stdout)
  assert got["count"] == 4 and [p["line"] for p in got["pairs"]] == [1, 2, 4, 5]
  for g, w in zip(got["pairs"], want):
    assert g["score"] == pytest.approx(w.score, abs=1e-5)
    assert g["same"] == w.same and g["mask_a"]["source"] == w.mask_sources[0]
    assert g["mask_b"]["source"] == w.mask_sources[1]
  assert got["pairs"][3]["score"] == pytest.approx(1.0, abs=1e-5)
  assert got["same_count"] == sum(w.same for w in want) and got["faces_per_second"] > 0
  _, stderr, rc = (*proc_bad.communicate(timeout=600), proc_bad.returncode)
  assert rc == 2 and "bad.txt:2" in stderr and "missing.png" in stderr
