"""Table 1's RPCA / GL completion columns (config.evaluate.inputs 'rpca_fill' /
'gl_fill') and its SR row (config.evaluate.classical.recognizers 'sr',
identification only), on the tiny trained run."""

from __future__ import annotations

import copy
import json

import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax.baselines import graph_laplace, rpca
from deocc_jax.configs import base, paper
from deocc_jax.data.pipeline import to_unit_range
from deocc_jax.errors import ConfigError
from deocc_jax.evaluation import job, protocols
from deocc_jax.evaluation.evaluator import Evaluator
from deocc_jax.evaluation.evaluators import identification as identification_eval
from deocc_jax.runs import factories
from deocc_jax.runs import models as models_lib

LUMA = np.array([0.299, 0.587, 0.114])


def _config(config):
  c = copy.deepcopy(config)
  c.evaluate.inputs = ("masked", "rpca_fill", "gl_fill")
  c.evaluate.categories = ()
  c.evaluate.plots = False
  c.evaluate.num_pairs = 40
  f = c.evaluate.classical_fill
  f.library_faces, f.rpca_max_iters, f.gl_neighbours, f.gl_num_iters = 6, 5, 3, 10
  c.evaluate.classical.recognizers = ("sr",)
  s = c.evaluate.classical
  s.sr_feature_size, s.sr_lambda, s.sr_iters = (8, 8), 0.01, 1000
  return c


def test_the_columns_are_opt_in_and_the_paper_config_asks_for_them():
  assert not {"rpca_fill", "gl_fill"} & set(base.get_config().evaluate.inputs)
  assert {"rpca_fill", "gl_fill"} <= set(paper.get_config().evaluate.inputs)


def test_rpca_and_gl_columns_are_the_library_fills_of_training_faces(tiny_run):
  """The Evaluator's RPCA / GL inputs equal rpca_fill / graph_laplace_fill
  called on the same faces with the first training faces as library, whose
  identities are disjoint from the evaluation's."""
  config, workdir = tiny_run
  c = _config(config)
  models = models_lib.restore_models(c, workdir, recognizers=("student_hard",))
  train = factories.make_source(c, "train")
  want = np.stack([to_unit_range(np.asarray(train[i]["image"])) for i in range(6)])
  np.testing.assert_array_equal(models.fill_library, want)
  library_ids = {str(train[i]["global_identity"]) for i in range(6)}
  held_src, held = job.held_out_source(c)
  assert held["shared"] == 0 and library_ids <= job.identity_keys(train)
  assert library_ids.isdisjoint(job.identity_keys(held_src))
  vs = protocols.synthetic_verification_set(
      held_src, 20, 0, factories.mask_config(c), (protocols.MIXTURE,)
  )
  mix = vs.views[protocols.MIXTURE]  # its first 16 faces
  view = protocols.OccludedView("mixture", mix.masked[:16], mix.mask[:16], None, None)
  ev = Evaluator(models, factories.make_mesh(c), 16, 20)
  masked, mask, lib = jnp.asarray(view.masked), jnp.asarray(view.mask), jnp.asarray(want)
  ref_rpca = rpca.rpca_fill(masked, mask, lib, tol=1e-5, max_iters=5)
  ref_gl = graph_laplace.graph_laplace_fill(
      masked, mask, lib, neighbours=3, ridge=1e-3, edge_sigma=0.25, num_iters=10
  )
  got_rpca, got_gl = ev.images(view, "rpca_fill"), ev.images(view, "gl_fill")
  # one face at a time per device vs one batched call: float32 rounding only
  np.testing.assert_allclose(got_rpca, np.asarray(ref_rpca), atol=1e-4)
  np.testing.assert_allclose(got_gl, np.asarray(ref_gl), atol=1e-4)
  hole = np.broadcast_to(view.mask > 0.5, view.masked.shape)
  assert np.abs(got_rpca - view.masked)[hole].mean() > 0.05  # the hole was filled
  np.testing.assert_array_equal(got_gl[~hole], view.masked[~hole])


def _lasso_cd(a: np.ndarray, y: np.ndarray, lam: float, sweeps: int = 3000) -> np.ndarray:
  """float64 coordinate descent on 1/2 |A x - y|^2 + lam |x|_1 (unit-norm
  columns of ``a`` (D, N)), every probe (rows of ``y``) at once."""
  x = np.zeros((len(y), a.shape[1]))
  r = y.copy()
  for _ in range(sweeps):
    old = x.copy()
    for j in range(a.shape[1]):
      rho = r @ a[:, j] + x[:, j]
      new = np.sign(rho) * np.maximum(np.abs(rho) - lam, 0.0)
      r += np.outer(x[:, j] - new, a[:, j])
      x[:, j] = new
    if np.abs(x - old).max() < 1e-12:
      break
  return x


