"""The paper config runs Table 2's completion methods: GFC and IDGAN after G's
two variants, each base recogniser retrained on every other completion right
after its base stage, and their completions as evaluation inputs."""

from deocc_jax.configs import base, paper
from deocc_jax.runs import kinds
from tests.helpers import config_files

GENS = ("noca", "gfc", "idgan")


def test_paper_stages_and_inputs():
  c = paper.get_config()
  st = list(c.stages)
  assert st[st.index("deocclusion") :][:4] == [
      "deocclusion",
      "deocclusion_noca",
      "deocclusion_gfc",
      "deocclusion_idgan",
  ]
  for b in ("distill_hard", "distill_soft", "finetune_arcface"):
    i = st.index(b)
    assert st[i + 1 : i + 4] == [f"{b}_{g}" for g in GENS], st
  retrained = {kinds.on_completion(b, g) for b in kinds.RETRAINED for g in kinds.COMPLETIONS}
  assert retrained <= set(st)
  assert st.index("evaluate") > max(st.index(s) for s in retrained)
  assert {"completed_noca", "completed_gfc", "completed_idgan"} <= set(c.evaluate.inputs)
  # paper-sized, paired with G: the same batch and length
  for name, width in (("deocclusion_gfc", 32), ("deocclusion_idgan", 64)):
    s = c[name]
    assert s.base == width and s.batch_size == c.deocclusion.batch_size
    assert s.epochs == c.deocclusion.epochs and s.local_size == c.deocclusion.local_size
  for variant in ("", ":gpu8", ":tpu_pod"):
    v = config_files.load(f"configs/paper_celeba.py{variant}")
    assert (
        v.deocclusion_gfc.batch_size == v.deocclusion_idgan.batch_size == v.deocclusion.batch_size
    )
  # the default run lists the inputs but not the stages (skipped, as completed_noca)
  d = base.get_config()
  assert {"completed_gfc", "completed_idgan"} <= set(d.evaluate.inputs)
  assert not {"deocclusion_gfc", "deocclusion_idgan", "deocclusion_noca"} & set(d.stages)


def test_the_rehearsal_config_lists_every_table_row_and_column_stage():
  """The rehearsal config (what a user runs before renting a cluster) has every
  stage of the paper config's Table 1 / Table 2, all nine retrained recognisers
  included (the CI test runs it less six of them: test_paper_rehearsal.py), and
  Table 1's classical rows."""
  from deocc_jax.configs.experiments import paper_rehearsal

  r = paper_rehearsal.get_config()
  assert set(paper.get_config().stages) - {"finetune_teacher"} <= set(r.stages)
  assert {f"{b}_{g}" for b in kinds.RETRAINED for g in GENS} <= set(r.stages)
  assert tuple(r.evaluate.classical.recognizers) == ("pca", "gpca", "lpp", "sr")
  assert tuple(paper.get_config().evaluate.classical.recognizers) == ("pca", "gpca", "lpp", "sr")
