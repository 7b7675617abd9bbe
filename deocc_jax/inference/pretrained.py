"""Real pretrained recognisers for inference, without a training run.

* ``'dlib'``: dlib's face ResNet (the weights ship in the
  ``face-recognition-models`` wheel; ``deocc_jax.teachers.dlib_resnet`` runs
  them in Flax). Faces are aligned by dlib's own protocol: the 150 x 150 chip
  of ``dlib.get_face_chip`` (padding 0.25) on the 5 landmarks, extracted as
  dlib does (``dlib_chip.extract_dlib_chip``: its pyramid and sampling).
  Default threshold :data:`DLIB_THRESHOLD` (cosine).
* ``'converted'``: a teacher converted by ``python -m deocc_jax.convert``
  (VGGFace2 ResNet-50 / SE-ResNet-50, facenet InceptionResnetV1, insightface
  ArcFace iresnet), aligned to its own template (:data:`TEMPLATE_OF`:
  'vggface2', 'facenet' or 'arcface', ``deocc_jax.data.alignment``) with the
  shared face warp. No calibrated threshold: pass one.

Both embed faces as they are (``input_kind`` 'clean': no completion).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from deocc_jax.inference.recognizer import FaceRecognizer

__all__ = ["DLIB_THRESHOLD", "TEMPLATE_OF", "from_teacher"]

# dlib's own decision rule is Euclidean distance < 0.6 on its raw descriptors,
# whose norm is ~1.38 on faces: cos = 1 - 0.6**2 / (2 * 1.38**2) ~ 0.905.
DLIB_THRESHOLD = 0.905
TEMPLATE_OF = {
    "inception_resnet_v1": "facenet",
    "vggface2_resnet50": "vggface2",
    "vggface2_senet50": "vggface2",
    "vggface_vgg16": "vggface2",
}  # every other converted architecture (iresnet*, sphereface20) is insightface's ArcFace


@dataclasses.dataclass(frozen=True)
class PretrainedModels:
  """What ``FaceRecognizer.models`` holds for a pretrained recogniser."""

  steps: dict[str, int]  # {} (not a training run)
  source: str  # the weights: file or folder
  template: str  # the alignment template's name


def from_teacher(
    kind: str, path: str | None = None, threshold: float | None = None, batch_size: int = 32
) -> FaceRecognizer:
  """A :class:`FaceRecognizer` on a pretrained recogniser: ``kind`` 'dlib'
  (``path``: optional .dat file) or 'converted' (``path``: the converter's folder)."""
  from deocc_jax.data import alignment
  from deocc_jax.teachers import api

  if kind == "converted" and threshold is None:
    raise ValueError(
        f"a converted recogniser ({path}) has no calibrated threshold: pass --threshold "
        "(cosine; measure one on your own pairs)"
    )
  teacher = api.load_teacher(kind, path)
  if kind == "dlib":
    template = "dlib"
    threshold = DLIB_THRESHOLD if threshold is None else threshold
  else:
    template = TEMPLATE_OF.get(str(teacher.metadata.get("architecture")), "arcface")
  tpl = alignment.get_template(template)
  size = int(tpl.size[0])
  fn = teacher.embed_fn
  params = teacher.params

  def embed(x: Any) -> Any:
    return fn(params, x)

  fr = FaceRecognizer(
      embed,
      size,
      float(threshold),
      tpl.points,
      name=kind if kind == "dlib" else f"converted:{teacher.name}",
      input_kind="clean",
      batch_size=batch_size,
  )
  fr.template = template
  fr.models = PretrainedModels({}, str(path or teacher.metadata.get("path", "")), template)
  return fr
