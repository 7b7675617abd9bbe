"""The console commands of pyproject's [project.scripts] and the declared dependencies.

The commands exist once the package is installed (``pip install -e .``); each
must start its real entry point: ``--help`` prints the command's own flags,
and a usage error prints one line and exits non-zero.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from tests.helpers import paths

ROOT = str(paths.ROOT)
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
  PYPROJECT = tomllib.load(_f)
SCRIPTS = PYPROJECT["project"]["scripts"]

# command -> (arguments, expected exit status, text expected in stdout + stderr). --help
# exits 0 everywhere (absl's own help flags exit 1; cli.parse_flags makes it 0); the
# text proves the module's own flags and docstring are shown (under pip's wrapper
# absl would list none).
CASES = {
    "deocc-train": (["--help"], 0, "--workdir"),
    "deocc-evaluate": (["--help"], 0, "--results_dir"),
    "deocc-infer": (["--help"], 0, "--pairs_file"),
    "deocc-convert": (["--help"], 0, "--arch"),
    "deocc-serve": (["--help"], 0, "--max_body"),
}
DOC = {
    "deocc-train": "Entry point",
    "deocc-evaluate": "Evaluation job",
    "deocc-infer": "Inference CLI",
    "deocc-convert": "Convert PyTorch",
    "deocc-serve": "HTTP JSON server",
    "deocc-export": "deocc_jax.export",
}
CASES["deocc-export"] = (["--help"], 0, "--workdir")


def _script(name: str) -> str:
  path = os.path.join(os.path.dirname(sys.executable), name)
  if not os.path.exists(path):
    path = shutil.which(name) or ""
  assert os.path.exists(path), (
      f"console command {name} is not installed: run "
      "`pip install -e .` (pyproject [project.scripts])"
  )
  return path


def test_every_entry_point_resolves():
  """Each target is a module-level no-argument function (checked in the source: the
  modules define absl flags, so they cannot all be imported into one process)."""
  for name, target in SCRIPTS.items():
    module, func = target.split(":")
    path = os.path.join(ROOT, *module.split(".")) + ".py"
    tree = ast.parse(open(path).read())
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert func in defs, f"{name}: {module} has no function {func}"
    a = defs[func].args
    assert not (a.args or a.posonlyargs or a.kwonlyargs) or len(a.defaults) == len(a.args), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_installed_command_runs(name):
  args, status, text = CASES[name]
  proc = subprocess.run(
      [_script(name), *args],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == status, proc.stderr[-2000:]
  assert text in proc.stdout + proc.stderr and DOC[name] in proc.stdout + proc.stderr


@pytest.mark.parametrize("flag", ["-?", "--helpfull"])  # absl: HelpFlag, HelpfullFlag
def test_every_absl_help_flag_exits_0(flag):
  proc = subprocess.run(
      [_script("deocc-evaluate"), flag],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "--results_dir" in proc.stdout


def test_help_detection_and_packaged_config_arguments(tmp_path, monkeypatch):
  from deocc_jax import cli
  from deocc_jax.configs import experiments

  assert cli.help_requested(["prog", "--workdir=x", "--help"])
  assert cli.help_requested(["prog", "-?"]) and cli.help_requested(["prog", "--helpfull"])
  assert not cli.help_requested(["prog", "--nohelp"])
  assert not cli.help_requested(["prog", "--", "--help"])
  assert not cli.help_requested(["prog", "--helper=1"])
  monkeypatch.chdir(tmp_path)  # no configs/ here
  synthetic = experiments.packaged_path("synthetic")
  assert os.path.isfile(synthetic)
  argv = [
      "prog",
      "--config=configs/synthetic.py:cpu",
      "--config.data.resolution=64",
      "--config",
      "paper_celeba",
      "--",
      "--config=synthetic",
  ]
  assert cli.resolve_config_args(argv) == [
      "prog",
      f"--config={synthetic}:cpu",
      "--config.data.resolution=64",
      "--config",
      experiments.packaged_path("paper_celeba"),
      "--",
      "--config=synthetic",
  ]
  # A file that exists wins (a clone's configs/, the user's own), and other
  # folders or unknown names are left for the loader to report.
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "synthetic.py").write_text("")
  for spec in ("configs/synthetic.py:cpu", "other/synthetic.py", "nope", "/abs/synthetic.py"):
    assert experiments.resolve(spec) == spec
  assert experiments.resolve("synthetic") == synthetic


def test_missing_mtcnn_weights_are_a_one_line_user_error(capsys):
  from deocc_jax import cli
  from deocc_jax.conversion import mtcnn_weights

  def job():
    mtcnn_weights.load_mtcnn_params("/nonexistent/mtcnn.npz")

  with pytest.raises(SystemExit) as e:
    cli.run_or_exit(job, hard_exit=False)
  assert e.value.code == cli.EXIT_USER_ERROR
  err = capsys.readouterr().err
  assert err == "error: converted MTCNN weights not found: /nonexistent/mtcnn.npz\n"


def test_command_usage_errors_are_one_line():
  proc = subprocess.run(
      [
          _script("deocc-convert"),
          "--arch",
          "iresnet",
          "--weights",
          "/nonexistent/model.onnx",
          "--out",
          "/tmp/never",
      ],
      capture_output=True,
      text=True,
      timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 2
  assert proc.stderr.count("\n") == 1 and "/nonexistent/model.onnx" in proc.stderr


# ------------------------------------------------------------------ declared dependencies


def _requirement(name: str, reqs: list[str]) -> str | None:
  for r in reqs:
    if re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") == name:
      return r
  return None


def _imports() -> dict[str, set[str]]:
  """Top-level module -> files of deocc_jax importing it."""
  found: dict[str, set[str]] = {}
  for dirpath, _, files in os.walk(os.path.join(ROOT, "deocc_jax")):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(dirpath, f)
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
          names = (
              [a.name for a in node.names]
              if isinstance(node, ast.Import)
              else [node.module]
              if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
              else []
          )
          for n in names:
            found.setdefault(n.split(".")[0], set()).add(os.path.relpath(path, ROOT))
  return found


def _source() -> str:
  out = []
  for dirpath, _, files in os.walk(os.path.join(ROOT, "deocc_jax")):
    out += [open(os.path.join(dirpath, f)).read() for f in files if f.endswith(".py")]
  return "\n".join(out)


def test_declared_dependencies_match_the_code():
  core = PYPROJECT["project"]["dependencies"]
  extras = PYPROJECT["project"]["optional-dependencies"]
  imports, src = _imports(), _source()
  if "absl" in imports:
    assert _requirement("absl-py", core), f"absl imported by {sorted(imports['absl'])}"
  if "np.trapezoid" in src:
    assert re.search(r"numpy>=([2-9]|\d\d)", _requirement("numpy", core) or "")
  if re.search(r"optax\.tree\.", src):
    m = re.search(r"optax>=0\.2\.(\d+)", _requirement("optax", core) or "")
    assert m and int(m.group(1)) >= 5, "optax.tree needs optax>=0.2.5"
  # tensorflow-datasets: only the TFDS builders use it -> an extra, not a core dependency.
  assert imports.get("tensorflow_datasets", set()) <= {"deocc_jax/data/tfds_builders.py"}
  assert _requirement("tensorflow-datasets", core) is None
  assert _requirement("tensorflow-datasets", extras["tfds"])
  # torch (a multi-GB CUDA build from PyPI) is no core dependency: imported lazily
  # by the converter (optional: a torch-free reader otherwise) and by the paper
  # rehearsal's random-teacher writer only; the `rehearsal` and `test` extras
  # pin the CPU wheel's version.
  assert imports.get("torch", set()) <= {
      "deocc_jax/conversion/torch_weights.py",
      "deocc_jax/data/rehearsal.py",
  }
  for extra, reqs in extras.items():
    if extra not in ("test", "rehearsal"):
      assert _requirement("torch", reqs) is None, f"extra {extra!r} pulls torch"
  assert _requirement("torch", extras["rehearsal"]) == "torch==2.13.0"
  assert _requirement("torch", extras["test"]) == "torch==2.13.0"
  assert _requirement("torch", core) is None
  if "onnx" in imports:
    assert _requirement("onnx", extras["convert"])


@pytest.mark.parametrize("module", ["main", "evaluate", "infer", "export", "convert", "prepare"])
def test_importing_a_command_starts_no_jax_backend(module):
  """A multi-host job calls jax.distributed.initialize after its imports, which
  must not have started a backend (e.g. a module-level jnp array)."""
  code = (
      f"import deocc_jax.{module}\n"
      "from jax._src import xla_bridge\n"
      "assert not xla_bridge._backends, 'a backend started at import'\n"
  )
  r = subprocess.run(
      [sys.executable, "-c", code], cwd=str(paths.ROOT), capture_output=True, text=True
  )
  assert r.returncode == 0, r.stderr[-2000:]
