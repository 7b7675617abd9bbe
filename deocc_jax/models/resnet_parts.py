"""Layers shared by the converted PyTorch ResNets (IResNet, VGGFace2 ResNet).

Both reproduce torchvision-style residual nets at inference: BatchNorm with
running statistics (PyTorch eps 1e-5) and the projection shortcut
``nn.Sequential(conv1x1(stride), BN)``, whose Flax children are named ``"0"``
and ``"1"`` like the PyTorch ones (``layer2.0.downsample.1.running_var`` is
``batch_stats/layer2/0/downsample/1/var``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["TORCH_BN_EPS", "ProjectionShortcut", "inference_batch_norm"]

#: ``torch.nn.BatchNorm2d``'s default epsilon.
TORCH_BN_EPS = 1e-5
# Flax convention (1 - PyTorch 0.1); unused at inference.
_BN_MOMENTUM = 0.9


def inference_batch_norm(name: str, dtype: Any) -> nn.BatchNorm:
  """BatchNorm on running statistics with PyTorch's default epsilon."""
  return nn.BatchNorm(
      use_running_average=True, momentum=_BN_MOMENTUM, epsilon=TORCH_BN_EPS, dtype=dtype, name=name
  )


class ProjectionShortcut(nn.Module):
  """``nn.Sequential(conv1x1(stride), BN)``: children ``"0"``, ``"1"``.

  Attributes:
    features: output channels.
    stride: stride of the 1x1 conv.
    dtype: computation dtype.
  """

  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    s = self.stride
    x = nn.Conv(
        self.features,
        (1, 1),
        strides=(s, s),
        padding="VALID",
        use_bias=False,
        dtype=self.dtype,
        name="0",
    )(x)
    return inference_batch_norm("1", self.dtype)(x)
