"""The config is visible: ``base.get_config`` is its section builders assembled,
each builder writes every field of its section in its own source (no field
added by a loop or a merge), and the result is locked, so no stage or
experiment file adds a field the base does not write."""

import ast
import inspect

import ml_collections
import pytest

from configs import paper_celeba, paper_rehearsal, synthetic
from deocc_jax.configs import base, fields
from deocc_jax.runs import kinds
from deocc_jax.training import baseline_stages
from tests.helpers.configs import tiny_config

TOP_LEVEL = {"seed", "progress", "stages"}


def _configs():
  yield "base", base.get_config()
  for arg in [None, *synthetic.VARIANTS]:
    yield f"synthetic:{arg}", synthetic.get_config(arg)
  for arg in [None, *paper_celeba.VARIANTS]:
    yield f"paper_celeba:{arg}", paper_celeba.get_config(arg)
  yield "paper_rehearsal", paper_rehearsal.get_config()
  yield "tiny", tiny_config()


def test_every_config_is_locked_against_new_fields():
  for name, c in _configs():
    assert c.is_locked, name
    with pytest.raises(AttributeError, match="cannot be added"):
      c.teacher.not_a_field = 1
    with pytest.raises(AttributeError, match="cannot be added"):
      c.evaluate.checkpoints.not_a_stage = "best"


def test_get_config_is_the_section_builders_assembled():
  c = base.get_config()
  assert set(c.keys()) == TOP_LEVEL | set(base.SECTIONS)
  for name, build in base.SECTIONS.items():
    assert c[name].to_dict() == build().to_dict(), name


def _own_helpers(fn, seen):
  """``fn`` and the functions of its own module it calls (transitively)."""
  if fn in seen:
    return
  seen.append(fn)
  for node in ast.walk(ast.parse(inspect.getsource(fn).lstrip())):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      called = fn.__globals__.get(node.func.id)
      if inspect.isfunction(called) and called.__module__ == fn.__module__:
        _own_helpers(called, seen)


def _leaves(section, prefix=""):
  for key, value in section.items():
    yield prefix + key, key
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, prefix + key + ".")


def _written(fns) -> set[str]:
  """Field names ``fns`` write: assigned as attributes (``s.name = ...``) or
  named in a call of :func:`fields.optimizer` (``name=...``)."""
  out = set()
  for fn in fns:
    for node in ast.walk(ast.parse(inspect.getsource(fn).lstrip())):
      if isinstance(node, ast.Assign):
        out |= {t.attr for t in node.targets if isinstance(t, ast.Attribute)}
      elif isinstance(node, ast.Call) and ast.unparse(node.func) == "fields.optimizer":
        out |= {k.arg for k in node.keywords}
  return out


def test_every_field_is_written_out_in_its_builder():
  """Each field's name is assigned (``s.name = ...``) in the builder or a
  helper of its module it calls, or passed to fields.optimizer, whose call must
  name each of its arguments (none has a default): no field comes from a
  loop, a dict of defaults or a merge."""
  for name, build in base.SECTIONS.items():
    helpers = []
    _own_helpers(build, helpers)
    written = _written(helpers)
    for path, key in _leaves(build()):
      assert key in written, f"{name}.{path} is not written out in {name}()"
  params = inspect.signature(fields.optimizer).parameters.values()
  assert all(p.default is inspect.Parameter.empty for p in params)
  assert tuple(p.name for p in params) == fields.OPTIMIZER_KEYS


def test_every_trained_section_writes_the_optimizer_and_loop_fields():
  c = base.get_config()
  for name in ("teacher", "distillation", "pretrain_arcface", "finetune_arcface", "distill_ar"):
    missing = set(fields.OPTIMIZER_KEYS + fields.LOOP_KEYS) - set(c[name])
    assert not missing, (name, missing)
  for name in ("deocclusion", "deocclusion_gfc", "deocclusion_idgan", "segmentation", "joint"):
    assert not set(fields.LOOP_KEYS) - set(c[name]), name
  for sub in ("g_optimizer", "d_optimizer"):
    assert set(c.deocclusion[sub]) == set(fields.OPTIMIZER_KEYS)


def test_finetune_arcface_is_its_stages_whole_section():
  """The fine-tuning reads config.finetune_arcface as written: of the network
  only an ArcFace network's architecture (its weights fix it), never its recipe."""
  c = base.get_config()
  f = c.finetune_arcface
  converted = baseline_stages.finetune_section(f, None)
  assert converted.to_dict() == f.to_dict()
  net = c.teacher.copy_and_resolve_references()
  with net.unlocked():
    net.width, net.embed_dim, net.weight_decay, net.arcface_scale = 0.5, 32, 0.7, 9.0
  arc = baseline_stages.finetune_section(f, net)
  assert (arc.width, arc.embed_dim) == (0.5, 32)  # the network's architecture
  assert (arc.weight_decay, arc.arcface_scale) == (f.weight_decay, f.arcface_scale)  # the recipe's
  assert set(arc) - set(f) == set(baseline_stages.ARCHITECTURE)


def test_checkpoints_name_every_trained_stage():
  checkpoints = base.get_config().evaluate.checkpoints
  assert set(checkpoints) == {"default"} | set(kinds.TRAINED)
  assert checkpoints.default == "latest"
  assert all(checkpoints[s] == "" for s in kinds.TRAINED)  # '' = the default
