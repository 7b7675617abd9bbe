"""Export (deocc_jax/export.py) and serving (deocc_jax/serving.py) on the tiny run:
jax.export and ONNX artifacts against FaceRecognizer / the restored JAX models."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from deocc_jax import export as export_lib
from deocc_jax import inference, serving
from deocc_jax.data import alignment, pipeline
from deocc_jax.utils import face_geometry as geo
from tests.helpers import paths

ROOT = str(paths.ROOT)
from tests.helpers import tiny_run as tiny_run_lib  # noqa: E402

RES = tiny_run_lib.RESOLUTION
KEY = "student_soft"


@pytest.fixture(scope="module")
def source():
  return tiny_run_lib.held_out_source()


@pytest.fixture(scope="module")
def fr(tiny_run):
  """The run's recogniser, its config read from the run's config.json (as export_run does)."""
  from deocc_jax.runs import workdir as workdir_lib

  _, workdir = tiny_run
  return inference.FaceRecognizer.from_run(
      config=workdir_lib.read_config(workdir), workdir=workdir, recognizer=KEY
  )


@pytest.fixture(scope="module")
def exported(tiny_run, fr, tmp_path_factory):
  """(folder, metadata) of the tiny run's export (jax.export + ONNX): what
  ``export_run`` writes, without restoring the models a second time."""
  _, workdir = tiny_run
  out = tmp_path_factory.mktemp("export") / "model"
  meta = export_lib.export_recognizer(fr, str(out), workdir=workdir)
  return str(out), meta


def _faces(source, idx):
  return [source[i]["image"] for i in idx]


# ------------------------------------------------------------------ fast: no run needed


def test_freeze_drops_dead_code_and_mesh_constants():
  import jax
  import jax.numpy as jnp

  w = jax.device_put(np.arange(12, dtype=np.float32).reshape(3, 4))

  def fn(x):
    unused = jnp.argmax(x @ w, axis=-1) % 3  # dead: like G's attention flow
    del unused
    return jnp.tanh(x @ w)

  x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
  frozen = export_lib.freeze(fn)
  np.testing.assert_allclose(
      np.asarray(frozen(x)),
      np.tanh(x.astype(np.float64) @ np.asarray(w, np.float64)),
      rtol=1e-5,
      atol=1e-6,
  )
  prims = {e.primitive.name for e in jax.make_jaxpr(frozen)(x).jaxpr.eqns}
  assert "argmax" not in prims and "rem" not in prims and "tanh" in prims
  assert "argmax" in {e.primitive.name for e in jax.make_jaxpr(fn)(x).jaxpr.eqns}


def _toy_export(tmp_path, template):
  meta = {
      "format": export_lib.FORMAT,
      "threshold": 0.5,
      "input_kind": "masked",
      "embedding_dim": 4,
      "preprocessing": {"resolution": RES, "template_landmarks": template.tolist()},
  }
  (tmp_path / "metadata.json").write_text(json.dumps(meta))
  return serving.ExportedRecognizer(str(tmp_path))


def test_serving_alignment_with_landmarks(source, tmp_path):
  tpl = np.mean([source[i]["landmarks"] for i in range(40)], axis=0)
  rec = _toy_export(tmp_path, tpl)
  img = source[6]["image"]
  x, _ = rec.preprocess(img, landmarks=tpl)  # landmarks on the template: the crop itself
  np.testing.assert_allclose(x, pipeline.to_unit_range(img), atol=2 / 255 + 1e-6)  # 1 level
  # a photo = the face warped by a known similarity S (crop -> photo)
  a = np.deg2rad(20.0)
  s = np.array([[1.6 * np.cos(a), -1.6 * np.sin(a), 14.0], [1.6 * np.sin(a), 1.6 * np.cos(a), 9.0]])
  photo = np.clip(
      np.round(alignment.warp_affine(img, geo.invert_transform(s), (72, 80))), 0, 255
  ).astype(np.uint8)
  lm = geo.apply_transform(s, tpl)
  np.testing.assert_allclose(rec.crop_transform(photo.shape, lm), s, atol=1e-9)
  region = np.zeros((RES, RES), np.float32)
  region[14:24, 8:26] = 1.0
  photo_mask = alignment.warp_affine(region, geo.invert_transform(s), (72, 80)) > 0.5
  y, m = rec.preprocess(photo, landmarks=lm, mask=photo_mask)
  centre = (slice(6, 26), slice(6, 26))
  err = np.abs(y[centre] - pipeline.to_unit_range(img)[centre]).mean()
  unaligned = np.abs(rec.preprocess(photo[20:52, 20:52])[0] - pipeline.to_unit_range(img))
  assert err < 0.1 < 0.3 < unaligned[centre].mean(), (err, unaligned[centre].mean())
  assert np.mean(m[..., 0] == region) > 0.97
  with pytest.raises(ValueError, match="not square"):
    rec.preprocess(photo)
  with pytest.raises(ValueError, match="uint8"):
    rec.preprocess(img.astype(np.float32))
  with pytest.raises(FileNotFoundError, match="metadata.json"):
    serving.ExportedRecognizer(str(tmp_path / "nowhere"))


# ------------------------------------------------------------------ the tiny run's export


@pytest.mark.slow
def test_metadata_and_files(exported, fr, tiny_run):
  folder, meta = exported
  _, workdir = tiny_run
  with open(os.path.join(workdir, "results", "calibration.json")) as f:
    cal = json.load(f)
  assert meta["input_kind"] == "completed_predicted"
  assert meta["threshold"] == cal["thresholds"][KEY]["completed_predicted"] == fr.threshold
  pre = meta["preprocessing"]
  assert pre["resolution"] == RES and pre["value_range"] == [-1.0, 1.0]
  np.testing.assert_allclose(pre["template_landmarks"], fr.template_landmarks)
  assert meta["checkpoint_steps"] == dict(fr.models.steps)
  on_disk = json.loads(open(os.path.join(folder, "metadata.json")).read())
  assert on_disk == json.loads(json.dumps(meta))
  expect = {f"{n}.jax_export" for n in ("pipeline", "embedder", "generator", "segmenter")}
  expect |= {f"{n}.onnx" for n in ("embedder", "generator", "segmenter")}
  assert set(meta["files"]) == expect
  assert sorted(os.listdir(folder)) == sorted(expect | {"metadata.json"})
  for name, info in meta["files"].items():
    data = open(os.path.join(folder, name), "rb").read()
    assert len(data) == info["bytes"] > 10_000
    assert hashlib.sha256(data).hexdigest() == info["sha256"]
  assert all("error" not in o for o in meta["onnx"].values()), meta["onnx"]
  for name, o in meta["onnx"].items():
    assert o["max_abs_error_vs_jax"] < 1e-4, (name, o)
  assert not [p for p in os.listdir(os.path.dirname(folder)) if p.startswith(".tmp")]


@pytest.mark.slow
def test_jax_export_matches_face_recognizer(exported, fr, source):
  folder, _ = exported
  rec = serving.ExportedRecognizer(folder)
  imgs = _faces(source, range(7))
  occluded, mask = tiny_run_lib.occluded(source[2], seed=3)
  imgs[2] = occluded
  masks = [None] * 7
  masks[2] = mask
  ref = fr.embed(imgs, masks=masks)
  got = rec.embed(imgs, masks=masks)
  assert got.shape == ref.shape == (7, rec.embedding_dim)
  assert np.abs(got - ref).max() < 1e-5, np.abs(got - ref).max()
  for i, j in ((0, 1), (0, 5), (2, 3)):  # same identity, different, occluded with mask
    v, w = fr.verify(imgs[i], imgs[j], mask_a=masks[i]), rec.verify(
        imgs[i], imgs[j], mask_a=masks[i]
    )
    assert w["score"] == pytest.approx(v.score, abs=1e-5)
    assert w["same"] == v.same and w["threshold"] == v.threshold
  # the symbolic batch: the artifact itself (no padding) at two batch sizes
  # (those the calls above compiled: 1 and 2)
  from jax import export

  with open(os.path.join(folder, "pipeline.jax_export"), "rb") as f:
    exp = export.deserialize(bytearray(f.read()))
  assert not isinstance(exp.in_avals[0].shape[0], int)  # symbolic 'b'
  x = np.stack([fr.load_face(im) for im in imgs])
  call = rec._fn("pipeline")  # jax.jit(exp.call) of the file
  e1, _, _ = call(x[1:2])
  e2, m2, c2 = call(x[:2])
  assert e1.shape == (1, rec.embedding_dim) and e2.shape == (2, rec.embedding_dim)
  np.testing.assert_allclose(e2[1:], e1, atol=1e-5)
  p = fr.prepare(x[:2])
  np.testing.assert_array_equal(m2, p.masks)  # the segmenter's masks
  np.testing.assert_allclose(c2, p.completed, atol=1e-5)  # G's completions
  np.testing.assert_allclose(e2, fr.embed_prepared(p.completed), atol=1e-5)


@pytest.mark.slow
def test_infer_and_export_agree_on_real_photos(exported, fr):
  """The 4 real photos (dlib landmarks, one with a given mask): infer's path and
  the exported model's give the same embeddings and the same decisions."""
  from tests.helpers import photos as photos_lib

  folder, _ = exported
  rec = serving.ExportedRecognizer(folder)
  names = list(photos_lib.PHOTOS)
  pics = photos_lib.face_photos()
  imgs = [pics[n] for n in names]
  lms = [alignment.detect_landmarks_dlib(im)[0] for im in imgs]
  mask = np.zeros(imgs[1].shape[:2], np.uint8)
  mask[int(lms[1][2, 1]) :, :] = 255  # nose down: a face mask's cover
  masks = [None, mask, None, None]
  ref = fr.embed(imgs, masks=masks, landmarks=lms)
  got = rec.embed(imgs, masks=masks, landmarks=lms)
  assert np.abs(got - ref).max() < 1e-5, np.abs(got - ref).max()
  for i in range(4):
    for j in range(i + 1, 4):
      v = fr.verify(
          imgs[i],
          imgs[j],
          masks[i],
          masks[j],
          align="landmarks",
          landmarks_a=lms[i],
          landmarks_b=lms[j],
      )
      w = rec.verify(imgs[i], imgs[j], masks[i], masks[j], lms[i], lms[j])
      assert w["same"] == v.same and w["score"] == pytest.approx(v.score, abs=1e-5), (i, j)