def test_sr_row_against_a_float64_coordinate_descent_reference(tiny_run):
  """SR's rank-1 and per-probe decisions equal a float64 numpy SRC (4 x 4
  block-mean luminance features, coordinate-descent Lasso, class residuals)."""
  config, workdir = tiny_run
  c = _config(config)
  c.evaluate.inputs = ("masked",)
  models = models_lib.restore_models(c, workdir, recognizers=("classical_sr",))
  assert list(models.identifiers) == ["classical_sr"]
  held_src, _ = job.held_out_source(c)
  ids = protocols.synthetic_identification_set(held_src, 0, 1, None, 2)
  ev = Evaluator(models, factories.make_mesh(c), 16, 20)
  res = identification_eval.results(ev, ids, ("masked",))["classical_sr"]

  def features(images):
    g = np.asarray(images, np.float64) @ LUMA
    f = g.reshape(len(g), 8, 4, 8, 4).mean(axis=(2, 4)).reshape(len(g), -1)
    return f / np.linalg.norm(f, axis=1, keepdims=True)

  a = features(ids.gallery).T
  classes = np.unique(ids.gallery_labels)
  rank1 = []
  for subset, view in ids.probes.items():
    y = features(view.masked)
    x = _lasso_cd(a, y, 0.01)
    resid = np.stack(
        [np.linalg.norm(y - (x * (ids.gallery_labels == k)) @ a.T, axis=1) for k in classes], 1
    )
    want = classes[np.argmin(resid, axis=1)]
    got_classes, scores = models.identifiers["classical_sr"](
        ev.embed("classical_sr", ids.gallery, (id(ids), "gallery")),
        ids.gallery_labels,
        ev.embed_view("classical_sr", view, "masked"),
    )
    np.testing.assert_array_equal(got_classes[np.argmax(scores, axis=1)], want)
    np.testing.assert_allclose(-scores, resid, atol=2e-3)
    assert res[subset]["masked"]["rank1"] == np.mean(want == ids.probe_labels[subset]), subset
    rank1.append(res[subset]["masked"]["rank1"])
  assert 0.0 < min(rank1) and max(rank1) < 1.0, rank1  # a test that can fail both ways


def test_tables_have_the_columns_and_sr_only_where_it_belongs(tiny_run, tmp_path):
  config, workdir = tiny_run
  c = _config(config)
  c.evaluate.recognizers = ("student_hard", "classical_sr")
  c.evaluate.identification = True
  out = tmp_path / "r"
  res = job.run(c, workdir, results_dir=str(out))
  mix = res["verification"]["synthetic"]["results"]["mixture"]
  assert set(mix) == {"student_hard"}  # SR: no verification row
  assert {"rpca_fill", "gl_fill"} <= set(mix["student_hard"])
  ident = res["identification"]["synthetic"]
  assert set(ident) == {"student_hard", "classical_sr"}
  for subset in ("AR1 sunglasses", "AR2 scarf"):
    assert set(ident["classical_sr"][subset]) == {"masked", "rpca_fill", "gl_fill"}
  t2 = (out / "table2_synthetic.md").read_text()
  assert "| recognizer | masked | RPCA fill | GL fill |" in t2
  assert "Not here: SR (sparse representation)" in t2 and "| SR (" not in t2
  id_table = (out / "identification_synthetic.md").read_text()
  assert "| SR (sparse representation), gallery dictionary, 8x8 features |" in id_table
  assert "AR1 RPCA fill" in id_table and "ranked by class residual" in id_table
  calibration = json.loads((out / "calibration.json").read_text())
  assert list(calibration["recognizers"]) == ["student_hard"]
  c.evaluate.classical.recognizers = ("src",)
  with pytest.raises(
      ConfigError, match=r"config.evaluate.classical.recognizers: unknown \['src'\]"
  ):
    models_lib.restore_models(c, workdir)
  c.evaluate.classical.recognizers = ()
  c.evaluate.classical_fill.gl_neighbours = 7  # more than the 6 library faces
  with pytest.raises(ConfigError, match="classical_fill.gl_neighbours=7"):
    models_lib.restore_models(c, workdir, recognizers=("student_hard",))
