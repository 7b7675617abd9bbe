"""AR's distillation pass: the split per subject and the unmasked partner drawn
for the teacher (paper Sec. 4.1)."""

import numpy as np
import pytest

from deocc_jax.data import ar_distillation as ar_lib
from deocc_jax.data import real_datasets as rd


def _pairs(people=3, per_person=4, px=8):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(people), per_person)
  occluded = rng.integers(0, 256, (len(labels), px, px, 3), dtype=np.uint8)
  masks = (rng.random((len(labels), px, px, 1)) > 0.5).astype(np.float32)
  # person p's clean faces are constant images of value 10 * p + k: recognisable
  clean = {
      p: np.stack([np.full((px, px, 3), 10 * p + k, np.uint8) for k in range(2 + p)])
      for p in range(people)
  }
  return ar_lib.ARPairs(occluded, masks, labels, clean)


def test_the_partner_is_an_unoccluded_face_of_the_same_subject_drawn_from_the_rng():
  pairs = _pairs()
  t = ar_lib.UnmaskedPartner(pairs.clean)
  for i in range(len(pairs)):
    rec = pairs[i]
    draws = set()
    for seed in range(40):
      out = t.random_map(rec, np.random.default_rng(seed))
      person = int(rec["identity"])
      assert out["identity"] == person
      value = int(round((float(out["clean"][0, 0, 0]) + 1) * 255 / 2))
      assert value // 10 == person  # a clean face of this person
      draws.add(value)
      again = t.random_map(rec, np.random.default_rng(seed))
      assert np.array_equal(again["clean"], out["clean"])  # the rng decides
    assert draws == {10 * person + k for k in range(2 + person)}  # every clean face drawn
    assert out["mask"].shape == (8, 8, 1) and out["masked"].dtype == np.float32


def test_masked_input_and_mask_are_the_record_itself():
  pairs = _pairs()
  out = ar_lib.UnmaskedPartner(pairs.clean).random_map(pairs[5], np.random.default_rng(0))
  expect = pairs.occluded[5].astype(np.float64) * 2 / 255 - 1
  np.testing.assert_allclose(out["masked"], expect, atol=1e-6)
  np.testing.assert_array_equal(out["mask"], pairs.masks[5])


def test_probes_are_the_occluded_images_the_pass_does_not_train_on():
  session1 = (8, 9, 10, 11, 12, 13)
  assert ar_lib.probe_indices("sunglasses", session1) == (21, 22, 23)
  assert ar_lib.probe_indices("scarf", session1) == (24, 25, 26)
  assert ar_lib.probe_indices("scarf", ()) == rd.AR_SUBSETS["scarf"]
  with pytest.raises(ValueError, match="no scarf probe is left"):
    ar_lib.probe_indices("scarf", rd.AR_SUBSETS["scarf"])
  ar_lib.check_split(session1, (1, 2, 3))
  with pytest.raises(ValueError, match="train_images must be occluded"):
    ar_lib.check_split((1, 8), (2,))
  with pytest.raises(ValueError, match="teacher_images must be unoccluded"):
    ar_lib.check_split((8,), (9,))


def test_bad_arrays_are_named():
  pairs = _pairs()
  with pytest.raises(ValueError, match="no unoccluded one"):
    ar_lib.ARPairs(pairs.occluded, pairs.masks, pairs.labels, {0: pairs.clean[0]})
  with pytest.raises(ValueError, match="masks must be"):
    ar_lib.ARPairs(pairs.occluded, pairs.masks[:, :4], pairs.labels, pairs.clean)
  with pytest.raises(ValueError, match="uint8"):
    ar_lib.ARPairs(pairs.occluded.astype(np.float32), pairs.masks, pairs.labels, pairs.clean)
