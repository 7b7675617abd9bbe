"""The request bodies of ``deocc-serve`` (:mod:`deocc_jax.http_server`): JSON fields,
base64 images and landmarks, each refused with a one-line client error
(:class:`RequestError`: an HTTP status and a message naming the field)."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

__all__ = ["MAX_PIXELS", "RequestError", "decode_image", "field", "landmarks_field"]

MAX_PIXELS = 4096 * 4096  # decoded pixels of one image


class RequestError(Exception):
  """A client error: HTTP ``status`` with a one-line ``message``."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = int(status)
    self.message = " ".join(str(message).split())


# ------------------------------------------------------------------ request fields


def field(body: dict[str, Any], name: str, required: bool = True) -> Any:
  if name not in body or body[name] is None:
    if required:
      raise RequestError(400, f"missing field {name!r}")
    return None
  return body[name]


def bytes_of(value: Any, name: str) -> bytes:
  """The bytes of a base64 string field (standard alphabet, optional data: URL prefix)."""
  if not isinstance(value, str):
    raise RequestError(400, f"field {name!r} must be a base64 string, got {type(value).__name__}")
  text = "".join(value.split())  # line-wrapped base64 is fine
  if text.startswith("data:"):
    head, sep, text = text.partition(",")
    if not sep or not head.endswith(";base64"):
      raise RequestError(400, f"field {name!r}: a data: URL must be ';base64,' encoded")
  try:
    data = base64.b64decode(text, validate=True)
  except (binascii.Error, ValueError) as e:
    raise RequestError(400, f"field {name!r} is not valid base64: {e}") from None
  if not data:
    raise RequestError(400, f"field {name!r} is empty")
  return data


def decode_image(
    value: Any, name: str, max_pixels: int = MAX_PIXELS, mode: str = "RGB"
) -> np.ndarray:
  """A base64 image field as a uint8 array ((H, W, 3) for 'RGB', (H, W) for 'L')."""
  from PIL import Image, ImageOps, UnidentifiedImageError

  data = bytes_of(value, name)
  try:
    with Image.open(io.BytesIO(data)) as img:
      w, h = img.size
      if w * h > max_pixels:
        raise RequestError(413, f"field {name!r}: image is {w}x{h}, over {max_pixels} pixels")
      img.load()
      img = ImageOps.exif_transpose(img)
      return np.asarray(img.convert(mode), np.uint8)
  except RequestError:
    raise
  except Image.DecompressionBombError as e:
    raise RequestError(413, f"field {name!r}: {e}") from None
  except UnidentifiedImageError:
    raise RequestError(400, f"field {name!r} is not a decodable image (unknown format)") from None
  except Exception as e:  # noqa: BLE001 -- any decoder failure is the client's image
    raise RequestError(400, f"field {name!r} is not a decodable image: {type(e).__name__}: {e}")


def landmarks_field(value: Any, name: str) -> np.ndarray | None:
  if value is None:
    return None
  try:
    lm = np.asarray(value, np.float64)
  except (TypeError, ValueError):
    lm = None
  if lm is None or lm.shape != (5, 2) or not np.isfinite(lm).all():
    raise RequestError(400, f"field {name!r} must be 5 [x, y] pairs of finite numbers")
  return lm
