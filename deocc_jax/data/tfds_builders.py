"""TFDS builders (manual directory, array_record) for the user's face sets.

TensorFlow is not needed: the builders write array_record files, images are
handed to TFDS as encoded bytes (JPEG passed through, anything else PNG), and
they are read back with ``tfds.data_source`` / ``builder.as_data_source()``.
:class:`TFDSFaceSource` adapts a prepared split to the record format of
:mod:`deocc_jax.data.pipeline`, so it feeds the same grain pipeline as the
plain readers in :mod:`deocc_jax.data.real_datasets`.

Example::

    b = CelebAFaces(data_dir="~/tensorflow_datasets", file_format="array_record")
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/data/celeba"))
    source = TFDSFaceSource(b.as_data_source()["train"], resolution=64,
                            crop=(0, 20, 178, 198))
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from deocc_jax.data import dataset_formats
from deocc_jax.data import real_datasets as rd

_FEATURES = dict(
    identity=tfds.features.Scalar(np.int64, doc="identity label (contiguous per builder)"),
    landmarks=tfds.features.Tensor(
        shape=(5, 2),
        dtype=np.float32,
        doc="5 points (x, y): eyes, nose, mouth corners; " "NaN when unknown",
    ),
    file_name=tfds.features.Text(),
)


def _png_bytes(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


class CelebAFaces(tfds.core.GeneratorBasedBuilder):
  """CelebA (aligned & cropped) from its native files, official partitions."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put CelebA's img_align_celeba/, identity_CelebA.txt, list_eval_partition.txt "
      "and list_landmarks_align_celeba.txt in the manual directory."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="CelebA aligned faces with identities and 5 landmarks.",
        features=tfds.features.FeaturesDict(
            dict(
                image=tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                **_FEATURES,
            )
        ),
    )

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    return {name: self._generate_examples(root, name) for name in ("train", "validation", "test")}

  def _generate_examples(self, root: str, split: str):
    # The plain reader validates the files and gives the split's records.
    reader = rd.CelebA(root, split, partition="official")
    for path, label, lm in zip(reader.paths, reader.labels, reader.landmarks):
      with open(path, "rb") as f:
        data = f.read()
      try:
        Image.open(io.BytesIO(data)).verify()
      except Exception as e:  # noqa: BLE001 - report any decoder failure
        raise dataset_formats.DatasetFormatError(f"{path}: cannot decode image ({e})") from e
      name = os.path.basename(path)
      yield name, {
          "image": data,
          "identity": int(label),
          "landmarks": np.asarray(lm, np.float32),
          "file_name": name,
      }


class FaceFolder(tfds.core.GeneratorBasedBuilder):
  """One folder per identity (``manual_dir/<identity>/<image>``), one split."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put one sub-folder of images per identity in manual_dir."

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Faces, one folder per identity.",
        features=tfds.features.FeaturesDict(
            dict(
                image=tfds.features.Image(shape=(None, None, 3), encoding_format="png"), **_FEATURES
            )
        ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(os.fspath(dl_manager.manual_dir))}

  def _generate_examples(self, root: str):
    reader = rd.ImageFolder(root)
    for path, label in zip(reader.paths, reader.labels):
      rel = os.path.relpath(path, root)
      yield rel, {
          "image": _png_bytes(dataset_formats.read_image(path)),
          "identity": int(label),
          "landmarks": np.full((5, 2), np.nan, np.float32),
          "file_name": rel,
      }


class TFDSFaceSource:
  """A prepared TFDS split as a pipeline ``FaceSource`` (crop + resize).

  TFDS stores examples in its own (hashed-key) order; ``record['path']`` is
  the original file name.
  """

  def __init__(
      self,
      data_source: Any,
      resolution: int = 64,
      crop: tuple[float, float, float, float] | None = None,
  ):
    self.data_source = data_source
    self.resolution = int(resolution)
    self.crop = crop

  def __len__(self) -> int:
    return len(self.data_source)

  def __repr__(self) -> str:
    return (
        f"TFDSFaceSource({self.data_source!r}, resolution={self.resolution}, " f"crop={self.crop})"
    )

  def __getitem__(self, index: int) -> dict[str, Any]:
    ex = self.data_source[int(index)]
    lm = np.asarray(ex["landmarks"], np.float32)
    lm = None if np.isnan(lm).any() else lm
    img, lm_out = rd.crop_and_resize(np.asarray(ex["image"]), lm, self.crop, self.resolution)
    if lm_out is None:
      lm_out = rd.DEFAULT_RELATIVE_LANDMARKS * self.resolution
    name = ex["file_name"]
    return {
        "image": img,
        "landmarks": lm_out.astype(np.float32),
        "identity": np.int32(ex["identity"]),
        "path": name.decode() if isinstance(name, bytes) else str(name),
    }
