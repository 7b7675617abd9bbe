"""The evaluation streams: it keeps embeddings, never every face's images.

Small stand-in models (fixed random projections, a linear "G", a threshold
segmenter) on the tiny run's held-out synthetic faces: the evaluator keeps
no array with the number of faces in its shape other than (N, D) embeddings
and (N,) per-face vectors, and its numbers equal a direct whole-array
computation and do not depend on the batch size.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax.configs import base as synthetic  # configs/synthetic.py's body
from deocc_jax.data import real_datasets as rd
from deocc_jax.evaluation import evaluator as ev_lib
from deocc_jax.evaluation import identification, protocols, streaming, verification
from deocc_jax.evaluation.evaluators import identification as identification_eval
from deocc_jax.evaluation.evaluators import segmentation as segmentation_eval
from deocc_jax.evaluation.evaluators import verification as verification_eval
from deocc_jax.runs import factories
from deocc_jax.runs.models import Models
from deocc_jax.training.segmentation_stage import iou_per_category
from tests.helpers import tiny_run as tiny_run_lib  # noqa: E402

RES, DIM, SEED, PAIRS = 32, 16, 7, 120
INPUTS = ("clean", "masked", "mean_fill", "diffusion_fill", "completed_predicted", "completed")
CONDITIONS = ("mixture", "body")


def _recognizer(seed: int):
  w = jnp.asarray(np.random.default_rng(seed).normal(size=(RES * RES * 3, DIM)), jnp.float32)

  def embed(x):
    e = jnp.tanh(x.reshape(x.shape[0], -1) @ w / 50.0)
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True)

  return embed


def _models() -> Models:
  mean = np.random.default_rng(0).uniform(-1, 1, (RES, RES, 3)).astype(np.float32)
  return Models(
      RES,
      {"teacher": _recognizer(1), "student_hard": _recognizer(2)},
      lambda x, m: x * (1 - m) + 0.25 * m * jnp.flip(x, axis=2),  # a stand-in G
      lambda x: (x.mean(-1, keepdims=True) > -0.1).astype(jnp.float32),  # a stand-in segmenter
      mean,
      np.zeros((5, 2), np.float32),
      {},
      types.SimpleNamespace(name="arcface"),
      None,
  )


@pytest.fixture(scope="module")
def setup():
  source = tiny_run_lib.held_out_source()
  mask_cfg = factories.mask_config(synthetic.get_config())
  streamed = streaming.verification_set(source, PAIRS, SEED, mask_cfg, CONDITIONS)
  arrays = protocols.synthetic_verification_set(source, PAIRS, SEED, mask_cfg, CONDITIONS)
  mesh = factories.make_mesh(synthetic.get_config())
  return source, streamed, arrays, mesh


def _faces_arrays(obj, seen=None):
  """Every numpy / jax array reachable from ``obj``'s attributes and containers."""
  seen = set() if seen is None else seen
  if id(obj) in seen:
    return []
  seen.add(id(obj))
  if isinstance(obj, (np.ndarray, jax.Array)):
    return [obj]
  if isinstance(obj, dict):
    items = list(obj.values())
  elif isinstance(obj, (list, tuple, set)):
    items = list(obj)
  elif type(obj).__module__.startswith("deocc_jax") and not isinstance(obj, Models):
    items = [v for k, v in vars(obj).items() if k not in ("models", "mesh", "source")]
  else:
    return []
  return [a for x in items for a in _faces_arrays(x, seen)]


