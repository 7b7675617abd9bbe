"""The package as pip builds and installs it: dependency bounds that match the
APIs the code calls, the LICENSE / py.typed / experiment configs in the wheel,
and a wheel install that finds the README's ``--config=configs/synthetic.py``
without the repository's ``configs/`` folder."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.helpers import paths

ROOT = str(paths.ROOT)
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
  PYPROJECT = tomllib.load(_f)
CORE = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
EXTRAS = {
    name: [Requirement(r) for r in reqs]
    for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()
}

# The APIs whose first release sets a lower bound in pyproject.toml:
# (distribution, first release with it, the API, a regex of its use in deocc_jax/).
BOUND_SETTERS = [
    ("jax", "0.6.1", "jax.shard_map", r"\bjax\.shard_map\("),
    ("jax", "0.4.30", "jax.export.export", r"from jax import export"),
    ("jax", "0.4.25", "jax.tree.map", r"\bjax\.tree\.map\("),
    ("numpy", "2.0", "numpy.trapezoid", r"\bnp\.trapezoid\("),
    ("optax", "0.2.5", "optax.tree.norm", r"\boptax\.tree\.norm\("),
]

# Version-dependent APIs the code calls (beyond the module-attribute scan below):
# (the API, keyword arguments the code passes to it, a regex of its use).
SIGNATURES = [
    ("jax.shard_map", ("mesh", "in_specs", "out_specs"), r"jax\.shard_map\(local, mesh="),
    (
        "orbax.checkpoint.CheckpointManagerOptions",
        (
            "max_to_keep",
            "best_fn",
            "best_mode",
            "keep_checkpoints_without_metrics",
            "enable_async_checkpointing",
            "cleanup_tmp_directories",
            "create",
        ),
        r"cleanup_tmp_directories=writer",
    ),
    (
        "grain.python.DataLoader",
        ("data_source", "sampler", "operations", "worker_count", "worker_buffer_size"),
        r"worker_buffer_size=config\.worker_buffer_size",
    ),
    ("grain.python.ReadOptions", ("num_threads", "prefetch_buffer_size"), r"prefetch_buffer_size="),
]


def _source(path: str) -> str:
  with open(path) as f:
    return f.read()


def _package_files() -> list[str]:
  out = []
  for dirpath, _, files in os.walk(os.path.join(ROOT, "deocc_jax")):
    out += [os.path.join(dirpath, f) for f in files if f.endswith(".py")]
  return sorted(out)


def _resolve(dotted: str, api_only: bool = False):
  """The object at ``dotted`` (importing submodules as needed). ``api_only``:
  stop at the first value that is no module, class or function (what follows
  is run-time state, e.g. an uninitialised client that is None here)."""
  parts = dotted.split(".")
  obj = importlib.import_module(parts[0])
  for i, part in enumerate(parts[1:], 1):
    if api_only and not (inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj)):
      return obj
    try:
      obj = getattr(obj, part)
    except AttributeError:
      obj = importlib.import_module(".".join(parts[: i + 1]))
  return obj


def _lower_bound(req: Requirement) -> Version | None:
  bounds = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
  return max(bounds) if bounds else None


def _requirement(name: str, reqs: list[Requirement]) -> Requirement:
  found = [r for r in reqs if r.name.lower().replace("_", "-") == name]
  assert len(found) == 1, f"{name}: {len(found)} requirements in {[str(r) for r in reqs]}"
  return found[0]


def _installed(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


# ---------------------------------------------------------------------- bounds


def test_installed_versions_satisfy_pyproject():
  """Every core dependency and every requirement of the test extra is installed
  at a version its specifier allows (the suite runs on what pyproject admits);
  other extras' requirements, where installed, too."""
  bad = []
  for req in CORE + EXTRAS["test"]:
    v = _installed(req.name)
    if v is None or not req.specifier.contains(v, prereleases=True):
      bad.append(f"{req} (installed: {v})")
  for name, reqs in EXTRAS.items():
    for req in reqs:
      v = _installed(req.name)
      if v is not None and not req.specifier.contains(v, prereleases=True):
        bad.append(f"[{name}] {req} (installed: {v})")
  assert not bad, bad


