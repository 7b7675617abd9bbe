"""Clean errors: unreadable checkpoints, the NaN guard, CLI user errors (one
line, exit 2, key named), oversized images refused before decoding."""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import jax
import numpy as np
import pytest

from deocc_jax import cli, errors
from deocc_jax.training import checkpoint as ckpt_lib
from deocc_jax.training import loop
from deocc_jax.utils import sharding
from tests.helpers import paths

ROOT = str(paths.ROOT)
from tests.helpers import subprocess_util as sp  # noqa: E402
from tests.helpers import toy_training as toy  # noqa: E402


def _truncate_state(step_dir):
  """Halves every array-data file of a checkpoint step (a torn copy / full disk)."""
  n = 0
  for root, _, files in os.walk(os.path.join(step_dir, "state")):
    if os.path.basename(root) == "d":
      for f in files:
        p = os.path.join(root, f)
        with open(p, "r+b") as fh:
          fh.truncate(os.path.getsize(p) // 2)
        n += 1
  assert n > 0


def _restore(workdir, which="latest"):
  init, _ = toy.make_fns()
  return loop.restore_state(
      str(workdir), "toy", init, jax.random.key(0), sharding.make_mesh(), which
  )


def test_truncated_checkpoint_is_one_error_naming_step_and_others(tmp_path):
  toy.run(tmp_path, 4, sharding.make_mesh())
  _truncate_state(tmp_path / "toy" / "checkpoints" / "4")
  with pytest.raises(
      errors.UnreadableCheckpointError,
      match=r"checkpoint step 4 in .* cannot be read .*other steps available: " r"\[2\]",
  ):
    _restore(tmp_path)
  # no silent fallback when resuming training either
  with pytest.raises(errors.UnreadableCheckpointError, match="checkpoint step 4"):
    toy.run(tmp_path, 6, sharding.make_mesh())
  step, _ = _restore(tmp_path, 2)  # the older step, asked for explicitly
  assert step == 2


def test_deleted_newest_step_is_not_replaced_by_an_older_one(tmp_path):
  toy.run(tmp_path, 4, sharding.make_mesh())
  record = json.loads((tmp_path / "toy" / "checkpoints_latest.json").read_text())
  assert record == {"latest": 4}
  shutil.rmtree(tmp_path / "toy" / "checkpoints" / "4")
  with pytest.raises(
      errors.UnreadableCheckpointError,
      match=r"checkpoint step 4 .* is missing .*available steps: \[2\]",
  ):
    _restore(tmp_path)
  with pytest.raises(errors.UnreadableCheckpointError, match=r"step 4 .* missing"):
    toy.run(tmp_path, 6, sharding.make_mesh())
  assert _restore(tmp_path, 2)[0] == 2
  with pytest.raises(errors.CheckpointNotFoundError, match=r"no checkpoint 7 .*\[2\]"):
    _restore(tmp_path, 7)


def test_finished_stage_rerun_skips_the_data_iterator(tmp_path):
  toy.run(tmp_path, 4, sharding.make_mesh())

  class NoData:

    def __next__(self):
      raise AssertionError("a finished stage drew a batch")

    def get_state(self):
      raise AssertionError("a finished stage read the iterator state")

    set_state = get_state

  init, step = toy.make_fns()
  cfg = loop.LoopConfig(num_steps=4, checkpoint_every=2, async_checkpoints=False, progress=False)
  state = loop.run(
      "toy",
      str(tmp_path),
      init,
      step,
      NoData(),
      jax.random.key(0),
      sharding.make_mesh(),
      cfg,
      log=lambda s: None,
  )
  assert int(state["step"]) == 4


def test_nan_guard_before_any_checkpoint_does_not_say_step_none(tmp_path):
  with pytest.raises(loop.NonFiniteLossError) as e:
    toy.run(tmp_path, 10, sharding.make_mesh(), ckpt_every=5, poison_at=1)
  assert "None" not in str(e.value)
  assert "non-finite ['loss'] at step 1" in str(e.value)
  assert "No checkpoint was saved before it" in str(e.value)


def test_iterator_state_is_saved_per_process_and_derivable(tmp_path):
  toy.run(tmp_path, 4, sharding.make_mesh())
  ck = ckpt_lib.Checkpointer(tmp_path / "toy" / "checkpoints", writer=False)
  count, states = ck.iterator_states(4)
  ck.close()
  assert count == 1 and list(states) == [0]
  fresh = toy.batches().get_state()
  assert json.loads(ckpt_lib.derive_iterator_state(fresh, 4, 16, 0, 1)) == json.loads(states[0])


def test_user_errors_become_one_line_and_exit_2(capsys):
  def missing():
    raise errors.CheckpointNotFoundError("no checkpoint 9 in /x (available steps: [2, 4])")

  with pytest.raises(SystemExit) as e:
    cli.run_or_exit(missing, hard_exit=False)
  assert e.value.code == 2
  assert capsys.readouterr().err == ("error: no checkpoint 9 in /x (available steps: " "[2, 4])\n")


# ------------------------------------------------------------- the CLIs


def _cli(module, *args, cwd=ROOT):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return sp.popen(
      [sys.executable, "-m", module, *args],
      cwd=cwd,
      env=env,
      text=True,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
  )


def _one_line_exit_2(proc):
  out, err = proc.communicate(timeout=300)
  lines = [line for line in err.splitlines() if line.strip()]
  assert proc.returncode == 2, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  errors = [line for line in lines if line.startswith("error: ")]
  assert len(errors) == 1, err
  return errors[0]


@pytest.mark.slow
def test_every_cli_reports_user_errors_in_one_line_with_exit_2(tmp_path):
  w = str(tmp_path / "w")
  empty = tmp_path / "empty"
  empty.mkdir()
  img = tmp_path / "a.png"
  from PIL import Image

  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
  cfg = "--config=configs/synthetic.py:cpu"
  procs = {
      "unknown field": _cli("deocc_jax.main", cfg, "--config.teacher.widht=2", f"--workdir={w}"),
      "negative batch": _cli(
          "deocc_jax.main", cfg, "--config.teacher.batch_size=-8", f"--workdir={w}"
      ),
      "unknown stage": _cli(
          "deocc_jax.main", cfg, "--config.stages=('teacher','tea')", f"--workdir={w}"
      ),
      "missing config": _cli("deocc_jax.main", "--config=configs/nope.py", f"--workdir={w}"),
      "evaluate without config.json": _cli("deocc_jax.evaluate", f"--workdir={empty}"),
      "infer without config.json": _cli(
          "deocc_jax.infer", "verify", str(img), str(img), f"--workdir={empty}"
      ),
      "convert bad arch": _cli(
          "deocc_jax.convert", "--arch=alexnet", "--weights=x.pt", f"--out={tmp_path / 'o'}"
      ),
  }
  msgs = {k: _one_line_exit_2(p) for k, p in procs.items()}
  assert "unknown config field 'config.teacher.widht'" in msgs["unknown field"]
  assert "config.teacher.batch_size must be >= 1, got -8" in msgs["negative batch"]
  assert "config.stages has unknown stage(s) ['tea']" in msgs["unknown stage"]
  assert "config file not found: configs/nope.py" in msgs["missing config"]
  assert f"{empty}/config.json not found" in msgs["evaluate without config.json"]
  assert f"{empty}/config.json not found" in msgs["infer without config.json"]
  assert "--arch" in msgs["convert bad arch"] and "alexnet" in msgs["convert bad arch"]
  assert not os.path.exists(w)  # nothing created by a refused job


def test_unreadable_checkpoint_through_the_cli_helper_is_one_line(tmp_path):
  toy.run(tmp_path, 4, sharding.make_mesh())
  _truncate_state(tmp_path / "toy" / "checkpoints" / "4")
  code = (
      "import jax; from tests.helpers import toy_training as t;"
      "from deocc_jax import cli; from deocc_jax.training import loop; from deocc_jax.utils import sharding;"
      f"cli.run_or_exit(lambda: loop.restore_state({str(tmp_path)!r}, 'toy', t.make_fns()[0],"
      " jax.random.key(0), sharding.make_mesh()))"
  )
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = sp.popen(
      [sys.executable, "-c", code],
      cwd=ROOT,
      env=env,
      text=True,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
  )
  msg = _one_line_exit_2(proc)
  assert msg.startswith("error: checkpoint step 4 in ") and "other steps available: [2]" in msg


# ---------------------------------------------------------------- images


def _png_header_only(path, width, height):
  """A PNG whose header claims width x height (a decompression bomb's shape),
  with a few bytes of pixel data: cheap to write, huge to decode."""

  def chunk(kind, data):
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )

  ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
  idat = zlib.compress(b"\x00" * (width + 1) * 4)  # 4 rows
  with open(path, "wb") as f:
    f.write(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_huge_and_bomb_images_are_refused_before_decoding(tmp_path):
  from PIL import Image

  from deocc_jax import inference

  bomb, big, ok = tmp_path / "bomb.png", tmp_path / "big.png", tmp_path / "ok.png"
  _png_header_only(bomb, 20000, 20000)  # over PIL's own bomb limit
  _png_header_only(big, 12000, 12000)  # under PIL's limit, over ours
  gradient = np.linspace(0, 255, 40 * 40 * 3).reshape(40, 40, 3)  # not blank
  Image.fromarray(gradient.astype(np.uint8)).save(ok)
  fr = inference.FaceRecognizer(
      lambda x: x.reshape(x.shape[0], -1),
      8,
      0.5,
      np.array([[2, 3], [5, 3], [4, 4], [2, 6], [5, 6]], np.float32),
  )
  decoded = []
  real_load = Image.Image.load
  Image.Image.load = lambda self: decoded.append(self) or real_load(self)
  try:
    _refuse_before_decoding(inference, fr, bomb, big, ok)
  finally:
    Image.Image.load = real_load
  assert all(max(im.size) <= 40 for im in decoded)  # the huge ones: refused from their headers
  assert isinstance(inference.ImageTooLargeError("x"), ValueError)  # -> infer's exit 2
  assert fr.load(str(ok)).face.shape == (8, 8, 3)
  with pytest.raises(inference.ImageTooLargeError, match="over the cap of 1000"):
    inference.check_image_size(str(ok), max_pixels=1000)


def _refuse_before_decoding(inference, fr, bomb, big, ok):
  with pytest.raises(inference.ImageTooLargeError, match=r"bomb.png: image is too large"):
    fr.load(str(bomb))
  with pytest.raises(
      inference.ImageTooLargeError,
      match=r"big.png: image is 12000x12000 = 144000000 pixels, over the cap " r"of 40000000",
  ):
    fr.load(str(big))
  with pytest.raises(inference.ImageTooLargeError, match="big.png: mask image is 12000x12000"):
    fr.load(str(ok), mask=str(big))
