"""Imports facenet-pytorch (the PyTorch MTCNN reference) for the parity tests.

facenet-pytorch 2.6.0 is installed with ``pip install --no-deps`` (its
metadata pins torch<2.3). Its ``detect_face`` imports torchvision for two
things: ``batched_nms`` and ``transforms.functional`` (used only by
``extract_face``, which the tests do not call). PyPI's torchvision does not
load beside the CPU torch wheel used here, so when torchvision is missing a
minimal stand-in module is registered: ``batched_nms`` is a plain greedy NMS
written with torch ops (torchvision's documented semantics: per-class IoU
with areas ``(x2 - x1) (y2 - y1)``, a box is dropped when its IoU with a
kept, higher-scoring box is > the threshold, kept indices by decreasing
score). Everything else is facenet-pytorch's own code.
"""

from __future__ import annotations

import sys
import types

import pytest


def _torch_batched_nms(boxes, scores, idxs, iou_threshold):
  import torch

  if boxes.numel() == 0:
    return torch.empty((0,), dtype=torch.int64)
  offsets = idxs.to(boxes) * (boxes.max() + 1)
  b = boxes + offsets[:, None]
  area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  order = torch.sort(scores, descending=True, stable=True).indices
  keep = []
  while order.numel():
    i = order[0]
    keep.append(int(i))
    rest = order[1:]
    w = (torch.minimum(b[i, 2], b[rest, 2]) - torch.maximum(b[i, 0], b[rest, 0])).clamp(min=0)
    h = (torch.minimum(b[i, 3], b[rest, 3]) - torch.maximum(b[i, 1], b[rest, 1])).clamp(min=0)
    inter = w * h
    iou = inter / (area[i] + area[rest] - inter)
    order = rest[iou <= iou_threshold]
  return torch.as_tensor(keep, dtype=torch.int64)


def _install_torchvision_stand_in() -> None:
  tv = types.ModuleType("torchvision")
  ops = types.ModuleType("torchvision.ops")
  boxes = types.ModuleType("torchvision.ops.boxes")
  boxes.batched_nms = _torch_batched_nms
  transforms = types.ModuleType("torchvision.transforms")
  functional = types.ModuleType("torchvision.transforms.functional")

  def to_tensor(*a, **k):  # only extract_face uses it
    raise NotImplementedError("torchvision stand-in: to_tensor is not available")

  functional.to_tensor = to_tensor
  tv.ops, ops.boxes, tv.transforms, transforms.functional = ops, boxes, transforms, functional
  sys.modules.update(
      {
          "torchvision": tv,
          "torchvision.ops": ops,
          "torchvision.ops.boxes": boxes,
          "torchvision.transforms": transforms,
          "torchvision.transforms.functional": functional,
      }
  )


def facenet_pytorch():
  """The facenet_pytorch module (fails the test with the install command if missing)."""
  import importlib.util

  import torch  # noqa: F401  (in the test extra: a missing torch fails)

  if importlib.util.find_spec("facenet_pytorch") is None:
    pytest.fail(
        "facenet-pytorch is not installed: `pip install --no-deps "
        "facenet-pytorch==2.6.0` (.ci/run does this)"
    )
  if "torchvision" not in sys.modules:
    try:
      import torchvision  # noqa: F401
    except Exception:  # missing, or PyPI's build that does not load beside CPU torch
      for k in [k for k in sys.modules if k.startswith("torchvision")]:
        del sys.modules[k]
      _install_torchvision_stand_in()
  import facenet_pytorch as fp

  return fp
