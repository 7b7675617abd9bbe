"""Real face photos for the dlib parity tests.

The four test photos of the ``face_recognition==1.3.0`` source distribution.
README command (b) (and ``.ci/run``) downloads that sdist with pip into
``<repository>/.cache/sdist/`` at install time; the tests only read it (nothing
is downloaded at test time) and extract the photos next to it, never committed.
``DEOCC_TEST_PHOTOS_SDIST=<file>`` points elsewhere.
"""

from __future__ import annotations

import os
import pathlib
import tarfile

import numpy as np
import pytest
from tests.helpers import paths

PHOTOS = ("obama", "obama2", "obama3", "biden")
ROOT = paths.ROOT
SDIST = "face_recognition-1.3.0.tar.gz"
FETCH = ".venv/bin/pip download --no-deps --no-binary :all: face_recognition==1.3.0 -d .cache/sdist"


def sdist_path() -> pathlib.Path:
  """Where the face_recognition sdist is read from."""
  given = os.environ.get("DEOCC_TEST_PHOTOS_SDIST")
  return pathlib.Path(given) if given else ROOT / ".cache" / "sdist" / SDIST


def face_photos() -> dict[str, np.ndarray]:
  """The 4 test photos of face_recognition==1.3.0 (from its sdist, installed by README command (b))."""
  from PIL import Image

  sdist = sdist_path()
  img_dir = sdist.parent.parent / "face_recognition-1.3.0-test_images"
  paths = {n: img_dir / f"{n}.jpg" for n in PHOTOS}
  if not all(p.is_file() for p in paths.values()):
    if not sdist.is_file():
      pytest.fail(
          f"the real test photos come from {sdist}, which is missing: README command (b) "
          f"fetches it at install time; run `{FETCH}` in the repository"
      )
    img_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tf:
      for n, p in paths.items():
        data = tf.extractfile(f"face_recognition-1.3.0/tests/test_images/{n}.jpg").read()
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, p)
  return {n: np.array(Image.open(p).convert("RGB")) for n, p in paths.items()}
