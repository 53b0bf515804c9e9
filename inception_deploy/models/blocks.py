"""The one Conv-BN-ReLU block that every model of the zoo is built from."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class ConvBNReLU(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU.

    The attribute names `conv` and `bn` are the ones torchvision's BasicConv2d and timm's
    ConvNormAct use, so their checkpoints load unchanged. eps=1e-3 is what all of them were
    trained with (the TF ports).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, eps=1e-3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Concat(nn.Module):
    """Runs its branches on one input and concatenates their outputs along channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.children()], 1)


class TFRangeInput(nn.Module):
    """Maps ImageNet-normalised input to the [-1, 1] range of the TF-ported torchvision weights.

    Written as torchvision writes it, x * (std / 0.5) + (mean - 0.5) / 0.5, so that results match bit for bit. The
    constants are buffers (not in the state dict, so checkpoints load unchanged): they move with the model to its
    device and dtype once, instead of two host-to-device copies on every forward.
    """

    def __init__(self):
        super().__init__()
        scale = torch.tensor([0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5]).view(1, 3, 1, 1)
        shift = torch.tensor([(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5]).view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift
