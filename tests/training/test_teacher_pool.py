"""The embedded default's paper setting in miniature: a teacher pool disjoint
from the student's identities, a fresh head when fine-tuning on other
identities, the held-out check over both pools, and per-fold paired
differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax.data import pipeline as pipe
from deocc_jax.data.synthetic_faces import SyntheticFaces
from deocc_jax.errors import ConfigError
from deocc_jax.evaluation import job, verification
from deocc_jax.evaluation.evaluators import verification as verification_eval
from deocc_jax.runs import factories
from deocc_jax.training import teacher_stage
from tests.helpers.tiny_run import tiny_config


def test_pool_is_disjoint_and_renders_its_global_identities():
  pool = pipe.SyntheticSplitSource.pool(200, 30, images_per_identity=3, resolution=32, seed=0)
  assert len(pool) == 90 and pool.num_classes == 30
  splits = pipe.identity_split(200)
  for ids in splits.values():
    assert not set(ids.tolist()) & set(pool.identities.tolist())
  ref = SyntheticFaces(230, 3, 32, 0)
  for index in (0, 4, 89):
    rec = pool[index]
    label, image = divmod(index, 3)
    assert int(rec["identity"]) == label
    assert int(rec["global_identity"]) == 200 + label
    np.testing.assert_array_equal(rec["image"], ref.render(200 + label, image)["image"])
  with pytest.raises(ValueError, match="first >= 0 and count >= 1"):
    pipe.SyntheticSplitSource.pool(10, 0)


def test_teacher_source_follows_the_config():
  c = tiny_config()
  c.data.teacher_identities = 0
  assert repr(factories.teacher_source(c)) == repr(factories.make_source(c, "train"))
  c.data.teacher_identities = 50
  c.data.teacher_images_per_identity = 2
  src = factories.teacher_source(c)
  assert src.num_classes == 50 and len(src) == 100
  assert int(src.identities.min()) == c.data.identities
  c.data.source = "celeba"
  with pytest.raises(ConfigError, match="teacher_identities"):
    factories.teacher_source(c)


def test_finetuning_on_other_identities_gets_a_new_head():
  c = tiny_config()
  t = c.teacher
  init_fn, _ = teacher_stage.make_fns(t, 7, 32)
  teacher_state = init_fn(jax.random.key(0))
  init_from = {
      "params": {"backbone": teacher_state["params"]["backbone"]},
      "batch_stats": teacher_state["batch_stats"],
  }
  ft_init, ft_step = teacher_stage.make_fns(t, 5, 32, init_from=init_from)
  state = ft_init(jax.random.key(1))
  assert state["params"]["head"]["weight"].shape == (int(t.embed_dim), 5)
  jax.tree.map(
      np.testing.assert_array_equal,
      state["params"]["backbone"],
      teacher_state["params"]["backbone"],
  )
  batch = {"clean": jnp.zeros((4, 32, 32, 3)), "identity": jnp.array([0, 1, 2, 4])}
  state, metrics = ft_step(state, batch)
  assert np.isfinite(float(metrics["loss/arcface"]))


def test_held_out_check_covers_the_teacher_pool(monkeypatch):
  c = tiny_config()
  c.data.teacher_identities = 40
  _, held = job.held_out_source(c)
  n_train = len(factories.make_source(c, "train").identities)
  assert held["trained_identities"] == n_train + 40
  assert "40 of them the teacher's pool" in held["description"]
  # A teacher pool that holds test identities is refused.
  test_ids = factories.make_source(c, "test").identities
  monkeypatch.setattr(
      factories,
      "teacher_source",
      lambda config: pipe.SyntheticSplitSource(
          factories.make_source(config, "test").faces, test_ids[:3]
      ),
  )
  with pytest.raises(job.HeldOutError, match="shares 3"):
    job.held_out_source(c)


def test_paired_difference_matches_a_loop():
  rng = np.random.default_rng(0)
  a, b = rng.uniform(0.8, 1.0, 10), rng.uniform(0.8, 1.0, 10)
  b[3] = a[3]  # a tie is not a win
  d = verification.paired_difference(a, b)
  diffs = [x - y for x, y in zip(a.tolist(), b.tolist())]
  mean = sum(diffs) / 10
  std = (sum((x - mean) ** 2 for x in diffs) / 10) ** 0.5
  assert d["mean"] == pytest.approx(mean, abs=1e-12)
  assert d["std"] == pytest.approx(std, abs=1e-12)
  assert d["positive"] == sum(1 for x in diffs if x > 0) and d["folds"] == 10
  with pytest.raises(ValueError, match="equal-length"):
    verification.paired_difference(a, b[:9])


def test_paired_comparisons_cover_references_and_completions():
  rng = np.random.default_rng(1)

  def entry():
    return {
        "fold_accuracies_one": rng.uniform(0.8, 1, 10).tolist(),
        "fold_accuracies_both": rng.uniform(0.7, 1, 10).tolist(),
    }

  mix = {
      r: {k: entry() for k in ("clean", "masked", "completed")}
      for r in ("teacher", "arcface_finetuned", "student_soft")
  }
  rows = verification_eval.paired_comparisons(mix, "one")
  got = {(r["a"], r["b"]): r for r in rows}
  row = got[(("student_soft", "completed"), ("arcface_finetuned", "completed"))]
  diff = np.subtract(
      mix["student_soft"]["completed"]["fold_accuracies_one"],
      mix["arcface_finetuned"]["completed"]["fold_accuracies_one"],
  )
  assert row["mean"] == pytest.approx(100 * diff.mean())
  assert row["positive"] == int((diff > 0).sum())
  assert (("teacher", "completed"), ("teacher", "masked")) in got
  assert (("arcface_finetuned", "masked"), ("teacher", "masked")) in got
  assert (("teacher", "clean"), ("teacher", "masked")) not in got  # clean is no completion
  # 2 references x 2 others x 3 inputs + 3 recognisers x 1 completion
  assert len(rows) == 2 * 2 * 3 + 3