@pytest.mark.slow
def test_onnx_parity_with_jax(exported, fr, source):
  folder, _ = exported
  import onnxruntime as ort

  models = fr.models
  x = np.stack([fr.load_face(im) for im in _faces(source, range(5))])
  occluded, mask = tiny_run_lib.occluded(source[4], seed=1)
  x[4] = fr.load_face(occluded)
  m = np.zeros(x.shape[:3] + (1,), np.float32)
  m[4, ..., 0] = mask
  m[:4, 8:20, 6:26] = 1.0

  def run(name, *args):
    s = ort.InferenceSession(
        os.path.join(folder, f"{name}.onnx"), providers=["CPUExecutionProvider"]
    )
    assert s.get_inputs()[0].shape[0] == "B"  # dynamic batch
    return s.run(None, {i.name: a for i, a in zip(s.get_inputs(), args)})[0]

  emb = run("embedder", x)
  ref = np.asarray(models.recognizers[KEY](x))
  assert np.abs(emb - ref).max() < 1e-4
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  assert run("embedder", x[:2]).shape == (2, ref.shape[1])
  comp = run("generator", x, m)
  ref_c = np.asarray(models.complete(x, m))
  assert np.abs(comp - ref_c).max() < 1e-4
  np.testing.assert_array_equal(comp[m[..., 0] == 0], x[m[..., 0] == 0])  # observed kept
  seg = run("segmenter", x)
  assert np.mean(seg == np.asarray(models.segment(x))) > 0.999
  # the whole pipeline through onnxruntime against FaceRecognizer
  rec = serving.ExportedRecognizer(folder, runtime="onnx")
  imgs = _faces(source, range(5))
  assert np.abs(rec.embed(imgs) - fr.embed(imgs)).max() < 1e-4
  v, w = fr.verify(imgs[0], imgs[1]), rec.verify(imgs[0], imgs[1])
  assert w["score"] == pytest.approx(v.score, abs=1e-4) and w["same"] == v.same


