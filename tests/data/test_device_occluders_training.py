"""Training with occluders drawn on the device (``config.data.occluders='device'``)."""

import jax
import numpy as np
import pytest
from absl import flags

from deocc_jax import main as main_lib  # noqa: E402
from deocc_jax.data import device_occluders_stream as stream  # noqa: E402
from deocc_jax.data import pipeline as pipe  # noqa: E402
from deocc_jax.errors import ConfigError  # noqa: E402
from deocc_jax.runs import factories
from deocc_jax.training import (  # noqa: E402
    loop,
    occluder_stream,
    registry,
    segmentation_stage,
    stage_spec,
)
from tests.helpers.configs import tiny_config  # noqa: E402

flags.FLAGS.mark_as_parsed()
B = 8


def _config(**data):
  c = tiny_config()
  c.data.occluders = "device"
  c.data.update(data)
  s = c.segmentation
  s.batch_size, s.num_steps, s.checkpoint_every, s.log_every, s.width = B, 4, 2, 1, 4
  return c


def _source():
  return pipe.SyntheticSplitSource.create("train", 40, 4, 32, 0)


def test_device_stream_has_the_host_paths_augmentation():
  """Same sampler and record RNG: the clean faces, landmarks and identities of
  the device stream are the host path's, flips and shifts included."""
  pcfg = pipe.PipelineConfig(batch_size=B, seed=7, max_shift_px=3)
  host = next(iter(pipe.make_loader(_source(), pcfg)))
  dev = next(iter(stream.make_loader(_source(), pcfg)))
  assert dev["image"].dtype == np.uint8 and dev["face_region"].dtype == np.uint8
  np.testing.assert_array_equal(pipe.to_unit_range(dev["image"]), host["clean"])
  np.testing.assert_array_equal(dev["landmarks"], host["landmarks"])
  np.testing.assert_array_equal(dev["identity"], host["identity"])
  # the draws did augment: some faces mirrored or shifted against their records
  src = _source()
  rec_lm = np.stack([src[i]["landmarks"] for i in range(len(src))])
  assert sum(not np.any(np.all(np.abs(rec_lm - lm) < 1e-4, (1, 2))) for lm in dev["landmarks"])


def test_batch_examples_68_points_and_regions():
  rng = np.random.default_rng(0)

  def ex(dense, region):
    e = {"image": np.zeros((4, 4, 3), np.uint8), "landmarks": rng.random((5, 2), np.float32)}
    e["identity"] = np.int32(1)
    if dense:
      e["landmarks68"] = rng.random((68, 2), np.float32)
    if region:
      e["face_region"] = np.zeros((4, 4), np.uint8)
    return e

  both = [ex(True, True), ex(True, True)]
  out = stream.batch_examples(both)
  assert out["landmarks"].shape == (2, 68, 2) and out["face_region"].shape == (2, 4, 4)
  np.testing.assert_array_equal(out["landmarks5"][1], both[1]["landmarks"])
  out = stream.batch_examples([ex(True, False), ex(False, False)])
  assert out["landmarks"].shape == (2, 5, 2) and "landmarks5" not in out
  assert "face_region" not in out
  with pytest.raises(ValueError, match="mixes records with and without 'face_region'"):
    stream.batch_examples([ex(False, True), ex(False, False)])


