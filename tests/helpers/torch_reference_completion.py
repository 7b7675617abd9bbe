"""PyTorch twins of the completion baselines' networks, for forward-parity tests.

Written from the architecture descriptions (``deocc_jax/models/gfc.py``,
``idgan.py``, ``face_parser.py`` docstrings and GFC's released
``Model_G.prototxt``), with PyTorch's own max-pool indices / max-unpool,
transposed convolution and TF-SAME padding computed here, not imported from
the code under test:

* :class:`TorchGFC`: GFC's encoder-decoder (``F.max_pool2d(return_indices=
  True)`` + ``F.max_unpool2d``; flattening in NHWC order as the flax model);
* :class:`TorchIDGAN`: the GLCIC-style completion network
  (``nn.ConvTranspose2d(4, stride 2, padding 1)`` for flax's SAME transposed
  conv, kernel flipped when loading);
* :class:`TorchFaceParser`: the small parsing network.

:func:`load_flax_params_` copies the flax parameters into a twin (float64).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

GFC_ENCODER = ((2, 1), (2, 2), (2, 4), (4, 8))
GFC_DECODER = ((2, 2, 2, 4), (2, 2), (2, 1), (1, 1))


def tf_same_pad(x: torch.Tensor, k: int, stride: int, rate: int = 1) -> torch.Tensor:
  """TF 'SAME' padding of an NCHW tensor for a (dilated) k x k conv."""
  ke = (k - 1) * rate + 1
  pads = []
  for n in (x.shape[-1], x.shape[-2]):  # F.pad order: W then H
    out = -(-n // stride)
    total = max((out - 1) * stride + ke - n, 0)
    pads += [total // 2, total - total // 2]
  return F.pad(x, pads)


class SameConv(nn.Module):
  """k x k conv with TF SAME padding, stride and dilation."""

  def __init__(self, cin: int, cout: int, k: int, stride: int = 1, rate: int = 1) -> None:
    super().__init__()
    self.k, self.stride, self.rate = k, stride, rate
    self.conv = nn.Conv2d(cin, cout, k, stride, padding=0, dilation=rate)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.conv(tf_same_pad(x, self.k, self.stride, self.rate))


class TorchGFC(nn.Module):
  """GFC generator twin; ``forward(x, mask, fill)`` on NCHW tensors."""

  def __init__(self, base: int, resolution: tuple[int, int], fc_dim: int | None = None) -> None:
    super().__init__()
    b = base
    self.convs = nn.ModuleDict()
    cin = 4
    for i, (n, mult) in enumerate(GFC_ENCODER):
      for j in range(n):
        self.convs[f"enc{i}_conv{j + 1}"] = SameConv(cin, b * mult, 3)
        cin = b * mult
    h, w = resolution[0] // 16, resolution[1] // 16
    self.bottom = (h, w, cin)
    flat = h * w * cin
    fc_dim = fc_dim if fc_dim is not None else max(flat // 4, 1)
    self.fc = nn.Linear(flat, fc_dim)
    self.defc = nn.Linear(fc_dim, flat)
    for level, mults in zip((3, 2, 1, 0), GFC_DECODER):
      for j, mult in enumerate(mults):
        self.convs[f"dec{level}_conv{j + 1}"] = SameConv(cin, b * mult, 3)
        cin = b * mult
    self.convs["out"] = SameConv(cin, 3, 3)

  def forward(
      self, x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor | None = None
  ) -> torch.Tensor:
    h = x * (1 - mask)
    if fill is not None:
      h = h + fill * mask
    h = torch.cat([h, mask], dim=1)
    indices = []
    for i, (n, _) in enumerate(GFC_ENCODER):
      for j in range(n):
        h = F.relu(self.convs[f"enc{i}_conv{j + 1}"](h))
      h, idx = F.max_pool2d(h, 2, 2, return_indices=True)
      indices.append(idx)
    bsz = h.shape[0]
    flat = h.permute(0, 2, 3, 1).reshape(bsz, -1)  # NHWC order, as the flax model
    z = F.relu(self.fc(flat))
    hh, ww, cc = self.bottom
    h = F.relu(self.defc(z)).reshape(bsz, hh, ww, cc).permute(0, 3, 1, 2)
    for level, mults in zip((3, 2, 1, 0), GFC_DECODER):
      h = F.max_unpool2d(h, indices[level], 2, 2)
      for j in range(len(mults)):
        h = F.relu(self.convs[f"dec{level}_conv{j + 1}"](h))
    return torch.clamp(self.convs["out"](h), -1.0, 1.0)


class TorchIDGAN(nn.Module):
  """GLCIC-style completion network twin; ``forward(x, mask)`` on NCHW tensors."""

  def __init__(self, base: int) -> None:
    super().__init__()
    b = base
    c = nn.ModuleDict()
    c["conv1"] = SameConv(4, b, 5)
    c["conv2"] = SameConv(b, 2 * b, 3, 2)
    c["conv3"] = SameConv(2 * b, 2 * b, 3)
    c["conv4"] = SameConv(2 * b, 4 * b, 3, 2)
    c["conv5"] = SameConv(4 * b, 4 * b, 3)
    c["conv6"] = SameConv(4 * b, 4 * b, 3)
    for i, r in enumerate((2, 4, 8, 16)):
      c[f"dilated{i + 1}"] = SameConv(4 * b, 4 * b, 3, rate=r)
    c["conv7"] = SameConv(4 * b, 4 * b, 3)
    c["conv8"] = SameConv(4 * b, 4 * b, 3)
    c["deconv1"] = nn.ConvTranspose2d(4 * b, 2 * b, 4, stride=2, padding=1)
    c["conv9"] = SameConv(2 * b, 2 * b, 3)
    c["deconv2"] = nn.ConvTranspose2d(2 * b, b, 4, stride=2, padding=1)
    c["conv10"] = SameConv(b, b // 2, 3)
    c["out"] = SameConv(b // 2, 3, 3)
    self.convs = c

  def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    h = torch.cat([x * (1 - mask), mask], dim=1)
    names = list(self.convs.keys())
    for name in names[:-1]:
      h = F.relu(self.convs[name](h))
    return torch.tanh(self.convs["out"](h))


class TorchFaceParser(nn.Module):
  """Face-parser twin; ``forward(images)`` NCHW -> NCHW logits."""

  def __init__(self, width: int, num_classes: int) -> None:
    super().__init__()
    w = width
    self.convs = nn.ModuleDict(
        {
            "conv1": SameConv(3, w, 3),
            "conv2": SameConv(w, 2 * w, 3, 2),
            "conv3": SameConv(2 * w, 2 * w, 3, rate=2),
            "conv4": SameConv(3 * w, w, 3),
            "logits": SameConv(w, num_classes, 1),
        }
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    c = self.convs
    f1 = F.relu(c["conv1"](x))
    h = F.relu(c["conv3"](F.relu(c["conv2"](f1))))
    h = F.interpolate(h, scale_factor=2, mode="nearest")
    h = F.relu(c["conv4"](torch.cat([h, f1], dim=1)))
    return c["logits"](h)


@torch.no_grad()
def load_flax_params_(model: nn.Module, params: dict[str, Any]) -> nn.Module:
  """Copies flax params (``{name: {'kernel', 'bias'}}``, the twins' key names)
  into ``model`` as float64: conv HWIO -> OIHW, transposed conv HWIO ->
  flipped (I, O, H, W), dense (in, out) -> (out, in). Every torch parameter
  must be set; returns ``model.eval()``."""
  model = model.double()
  done = set()
  for tname, mod in model.named_modules():
    if not isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
      continue
    fname = tname.split(".")[-1] if not tname.endswith(".conv") else tname.split(".")[-2]
    node = params[fname]
    k = np.asarray(node["kernel"], np.float64)
    if isinstance(mod, nn.ConvTranspose2d):
      # flax ConvTranspose (no kernel transpose) = lhs-dilated correlation;
      # torch's transposed conv correlates with the spatially flipped kernel.
      w = k[::-1, ::-1].transpose(2, 3, 0, 1)
    elif isinstance(mod, nn.Conv2d):
      w = k.transpose(3, 2, 0, 1)
    else:
      w = k.T
    assert tuple(mod.weight.shape) == w.shape, (tname, tuple(mod.weight.shape), w.shape)
    mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
    mod.bias.copy_(torch.from_numpy(np.asarray(node["bias"], np.float64)))
    done |= {f"{tname}.weight", f"{tname}.bias"}
  missing = {n for n, _ in model.named_parameters()} - done
  assert not missing, f"torch parameters not loaded: {sorted(missing)}"
  return model.eval()


def nhwc_to_torch(a: Any) -> torch.Tensor:
  """(B, H, W, C) array -> float64 NCHW tensor."""
  return torch.from_numpy(np.asarray(a, np.float64).transpose(0, 3, 1, 2).copy())


def torch_to_nhwc(t: torch.Tensor) -> np.ndarray:
  """NCHW tensor -> (B, H, W, C) float64 numpy."""
  return t.detach().cpu().numpy().transpose(0, 2, 3, 1)