def test_evaluator_keeps_only_embeddings_and_per_face_vectors(setup):
  """After the whole evaluation of a set (every input, segmentation, the
  completion grid), nothing the evaluator or the set holds has the face count
  in its shape except (N, D) embeddings and (N,) vectors; a grid keeps 8 faces."""
  source, vs, _, mesh = setup
  n = len(vs.labels)
  ev = ev_lib.Evaluator(_models(), mesh, 8, 2)
  ev.stream_verification(vs, INPUTS, grid_rows=8)
  verification_eval.results(ev, vs, INPUTS, ("simple", "complex"))
  segmentation_eval.results(ev, vs.views, ("simple",))
  ids = streaming.identification_set(source, SEED, 1, None, 2)
  identification_eval.results(ev, ids, INPUTS)
  assert ev.grid(vs)["clean"].shape == (8, RES, RES, 3)
  kept = _faces_arrays(ev) + _faces_arrays(vs) + _faces_arrays(ids)
  embeddings = [a for a in kept if a.ndim == 2 and a.shape[1] == DIM]
  # 2 recognisers x (clean + 5 inputs of the mixture + masked / 2 G inputs of 'body')
  assert len([a for a in embeddings if len(a) == n]) == 2 * (1 + 5 + 3)
  for a in kept:
    if a.ndim >= 1 and a.shape[0] >= n:  # any array as long as the set
      assert a.ndim == 1 or (a.ndim == 2 and a.shape[1] == DIM), a.shape
  big = [a.shape for a in kept if a.ndim >= 3]
  assert big and all(s[0] <= 8 for s in big), big  # only the grid's faces


def test_streamed_results_equal_a_direct_whole_array_computation(setup):
  """The job's path (faces read batch by batch) against every face of the
  protocols' in-memory set, embedded at once: the same embeddings bit for bit
  at equal batch size, and the same accuracies, IoU and grid."""
  _, vs, arr, mesh = setup
  models = _models()
  ev = ev_lib.Evaluator(models, mesh, 8, 2)
  res = verification_eval.results(ev, vs, INPUTS, ("simple", "complex"))
  seg = segmentation_eval.results(ev, vs.views, ("simple",))
  # the protocols' arrays, every function applied to the whole array at once
  mix = arr.views["mixture"]
  np.testing.assert_array_equal(vs.views["mixture"].category, mix.category)
  np.testing.assert_array_equal(vs.views["mixture"].coverage, mix.coverage)
  rec = {r: jax.jit(f) for r, f in models.recognizers.items()}
  pred = np.asarray(jax.jit(models.segment)(mix.masked))
  completed = np.asarray(jax.jit(models.complete)(mix.masked, mix.mask))
  a, b, same, fold = arr.pairs
  for r in models.recognizers:
    clean = np.asarray(rec[r](arr.clean))
    assert np.abs(ev.embed(r, vs.clean, (id(vs), "clean")) - clean).max() < 1e-5
    for kind, images in (("masked", mix.masked), ("completed", completed)):
      probe = np.asarray(rec[r](images))
      got = ev.embed_view(r, vs.views["mixture"], kind)
      assert np.abs(got - probe).max() < 1e-5, (r, kind)
      want = verification.evaluate_pairs(
          verification.cosine_scores(clean[a], probe[b]), same, fold
      ).summary()
      assert res["results"]["mixture"][r][kind]["one"]["accuracy"] == pytest.approx(
          want["accuracy"], abs=1e-9
      )
  want_iou = iou_per_category(pred, mix.mask, mix.category)
  assert seg["mixture"] == want_iou["mixed"] and seg["simple"] == want_iou["simple"]
  assert (
      seg["body"]
      == iou_per_category(
          np.asarray(jax.jit(models.segment)(arr.views["body"].masked)),
          arr.views["body"].mask,
          arr.views["body"].category,
      )["mixed"]
  )
  grid = ev.grid(vs)
  np.testing.assert_array_equal(grid["clean"], arr.clean[:8])
  np.testing.assert_array_equal(grid["masked"], mix.masked[:8])
  np.testing.assert_array_equal(grid["predicted mask"], pred[:8])
  assert np.abs(grid[ev_lib.INPUTS["completed"]] - completed[:8]).max() < 1e-6
  assert list(grid)[:4] == ["clean", "masked", "mask", "predicted mask"]
  # the in-memory set through the same evaluator path: identical to the last bit
  ev_arr = ev_lib.Evaluator(models, mesh, 8, 2)
  res_arr = verification_eval.results(ev_arr, arr, INPUTS, ("simple", "complex"))
  assert res_arr["results"] == res["results"] and res_arr["paired"] == res["paired"]
  for key, e in ev._embeddings.items():
    if key[0] == id(vs.views["mixture"]):
      np.testing.assert_array_equal(e, ev_arr.embed_view(key[2], mix, key[1]))
  # the ablation's whole-set images, computed again and not kept
  np.testing.assert_array_equal(
      ev_arr.images(mix, "completed"), ev.images(vs.views["mixture"], "completed")
  )
  assert not any(a.ndim >= 3 and len(a) == len(arr.clean) for a in ev_arr.kept_arrays().values())