@pytest.mark.slow
def test_serving_runs_without_flax(exported, fr, source, tmp_path):
  folder, _ = exported
  imgs = np.stack(_faces(source, range(4)))
  np.save(tmp_path / "imgs.npy", imgs)
  script = textwrap.dedent(f"""
      import sys
      import numpy as np
      from deocc_jax.serving import ExportedRecognizer
      imgs = np.load({str(tmp_path / 'imgs.npy')!r})
      out = {{}}
      for runtime in ("jax", "onnx"):
        rec = ExportedRecognizer({folder!r}, runtime=runtime)
        out[runtime] = rec.embed(list(imgs))
        out[runtime + "_score"] = np.array(rec.verify(imgs[0], imgs[1])["score"])
      np.savez({str(tmp_path / 'out.npz')!r}, **out)
      bad = sorted(m for m in sys.modules
                   if m.split(".")[0] in ("flax", "ml_collections", "configs", "synthetic")
                   or m.startswith("deocc_jax.") and m not in (
                       "deocc_jax.serving", "deocc_jax.utils", "deocc_jax.utils.face_geometry",
                       "deocc_jax.utils.face_warp"))
      assert not bad, bad
  """)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run(
      [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  assert r.returncode == 0, r.stderr[-3000:]
  with np.load(tmp_path / "out.npz") as z:
    ref = fr.embed(list(imgs))
    assert np.abs(z["jax"] - ref).max() < 1e-5
    assert np.abs(z["onnx"] - ref).max() < 1e-4
    assert float(z["jax_score"]) == pytest.approx(fr.verify(imgs[0], imgs[1]).score, abs=1e-5)


@pytest.mark.slow
def test_cli_errors(exported, tmp_path):
  folder, _ = exported
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "deocc_jax.export"]
  r = subprocess.run(
      cmd + [f"--workdir={tmp_path / 'no_run'}", f"--out={tmp_path / 'o'}"],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert r.returncode == 2 and "Traceback" not in r.stderr
  lines = r.stderr.strip().splitlines()
  assert lines[-1].startswith("error:") and "no_run" in lines[-1]
  r = subprocess.run(
      cmd + ["--workdir=x", f"--out={folder}"],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
  assert not os.path.exists(tmp_path / "o")


def test_onnx_failure_names_the_op():
  """An op jax2onnx 0.17.1 cannot lower with a dynamic batch (``rem``: G's
  attention-flow offsets, which ``freeze`` drops from G) is reported by name."""
  import jax.numpy as jnp

  with pytest.raises(Exception) as e:
    export_lib.to_onnx(lambda x: jnp.argmax(x, axis=-1) % 3, [("B", 4)], "rem")
  assert export_lib._failing_op(e.value) == "rem"
