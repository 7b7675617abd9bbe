"""The house is one-way (issue 14): every import of the package, at module level
or inside a function (not ``if TYPE_CHECKING:`` annotations), goes from an upper
layer to a lower one; no import cycle between modules or between subpackages;
no module over 600 lines.

Layers, bottom to top (a module may import its own layer and those below):

  0  utils, errors, configs           no deocc_jax imports but each other
  1  data, models, losses, detection, conversion, baselines
  2  teachers
  3  runs                             a trained run: its workdir, artefacts, models
                                      rebuilt from them, the config's factories
  4  training, evaluation, inference  the stages and their loop; the paper's tables;
                                      using trained models
  5  studies                          studies that train and evaluate (ablation, ...)
  6  export, serving, http_server, cli, the commands (main, evaluate, infer, convert)

Evaluation, inference and export use a trained run through ``runs`` only:
they never import training (nor, for inference and export, evaluation).
"""

from __future__ import annotations

import ast
import collections
import glob
import os

import pytest
from tests.helpers import paths

ROOT = str(paths.ROOT)
PKG = os.path.join(ROOT, "deocc_jax")
LAYERS = {
    "utils": 0,
    "errors": 0,
    "configs": 0,
    "data": 1,
    "models": 1,
    "losses": 1,
    "detection": 1,
    "conversion": 1,
    "baselines": 1,
    "teachers": 2,
    "runs": 3,
    "training": 4,
    "inference": 4,
    "evaluation": 4,
    "studies": 5,
    "export": 6,
    "serving": 6,
    "http_server": 6,
    "http_requests": 6,
    "cli": 6,
    "main": 6,
    "evaluate": 6,
    "infer": 6,
    "convert": 6,
    "prepare": 6,
    "__init__": 6,
}
MAX_LINES = 600


def _modules() -> dict[str, str]:
  out = {}
  for path in glob.glob(os.path.join(PKG, "**", "*.py"), recursive=True):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
  return out


MODULES = _modules()


def _imports(name: str, path: str) -> list[tuple[str, int, bool]]:
  """(imported deocc_jax module, line, inside a function) of one module."""
  tree = ast.parse(open(path).read())
  is_pkg = path.endswith("__init__.py")
  found = []

  def visit(node: ast.AST, in_function: bool) -> None:
    for child in ast.iter_child_nodes(node):
      if (
          isinstance(child, ast.If)
          and isinstance(child.test, ast.Name)
          and child.test.id == "TYPE_CHECKING"
      ):
        continue  # annotations only: no import at run time
      inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
      targets = []
      if isinstance(child, ast.Import):
        targets = [a.name for a in child.names]
      elif isinstance(child, ast.ImportFrom):
        if child.level:
          base = name.split(".")
          base = base[: len(base) - child.level + (1 if is_pkg else 0)]
          mod = ".".join(base + ([child.module] if child.module else []))
        else:
          mod = child.module or ""
        targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in child.names]
      for t in targets:
        if t == "deocc_jax" or t.startswith("deocc_jax."):
          found.append((t, child.lineno, in_function))
      visit(child, inner)

  visit(tree, False)
  return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _part(module: str) -> str:
  """The subpackage (or top-level module) a module belongs to."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_the_package_has_a_layer():
  assert {_part(m) for m in MODULES} <= set(LAYERS), sorted(
      {_part(m) for m in MODULES} - set(LAYERS)
  )


def test_lower_layers_import_no_upper_one():
  bad = []
  for name, imports in IMPORTS.items():
    for target, line, _ in imports:
      if LAYERS[_part(target)] > LAYERS[_part(name)]:
        bad.append(
            f"{MODULES[name]}:{line}: {name} (layer {LAYERS[_part(name)]}) imports "
            f"{target} (layer {LAYERS[_part(target)]})"
        )
  assert not bad, "\n".join(sorted(bad))


@pytest.mark.parametrize(
    "user", ["evaluation", "inference", "export", "infer", "serving", "http_server"]
)
def test_evaluation_inference_and_export_use_trained_runs_not_training(user):
  """A trained model reaches evaluation, inference and export through ``runs``
  alone (inference and export import no evaluation either)."""
  banned = ("training",) if user == "evaluation" else ("training", "evaluation")
  bad = [
      f"{MODULES[name]}:{line}: {name} imports {target}"
      for name, imports in IMPORTS.items()
      if _part(name) == user
      for target, line, _ in imports
      if _part(target) in banned
  ]
  assert not bad, "\n".join(bad)


def test_serving_imports_only_numpy_helpers_of_the_package():
  """deocc_jax.serving runs exported artifacts without Flax or the configs
  (face_warp: the numpy + Pillow warp inference shares with serving)."""
  allowed = {"deocc_jax.utils", "deocc_jax.utils.face_geometry", "deocc_jax.utils.face_warp"}
  assert {t for t, _, _ in IMPORTS["deocc_jax.serving"]} <= allowed


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one node (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []
  counter = [0]

  def strong(v: str) -> None:
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        strong(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      strong(v)
  return out


def test_no_import_cycle_between_subpackages():
  graph = collections.defaultdict(set)
  for name, imports in IMPORTS.items():
    for target, _, _ in imports:
      if _part(target) != _part(name):
        graph[_part(name)].add(_part(target))
  assert not _cycles(graph), _cycles(graph)


def test_no_import_cycle_between_modules():
  graph = collections.defaultdict(set)
  for name, imports in IMPORTS.items():
    for target, _, _ in imports:
      # 'from deocc_jax.x import y' of a package makes the package's __init__ a dependency
      if target != name:
        graph[name].add(target)
  assert not _cycles(graph), _cycles(graph)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_600_lines(name):
  n = sum(1 for _ in open(MODULES[name]))
  assert n <= MAX_LINES, f"{MODULES[name]} has {n} lines (> {MAX_LINES})"