def test_batch_size_does_not_change_the_tables(setup):
  """Batches of 8 and 24 faces (the last padded): the same results and ranks."""
  source, vs, _, mesh = setup
  models = _models()
  out = []
  for bs in (8, 24):
    ev = ev_lib.Evaluator(models, mesh, bs, 2)
    ids = streaming.identification_set(source, SEED, 1, None, 2)
    out.append(
        (
            verification_eval.results(ev, vs, INPUTS, ("simple",))["results"],
            identification_eval.results(ev, ids, INPUTS),
            segmentation_eval.results(ev, vs.views, ("simple",)),
        )
    )
  (v8, i8, s8), (v24, i24, s24) = out
  assert s8 == s24
  for r, per in i8.items():
    for subset, kinds in per.items():
      for kind, v in kinds.items():
        assert v["cmc"] == pytest.approx(i24[r][subset][kind]["cmc"], abs=1e-9), (r, kind)
  for r in v8["mixture"]:
    for kind in v8["mixture"][r]:
      assert v8["mixture"][r][kind]["one"]["accuracy"] == pytest.approx(
          v24["mixture"][r][kind]["one"]["accuracy"], abs=1e-9
      )
  # rank-1 against brute force on the protocols' identification set
  ids = protocols.synthetic_identification_set(source, SEED, 1, None, 2)
  p = np.asarray(models.recognizers["teacher"](ids.probes["AR2 scarf"].masked))
  g = np.asarray(models.recognizers["teacher"](ids.gallery))
  cmc = identification.cmc_curve(g, ids.gallery_labels, p, ids.probe_labels["AR2 scarf"])
  assert i8["teacher"]["AR2 scarf"]["masked"]["rank1"] == pytest.approx(float(cmc[0]), abs=1e-9)


def test_streamed_sets_match_the_protocols_sets(setup):
  source, vs, arr, _ = setup
  np.testing.assert_array_equal(vs.labels, arr.labels)
  for x, y in zip(vs.pairs, arr.pairs):
    np.testing.assert_array_equal(x, y)
  rows = np.array([3, 0, 79, 40])
  ctx = vs.clean.read(rows)
  np.testing.assert_array_equal(vs.clean.clean(ctx), arr.clean[rows])
  for c in CONDITIONS:
    masked, mask, cat, cov = vs.views[c].batch(ctx)
    np.testing.assert_array_equal(masked, arr.views[c].masked[rows])
    np.testing.assert_array_equal(mask, arr.views[c].mask[rows])
    np.testing.assert_array_equal(cat, arr.views[c].category[rows])
  ids = streaming.identification_set(source, SEED, 1, None, 2)
  ref = protocols.synthetic_identification_set(source, SEED, 1, None, 2)
  np.testing.assert_array_equal(ids.gallery_labels, ref.gallery_labels)
  assert len(ids.gallery) == len(ref.gallery)
  view = ids.probes["AR1 sunglasses"]
  m, _, _, _ = view.batch(view.faces.read(np.arange(len(view.faces))))
  np.testing.assert_array_equal(m, ref.probes["AR1 sunglasses"].masked)
  wrong = streaming.SourceFaces(source, [0, 1], np.array([0, 5]))
  with pytest.raises(ValueError, match=r"identities \[0, 0\], not the labels \[0, 5\]"):
    wrong.read(np.arange(2))


