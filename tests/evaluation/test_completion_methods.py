"""Table 2 proper (evaluation/evaluators/completion_methods.py): each recogniser retrained on
one completion method, scored on that method's own completions; and the GFC /
IDGAN completions as evaluation inputs of the evaluator."""

import numpy as np

from configs import synthetic
from deocc_jax.evaluation import evaluator, streaming
from deocc_jax.evaluation.evaluators import completion_methods
from deocc_jax.runs import factories
from deocc_jax.runs.models import Models

# (row name, column name) -> (recogniser key, input key), spelled out by hand
CELLS = {
    (row, col): (f"{rec}{suffix}", kind)
    for row, rec in (
        ("ArcFace fine-tuned", "arcface_finetuned"),
        ("OUR-Hard", "student_hard"),
        ("OUR-Soft", "student_soft"),
    )
    for col, suffix, kind in (
        ("GFC", "_gfc", "completed_gfc"),
        ("GA w/o attention", "_noca", "completed_noca"),
        ("IDGAN", "_idgan", "completed_idgan"),
        ("GA w/ attention", "", "completed"),
    )
}
COLS = ["GFC", "GA w/o attention", "IDGAN", "GA w/ attention"]


def _md(path):
  lines = [l for l in path.read_text().splitlines() if l.startswith("|")]
  cells = [[c.strip() for c in l.strip("|").split("|")] for l in lines]
  return cells[0], {r[0]: dict(zip(cells[0][1:], r[1:])) for r in cells[2:]}


def _mix(rng, missing=()):
  """Verification results of the mixture: every recogniser of CELLS on every
  input (off-diagonal cells too, with other accuracies), but ``missing``."""
  mix = {}
  for rec, _ in CELLS.values():
    if rec in missing:
      continue
    mix[rec] = {
        kind: {"fold_accuracies_one": rng.integers(0, 11, 10) / 10.0}
        for kind in ("masked", "completed", "completed_noca", "completed_gfc", "completed_idgan")
    }
  return mix


def _pm(acc):
  acc = 100 * np.asarray(acc, np.float64)
  return f"{acc.mean():.2f} ± {acc.std():.2f}"


def test_rows_are_the_retrained_stages():
  from deocc_jax.runs import kinds

  assert set(completion_methods.ROWS) == set(kinds.RETRAINED)


def test_each_cell_is_its_own_recogniser_on_its_own_completion(tmp_path):
  mix = _mix(np.random.default_rng(0))
  completion_methods.write(mix, "lfw", "LFW identities", str(tmp_path))
  head, rows = _md(tmp_path / "completion_methods_lfw.md")
  assert head == ["recogniser"] + COLS
  assert list(rows) == ["ArcFace fine-tuned", "OUR-Hard", "OUR-Soft"]
  for (row, col), (rec, kind) in CELLS.items():
    assert rows[row][col] == _pm(mix[rec][kind]["fold_accuracies_one"]), (row, col)
  title = (tmp_path / "completion_methods_lfw.md").read_text().splitlines()[0]
  assert "student_hard_gfc" in title and "on completed_gfc" in title and "LFW identities" in title
  # paired: each cell minus its row's GA-w/-attention cell, fold by fold
  head, prows = _md(tmp_path / "completion_methods_paired_lfw.md")
  assert head == ["recogniser"] + [f"{c} - GA w/ attention" for c in COLS[:3]]
  for (row, col), (rec, kind) in CELLS.items():
    if col == "GA w/ attention":
      continue
    ref_rec, ref_kind = CELLS[(row, "GA w/ attention")]
    d = 100 * (
        np.asarray(mix[rec][kind]["fold_accuracies_one"])
        - np.asarray(mix[ref_rec][ref_kind]["fold_accuracies_one"])
    )
    want = f"{d.mean():+.2f} ± {d.std():.2f} ({int((d > 0).sum())} / 10 folds >)"
    assert prows[row][f"{col} - GA w/ attention"] == want, (row, col)
  assert (tmp_path / "completion_methods_lfw.csv").exists()


def test_stages_that_did_not_run_are_dashes(tmp_path):
  # no IDGAN soft student, no fine-tuned baseline on GA w/o attention, no base hard student
  missing = ("student_soft_idgan", "arcface_finetuned_noca", "student_hard")
  mix = _mix(np.random.default_rng(1), missing)
  completion_methods.write(mix, "celeba", "", str(tmp_path))
  _, rows = _md(tmp_path / "completion_methods_celeba.md")
  _, prows = _md(tmp_path / "completion_methods_paired_celeba.md")
  for (row, col), (rec, kind) in CELLS.items():
    want = "—" if rec in missing else _pm(mix[rec][kind]["fold_accuracies_one"])
    assert rows[row][col] == want, (row, col)
  assert prows["OUR-Soft"]["IDGAN - GA w/ attention"] == "—"
  assert prows["ArcFace fine-tuned"]["GA w/o attention - GA w/ attention"] == "—"
  assert set(prows["OUR-Hard"].values()) == {"—"}  # no reference cell
  assert prows["OUR-Soft"]["GFC - GA w/ attention"] != "—"
  # the default run: only the base stages, only the GA w/ attention column
  retrained = ("_gfc", "_noca", "_idgan")
  base = {r: v for r, v in _mix(np.random.default_rng(2)).items() if not r.endswith(retrained)}
  cells = completion_methods.table(base)
  assert all((v is None) == (c != "deocclusion") for per in cells.values() for c, v in per.items())


