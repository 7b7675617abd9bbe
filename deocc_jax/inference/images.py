"""Reading the images and masks inference is given: size checks from the file
header, decoding, mask conversion, and the image files of a folder."""

from __future__ import annotations

import os
from typing import Any, Sequence, Union

import numpy as np

from deocc_jax.data.dataset_formats import IMAGE_EXTENSIONS, DatasetFormatError, read_image
from deocc_jax.utils.face_geometry import as_rgb_uint8

__all__ = [
    "ImageLike",
    "MaskLike",
    "NoFaceError",
    "ImageErrors",
    "ImageTooLargeError",
    "MAX_IMAGE_PIXELS",
    "check_image_size",
    "read_face_image",
    "read_mask",
    "read_mask_file",
    "mask_array",
    "name_of",
    "size_text",
    "list_images",
    "label_of",
]

ImageLike = Union[str, os.PathLike, np.ndarray]
MaskLike = Union[str, os.PathLike, np.ndarray]


class NoFaceError(ValueError):
  """dlib found no face in an image (the message names the file)."""


class ImageErrors(ValueError):
  """Some images of a batch / folder could not be used; ``errors`` = [(path, message)]."""

  def __init__(self, message: str, errors: Sequence[tuple[str, str]]):
    super().__init__(message)
    self.errors = list(errors)


def name_of(x: Any, default: str) -> str:
  """The path of a file input, else ``default`` (a name for an array in messages)."""
  return os.fspath(x) if isinstance(x, (str, os.PathLike)) else default


def size_text(shape: Sequence[int]) -> str:
  """'WxH' of an (H, W, ...) shape."""
  return f"{shape[1]}x{shape[0]}"


# Largest image (width x height) inference decodes; checked from the file's
# header before decoding, so a huge or decompression-bomb file costs nothing.
MAX_IMAGE_PIXELS = 40_000_000


class ImageTooLargeError(DatasetFormatError):
  """An image file over :data:`MAX_IMAGE_PIXELS` (or PIL's bomb limit)."""


def check_image_size(path: str, max_pixels: int | None = None, what: str = "image") -> None:
  """Reads only the header of ``path`` and raises :class:`ImageTooLargeError`
  if it has more than ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`) pixels."""
  import warnings

  from PIL import Image, UnidentifiedImageError

  cap = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{what} file not found: {path}")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(path) as im:  # lazy: parses the header only
        w, h = im.size
  except Image.DecompressionBombError as e:
    raise ImageTooLargeError(
        f"{path}: {what} is too large to decode ({e}); the cap is "
        f"{cap} pixels (inference.MAX_IMAGE_PIXELS)"
    ) from None
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DatasetFormatError(f"{path}: cannot decode {what} ({e})") from e
  if w * h > cap:
    raise ImageTooLargeError(
        f"{path}: {what} is {w}x{h} = {w * h} pixels, over the cap of "
        f"{cap} (inference.MAX_IMAGE_PIXELS); downscale it first"
    )


def read_mask_file(path: str) -> np.ndarray:
  """A mask file as float32 (H, W) in [0, 1]: its alpha channel when it has one,
  else its gray level."""
  from PIL import Image, UnidentifiedImageError

  if not os.path.exists(path):
    raise FileNotFoundError(f"mask file not found: {path}")
  check_image_size(path, what="mask image")
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
      if im.mode in ("RGBA", "LA", "PA"):
        return np.asarray(im.getchannel("A"), np.float32) / 255.0
      if im.mode in ("I;16", "I", "F", "1"):
        arr = np.asarray(im, np.float64)
        peak = {"I;16": 65535.0, "1": 1.0}.get(im.mode, max(float(arr.max()), 1.0))
        return (arr / peak).astype(np.float32)
      return np.asarray(im.convert("L"), np.float32) / 255.0
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DatasetFormatError(f"{path}: cannot decode mask image ({e})") from e


def mask_array(mask: np.ndarray, name: str) -> np.ndarray:
  """A mask array -> float32 (H, W) in [0, 1]."""
  m = np.asarray(mask)
  if m.ndim == 3 and m.shape[2] == 4:
    m = m[..., 3]
  elif m.ndim == 3 and m.shape[2] in (1, 3):
    m = m.astype(np.float32).mean(axis=-1) if m.dtype != np.bool_ else m.any(axis=-1)
  if m.ndim != 2:
    raise ValueError(
        f"{name}: a mask must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
        f"got shape {np.shape(mask)}"
    )
  if m.dtype == np.bool_:
    return m.astype(np.float32)
  if np.asarray(mask).dtype == np.uint8:
    return m.astype(np.float32) / 255.0
  if not np.issubdtype(m.dtype, np.number):
    raise ValueError(f"{name}: mask dtype {m.dtype} is not numeric")
  return m.astype(np.float32)


def read_face_image(image: ImageLike, name: str) -> np.ndarray:
  """(H, W, 3) uint8 RGB of an image file (its size checked from the header
  before decoding) or of an array (named ``name`` in errors)."""
  if isinstance(image, (str, os.PathLike)):
    check_image_size(os.fspath(image))  # header only, before decoding
    return read_image(os.fspath(image))
  return as_rgb_uint8(image, name)


def read_mask(mask: MaskLike, name: str) -> np.ndarray:
  """float32 (H, W) in [0, 1] of a mask file or array (named ``name`` in errors)."""
  if isinstance(mask, (str, os.PathLike)):
    return read_mask_file(os.fspath(mask))
  return mask_array(mask, name)


def list_images(folder: str) -> list[str]:
  """Image files under ``folder`` (recursive, ``IMAGE_EXTENSIONS``), relative
  paths with '/' separators, sorted; hidden files and folders are skipped."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"image folder not found: {folder}")
  out = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for f in files:
      if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
        out.append(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/"))
  return sorted(out)


def label_of(rel_path: str) -> str:
  """The label of a folder's image: its first-level subfolder ('' at the root)."""
  parts = rel_path.split("/")
  return parts[0] if len(parts) > 1 else ""
