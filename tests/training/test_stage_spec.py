"""One spec per trained stage, one generic runner (training/stage_spec.py)."""

from __future__ import annotations

import jax
import pytest

from deocc_jax import main as main_lib
from deocc_jax.runs import kinds
from deocc_jax.training import loop, registry, stage_spec
from tests.helpers.configs import tiny_config


def test_every_trained_kind_has_a_spec_and_a_runner():
  assert set(kinds.TRAINED) <= set(registry.SPECS)
  assert set(registry.SPECS) <= set(registry.RUNNERS)
  table = main_lib.stage_table()
  assert set(registry.RUNNERS) <= set(table)
  assert all(callable(fn) for fn in table.values())  # real functions, no "module:function"
  # each stage its own random key, but a paired stage shares its base's key and
  # batch stream: Table 2's other G with G, the retrained students with theirs
  offsets = {n: s.seed_offset for n, s in registry.SPECS.items()}
  paired = {n: s.stream for n, s in registry.SPECS.items() if s.stream}
  for g in ("deocclusion_noca", "deocclusion_gfc", "deocclusion_idgan"):
    assert paired[g] == "deocclusion"
  assert paired["distill_soft_gfc"] == "distill_soft"
  assert all(offsets[n] == offsets[base] and base not in paired for n, base in paired.items())
  rest = [o for n, o in offsets.items() if n not in paired]
  assert len(rest) == len(set(rest))
  c = tiny_config()
  want = jax.random.key_data(jax.random.key(int(c.seed) * 1000 + offsets["distill_soft"]))
  got = jax.random.key_data(registry.stage_key(c, "distill_soft"))
  assert (want == got).all()
  with pytest.raises(KeyError, match="unknown training stage 'evaluate'"):
    registry.get("evaluate")


def test_train_stage_builds_the_source_once_and_runs_the_plan(monkeypatch, tmp_path):
  c = tiny_config()
  built, seen = [], {}

  class _Source:
    num_classes = 3

    def __len__(self):
      return 12

  def source(config):
    built.append(config)
    return _Source()

  def plan(config, workdir, src, mesh):
    seen["source"] = src
    return stage_spec.Plan(c.segmentation, "init", "step", None, frozen={"f": 1})

  def make_batches(config, section, spec, source=None, shard_options=None):
    seen["batches_source"] = source
    return iter(()), source

  def run(name, workdir, init_fn, step_fn, batches, key, mesh, cfg, **kw):
    seen.update(name=name, init=init_fn, step=step_fn, key=key, keys=cfg.batch_keys, **kw)

  monkeypatch.setattr(stage_spec, "make_batches", make_batches)
  monkeypatch.setattr(loop, "run", run)
  spec = stage_spec.StageSpec("segmentation", 8, ("masked", "mask"), plan, source)
  stage_spec.train_stage(c, str(tmp_path), spec)
  assert len(built) == 1  # one source, shared by the plan and the batches
  assert seen["source"] is seen["batches_source"]
  assert (seen["name"], seen["init"], seen["step"]) == ("segmentation", "init", "step")
  assert seen["keys"] == ("masked", "mask") and seen["frozen"] == {"f": 1}
  assert seen["artefact"] is None and seen["sample_fn"] is None
  assert (jax.random.key_data(seen["key"]) == jax.random.key_data(spec.key(c))).all()
