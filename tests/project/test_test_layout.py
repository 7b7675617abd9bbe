"""The tests mirror the package: a test of deocc_jax/<package>/<module>.py lives in
tests/<package>/test_<module>.py (or a file named for the behaviour it checks);
whole jobs in tests/integration, repository-wide checks in tests/project, shared
code in tests/helpers, imported as ``tests.helpers.<module>`` (no sys.path)."""

import ast
import os

from tests.helpers import paths

OWN_FOLDERS = {"helpers", "integration", "project"}


def _test_folders():
  return sorted(
      d
      for d in os.listdir(paths.TESTS)
      if (paths.TESTS / d).is_dir() and not d.startswith((".", "__"))
  )


def test_every_test_folder_is_a_package_of_deocc_jax_or_one_of_the_three_own():
  packages = {
      d
      for d in os.listdir(paths.ROOT / "deocc_jax")
      if (paths.ROOT / "deocc_jax" / d / "__init__.py").exists()
  }
  for d in _test_folders():
    assert d in packages | OWN_FOLDERS, f"tests/{d}/ names no package of deocc_jax"
    assert (paths.TESTS / d / "__init__.py").exists(), f"tests/{d}/__init__.py missing"
  top = [f for f in os.listdir(paths.TESTS) if f.endswith(".py")]
  assert sorted(top) == ["__init__.py", "conftest.py"], f"test files at tests/ top: {top}"


def _python_files():
  for root, _, files in os.walk(paths.TESTS):
    for f in files:
      if f.endswith(".py"):
        yield os.path.join(root, f)


def test_no_sys_path_and_no_test_imports_another_test_module():
  for path in _python_files():
    rel = os.path.relpath(path, paths.ROOT)
    tree = ast.parse(open(path).read(), rel)
    for node in ast.walk(tree):
      if isinstance(node, ast.Attribute) and node.attr == "path":
        if isinstance(node.value, ast.Name) and node.value.id == "sys":
          raise AssertionError(f"{rel}:{node.lineno} touches sys.path")
      names = []
      if isinstance(node, ast.ImportFrom) and node.module:
        names = [f"{node.module}.{a.name}" for a in node.names]
      elif isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      for name in names:
        parts = name.split(".")
        assert not (
            parts[0] in ("tests",) + tuple(_test_folders())
            and any(p.startswith("test_") for p in parts)
        ) and not parts[0].startswith(
            "test_"
        ), f"{rel}:{node.lineno} imports a test module ({name})"
