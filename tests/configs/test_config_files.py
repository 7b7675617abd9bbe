"""Every config file and variant loads the way the command-line tools load it
(by path, in a fresh interpreter without configs/ on sys.path); configs are a
base (deocc_jax/configs/base.py) plus variants chosen by argument."""

import ast
import glob
import os
import subprocess
import sys

import pytest

from tests.helpers import config_files  # noqa: E402

ROOT = config_files.ROOT

SCRIPT = r"""
import sys
from absl import flags
from ml_collections import config_flags
for spec in sys.argv[1:]:
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv)
  fv(["prog", f"--config={spec}"])
  c = fv.config
  assert c.stages and c.data.resolution > 0, spec
  print(spec, len(c.stages))
"""


def _specs() -> list[str]:
  """Every experiment file and each of its variants ('path:variant'); the
  variants are read from the packaged module each ``configs/`` file re-exports."""
  specs = []
  for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
    rel = os.path.relpath(path, ROOT)
    specs.append(rel)
    packaged = os.path.join(ROOT, "deocc_jax", "configs", "experiments", os.path.basename(path))
    tree = ast.parse(open(packaged).read())
    for node in tree.body:
      if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "VARIANTS":
        specs += [f"{rel}:{k.value}" for k in node.value.keys]
  return specs


def test_every_config_and_variant_loads_by_path_in_a_fresh_process():
  specs = _specs()
  assert {
      "configs/synthetic.py:cpu",
      "configs/synthetic.py:ablation",
      "configs/paper_celeba.py:gpu8",
      "configs/paper_celeba.py:tpu_pod",
      "configs/paper_rehearsal.py",
  } <= set(specs)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run(
      [sys.executable, "-c", SCRIPT, *specs],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert [line.split()[0] for line in proc.stdout.splitlines()] == specs


def test_config_files_do_not_touch_sys_path():
  for path in glob.glob(os.path.join(ROOT, "configs", "*.py")) + glob.glob(
      os.path.join(ROOT, "deocc_jax", "configs", "**", "*.py"), recursive=True
  ):
    assert "sys.path" not in open(path).read(), path


def test_variants_change_only_their_fields_of_the_base():
  base = config_files.load("configs/synthetic.py").to_dict()
  cpu = config_files.load("configs/synthetic.py:cpu").to_dict()
  changed = {
      (s, k) for s in base if isinstance(base[s], dict) for k in base[s] if base[s][k] != cpu[s][k]
  }
  assert changed == {
      ("data", "identities"),
      ("teacher", "num_steps"),
      ("pretrain_arcface", "num_steps"),  # the teacher's recipe, as the teacher
      ("deocclusion", "num_steps"),
      ("distillation", "num_steps"),
      ("finetune_arcface", "num_steps"),
      ("evaluate", "num_pairs"),
  }
  assert cpu["data"]["identities"] == 300 and base["data"]["identities"] == 1000
  # :full (the README's tables) lengthens the schedule and the evaluation,
  # nothing else.
  full_cfg = config_files.load("configs/synthetic.py:full").to_dict()
  lengthened = {
      (s, k): (base[s][k], full_cfg[s][k])
      for s in base
      if isinstance(base[s], dict)
      for k in base[s]
      if base[s][k] != full_cfg[s][k]
  }
  assert lengthened == {
      ("teacher", "num_steps"): (150, 400),
      ("pretrain_arcface", "num_steps"): (150, 400),
      ("deocclusion", "num_steps"): (100, 400),
      ("segmentation", "num_steps"): (150, 300),
      ("distillation", "num_steps"): (100, 400),
      ("finetune_arcface", "num_steps"): (50, 200),
      ("evaluate", "num_pairs"): (3000, 6000),
  }
  both = config_files.load("configs/synthetic.py:cpu,ablation")
  assert both.stages == ("teacher", "teacher_embeddings", "deocclusion", "ablation")
  assert both.data.identities == 300
  full = config_files.load("configs/synthetic.py:all_baselines").stages
  assert full[full.index("finetune_arcface") + 1] == "finetune_teacher"
  assert set(full) - set(base["stages"]) == {"finetune_teacher"}
  paper = config_files.load("configs/paper_celeba.py")
  pod = config_files.load("configs/paper_celeba.py:tpu_pod")
  assert (paper.distributed.mode, pod.distributed.mode) != ("auto", "auto")
  assert pod.distributed.mode == "auto" and pod.distillation.batch_size == 256
  assert paper.stages == pod.stages and paper.data.resolution == pod.data.resolution == 256


def test_unknown_variant_names_the_file_and_the_known_ones():
  from absl import flags

  with pytest.raises(
      flags.IllegalFlagValueError,
      match=r"configs/synthetic.py: unknown config variant\(s\) "
      r"\['gpu'\]; known: \['ablation', 'all_baselines', 'cpu', 'full', 'teacher_study'\]",
  ):
    config_files.load("configs/synthetic.py:cpu,gpu")


def test_unknown_variant_through_the_cli_is_one_line_and_exit_2(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "deocc_jax.main",
          "--config=configs/paper_celeba.py:gpu9",
          f"--workdir={tmp_path / 'w'}",
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert "unknown config variant(s) ['gpu9']" in errors[0] and "'tpu_pod'" in errors[0]
  assert not os.path.exists(tmp_path / "w")


def test_a_runs_config_json_without_newer_fields_reads_with_the_base_defaults(tmp_path):
  """An older run's config.json (fields added since missing) still evaluates:
  its own values are kept, the missing fields take the base config's."""
  import json

  from deocc_jax.configs import base
  from deocc_jax.runs import workdir as workdir_lib

  old = base.get_config().to_dict()
  old["data"]["resolution"] = 48
  del old["teacher"]["dtype"], old["data"]["partition"], old["segmentation"]["optimizer"]["b1"]
  old["deocclusion"]["g_optimizer"] = {"optimizer": "adam", "lr": 5e-4}
  (tmp_path / "config.json").write_text(json.dumps(old, default=list))
  c = workdir_lib.read_config(tmp_path)
  assert c.data.resolution == 48 and c.deocclusion.g_optimizer.lr == 5e-4
  assert c.teacher.dtype == "float32" and c.data.partition == "official"
  assert c.segmentation.optimizer.b1 == 0.9 and c.deocclusion.g_optimizer.grad_clip == 0.0
  assert c.stages == base.get_config().stages  # lists back to tuples


# The names the package gives config objects and sections.
CONFIG_NAMES = {
    "config",
    "cfg",
    "c",
    "section",
    "sec",
    "data",
    "d",
    "e",
    "a",
    "r",
    "t",
    "f",
    "distill_cfg",
    "teacher_cfg",
}


def test_code_reads_config_fields_without_get_defaults():
  """Every field's default lives in the base config: no ``x.get("field", default)``
  copies of a config field's default in the package."""
  import re

  fields = set()

  def collect(d):
    for k, v in d.items():
      fields.add(k)
      if isinstance(v, dict):
        collect(v)

  for spec in ("configs/synthetic.py", "configs/paper_rehearsal.py"):
    collect(config_files.load(spec).to_dict())
  pat = re.compile(r"\b([A-Za-z_][\w.]*)\.get\(\"(\w+)\"")
  offenders = []
  for path in sorted(glob.glob(os.path.join(ROOT, "deocc_jax", "**", "*.py"), recursive=True)):
    for i, line in enumerate(open(path), 1):
      for receiver, key in pat.findall(line):
        if key in fields and (receiver in CONFIG_NAMES or receiver.startswith("config.")):
          offenders.append(f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}")
  assert len(fields) > 100
  assert not offenders, "\n".join(offenders)
