"""Inference API (deocc_jax/inference/) and CLI (deocc_jax/infer.py) on the tiny run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deocc_jax import inference
from deocc_jax.data import alignment, pipeline
from deocc_jax.data.dataset_formats import DatasetFormatError
from deocc_jax.utils import face_geometry as geo
from tests.helpers import paths

ROOT = str(paths.ROOT)
from tests.helpers import tiny_run as tiny_run_lib  # noqa: E402

RES = tiny_run_lib.RESOLUTION
KEY = "student_soft"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def source():
  return tiny_run_lib.held_out_source()


@pytest.fixture(scope="module")
def fr(tiny_run):
  config, workdir = tiny_run
  return inference.FaceRecognizer.from_run(config, workdir, recognizer=KEY)


@pytest.fixture(scope="module")
def models(tiny_run):
  """An independent restore of the same models (the reference computations)."""
  from deocc_jax.runs.models import restore_models

  config, workdir = tiny_run
  return restore_models(config, workdir, recognizers=(KEY,))


@pytest.fixture(scope="module")
def light(source):
  """A recogniser without trained models (alignment / loading / decisions)."""
  import jax.numpy as jnp

  tpl = np.mean([source[i]["landmarks"] for i in range(40)], axis=0)

  def embed(x):
    v = x.reshape(x.shape[0], -1)[:, :48]
    return v / jnp.linalg.norm(v, axis=1, keepdims=True)

  return inference.FaceRecognizer(embed, RES, 0.5, tpl, name="toy")


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)
  return str(path)


def _cos64(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------ verification


def test_verify_matches_independent_computation(fr, models, tiny_run, source):
  _, workdir = tiny_run
  with open(os.path.join(workdir, "results", "calibration.json")) as f:
    cal = json.load(f)
  assert fr.input_kind == "completed_predicted"  # the tiny run has G and the segmenter
  thr = cal["thresholds"][KEY]["completed_predicted"]
  assert source[0]["identity"] == source[1]["identity"] != source[5]["identity"]
  for i, j in ((0, 1), (0, 5)):  # same identity, different identities
    a, b = source[i]["image"], source[j]["image"]
    v = fr.verify(a, b)
    x = np.stack([pipeline.to_unit_range(a), pipeline.to_unit_range(b)])
    np.testing.assert_allclose(np.stack([fr.load_face(a), fr.load_face(b)]), x, atol=1e-6)
    m = np.asarray(models.segment(x))
    completed = np.asarray(models.complete(x, m))
    emb = np.asarray(models.recognizers[KEY](completed))
    assert v.score == pytest.approx(_cos64(emb[0], emb[1]), abs=1e-5)
    assert v.threshold == thr
    assert v.same == (v.score >= thr)
    assert fr.with_threshold(v.score).verify(a, b).same
    assert not fr.with_threshold(v.score + 1e-3).verify(a, b).same
    assert v.mask_sources == ("predicted", "predicted")
    np.testing.assert_array_equal(np.stack(v.masks), m)
  assert fr.threshold == thr  # with_threshold copies, leaves fr alone


def test_given_mask_is_used_and_predicted_mask_reported(fr, models, source, tmp_path):
  rec = source[2]
  occluded, mask = tiny_run_lib.occluded(rec, seed=3)
  assert 0.02 < mask.mean() < 0.6
  clean = source[3]["image"]
  v = fr.verify(occluded, clean, mask_a=mask)
  assert v.mask_sources == ("given", "predicted")
  np.testing.assert_array_equal(v.masks[0][..., 0], mask.astype(np.float32))
  x = pipeline.to_unit_range(occluded)
  out = ~mask
  np.testing.assert_array_equal(v.completed[0][out], x[out])  # observed pixels kept
  assert np.abs(v.completed[0][mask] - x[mask]).max() > 1e-3  # the hole was filled
  ref = np.asarray(models.complete(x[None], mask[None, ..., None].astype(np.float32)))[0]
  np.testing.assert_allclose(v.completed[0], ref, atol=1e-5)
  # b had no mask: the segmenter's prediction, and G completed with it
  xb = pipeline.to_unit_range(clean)[None]
  pred = np.asarray(models.segment(xb))
  np.testing.assert_array_equal(v.masks[1], pred[0])
  np.testing.assert_allclose(v.completed[1], np.asarray(models.complete(xb, pred))[0], atol=1e-5)
  # the same mask from files: grayscale PNG and the alpha channel of an RGBA PNG
  gray = _save(tmp_path / "mask_l.png", (mask * 255).astype(np.uint8))
  rgba = np.zeros((RES, RES, 4), np.uint8)
  rgba[..., 0] = 200
  rgba[..., 3] = mask * 255
  alpha = _save(tmp_path / "mask_rgba.png", rgba)
  for path in (gray, alpha):
    w = fr.verify(occluded, clean, mask_a=path)
    np.testing.assert_array_equal(w.masks[0], v.masks[0])
    assert w.score == pytest.approx(v.score, abs=1e-6)


def test_without_generator_faces_are_embedded_as_they_are(light, source):
  assert light.input_kind == "masked"
  occluded, mask = tiny_run_lib.occluded(source[4], seed=1)
  p = light.prepare([light.load(occluded, mask=mask)])
  assert p.mask_sources == ("given",)
  np.testing.assert_array_equal(p.completed[0], pipeline.to_unit_range(occluded))
  with pytest.raises(ValueError, match="generator"):
    inference.FaceRecognizer(
        lambda x: x, RES, 0.5, light.template_landmarks, input_kind="completed"
    )


# ------------------------------------------------------------------ alignment


def _similarity(angle_deg, scale, t):
  a = np.deg2rad(angle_deg)
  rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  return np.concatenate([rot, np.asarray(t, np.float64)[:, None]], axis=1)


def test_alignment_with_landmarks(light, source):
  tpl = light.template_landmarks
  img = source[6]["image"]
  # identity warp: landmarks already on the template
  f = light.load(img, landmarks=tpl)
  np.testing.assert_allclose(f.transform, np.eye(2, 3), atol=1e-9)
  np.testing.assert_allclose(f.face, pipeline.to_unit_range(img), atol=1e-4)
  # a known similarity S (crop -> photo): the photo is the face warped by S
  s = _similarity(20.0, 1.6, (14.0, 9.0))
  photo = np.clip(
      np.round(alignment.warp_affine(img, geo.invert_transform(s), (72, 80))), 0, 255
  ).astype(np.uint8)
  lm = geo.apply_transform(s, tpl)
  region = np.zeros((RES, RES), np.float32)
  region[14:24, 8:26] = 1.0  # a mask drawn on the face ...
  photo_mask = alignment.warp_affine(region, geo.invert_transform(s), (72, 80)) > 0.5
  g = light.load(photo, mask=photo_mask, landmarks=lm)  # ... and on the photo
  np.testing.assert_allclose(g.transform, s, atol=1e-9)
  aligned_lm = geo.apply_transform(geo.invert_transform(g.transform), lm)
  np.testing.assert_allclose(aligned_lm, tpl, atol=1e-3)
  centre = (slice(6, 26), slice(6, 26))
  err = np.abs(g.face[centre] - pipeline.to_unit_range(img)[centre]).mean()
  unaligned = np.abs(light.load_face(photo[20:52, 20:52]) - pipeline.to_unit_range(img))
  assert err < 0.1 < 0.3 < unaligned[centre].mean(), (err, unaligned[centre].mean())
  assert np.mean(g.mask[..., 0] == region) > 0.97
  # align='none' resizes square crops: a 2x nearest upscale comes back exactly
  big = np.kron(img, np.ones((2, 2, 1), np.uint8))
  np.testing.assert_allclose(light.load_face(big), pipeline.to_unit_range(img), atol=1e-5)


def test_dlib_alignment(light, tmp_path):
  import dlib  # noqa: F401  (the test extra installs dlib-bin: missing, this fails)

  from tests.helpers.photos import face_photos

  gray = _save(tmp_path / "gray.png", np.full((200, 200, 3), 128, np.uint8))
  with pytest.raises(inference.NoFaceError, match="gray.png"):
    light.load(gray, align="dlib")
  photo = _save(tmp_path / "obama.png", face_photos()["obama"])
  f = light.load(photo, align="dlib")
  assert f.face.shape == (RES, RES, 3) and f.landmarks.shape == (5, 2)
  aligned_lm = geo.apply_transform(geo.invert_transform(f.transform), f.landmarks)
  assert np.abs(aligned_lm - light.template_landmarks).max() < 3.0


# ------------------------------------------------------------------ folders / identification


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory, source):
  """Images 0-2 of 5 test identities in id<k>/ subfolders, one image at the root."""
  d = tmp_path_factory.mktemp("gallery")
  rows = []
  for ident in range(5):
    for k in range(3):
      i = ident * 4 + k
      rows.append(_save(d / f"id{ident}" / f"{k}.png", source[i]["image"]))
  rows.append(_save(d / "loose.png", source[3]["image"]))
  return str(d)


def test_embed_folder(fr, gallery_dir, tmp_path):
  out = tmp_path / "gallery.npz"
  g = fr.embed_folder(gallery_dir, str(out))
  with np.load(out) as z:
    paths, labels, emb = list(z["paths"]), list(z["labels"]), z["embeddings"]
    assert str(z["recognizer"]) == KEY
  expect = sorted([f"id{i}/{k}.png" for i in range(5) for k in range(3)] + ["loose.png"])
  assert paths == expect == list(g.paths)
  assert labels == [p.split("/")[0] if "/" in p else "" for p in expect]
  assert emb.dtype == np.float32 and emb.shape == (16, g.embeddings.shape[1])
  direct = fr.embed([os.path.join(gallery_dir, p) for p in expect])
  np.testing.assert_allclose(emb, direct, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
  assert [n for n in os.listdir(tmp_path)] == ["gallery.npz"]  # no temporary left


def test_embed_folder_corrupt_file(fr, gallery_dir, tmp_path):
  import shutil

  d = tmp_path / "g"
  shutil.copytree(gallery_dir, d)
  (d / "id2" / "x.png").write_bytes(b"definitely not a png")
  out = tmp_path / "out.npz"
  with pytest.raises(inference.ImageErrors, match="x.png") as e:
    fr.embed_folder(str(d), str(out))
  assert [p for p, _ in e.value.errors] == ["id2/x.png"]
  assert "skip_errors" in str(e.value)
  assert sorted(os.listdir(tmp_path)) == ["g"]  # nothing written
  g = fr.embed_folder(str(d), str(out), skip_errors=True)
  assert [p for p, _ in g.skipped] == ["id2/x.png"] and "x.png" in g.skipped[0][1]
  assert "id2/x.png" not in g.paths and len(g.paths) == 16
  back = inference.Gallery.load(str(out))
  assert [p for p, _ in back.skipped] == ["id2/x.png"]
  assert back.paths == g.paths and back.labels == g.labels


def test_identify_matches_brute_force(fr, gallery_dir, source, tmp_path):
  npz = tmp_path / "g.npz"
  g = fr.embed_folder(gallery_dir, str(npz))
  probes = [source[ident * 4 + 3]["image"] for ident in (0, 2, 4)]
  probes.append(tiny_run_lib.occluded(source[5], seed=7)[0])
  res = fr.identify(probes, str(npz), top_k=3)
  assert fr.identify(probes, gallery_dir, top_k=3) == res  # folder == its .npz
  p = fr.embed(probes)
  for emb, matches in zip(p, res):
    best: dict[str, float] = {}
    for row, path, label in zip(g.embeddings, g.paths, g.labels):
      key = label or path
      best[key] = max(best.get(key, -np.inf), _cos64(emb, row))
    ref = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert len(matches) == 3
    assert matches[0].label == ref[0][0]
    for m, (label, score) in zip(matches, ref):
      assert m.label == label and m.score == pytest.approx(score, abs=1e-9)
  other = inference.Gallery(g.embeddings, g.paths, g.labels, recognizer="teacher")
  with pytest.raises(ValueError, match="teacher"):
    fr.identify(probes, other)


# ------------------------------------------------------------------ bad inputs


def test_bad_inputs(light, tmp_path, source):
  missing = str(tmp_path / "nope.png")
  with pytest.raises(FileNotFoundError, match="nope.png"):
    light.load_face(missing)
  garbage = tmp_path / "garbage.png"
  garbage.write_bytes(b"\x89PNG not really")
  with pytest.raises(DatasetFormatError, match="garbage.png"):
    light.load_face(str(garbage))
  wide = _save(tmp_path / "wide.png", np.zeros((32, 40, 3), np.uint8))
  with pytest.raises(ValueError, match=r"wide\.png is 40x32, not square"):
    light.load_face(wide)
  img = _save(tmp_path / "b.png", source[0]["image"])
  mask = _save(tmp_path / "a.png", np.zeros((40, 40), np.uint8))
  with pytest.raises(ValueError, match=r"mask .*a\.png is 40x40 but image .*b\.png is 32x32"):
    light.verify(img, img, mask_a=mask)
  with pytest.raises(FileNotFoundError, match="nomask.png"):
    light.load(img, mask=str(tmp_path / "nomask.png"))
  with pytest.raises(ValueError, match="uint8"):
    light.load_face(np.zeros((32, 32, 3), np.float32))
  with pytest.raises(ValueError, match="align"):
    light.load_face(img, align="sideways")


def test_missing_calibration(tmp_path):

  with pytest.raises(FileNotFoundError, match=r"python -m deocc_jax\.evaluate"):
    inference.FaceRecognizer.from_run(tiny_run_lib.tiny_config(), str(tmp_path))


# ------------------------------------------------------------------ CLI


def _cli(*args, workdir):
  cmd = [
      sys.executable,
      "-m",
      "deocc_jax.infer",
      *args,
      f"--config={ROOT}/configs/synthetic.py",
      "--config.data.identities=200",
      "--config.data.images_per_identity=4",
      f"--workdir={workdir}",
  ]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli(fr, tiny_run, source, gallery_dir, tmp_path):
  _, workdir = tiny_run
  occluded, mask = tiny_run_lib.occluded(source[2], seed=3)
  a = _save(tmp_path / "a.png", occluded)
  b = _save(tmp_path / "b.png", source[3]["image"])
  m = _save(tmp_path / "a_mask.png", (mask * 255).astype(np.uint8))
  out = tmp_path / "g.npz"
  procs = {  # started together: the JAX start-up overlaps
      "verify": _cli("verify", a, b, f"--mask_a={m}", workdir=workdir),
      "embed": _cli("embed", f"--folder={gallery_dir}", f"--out={out}", workdir=workdir),
      "identify": _cli("identify", a, b, f"--gallery={gallery_dir}", "--top_k=2", workdir=workdir),
      "missing": _cli("verify", a, str(tmp_path / "nope.png"), workdir=workdir),
      "usage": _cli("embed", a, workdir=workdir),
  }
  res = {k: (*p.communicate(timeout=300), p.returncode) for k, p in procs.items()}
  stdout, stderr, rc = res["verify"]
  assert rc == 0, stderr
  got = json.loads(stdout)
  v = fr.verify(a, b, mask_a=m)
  assert got["score"] == pytest.approx(v.score, abs=1e-6)
  assert got["threshold"] == fr.threshold and got["same"] == v.same
  assert got["mask_a"]["source"] == "given" and got["mask_b"]["source"] == "predicted"
  stdout, stderr, rc = res["embed"]
  assert rc == 0, stderr
  assert json.loads(stdout)["count"] == 16
  np.testing.assert_allclose(
      inference.Gallery.load(str(out)).embeddings,
      fr.gallery_from_folder(gallery_dir).embeddings,
      atol=1e-5,
  )
  stdout, stderr, rc = res["identify"]
  assert rc == 0, stderr
  got = json.loads(stdout)["probes"]
  ref = fr.identify([a, b], gallery_dir, top_k=2)
  assert [x["probe"] for x in got] == [a, b]
  for g, r in zip(got, ref):
    assert [x["label"] for x in g["matches"]] == [x.label for x in r]
    np.testing.assert_allclose([x["score"] for x in g["matches"]], [x.score for x in r], atol=1e-6)
  stdout, stderr, rc = res["missing"]
  assert rc == 2 and stdout == ""
  assert stderr.strip().splitlines()[-1].startswith("error: ") and "nope.png" in stderr
  stdout, stderr, rc = res["usage"]
  assert rc == 1 and "embed takes no positional arguments" in stderr