def test_gfc_and_idgan_inputs_come_from_their_stages():
  res = 16

  def models(completions, segment=None):
    return Models(
        res,
        {},
        None,
        segment,
        np.zeros((res, res, 3), np.float32),
        np.zeros((5, 2), np.float32),
        {},
        None,
        None,
        completions=completions,
    )

  class Known:
    mask = np.zeros((2, res, res, 1), np.float32)
    masked = np.full((2, res, res, 3), -1.0, np.float32)

  class Unknown:
    mask = None
    masked = Known.masked

  mesh = factories.make_mesh(synthetic.get_config())
  gfc = lambda x, m: x * 0 + 0.25 + m  # noqa: E731  (says which mask it saw)
  ev = evaluator.Evaluator(models({"deocclusion_gfc": gfc}), mesh, 8, 1)
  assert ev.available(Known, "completed_gfc")
  assert not ev.available(Known, "completed_idgan")  # its stage did not run
  assert not ev.available(Known, "completed")
  assert not ev.available(Unknown, "completed_gfc")  # no true mask and no segmenter
  np.testing.assert_allclose(ev.images(Known, "completed_gfc"), 0.25)  # the true (empty) mask
  assert "completed_gfc" in evaluator.GRID_KINDS and "completed_idgan" in evaluator.GRID_KINDS
  # without a true mask: the segmenter's (here all ones), as the other fills
  segment = lambda x: x[..., :1] * 0 + 1.0  # noqa: E731
  ev = evaluator.Evaluator(models({"deocclusion_idgan": gfc}, segment), mesh, 8, 1)
  assert ev.available(Unknown, "completed_idgan")
  np.testing.assert_allclose(ev.images(Unknown, "completed_idgan"), 1.25)
  assert not ev.available(Unknown, "completed_noca")  # G's completions need a true mask
  # 'complete' is stage 'deocclusion''s completion
  assert "deocclusion" not in models({}).completions
  with_g = Models(res, {}, gfc, None, Known.masked[0], np.zeros((5, 2)), {}, None, None)
  assert with_g.completions == {"deocclusion": gfc}


def test_retrained_recognisers_see_only_their_own_completion_when_asked():
  """config.evaluate.retrained_inputs 'own': a recogniser retrained on another
  completion is embedded on the clean faces and that completion only."""
  sees = evaluator.sees
  assert sees("student_hard_gfc", "clean") and sees("student_hard_gfc", "completed_gfc")
  for kind in ("masked", "completed", "completed_predicted", "completed_idgan", "mean_fill"):
    assert not sees("student_hard_gfc", kind), kind
  assert sees("arcface_finetuned_noca", "completed_noca")
  assert not sees("arcface_finetuned_noca", "completed_gfc")
  assert all(sees(r, k) for r in ("student_hard", "teacher") for k in evaluator.INPUTS)
  res = 16
  calls = []

  def rec(name):
    def embed(x):
      calls.append(name)
      return x.reshape(x.shape[0], -1)[:, :4] + 2.0

    return embed

  models = Models(
      res,
      {"student_hard": rec("student_hard"), "student_hard_gfc": rec("student_hard_gfc")},
      lambda x, m: x,
      None,
      np.zeros((res, res, 3), np.float32),
      np.zeros((5, 2), np.float32),
      {},
      None,
      None,
      completions={"deocclusion_gfc": lambda x, m: x * 0.5},
  )

  class View:
    mask = np.zeros((8, res, res, 1), np.float32)
    masked = np.zeros((8, res, res, 3), np.float32)

  mesh = factories.make_mesh(synthetic.get_config())
  kinds = ("masked", "completed", "completed_gfc")
  for only_own, want in (
      (False, {(r, k) for r in ("student_hard", "student_hard_gfc") for k in kinds}),
      (True, {("student_hard", k) for k in kinds} | {("student_hard_gfc", "completed_gfc")}),
  ):
    ev = evaluator.Evaluator(models, mesh, 8, 1, only_own)
    ev._stream(streaming.ArrayView(View).faces, None, [(View, kinds)])
    assert {(r, k) for (_, k, r) in ev._embeddings} == want, only_own