@pytest.mark.parametrize("dist,first,api,use", BOUND_SETTERS, ids=[b[2] for b in BOUND_SETTERS])
def test_lower_bounds_admit_no_release_without_an_api_the_code_calls(dist, first, api, use):
  users = [p for p in _package_files() if re.search(use, _source(p))]
  assert users, f"no module uses {api} any more: drop its row (and maybe lower the bound)"
  bound = _lower_bound(_requirement(dist, CORE))
  assert bound is not None and bound >= Version(first), (
      f"{api} (used by {[os.path.relpath(p, ROOT) for p in users]}) first exists in "
      f"{dist} {first}, but pyproject admits {dist} {bound}"
  )
  _resolve(api)  # and the installed release has it


@pytest.mark.parametrize("api,kwargs,use", SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_installed_apis_take_the_arguments_the_code_passes(api, kwargs, use):
  assert any(re.search(use, _source(p)) for p in _package_files()), f"{api}: no use left"
  params = inspect.signature(_resolve(api)).parameters
  missing = [k for k in kwargs if k not in params]
  assert not missing, f"installed {api} lacks {missing}"


# Module aliases whose attribute chains are checked: (import statement's module).
_SCANNED = ("jax", "numpy", "optax", "orbax", "grain", "chex", "flax", "scipy", "PIL")


def _module_attribute_uses() -> dict[str, set[str]]:
  """'module.attr.attr' -> files, for every attribute chain on an imported
  module alias of the scanned distributions in deocc_jax/."""
  uses: dict[str, set[str]] = {}
  for path in _package_files():
    tree = ast.parse(_source(path))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        for a in node.names:
          if a.name.split(".")[0] in _SCANNED:
            aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module.split(".")[0] in _SCANNED:
          for a in node.names:
            full = f"{node.module}.{a.name}"
            try:
              is_module = importlib.util.find_spec(full) is not None
            except (ImportError, ValueError):
              is_module = False
            if is_module:
              aliases[a.asname or a.name] = full
    for node in ast.walk(tree):
      if not isinstance(node, ast.Attribute):
        continue  # (the inner chains of a chain are checked too: prefixes of it)
      chain, cur = [], node
      while isinstance(cur, ast.Attribute):
        chain.append(cur.attr)
        cur = cur.value
      if isinstance(cur, ast.Name) and cur.id in aliases:
        dotted = ".".join([aliases[cur.id]] + chain[::-1])
        uses.setdefault(dotted, set()).add(os.path.relpath(path, ROOT))
  return uses


def test_every_module_attribute_the_code_uses_exists_in_the_installed_releases():
  """``jax.shard_map``, ``np.trapezoid``, ``ocp.args.Composite``, ... : every
  attribute chain on an imported jax / numpy / optax / orbax / grain / chex /
  flax / scipy / PIL module resolves in the installed versions."""
  uses = _module_attribute_uses()
  assert "jax.shard_map" in uses and "numpy.trapezoid" in uses, sorted(uses)[:20]
  assert len(uses) > 150, len(uses)
  missing = []
  for dotted, files in sorted(uses.items()):
    try:
      _resolve(dotted, api_only=True)
    except (AttributeError, ImportError) as e:
      missing.append(f"{dotted} ({sorted(files)[0]}): {e}")
  assert not missing, "\n".join(missing)


# ---------------------------------------------------------------------- extras


def test_extras_install_what_the_code_imports_for_them():
  # The rehearsal writes a torch state dict; torch pinned like the test extra's.
  src = _source(os.path.join(ROOT, "deocc_jax", "data", "rehearsal.py"))
  assert re.search(r"^\s+import torch$", src, re.M)
  assert str(_requirement("torch", EXTRAS["rehearsal"]).specifier) == str(
      _requirement("torch", EXTRAS["test"]).specifier
  )
  # python -m deocc_jax.export imports jax2onnx, onnx and onnxruntime.
  export_src = _source(os.path.join(ROOT, "deocc_jax", "export.py"))
  for module, dist in (("jax2onnx", "jax2onnx"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime")):
    assert re.search(rf"^\s*import {module}\b", export_src, re.M), module
    _requirement(dist, EXTRAS["export"])
  # jax2onnx's own pins are what the extra asks for.
  j2o = _requirement("jax2onnx", EXTRAS["export"])
  assert str(j2o.specifier).startswith("=="), j2o
  if _installed("jax2onnx"):
    deps = [Requirement(r) for r in importlib.metadata.requires("jax2onnx") or []]
    for name in ("onnx", "onnx-ir", "onnxruntime"):
      ours = _lower_bound(_requirement(name, EXTRAS["export"]))
      theirs = _lower_bound(_requirement(name, deps))
      assert ours == theirs, (name, ours, theirs)


# ---------------------------------------------------------------------- wheel

_WHEEL_CONFIGS = ("paper_celeba", "paper_rehearsal", "synthetic")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
  """A wheel built from a copy of the tree (the shared checkout's build/ and
  egg-info are left alone), as ``pip wheel`` builds it offline."""
  tmp = tmp_path_factory.mktemp("wheel")
  src = tmp / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(os.path.join(ROOT, name), src / name)
  shutil.copytree(
      os.path.join(ROOT, "deocc_jax"),
      src / "deocc_jax",
      ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
  )
  proc = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
      + ["-w", str(tmp / "dist"), str(src)],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  (path,) = (tmp / "dist").glob("deocc_jax-*.whl")
  return str(path)


def test_wheel_ships_the_license_typing_marker_and_configs(wheel):
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    license_text = z.read(f"{dist_info}/licenses/LICENSE").decode()
    metadata = z.read(f"{dist_info}/METADATA").decode()
    entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
    experiments = {
        n: z.read(f"deocc_jax/configs/experiments/{n}.py").decode() for n in _WHEEL_CONFIGS
    }
  assert "deocc_jax/py.typed" in names
  assert license_text == _source(os.path.join(ROOT, "LICENSE"))
  assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
  assert "END OF TERMS AND CONDITIONS" in license_text and len(license_text) > 11000
  assert "License-Expression: Apache-2.0" in metadata
  assert "License-File: LICENSE" in metadata
  for name, text in experiments.items():
    assert "def get_config(" in text, name
  for script in PYPROJECT["project"]["scripts"]:
    assert re.search(rf"^{script} = ", entry_points, re.M), script
  assert "deocc-serve = deocc_jax.http_server:main" in entry_points
  # Nothing of the repository beyond the package (tests, benchmarks, configs/).
  assert {n.split("/")[0] for n in names} == {"deocc_jax", dist_info}


def test_repository_configs_are_the_packaged_ones():
  """``configs/NAME.py`` re-exports ``deocc_jax/configs/experiments/NAME.py``:
  one definition, loaded by either path."""
  files = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py"))
  assert files == sorted(_WHEEL_CONFIGS)
  from deocc_jax.configs import experiments

  assert experiments.NAMES == _WHEEL_CONFIGS
  for name in files:
    tree = ast.parse(_source(os.path.join(ROOT, "configs", f"{name}.py")))
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert [n.module for n in imports] == [f"deocc_jax.configs.experiments.{name}"], name
    assert not [
        n
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.Assign))
        and not (isinstance(n, ast.Assign) and n.targets[0].id == "__all__")
    ], name


_LOAD = r"""
import json, sys
from absl import flags
from ml_collections import config_flags
import deocc_jax
from deocc_jax import cli
for spec in sys.argv[1:]:
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv)
  argv = cli.resolve_config_args(["prog", "--config=" + spec])
  fv(argv)
  print(json.dumps({"package": deocc_jax.__file__, "file": argv[1],
                    "config": fv.config.to_dict()}, default=list))
"""


def _wheel_venv(wheel: str, tmp_path) -> str:
  """A venv with the wheel installed (no dependencies: those come from this
  interpreter's site-packages, whose .pth files, the editable install's among
  them, are not run); returns its bin/ folder."""
  venv = tmp_path / "venv"
  subprocess.run(
      [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
  )
  (site,) = venv.glob("lib/python3*/site-packages")
  import sysconfig

  (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  proc = subprocess.run(
      [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
      + ["--no-deps", "--no-index", wheel],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  return str(venv / "bin")


def test_wheel_install_runs_the_readme_config_paths_from_any_folder(wheel, tmp_path):
  """From a folder without ``configs/``, the wheel's commands load
  ``--config=configs/synthetic.py`` (the README's spelling) and
  ``--config=synthetic`` from the package; the config equals the repository's."""
  bindir = _wheel_venv(wheel, tmp_path)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  env["JAX_PLATFORMS"] = "cpu"
  import json

  from tests.helpers import config_files

  expected = json.loads(
      json.dumps(config_files.load("configs/synthetic.py:cpu").to_dict(), default=list)
  )
  specs = ["configs/synthetic.py:cpu", "synthetic:cpu", "synthetic.py:cpu"]
  proc = subprocess.run(
      [os.path.join(bindir, "python"), "-c", _LOAD, *specs],
      cwd=elsewhere,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert len(lines) == len(specs), proc.stdout[-2000:]
  for spec, line in zip(specs, lines):
    out = json.loads(line)
    assert out["package"].startswith(str(tmp_path / "venv")), out["package"]
    assert out["file"].startswith(f"--config={tmp_path / 'venv'}"), out["file"]
    assert out["file"].endswith("deocc_jax/configs/experiments/synthetic.py:cpu")
    assert out["config"] == expected, spec

  # The installed console command itself: the config loads (the bad stage
  # list is refused after it, before any workdir is made).
  train = os.path.join(bindir, "deocc-train")
  proc = subprocess.run(
      [train, "--config=configs/synthetic.py", f"--workdir={elsewhere / 'w'}"]
      + ["--config.stages=('no_such_stage',)"],
      cwd=elsewhere,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "unknown stage(s) ['no_such_stage']" in proc.stderr and "'render_data'" in proc.stderr
  assert not (elsewhere / "w").exists()
  # An unknown name still says which configs the package has.
  proc = subprocess.run(
      [train, "--config=configs/nope.py", f"--workdir={elsewhere / 'w'}"],
      cwd=elsewhere,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 2
  assert "config file not found: configs/nope.py" in proc.stderr
  assert "paper_celeba, paper_rehearsal, synthetic" in proc.stderr


# ---------------------------------------------------------------------- hints


def _hint_texts() -> dict[str, str]:
  texts = {os.path.relpath(p, ROOT): _source(p) for p in _package_files()}
  texts["README.md"] = _source(os.path.join(ROOT, "README.md"))
  texts["pyproject.toml"] = _source(os.path.join(ROOT, "pyproject.toml"))
  return texts


def test_install_and_command_hints_name_things_that_exist():
  """Error messages and docs name extras of this pyproject (installed from the
  repository: ``pip install -e '.[dlib]'``; no ``deocc-jax`` is published),
  console commands of [project.scripts] and ``python -m`` modules that exist."""
  scripts = set(PYPROJECT["project"]["scripts"])
  bad = []
  for path, text in _hint_texts().items():

    def where(m: re.Match) -> str:
      return f"{path}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"

    for m in re.finditer(r"deocc[-_]jax\[[\w,-]*\]", text):
      bad.append(where(m) + " is no published package; use pip install -e '.[extra]'")
    for m in re.finditer(r"pip install (?:-e )?'?\.\[([\w,-]+)\]", text):
      bad += [where(m) + f": no extra {e!r}" for e in m.group(1).split(",") if e not in EXTRAS]
    for m in re.finditer(r"(?<![\w/.-])deocc-[a-z]+\b", text):
      if m.group(0) != "deocc-jax" and m.group(0) not in scripts:
        bad.append(where(m) + ": no such console command")
    for m in re.finditer(r"python -m (deocc_jax(?:\.\w+)*)(?!\.<)", text):
      rel = os.path.join(ROOT, *m.group(1).split("."))
      if not (os.path.isfile(rel + ".py") or os.path.isfile(os.path.join(rel, "__main__.py"))):
        bad.append(where(m) + ": no such module")
  assert not bad, "\n".join(bad)
