"""PyTorch reference architectures for the conversion tests (random weights only).

* :func:`TorchInceptionResnetV1`: facenet-pytorch's own ``InceptionResnetV1``
  class (installed by the tests' set-up; ``20180402-114759-vggface2.pt``'s
  layout), evaluated as ``classify=True`` (logits) and ``classify=False``
  (L2-normalised embedding) at once.
* Written for these tests from the published architecture description, the
  module names (hence the state-dict keys) following the pretrained files:
* :class:`TorchVGGFace2ResNet`: cydonia999/VGGFace2-pytorch ``resnet50`` /
  ``senet50`` (Caffe ports): stride on the bottleneck's first 1x1 conv, ceil-mode
  max-pool, SE gate ``conv4``/``conv5`` with bias, 7x7 average pool, ``fc``.
* Written from this project's architecture descriptions, to check its own
  networks' forward passes: :func:`deepfill_twin` (the generator and a critic), :class:`TorchCritic` (DeepFill v1's critics: 5x5
  stride-2 TF-SAME convs, leaky ReLU 0.2, dense) and
  :class:`TorchOcclusionSegmenter` (the 3-scale U-Net with GroupNorm), each
  loaded from the flax parameters by :func:`load_flax_`.

:func:`randomise_` draws every parameter *and* BatchNorm running statistic at
random so BatchNorm conversion is really exercised.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


# --------------------------------------------------------------------------- facenet
def TorchInceptionResnetV1(num_classes: int = 8631) -> nn.Module:
  """facenet-pytorch's own ``InceptionResnetV1`` (the installed class, not a
  re-implementation) with a ``logits`` head of ``num_classes``; ``forward``
  returns (L2-normalised embedding, logits), the two outputs facenet gives
  with ``classify=False`` and ``classify=True``."""
  from tests.helpers.facenet_reference import facenet_pytorch

  base = facenet_pytorch().InceptionResnetV1

  class WithLogits(base):

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
      self.classify = False
      emb = super().forward(x)
      self.classify = True
      logits = super().forward(x)
      return emb, logits

  return WithLogits(classify=True, num_classes=num_classes)


# --------------------------------------------------------------------------- vggface2
class TBottleneck(nn.Module):
  """Caffe-style bottleneck (stride on conv1), optional SE gate conv4/conv5."""

  def __init__(
      self,
      cin: int,
      planes: int,
      stride: int = 1,
      downsample: nn.Module | None = None,
      se: bool = False,
  ) -> None:
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, kernel_size=1, stride=stride, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample
    self.se = se
    if se:
      self.conv4 = nn.Conv2d(planes * 4, planes * 4 // 16, kernel_size=1, bias=True)
      self.conv5 = nn.Conv2d(planes * 4 // 16, planes * 4, kernel_size=1, bias=True)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.se:
      g = F.avg_pool2d(out, kernel_size=out.size(2))
      g = torch.sigmoid(self.conv5(F.relu(self.conv4(g))))
      out = g * out
    residual = x if self.downsample is None else self.downsample(x)
    return F.relu(out + residual)


class TorchVGGFace2ResNet(nn.Module):
  """VGGFace2-pytorch resnet50 (``se=False``) / senet50 (``se=True``); returns (pooled, logits)."""

  def __init__(
      self, se: bool = False, num_classes: int = 8631, layers: Sequence[int] = (3, 4, 6, 3)
  ) -> None:
    super().__init__()
    self.inplanes = 64
    self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    self.layer1 = self._make_layer(64, layers[0], 1, se)
    self.layer2 = self._make_layer(128, layers[1], 2, se)
    self.layer3 = self._make_layer(256, layers[2], 2, se)
    self.layer4 = self._make_layer(512, layers[3], 2, se)
    self.avgpool = nn.AvgPool2d(7, stride=1)
    self.fc = nn.Linear(2048, num_classes)

  def _make_layer(self, planes: int, blocks: int, stride: int, se: bool) -> nn.Sequential:
    down = None
    if stride != 1 or self.inplanes != planes * 4:
      down = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
          nn.BatchNorm2d(planes * 4),
      )
    mods = [TBottleneck(self.inplanes, planes, stride, down, se)]
    self.inplanes = planes * 4
    mods += [TBottleneck(self.inplanes, planes, se=se) for _ in range(1, blocks)]
    return nn.Sequential(*mods)

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    pooled = self.avgpool(x).view(x.size(0), -1)
    return pooled, self.fc(pooled)


# ------------------------------------------------------------ this project's nets
def tf_same_pad(x: torch.Tensor, k: int, stride: int, rate: int = 1) -> torch.Tensor:
  """TF / flax 'SAME' padding of an NCHW tensor for a (dilated) k x k conv (the
  extra pixel after)."""
  ke = (k - 1) * rate + 1
  pads = []
  for n in (x.shape[-1], x.shape[-2]):  # F.pad order: W then H
    out = -(-n // stride)
    total = max((out - 1) * stride + ke - n, 0)
    pads += [total // 2, total - total // 2]
  return F.pad(x, pads)


class TorchCritic(nn.Module):
  """5x5 stride-2 SAME convs + leaky ReLU (0.2), flattened in NHWC order, one logit."""

  def __init__(self, in_ch: int, cnum: int, multipliers: Sequence[int], spatial: int):
    super().__init__()
    chans = [in_ch] + [cnum * m for m in multipliers]
    self.convs = nn.ModuleList(nn.Conv2d(a, b, 5, stride=2) for a, b in zip(chans, chans[1:]))
    side = spatial // 2 ** len(multipliers)
    self.fc = nn.Linear(side * side * chans[-1], 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for conv in self.convs:
      x = F.leaky_relu(conv(tf_same_pad(x, 5, 2)), 0.2)
    return self.fc(x.permute(0, 2, 3, 1).flatten(1))[:, 0]


class _TorchBlock(nn.Module):

  def __init__(self, cin: int, features: int, eps: float):
    super().__init__()
    self.conv0 = nn.Conv2d(cin, features, 3)
    self.norm0 = nn.GroupNorm(min(8, features), features, eps=eps)
    self.conv1 = nn.Conv2d(features, features, 3)
    self.norm1 = nn.GroupNorm(min(8, features), features, eps=eps)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.norm0(self.conv0(tf_same_pad(x, 3, 1))))
    return F.relu(self.norm1(self.conv1(tf_same_pad(x, 3, 1))))


class TorchOcclusionSegmenter(nn.Module):
  """Encoder (w, 2w, 4w; stride-2 3x3 SAME convs between), nearest x2 upsampling
  with skip concatenation, 1x1 head. ``eps``: GroupNorm's (flax: 1e-6)."""

  def __init__(self, width: int, eps: float = 1e-6):
    super().__init__()
    w = width
    self.enc1 = _TorchBlock(3, w, eps)
    self.down1 = nn.Conv2d(w, 2 * w, 3, stride=2)
    self.enc2 = _TorchBlock(2 * w, 2 * w, eps)
    self.down2 = nn.Conv2d(2 * w, 4 * w, 3, stride=2)
    self.bottleneck = _TorchBlock(4 * w, 4 * w, eps)
    self.dec2 = _TorchBlock(6 * w, 2 * w, eps)
    self.dec1 = _TorchBlock(3 * w, w, eps)
    self.head = nn.Conv2d(w, 1, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
    e1 = self.enc1(x)
    e2 = self.enc2(self.down1(tf_same_pad(e1, 3, 2)))
    b = self.bottleneck(self.down2(tf_same_pad(e2, 3, 2)))
    d2 = self.dec2(torch.cat([up(b), e2], 1))
    d1 = self.dec1(torch.cat([up(d2), e1], 1))
    return self.head(d1)


@torch.no_grad()
def load_flax_(model: nn.Module, params: dict, names: dict[str, str]) -> nn.Module:
  """Copies flax parameters into ``model`` (float64): ``names`` maps each torch
  module path to its flax path ('/'-joined); conv kernels HWIO -> OIHW (transposed
  convs: flipped, (I, O, H, W)), dense
  kernels (in, out) -> (out, in), GroupNorm scale -> weight. Every torch
  parameter must be set."""
  model = model.double()
  done = set()
  for tname, fname in names.items():
    node = params
    for part in fname.split("/"):
      node = node[part]
    mod = model.get_submodule(tname)
    if isinstance(mod, nn.ConvTranspose2d):
      # flax ConvTranspose (no kernel transpose) = lhs-dilated correlation;
      # torch's transposed conv correlates with the spatially flipped kernel.
      w = np.asarray(node["kernel"], np.float64)[::-1, ::-1].transpose(2, 3, 0, 1)
    elif isinstance(mod, nn.Conv2d):
      w = np.asarray(node["kernel"], np.float64).transpose(3, 2, 0, 1)
    elif isinstance(mod, nn.Linear):
      w = np.asarray(node["kernel"], np.float64).T
    else:  # GroupNorm
      w = np.asarray(node["scale"], np.float64)
    assert tuple(mod.weight.shape) == w.shape, (tname, tuple(mod.weight.shape), w.shape)
    mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
    mod.bias.copy_(torch.from_numpy(np.asarray(node["bias"], np.float64)))
    done |= {f"{tname}.weight", f"{tname}.bias"}
  missing = {n for n, _ in model.named_parameters()} - done
  assert not missing, f"torch parameters not loaded: {sorted(missing)}"
  return model.eval()


# --------------------------------------------------------------------------- helpers
@torch.no_grad()
def randomise_(
    model: nn.Module, seed: int, calibration_input: torch.Tensor | None = None
) -> nn.Module:
  """Random weights, biases and BatchNorm affine + running stats; returns ``model.eval()``.

  With ``calibration_input`` (a preprocessed NCHW batch of >= 2 images) the running
  statistics are first measured on it (train-mode forward, cumulative average), as
  training would leave them, and then perturbed at random (mean shifted by
  ~0.1 std, variance scaled by U(0.7, 1.4)); this keeps activations O(1) so that an
  absolute float32 tolerance is meaningful, while every statistic still differs
  from an identity / batch-statistics BatchNorm. Without it the statistics are
  drawn outright (mean N(0, 0.2), var U(0.5, 2)).
  """
  g = torch.Generator().manual_seed(seed)

  def rnd(shape: torch.Size, scale: float, offset: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=g) * scale + offset

  bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
  for m in model.modules():
    if isinstance(m, (nn.Conv2d, nn.Linear)):
      fan_in = int(np.prod(m.weight.shape[1:]))
      m.weight.copy_(rnd(m.weight.shape, (2.0 / fan_in) ** 0.5))
      if m.bias is not None:
        m.bias.copy_(rnd(m.bias.shape, 0.1))
  for m in bns:
    m.weight.copy_(rnd(m.weight.shape, 0.2, 1.0))
    m.bias.copy_(rnd(m.bias.shape, 0.2))
    m.running_mean.copy_(rnd(m.running_mean.shape, 0.2))
    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
  if calibration_input is not None:
    for m in bns:
      m.reset_running_stats()
      m.momentum = None  # cumulative moving average = the batch statistics here
    model.eval()
    for m in bns:
      m.train()
    model(calibration_input)
    for m in bns:
      m.momentum = 0.1
      std = m.running_var.sqrt()
      m.running_mean.add_(rnd(m.running_mean.shape, 0.1) * std)
      m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) * 0.7 + 0.7)
      m.running_var.clamp_(min=1e-3)
  for m in bns:
    m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
  return model.eval()


