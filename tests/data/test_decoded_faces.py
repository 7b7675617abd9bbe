"""Decoded faces (``data/decoded_faces.py``, ``deocc-prepare``): a config's
CelebA splits written once as raw uint8 faces in array_record and read back as
the same records, bit for bit, wherever the config reads its data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deocc_jax.configs import base
from deocc_jax.data import decoded_faces
from deocc_jax.data import real_datasets as rd
from deocc_jax.data import rehearsal
from deocc_jax.data.dataset_formats import DatasetFormatError
from deocc_jax.data.synthetic_faces import SyntheticFaces
from deocc_jax.evaluation import job
from deocc_jax.runs import factories
from deocc_jax.training import decode_splits as prepare
from tests.helpers import paths

RES = 40


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
  """A CelebA miniature in its native files (8 identities x 5 JPEGs) and a
  config reading it with 2 identities held out."""
  root = str(tmp_path_factory.mktemp("celeba"))
  rehearsal.write_celeba(root, SyntheticFaces(8, 5, 128, 0), 0, 8, 5)
  c = base.get_config()
  c.data.source = "celeba"
  c.data.root = root
  c.data.partition = "random_6_1"
  c.data.holdout_identities = 2
  c.data.resolution = RES
  c.stages = ("teacher", "evaluate")
  c.evaluate.split = "heldout"
  return c


def test_decoded_records_equal_the_jpeg_records(celeba, tmp_path):
  out = str(tmp_path / "decoded")
  assert prepare.prepare(celeba, out) == {"train": "written", "heldout": "written"}
  c = celeba.copy_and_resolve_references()
  c.data.decoded_root = out
  for split in ("train", "heldout"):
    jpeg = factories.make_source(celeba, split)
    dec = factories.make_source(c, split)
    assert isinstance(jpeg, rd.CelebA) and isinstance(dec, decoded_faces.DecodedFaces)
    assert len(dec) == len(jpeg) > 0 and dec.num_classes == jpeg.num_classes
    assert dec.identity_names == [str(x) for x in jpeg.identity_names]
    for i in range(len(jpeg)):
      a, b = jpeg[i], dec[i]
      assert set(a) == set(b) and a["path"] == b["path"]
      np.testing.assert_array_equal(a["image"], b["image"])  # decoded and resized alike
      assert b["image"].dtype == np.uint8 and b["image"].flags.writeable
      np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
      assert a["identity"] == b["identity"] and b["identity"].dtype == np.int32
  # the evaluation's held-out check reads the same identities from them
  src, held = job.held_out_source(c)
  assert isinstance(src, decoded_faces.DecodedFaces)
  assert held == job.held_out_source(celeba)[1]
  # prepared again: kept, not written
  assert prepare.prepare(c, out) == {"train": "kept", "heldout": "kept"}


def test_mismatched_or_damaged_folders_are_refused_naming_the_fault(celeba, tmp_path):
  out = str(tmp_path / "decoded")
  prepare.prepare(celeba, out, ["train"])
  c = celeba.copy_and_resolve_references()
  c.data.decoded_root = out
  c.data.resolution = 48
  manifest = os.path.join(out, "train", "manifest.json")
  with pytest.raises(DatasetFormatError, match=rf"{manifest}: .*resolution=40.*resolution=48"):
    factories.make_source(c, "train")
  with pytest.raises(DatasetFormatError, match="resolution=40.*or pass --overwrite"):
    prepare.prepare(c, out, ["train"])
  c.data.resolution = RES
  with pytest.raises(FileNotFoundError, match=r"heldout/manifest.json: no decoded faces"):
    factories.make_source(c, "heldout")
  with open(manifest) as f:
    m = json.load(f)
  m["records"] += 1
  with open(manifest, "w") as f:
    json.dump(m, f)
  with pytest.raises(DatasetFormatError, match="index.npz: .* for the manifest's"):
    factories.make_source(c, "train")
  m["records"] -= 1
  with open(manifest, "w") as f:
    json.dump(m, f)
  os.remove(os.path.join(out, "train", m["files"][0]))
  with pytest.raises(FileNotFoundError, match="faces-00000-of-00001.array_record: a shard"):
    factories.make_source(c, "train")


def test_a_failed_write_leaves_the_previous_folder(tmp_path):
  faces = SyntheticFaces(2, 3, 32, 0)
  out = str(tmp_path / "split")
  decoded_faces.write(faces, out, {"v": 1}, records_per_shard=4)
  assert len(decoded_faces.DecodedFaces(out)) == 6
  assert len(decoded_faces.DecodedFaces(out).manifest["files"]) == 2

  class Broken:

    def __len__(self):
      return 6

    def __getitem__(self, i):
      if i == 4:
        raise OSError("disk gone")
      return faces[i]

  with pytest.raises(OSError, match="disk gone"):
    decoded_faces.write(Broken(), out, {"v": 2})
  assert decoded_faces.DecodedFaces(out, expect={"v": 1}).manifest["source"] == {"v": 1}
  assert os.listdir(tmp_path) == ["split"]  # no partial folder left

  class Mixed:

    def __len__(self):
      return 2

    def __getitem__(self, i):
      return faces[0] if i == 0 else SyntheticFaces(1, 1, 40, 0)[0]

  with pytest.raises(ValueError, match=r"record 1 .*\(40, 40, 3\) uint8, expected \(32, 32, 3\)"):
    decoded_faces.write(Mixed(), str(tmp_path / "mixed"), {})


def test_the_command_writes_and_refuses_in_one_line(celeba, tmp_path):
  root = str(paths.ROOT)
  out = str(tmp_path / "cli")

  def command(resolution: int):
    fields = dict(
        source="celeba",
        root=celeba.data.root,
        partition="random_6_1",
        holdout_identities=2,
        resolution=resolution,
    )
    args = [sys.executable, "-m", "deocc_jax.prepare", "--config=configs/synthetic.py"]
    args += [f"--config.data.{k}={v}" for k, v in fields.items()]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    args += [f"--out={out}", "--splits=train"]
    return subprocess.run(args, capture_output=True, text=True, cwd=root, env=env, timeout=300)

  r = command(RES)
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"--config.data.decoded_root={out}" in r.stdout
  n = len(factories.make_source(celeba, "train"))
  assert len(decoded_faces.DecodedFaces(os.path.join(out, "train"))) == n
  r = command(48)  # another resolution, same folder: refused, nothing overwritten
  assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-2000:]
  assert r.stderr.startswith("error:") and "resolution=40" in r.stderr
  assert len(decoded_faces.DecodedFaces(os.path.join(out, "train"))) == n