def _detector(calls: list):
  """A stand-in landmark detector: fixed points where the fixtures' faces sit,
  every call counted; on LFW the second face it sees is "missed"."""
  lm = rd.DEFAULT_RELATIVE_LANDMARKS * 100 + 10

  def detect(image):
    calls.append(image.tobytes()[:64])
    if image.shape[0] == 250 and len(calls) == 2:  # the second face read: no face found
      raise ValueError("no face")
    return (lm * np.array([image.shape[1], image.shape[0]]) / 120)[None]

  return detect


def test_lfw_and_ar_are_streamed_like_the_held_out_set(setup, tmp_path):
  """LFW's pair images and the AR photos are read batch by batch: the sets hold
  no image array, each face is detected once, ``undetected`` is complete before
  the first batch, and the tables equal those of the protocols' in-memory sets
  (every face loaded at once) through the same evaluator."""
  from tests.helpers.real_fixtures import make_ar, make_lfw  # noqa: PLC0415

  mesh = setup[3]
  models = _models()
  template = rd.DEFAULT_RELATIVE_LANDMARKS * RES
  root, pairs = make_lfw(tmp_path)
  calls: list = []
  kw = dict(resolution=RES, align_to=template, detector=_detector(calls))
  lfw = rd.LFW(str(root), str(pairs), **kw)
  vs = streaming.lfw_verification_set(lfw, SEED, conditions=CONDITIONS)
  n = len(vs.labels)
  assert len(calls) == n and len(lfw.undetected) == 1  # found before any batch is read
  assert not [a.shape for a in _faces_arrays(vs) if a.ndim >= 3]
  ref_lfw = rd.LFW(str(root), str(pairs), resolution=RES, align_to=template)
  ref_lfw.landmarks = list(lfw.landmarks)  # the same points, found by the reference's own reads
  arr = protocols.lfw_verification_set(ref_lfw, SEED, conditions=CONDITIONS)
  for x, y in zip(vs.pairs, arr.pairs):
    np.testing.assert_array_equal(x, y)
  ctx = vs.clean.read(np.arange(n))
  np.testing.assert_array_equal(vs.clean.clean(ctx), arr.clean)
  for c in CONDITIONS:
    masked, mask, _, _ = vs.views[c].batch(ctx)
    np.testing.assert_array_equal(masked, arr.views[c].masked)
    np.testing.assert_array_equal(mask, arr.views[c].mask)
  res = verification_eval.results(ev_lib.Evaluator(models, mesh, 8, 2), vs, INPUTS, ())
  want = verification_eval.results(ev_lib.Evaluator(models, mesh, 8, 2), arr, INPUTS, ())
  assert res["results"] == want["results"] and res["paired"] == want["paired"]
  assert len(calls) == n  # reading every face again detected nothing again

  ar_root = make_ar(tmp_path)
  calls.clear()
  ids = streaming.ar_identification_set(str(ar_root), RES, None, template, _detector(calls))
  assert len(calls) == len(ids.gallery) + sum(len(v.faces) for v in ids.probes.values())
  assert not [a.shape for a in _faces_arrays(ids) if a.ndim >= 3]
  ref = protocols.ar_identification_set(str(ar_root), RES, None, template, _detector([]))
  assert ids.undetected == ref.undetected
  np.testing.assert_array_equal(ids.gallery_labels, ref.gallery_labels)
  got = identification_eval.results(ev_lib.Evaluator(models, mesh, 8, 2), ids, INPUTS)
  want = identification_eval.results(ev_lib.Evaluator(models, mesh, 8, 2), ref, INPUTS)
  assert got == want and set(got["teacher"]["AR2 scarf"]) == set(INPUTS) - {"clean", "completed"}
  for subset, view in ids.probes.items():
    assert not streaming.has_mask(view) and view.category is None
    np.testing.assert_array_equal(ids.probe_labels[subset], ref.probe_labels[subset])