def nhwc_to_nchw(x: np.ndarray) -> torch.Tensor:
  """(N, H, W, C) numpy -> (N, C, H, W) float32 torch tensor."""
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


# --------------------------------------------------------------------------- DeepFill v1
def deepfill_twin():
  """(torch, F, Generator, Critic): a PyTorch twin of the DeepFill v1 generator
  (coarse net, then hallucination + contextual-attention branches) and of a
  critic, written from the architecture description with TF's SAME padding and
  TF1's align-corners nearest resize computed here, not imported from the code
  under test. Used by tests/models/test_generator.py (forward parity) and
  benchmarks/bench_generator_step.py (step time side by side)."""
  import torch
  import torch.nn as tnn
  import torch.nn.functional as F

  def conv(cin, cout, k, s=1, r=1):
    # TF 'SAME' for these configs: stride-1 odd kernels are symmetric; the
    # stride-2 3x3 conv on even sizes pads (0, 1) - done in Conv.forward.
    return TConv(cin, cout, k, s, r)

  class TConv(tnn.Module):

    def __init__(self, cin, cout, k, s, r, act="elu"):
      super().__init__()
      self.s, self.k, self.r = s, k, r
      self.conv = tnn.Conv2d(cin, cout, k, s, padding=0 if s > 1 else r * (k - 1) // 2, dilation=r)
      self.act = act

    def forward(self, x):
      if self.s > 1:
        h = x.shape[-2]
        total = max((-(-h // self.s) - 1) * self.s + self.k - h, 0)
        x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
      x = self.conv(x)
      if self.act == "elu":
        return F.elu(x)
      if self.act == "relu":
        return F.relu(x)
      if self.act == "lrelu":
        return F.leaky_relu(x, 0.2)
      return x

  def down_idx(n_in, n_out, device=None):
    # TF1 resize_nearest_neighbor(align_corners=True), written from its kernel
    # (not imported from the code under test): source index of output i is
    # roundf(i * float32(n_in - 1) / float32(n_out - 1)), halves away from 0.
    scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(n_in)
    idx = [
        min(int(np.floor(np.float32(i) * scale + np.float32(0.5))), n_in - 1) for i in range(n_out)
    ]
    return torch.as_tensor(idx)

  def contextual_attention(f, b, mask, rate=2, ksize=3, scale=10.0):
    bs, c, hf_raw, wf_raw = f.shape
    hb_raw, wb_raw = b.shape[2:]
    hf, wf, hb, wb = hf_raw // rate, wf_raw // rate, hb_raw // rate, wb_raw // rate
    raw = F.unfold(b, 2 * rate, padding=1, stride=rate)  # B, C*16, L (TF SAME, even sizes)
    fd = f[:, :, down_idx(hf_raw, hf)][:, :, :, down_idx(wf_raw, wf)]
    bd = b[:, :, down_idx(hb_raw, hb)][:, :, :, down_idx(wb_raw, wb)]
    md = mask[:, :, down_idx(hb_raw, hb)][:, :, :, down_idx(wb_raw, wb)]
    w = F.unfold(bd, ksize, padding=ksize // 2)  # B, C*9, L
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-4)
    fp = F.unfold(fd, ksize, padding=ksize // 2)  # B, C*9, P
    s = torch.bmm(fp.transpose(1, 2), w)  # B, P, L

    def fuse1(y):
      yp = F.pad(y, (1, 1, 1, 1))
      return yp[:, :-2, :-2] + yp[:, 1:-1, 1:-1] + yp[:, 2:, 2:]

    s = fuse1(s)
    s = s.view(bs, hf, wf, hb, wb).permute(0, 2, 1, 4, 3).reshape(bs, wf * hf, wb * hb)
    s = fuse1(s)
    s = s.view(bs, wf, hf, wb, hb).permute(0, 2, 1, 4, 3).reshape(bs, hf * wf, hb * wb)
    valid = (F.avg_pool2d(md, 3, 1, 1, count_include_pad=True) == 0).float().view(bs, 1, -1)
    s = s * valid
    att = torch.softmax(s * scale, dim=-1) * valid
    pasted = torch.bmm(att, raw.transpose(1, 2))  # B, P, C*16
    y = F.fold(pasted.transpose(1, 2), (hf_raw, wf_raw), 2 * rate, padding=1, stride=rate)
    return y / 4.0

  class Generator(tnn.Module):

    def __init__(self, c):
      super().__init__()
      L = tnn.ModuleList
      self.coarse = L(
          [
              conv(5, c, 5),
              conv(c, 2 * c, 3, 2),
              conv(2 * c, 2 * c, 3),
              conv(2 * c, 4 * c, 3, 2),
              conv(4 * c, 4 * c, 3),
              conv(4 * c, 4 * c, 3),
              conv(4 * c, 4 * c, 3, r=2),
              conv(4 * c, 4 * c, 3, r=4),
              conv(4 * c, 4 * c, 3, r=8),
              conv(4 * c, 4 * c, 3, r=16),
              conv(4 * c, 4 * c, 3),
              conv(4 * c, 4 * c, 3),
          ]
      )
      self.coarse_dec = L(
          [conv(4 * c, 2 * c, 3), conv(2 * c, 2 * c, 3), conv(2 * c, c, 3), conv(c, c // 2, 3)]
      )
      self.coarse_out = TConv(c // 2, 3, 3, 1, 1, act=None)
      self.hallu = L(
          [
              conv(5, c, 5),
              conv(c, c, 3, 2),
              conv(c, 2 * c, 3),
              conv(2 * c, 2 * c, 3, 2),
              conv(2 * c, 4 * c, 3),
              conv(4 * c, 4 * c, 3),
              conv(4 * c, 4 * c, 3, r=2),
              conv(4 * c, 4 * c, 3, r=4),
              conv(4 * c, 4 * c, 3, r=8),
              conv(4 * c, 4 * c, 3, r=16),
          ]
      )
      self.pm = L(
          [
              conv(5, c, 5),
              conv(c, c, 3, 2),
              conv(c, 2 * c, 3),
              conv(2 * c, 4 * c, 3, 2),
              conv(4 * c, 4 * c, 3),
          ]
      )
      self.pm6 = TConv(4 * c, 4 * c, 3, 1, 1, act="relu")
      self.pm_after = L([conv(4 * c, 4 * c, 3), conv(4 * c, 4 * c, 3)])
      self.all = L([conv(8 * c, 4 * c, 3), conv(4 * c, 4 * c, 3)])
      self.all_dec = L(
          [conv(4 * c, 2 * c, 3), conv(2 * c, 2 * c, 3), conv(2 * c, c, 3), conv(c, c // 2, 3)]
      )
      self.all_out = TConv(c // 2, 3, 3, 1, 1, act=None)

    @staticmethod
    def _decode(h, dec, out):
      h = dec[0](F.interpolate(h, scale_factor=2, mode="nearest"))
      h = dec[1](h)
      h = dec[2](F.interpolate(h, scale_factor=2, mode="nearest"))
      h = dec[3](h)
      return torch.clamp(out(h), -1.0, 1.0)

    def forward(self, x, m):
      xin = x * (1 - m)
      ones = torch.ones_like(m)
      h = torch.cat([xin, ones, ones * m], 1)
      for layer in self.coarse:
        h = layer(h)
      coarse = self._decode(h, self.coarse_dec, self.coarse_out)
      xnow = torch.cat([coarse * m + xin * (1 - m), ones, ones * m], 1)
      h = xnow
      for layer in self.hallu:
        h = layer(h)
      hallu = h
      h = xnow
      for layer in self.pm:
        h = layer(h)
      h = self.pm6(h)
      ms = m[:, :, down_idx(m.shape[2], h.shape[2])][:, :, :, down_idx(m.shape[3], h.shape[3])]
      h = contextual_attention(h, h, ms)
      for layer in self.pm_after:
        h = layer(h)
      h = torch.cat([hallu, h], 1)
      for layer in self.all:
        h = layer(h)
      return coarse, self._decode(h, self.all_dec, self.all_out)

  class Critic(tnn.Module):

    def __init__(self, c, mults, size):
      super().__init__()
      chans = [3] + [c * k for k in mults]
      self.convs = tnn.ModuleList(
          [TConv(chans[i], chans[i + 1], 5, 2, 1, act="lrelu") for i in range(len(mults))]
      )
      s = size
      for _ in mults:
        s = -(-s // 2)
      self.fc = tnn.Linear(chans[-1] * s * s, 1)

    def forward(self, x):
      for layer in self.convs:
        x = layer(x)
      return self.fc(x.flatten(1))[:, 0]

  return torch, F, Generator, Critic


# ============================================================================
# VGGFace (VGG-16) and SphereFace-20, written for tests/conversion from the
# published PyTorch ports, the module names (hence the state-dict keys)
# following the pretrained files:
# * :class:`TorchVGGFace`: Samuel Albanie's ``vgg_face_dag.py``
#   (``vgg_face_dag.pth``): conv1_1 .. conv5_3 + ReLU, 2x2 max-pools, fc6 on the
#   NCHW flatten, relu6, dropout6, fc7, relu7, dropout7, fc8;
# * :class:`TorchSphere20a`: clcarwin/sphereface_pytorch ``net_sphere.py``
#   ``sphere20a`` with its ``AngleLinear`` (weight stored (in, out)).
# Both take the widths as arguments (defaults: the published ones) so the tests
# can build a narrow net with the same keys.
# ============================================================================
class TorchVGGFace(nn.Module):
  """``Vgg_face_dag``; ``forward`` returns (relu7 output, fc8 logits)."""

  def __init__(
      self,
      widths: Sequence[int] = (64, 128, 256, 512, 512),
      fc_features: int = 4096,
      num_classes: int = 2622,
  ) -> None:
    super().__init__()
    self.blocks: list[list[str]] = []
    cin = 3
    for b, (width, convs) in enumerate(zip(widths, (2, 2, 3, 3, 3)), start=1):
      names = []
      for c in range(1, convs + 1):
        setattr(self, f"conv{b}_{c}", nn.Conv2d(cin, width, kernel_size=[3, 3], padding=(1, 1)))
        names.append(f"conv{b}_{c}")
        cin = width
      setattr(self, f"pool{b}", nn.MaxPool2d(kernel_size=[2, 2], stride=[2, 2], padding=0))
      self.blocks.append(names)
    self.fc6 = nn.Linear(cin * 7 * 7, fc_features)
    self.relu6 = nn.ReLU(inplace=True)
    self.dropout6 = nn.Dropout(p=0.5)
    self.fc7 = nn.Linear(fc_features, fc_features)
    self.relu7 = nn.ReLU(inplace=True)
    self.dropout7 = nn.Dropout(p=0.5)
    self.fc8 = nn.Linear(fc_features, num_classes)

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for b, names in enumerate(self.blocks, start=1):
      for name in names:
        x = F.relu(getattr(self, name)(x))
      x = getattr(self, f"pool{b}")(x)
    x = x.view(x.size(0), -1)
    x = self.dropout6(self.relu6(self.fc6(x)))
    emb = self.relu7(self.fc7(x))
    return emb.clone(), self.fc8(self.dropout7(emb))


class TorchAngleLinear(nn.Module):
  """net_sphere.py's ``AngleLinear`` (m = 4, phiflag=True); ``forward`` returns
  ``(cos_theta * |x|, phi_theta * |x|)``."""

  def __init__(self, in_features: int, out_features: int, m: int = 4) -> None:
    super().__init__()
    self.in_features, self.out_features, self.m = in_features, out_features, m
    self.weight = nn.Parameter(torch.empty(in_features, out_features))
    self.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)
    self.mlambda = [
        lambda x: x**0,
        lambda x: x**1,
        lambda x: 2 * x**2 - 1,
        lambda x: 4 * x**3 - 3 * x,
        lambda x: 8 * x**4 - 8 * x**2 + 1,
        lambda x: 16 * x**5 - 20 * x**3 + 5 * x,
    ]

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ww = self.weight.renorm(2, 1, 1e-5).mul(1e5)
    xlen = x.pow(2).sum(1).pow(0.5)
    wlen = ww.pow(2).sum(0).pow(0.5)
    cos_theta = x.mm(ww) / xlen.view(-1, 1) / wlen.view(1, -1)
    cos_theta = cos_theta.clamp(-1, 1)
    cos_m_theta = self.mlambda[self.m](cos_theta)
    k = (self.m * cos_theta.acos() / 3.14159265).floor()
    phi_theta = (-1.0) ** k * cos_m_theta - 2 * k
    return cos_theta * xlen.view(-1, 1), phi_theta * xlen.view(-1, 1)


class TorchSphere20a(nn.Module):
  """``sphere20a``; ``forward`` returns (fc5 embedding, AngleLinear's first output)."""

  UNITS = (1, 2, 4, 1)

  def __init__(
      self,
      widths: Sequence[int] = (64, 128, 256, 512),
      num_features: int = 512,
      classnum: int = 10574,
  ) -> None:
    super().__init__()
    cin = 3
    for s, (width, units) in enumerate(zip(widths, self.UNITS), start=1):
      for j in range(1, 2 * units + 2):
        stride = 2 if j == 1 else 1
        setattr(self, f"conv{s}_{j}", nn.Conv2d(cin if j == 1 else width, width, 3, stride, 1))
        setattr(self, f"relu{s}_{j}", nn.PReLU(width))
      cin = width
    self.fc5 = nn.Linear(cin * 7 * 6, num_features)
    self.fc6 = TorchAngleLinear(num_features, classnum)

  def _unit(self, x: torch.Tensor, s: int, j: int) -> torch.Tensor:
    return getattr(self, f"relu{s}_{j}")(getattr(self, f"conv{s}_{j}")(x))

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for s, units in enumerate(self.UNITS, start=1):
      x = self._unit(x, s, 1)
      for u in range(units):
        x = x + self._unit(self._unit(x, s, 2 * u + 2), s, 2 * u + 3)
    emb = self.fc5(x.view(x.size(0), -1))
    return emb, self.fc6(emb)[0]


# --------------------------------------------------------------------------- completion baselines
# PyTorch twins of the completion baselines' networks, for forward-parity tests.
#
# Written from the architecture descriptions (``deocc_jax/models/gfc.py``,
# ``idgan.py``, ``face_parser.py`` docstrings and GFC's released
# ``Model_G.prototxt``), with PyTorch's own max-pool indices / max-unpool,
# transposed convolution and TF-SAME padding computed here, not imported from
# the code under test:
#
# * :class:`TorchGFC`: GFC's encoder-decoder (``F.max_pool2d(return_indices=
#   True)`` + ``F.max_unpool2d``; flattening in NHWC order as the flax model);
# * :class:`TorchIDGAN`: the GLCIC-style completion network
#   (``nn.ConvTranspose2d(4, stride 2, padding 1)`` for flax's SAME transposed
#   conv, kernel flipped when loading);
# * :class:`TorchFaceParser`: the small parsing network.
#
# :func:`load_flax_params_` copies the flax parameters into a twin (float64).

GFC_ENCODER = ((2, 1), (2, 2), (2, 4), (4, 8))
GFC_DECODER = ((2, 2, 2, 4), (2, 2), (2, 1), (1, 1))


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


def load_flax_params_(model: nn.Module, params: dict[str, Any]) -> nn.Module:
  """:func:`load_flax_` with the completion twins' names: each conv / dense
  module takes the flax parameters of its own name (a ``.conv`` wrapper: its
  parent's name)."""
  names = {
      tname: tname.split(".")[-2] if tname.endswith(".conv") else tname.split(".")[-1]
      for tname, mod in model.named_modules()
      if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
  }
  return load_flax_(model, params, names)


def nhwc_to_torch(a: Any) -> torch.Tensor:
  """(B, H, W, C) array -> float64 NCHW tensor."""
  return torch.from_numpy(np.asarray(a, np.float64).transpose(0, 3, 1, 2).copy())


def torch_to_nhwc(t: torch.Tensor) -> np.ndarray:
  """NCHW tensor -> (B, H, W, C) float64 numpy."""
  return t.detach().cpu().numpy().transpose(0, 2, 3, 1)
