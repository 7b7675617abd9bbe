"""Held-out means held out (issue 10, fix 1): the paper config's tables use
CelebA identities that no trained model saw, and the evaluation job refuses
an evaluation split that shares identities with the training split."""

import pytest

from deocc_jax.configs import paper as paper_celeba  # noqa: E402  (configs/paper_celeba.py's body)
from deocc_jax.data import rehearsal
from deocc_jax.data.synthetic_faces import SyntheticFaces
from deocc_jax.evaluation import job
from deocc_jax.runs import factories


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("celeba"))
  rehearsal.write_celeba(root, SyntheticFaces(30, 2, 64, seed=3), 0, 30, 2)
  return root


def _config(root, holdout=10):
  c = paper_celeba.get_config()
  c.data.root = root
  c.data.resolution = 32
  c.data.holdout_identities = holdout
  c.data.tuning_identities = 5  # the paper config: 500
  return c


def _names(source):
  return set(source.identity_names)


def test_paper_config_evaluates_identities_no_model_trained_on(celeba_root):
  c = _config(celeba_root)
  train = factories.make_source(c, "train")  # what every training stage reads
  evald = factories.make_source(c, str(c.evaluate.split))
  tuning = factories.make_source(c, "tuning")  # where lambda_sweep chooses lambda_i and T
  assert len(_names(evald)) == 10 and len(_names(tuning)) == 5
  assert 10 <= len(_names(train)) <= 15
  assert not _names(train) & _names(evald) and not _names(tuning) & (_names(train) | _names(evald))
  src, info = job.held_out_source(c)
  assert _names(src) == _names(evald)
  n = len(_names(train))
  assert (info["identities"], info["trained_identities"], info["shared"]) == (10, n, 0)
  assert "10 celeba identities" in info["description"]
  assert f"0 shared with the {n} training identities" in info["description"]


def test_evaluation_refuses_identities_the_models_trained_on(celeba_root):
  c = _config(celeba_root, holdout=0)
  c.evaluate.split = "validation"  # the 6:1 image split: every identity was trained on
  with pytest.raises(job.HeldOutError, match=r"shares \d+ of its \d+ identities"):
    job.held_out_source(c)
  # The job refuses before restoring anything (the workdir is not even read).
  with pytest.raises(job.HeldOutError, match="refusing to write"):
    job.run(c, "/nonexistent-workdir")
