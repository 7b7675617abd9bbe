"""Evaluation sets: seeded occlusions per category / mixture, LFW pairs, AR subsets."""

import numpy as np
import pytest

from deocc_jax.data import masks
from deocc_jax.data import pipeline
from deocc_jax.data import real_datasets as rd
from deocc_jax.evaluation import protocols

from tests.helpers.real_fixtures import make_ar, make_lfw  # noqa: E402


@pytest.fixture(scope="module")
def source():
  return pipeline.SyntheticSplitSource.create("test", 200, 4, 32, 0)


def test_verification_set_is_seeded_and_per_category(source):
  a = protocols.synthetic_verification_set(source, num_pairs=200, seed=5)
  b = protocols.synthetic_verification_set(source, num_pairs=200, seed=5)
  c = protocols.synthetic_verification_set(source, num_pairs=200, seed=6)
  assert list(a.views) == ["mixture", *masks.CATEGORIES]
  assert len(a.clean) == len(source) == 80 and a.num_pairs == 200
  for k in a.views:
    np.testing.assert_array_equal(a.views[k].masked, b.views[k].masked)
    assert not np.array_equal(a.views[k].mask, c.views[k].mask)
  for i, cat in enumerate(masks.CATEGORIES):
    v = a.views[cat]
    assert (v.category == i).all()
    assert v.masked.shape == (80, 32, 32, 3) and v.mask.shape == (80, 32, 32, 1)
    # pixels outside the mask are the clean face, inside (mostly) changed
    outside = np.broadcast_to(v.mask == 0, v.masked.shape)
    np.testing.assert_array_equal(v.masked[outside], a.clean[outside])
    assert 0.05 < v.coverage.mean() < 0.35
  assert len(np.unique(a.views["mixture"].category)) == 4
  # a face occluded under two conditions gets different occluders
  assert not np.array_equal(a.views["simple"].mask, a.views["body"].mask)
  # pairs: balanced, 10 folds
  _, _, same, fold = a.pairs
  assert same.sum() == 100 and sorted(np.unique(fold)) == list(range(10))


def test_identification_set_sunglasses_and_scarf(source):
  ids = protocols.synthetic_identification_set(source, seed=1, gallery_per_identity=1)
  assert len(ids.gallery) == 20 and sorted(ids.gallery_labels.tolist()) == sorted(
      set(int(source[i]["identity"]) for i in range(len(source)))
  )
  assert list(ids.probes) == ["AR1 sunglasses", "AR2 scarf"]
  for subset, view in ids.probes.items():
    assert len(view.masked) == 60 == len(ids.probe_labels[subset])
  lm = np.stack([source[i]["landmarks"] for i in range(len(source))])
  eye_y, mouth_y = lm[:, :2, 1].mean(), lm[:, 3:, 1].mean()
  for subset, lo, hi in (
      ("AR1 sunglasses", eye_y - 4, eye_y + 4),
      ("AR2 scarf", (eye_y + mouth_y) / 2, 32),
  ):
    m = ids.probes[subset].mask
    inside = m[:, int(np.floor(lo)) : int(np.ceil(hi))].sum()
    assert inside / m.sum() > 0.9, subset  # the occluder sits where it should
  capped = protocols.synthetic_identification_set(source, seed=1, probes_per_identity=2)
  assert len(capped.probes["AR2 scarf"].masked) == 40
  np.testing.assert_array_equal(
      np.bincount(capped.probe_labels["AR2 scarf"])[np.unique(capped.probe_labels["AR2 scarf"])], 2
  )
  with pytest.raises(ValueError, match="leave no probes"):
    protocols.synthetic_identification_set(source, gallery_per_identity=4)


def test_lfw_verification_set_uses_pairs_txt(tmp_path):
  root, _ = make_lfw(tmp_path)
  lfw = rd.LFW(str(root), str(tmp_path / "pairs.txt"), resolution=32)
  vs = protocols.lfw_verification_set(lfw, seed=3, conditions=("mixture", "simple"))
  a, b, same, fold = vs.pairs
  assert vs.num_pairs == 8 and same.tolist() == [True, True, False, False] * 2
  assert fold.tolist() == [0] * 4 + [1] * 4
  # the pair indices point at the right images: Alice 1 vs Alice 2 is pair 0
  paths = [
      lfw.paths[i]
      for i in sorted(
          {lfw.index_of(p.path_a) for p in lfw.pairs} | {lfw.index_of(p.path_b) for p in lfw.pairs}
      )
  ]
  assert paths[a[0]].endswith("Alice_A_0001.jpg") and paths[b[0]].endswith("Alice_A_0002.jpg")
  assert vs.labels[a[0]] == vs.labels[b[0]] and vs.labels[a[2]] != vs.labels[b[2]]
  assert len(vs.clean) == len(paths) and vs.views["simple"].mask.shape[1:] == (32, 32, 1)
  with pytest.raises(ValueError, match="has no pairs"):
    protocols.lfw_verification_set(rd.LFW(str(root), None, resolution=32))


def test_ar_identification_set(tmp_path):
  root = make_ar(tmp_path)
  ids = protocols.ar_identification_set(str(root), 32)
  assert ids.gallery.shape == (4, 32, 32, 3) and sorted(ids.gallery_labels.tolist()) == [0, 0, 1, 1]
  for subset in ("AR1 sunglasses", "AR2 scarf"):
    assert ids.probes[subset].mask is None  # real occlusions: mask unknown
    assert sorted(ids.probe_labels[subset].tolist()) == [0, 0, 1, 1]
  (root / "m-003-08.bmp").write_bytes((root / "m-001-08.bmp").read_bytes())
  with pytest.raises(ValueError, match="m-003.*no unoccluded gallery image"):
    protocols.ar_identification_set(str(root), 32)


def test_unknown_condition():
  with pytest.raises(ValueError, match="unknown occlusion condition 'gloves'"):
    protocols.occlude_records([], "gloves", 0)
