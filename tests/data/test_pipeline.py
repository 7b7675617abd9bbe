"""The online masked-pair stream: determinism, sharding, splits, state."""

import numpy as np
import pytest
import grain.python as grain
from absl import flags

from deocc_jax.data import pipeline as pl
from deocc_jax.data import masks as mk

flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags


def _loader(
    seed=0, workers=0, shard=None, batch=8, split="train", epochs=None, flip=True, threads=0
):
  cfg = pl.PipelineConfig(
      batch_size=batch,
      seed=seed,
      worker_count=workers,
      num_epochs=epochs,
      flip=flip,
      read_threads=threads,
  )
  loader, src = pl.synthetic_loader(
      split, identities=20, images_per_identity=4, resolution=32, config=cfg, shard_options=shard
  )
  return loader, src


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_batch_contents_and_ranges():
  loader, src = _loader()
  b = next(iter(loader))
  assert b["masked"].shape == (8, 32, 32, 3) and b["masked"].dtype == np.float32
  assert b["clean"].shape == (8, 32, 32, 3) and b["mask"].shape == (8, 32, 32, 1)
  assert b["identity"].shape == (8,) and b["identity"].dtype == np.int32
  assert b["landmarks"].shape == (8, 5, 2) and b["category"].shape == (8,)
  assert b["masked"].min() >= -1 and b["masked"].max() <= 1
  assert set(np.unique(b["mask"])) <= {0.0, 1.0}
  assert (b["identity"] >= 0).all() and (b["identity"] < src.num_classes).all()
  # Pixels outside M are the clean face; inside they changed.
  m = b["mask"][..., 0] > 0
  np.testing.assert_array_equal(b["masked"][~m], b["clean"][~m])
  assert np.abs(b["masked"][m] - b["clean"][m]).mean() > 0.02


def test_same_seed_same_batches_different_seed_differs():
  a = _take(iter(_loader(seed=5)[0]), 3)
  b = _take(iter(_loader(seed=5)[0]), 3)
  c = _take(iter(_loader(seed=6)[0]), 3)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert any(not np.array_equal(x["masked"], z["masked"]) for x, z in zip(a, c))


def _examples(batches):
  return sorted(
      (int(l), c.tobytes(), m.tobytes())
      for b in batches
      for l, c, m in zip(b["identity"], b["clean"], b["masked"])
  )


def test_reader_threads_do_not_change_the_stream():
  """read_threads 0 (the default: the loop's thread reads) and grain's reader
  threads give the same batches; a negative count is refused."""
  a = _take(iter(_loader(seed=3, threads=0)[0]), 3)
  b = _take(iter(_loader(seed=3, threads=4)[0]), 3)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  with pytest.raises(ValueError, match="read_threads must be >= 0, got -1"):
    _loader(threads=-1)


def test_worker_processes_are_deterministic_and_see_the_same_examples():
  a = _take(iter(_loader(seed=2, workers=2)[0]), 2)
  b = _take(iter(_loader(seed=2, workers=2)[0]), 2)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  # Workers batch round-robin shares of the records, but each record gets the
  # same occluder as in-process (its RNG is seeded by its global index).
  c = _take(iter(_loader(seed=2, workers=0)[0]), 2)
  assert _examples(a) == _examples(c)


def test_process_shards_are_disjoint_and_cover_an_epoch():
  seen = []
  for i in range(2):
    shard = grain.ShardOptions(shard_index=i, shard_count=2, drop_remainder=True)
    loader, src = _loader(shard=shard, batch=8, epochs=1)
    keys = set()
    for b in loader:
      assert b["clean"].shape[0] == 4  # per-host batch = global / hosts
      keys |= {(int(l), x.tobytes()) for l, x in zip(b["identity"], b["clean"])}
    seen.append(keys)
  assert not seen[0] & seen[1]
  assert len(seen[0] | seen[1]) == len(src)  # 16 ids x 4 images, nothing lost


