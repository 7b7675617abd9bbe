"""Real face photos for the dlib parity tests.

The four test photos of the ``face_recognition==1.3.0`` source distribution,
fetched from PyPI with pip on first use and cached under
``~/.cache/deocc_jax/``; never committed.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tarfile

import numpy as np
import pytest

PHOTOS = ("obama", "obama2", "obama3", "biden")


def face_photos() -> dict[str, np.ndarray]:
  """The 4 test photos of face_recognition==1.3.0 (sdist from PyPI, cached)."""
  from PIL import Image

  cache = pathlib.Path(os.path.expanduser("~/.cache/deocc_jax"))
  img_dir = cache / "face_recognition-1.3.0-test_images"
  paths = {n: img_dir / f"{n}.jpg" for n in PHOTOS}
  if not all(p.is_file() for p in paths.values()):
    sdist_dir = cache / "sdist"
    sdist = sdist_dir / "face_recognition-1.3.0.tar.gz"
    if not sdist.is_file():
      sdist_dir.mkdir(parents=True, exist_ok=True)
      proc = subprocess.run(
          [
              sys.executable,
              "-m",
              "pip",
              "download",
              "--no-deps",
              "--no-binary",
              ":all:",
              "face_recognition==1.3.0",
              "-d",
              str(sdist_dir),
          ],
          capture_output=True,
          text=True,
          timeout=600,
      )
      if proc.returncode != 0 or not sdist.is_file():
        pytest.fail(
            "could not fetch the face_recognition==1.3.0 sdist from PyPI "
            f"(needed for the real test photos): {proc.stderr[-2000:]}"
        )
    img_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tf:
      for n, p in paths.items():
        data = tf.extractfile(f"face_recognition-1.3.0/tests/test_images/{n}.jpg").read()
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, p)
  return {n: np.array(Image.open(p).convert("RGB")) for n, p in paths.items()}