def test_prepared_batch_keeps_the_face_outside_the_mask_and_follows_the_key():
  c = _config(face_mask_prob=0.0, coverage_range=(0.15, 0.25))
  batches, _ = stage_spec.make_batches(c, c.segmentation, registry.get("segmentation"))
  host = next(batches)
  mesh = factories.make_mesh(c)
  to_dev = loop.batch_on_device("t", mesh, loop.LoopConfig(num_steps=1), batches.prepare)
  a, again, other = (jax.device_get(to_dev(host, s)) for s in (0, 0, 1))
  want = {"masked", "mask", "clean", "identity", "landmarks", "category", "coverage"}
  assert set(a) == want
  assert a["masked"].dtype == a["clean"].dtype == a["mask"].dtype == np.float32
  assert a["category"].dtype == np.int32 and a["mask"].shape == (B, 32, 32, 1)
  np.testing.assert_array_equal(a["clean"], pipe.to_unit_range(host["image"]))
  np.testing.assert_array_equal(a["landmarks"], host["landmarks"])
  outside = np.broadcast_to(a["mask"] == 0, a["masked"].shape)
  np.testing.assert_array_equal(a["masked"][outside], a["clean"][outside])
  inside = np.broadcast_to(a["mask"] == 1, a["masked"].shape)
  assert np.abs(a["masked"][inside] - a["clean"][inside]).mean() > 0.05  # really occluded
  # every occluder fitted to the configured coverage like the host path's: at
  # 32 px both overshoot by up to ~0.05 (the anti-aliased rim on a ~300 px face;
  # measured on 64 faces: host 0.18-0.30, device 0.19-0.31 for range 0.15-0.25)
  pcfg = pipe.PipelineConfig(batch_size=B, seed=int(c.seed) * 1000 + 5)
  hp = next(iter(pipe.make_loader(_source(), pcfg, pipe.mask_config_from_data(c.data))))
  for cov in (a["coverage"], hp["coverage"]):
    assert np.all((cov >= 0.15 - 0.02) & (cov <= 0.25 + 0.06)), cov
  assert abs(a["coverage"].mean() - hp["coverage"].mean()) < 0.03
  # the coverage reported is the mask's share of the face region
  region = host["face_region"].astype(np.float64) / 255.0
  cov = (a["mask"][..., 0] * region).sum((1, 2)) / region.sum((1, 2))
  np.testing.assert_allclose(a["coverage"], cov, atol=1e-5)
  for k in want:  # the same seed, stage and step: the same batch
    np.testing.assert_array_equal(a[k], again[k])
  assert not np.array_equal(a["mask"], other["mask"])  # another step: other occluders
  np.testing.assert_array_equal(a["clean"], other["clean"])
  # the key is fold_in(fold_in(key(pipeline seed), stage salt), step): the
  # sharded loop path equals the function jitted on one device
  bank, seed, salt = batches.prepare.args
  assert int(seed) == int(c.seed) * 1000 + registry.get("segmentation").seed_offset
  assert int(salt) == occluder_stream.stage_salt("segmentation")
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(int(seed)), int(salt)), 0)
  single = jax.device_get(jax.jit(stream.prepare_batch)(bank, host, key))
  np.testing.assert_array_equal(single["mask"], a["mask"])
  np.testing.assert_allclose(single["masked"], a["masked"], atol=1e-6)


def _train_segmentation(workdir, steps):
  c = _config()
  c.segmentation.num_steps = steps
  stage_spec.train_stage(c, str(workdir), registry.get("segmentation"))
  init_fn, _ = segmentation_stage.make_fns(c.segmentation, 32)
  return loop.restore_state(
      str(workdir), "segmentation", init_fn, jax.random.key(0), factories.make_mesh(c)
  )


def test_segmentation_with_device_occluders_trains_and_resumes_bitwise(tmp_path):
  step_a, full = _train_segmentation(tmp_path / "full", 4)
  step_k, killed = _train_segmentation(tmp_path / "killed", 2)  # dies after step 2's save
  step_b, resumed = _train_segmentation(tmp_path / "killed", 4)
  assert (step_a, step_k, step_b) == (4, 2, 4)
  leaves = jax.tree_util.tree_leaves
  assert any(not np.array_equal(x, y) for x, y in zip(leaves(full), leaves(killed)))
  for x, y in zip(leaves(full), leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bad_occluders_value_names_the_key(tmp_path):
  c = _config()
  c.stages = ("teacher", "segmentation")
  c.data.occluders = "gpu"
  with pytest.raises(ConfigError, match=r"config\.data\.occluders must be 'host' or 'device'"):
    main_lib.run(c, str(tmp_path / "a"))
  assert not (tmp_path / "a" / "teacher").exists()  # refused before the first stage ran