def test_online_masks_change_across_epochs():
  loader, src = _loader(batch=8, epochs=2, flip=False)
  by_clean = {}
  for b in loader:
    for c, m in zip(b["clean"], b["mask"]):
      by_clean.setdefault(c.tobytes(), []).append(m)
  assert all(len(v) == 2 for v in by_clean.values())
  changed = sum(not np.array_equal(v[0], v[1]) for v in by_clean.values())
  assert changed >= 0.9 * len(by_clean)


def test_splits_are_disjoint_and_complete():
  s = pl.identity_split(1000, seed=3)
  tr, va, te = (set(s[k].tolist()) for k in pl.SPLITS)
  assert not (tr & va) and not (tr & te) and not (va & te)
  assert tr | va | te == set(range(1000))
  assert (len(tr), len(va), len(te)) == (800, 100, 100)
  srcs = {
      k: pl.SyntheticSplitSource.create(k, identities=20, images_per_identity=2, resolution=32)
      for k in pl.SPLITS
  }
  gid = {k: {int(srcs[k][i]["global_identity"]) for i in range(len(srcs[k]))} for k in pl.SPLITS}
  assert not (gid["train"] & gid["test"]) and not (gid["train"] & gid["validation"])
  with pytest.raises(ValueError, match="fractions"):
    pl.identity_split(10, (0.5, 0.5, 0.5))


def test_iterator_state_checkpoint_and_restore():
  loader, _ = _loader(seed=9)
  it = iter(loader)
  _take(it, 2)
  state = it.get_state()
  expected = _take(it, 3)
  it2 = iter(_loader(seed=9)[0])
  it2.set_state(state)
  got = _take(it2, 3)
  for x, y in zip(expected, got):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_flip_and_shift_keep_landmarks_consistent():
  src = pl.SyntheticSplitSource.create("train", identities=20, images_per_identity=1, resolution=64)
  r = src[0]
  img, lm, reg = pl.flip_horizontal(r["image"], r["landmarks"], r["face_region"])
  assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left stays left after the swap
  np.testing.assert_allclose(lm[2, 0], 63 - r["landmarks"][2, 0], atol=1e-5)
  np.testing.assert_array_equal(img[:, ::-1], r["image"])
  img2, lm2, reg2 = pl.shift_image(r["image"], r["landmarks"], 3, -2, r["face_region"])
  np.testing.assert_allclose(lm2 - r["landmarks"], np.tile([3, -2], (5, 1)))
  np.testing.assert_array_equal(img2[10, 13], r["image"][12, 10])
  assert reg2.sum() <= r["face_region"].sum() + 1e-3


def test_bad_batch_configuration():
  shard = grain.ShardOptions(shard_index=0, shard_count=3)
  with pytest.raises(ValueError, match="not divisible by the number of hosts 3"):
    _loader(batch=8, shard=shard)
  with pytest.raises(ValueError, match="record image must be"):
    pl.make_masked_pair(
        {"image": np.zeros((8, 8), np.uint8), "landmarks": np.zeros((5, 2)), "identity": 0},
        np.random.default_rng(0),
    )


def test_every_category_appears_in_the_stream():
  loader, _ = _loader(batch=16)
  cats = np.concatenate([b["category"] for b in _take(iter(loader), 4)])
  assert set(cats.tolist()) == set(range(len(mk.CATEGORIES)))


def test_shift_replicates_the_border_as_clipped_indexing():
  """The slice-based shift equals out[y, x] = image[clip(y - dy), clip(x - dx)]."""
  rng = np.random.default_rng(3)
  img = rng.integers(0, 256, (9, 7, 3), np.uint8)
  lm = rng.uniform(0, 7, (5, 2)).astype(np.float32)
  for dx, dy in [(0, 0), (2, -3), (-1, 4), (6, 0), (0, -8), (12, 11), (-12, -11)]:
    rows = np.clip(np.arange(9) - dy, 0, 8)
    cols = np.clip(np.arange(7) - dx, 0, 6)
    got, got_lm, _ = pl.shift_image(img, lm, dx, dy)
    np.testing.assert_array_equal(got, img[rows][:, cols], err_msg=f"{dx}, {dy}")
    np.testing.assert_allclose(got_lm, lm + np.array([dx, dy]))
