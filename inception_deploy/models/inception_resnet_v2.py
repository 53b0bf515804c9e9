"""Inception-ResNet-v2 (Szegedy et al., 2016), with timm's inception_resnet_v2 layout."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Concat, ConvBNReLU
from .spec import INCEPTION_MEAN, INCEPTION_STD, CheckpointLayout, ModelSpec, Preprocessing

log = logging.getLogger(__name__)

SPEC = ModelSpec(
    name="inception_resnet_v2",
    aliases=("irv2",),
    title="Inception-ResNet-v2",
    input_size=(3, 299, 299),
    # timm: crop_pct 0.8975 -> resize floor(299 / 0.8975) = 333
    preprocessing=Preprocessing(333, 299, "bicubic", INCEPTION_MEAN, INCEPTION_STD),
    layout=CheckpointLayout(source="timm inception_resnet_v2", classifier="classif"),
    params=55_843_464,
    params_with_aux=None,
    gmacs=13.16,
)


class Mixed5b(Concat):
    def __init__(self):
        super().__init__()
        self.branch0 = ConvBNReLU(192, 96, 1)
        self.branch1 = nn.Sequential(ConvBNReLU(192, 48, 1), ConvBNReLU(48, 64, 5, padding=2))
        self.branch2 = nn.Sequential(
            ConvBNReLU(192, 64, 1), ConvBNReLU(64, 96, 3, padding=1), ConvBNReLU(96, 96, 3, padding=1)
        )
        self.branch3 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), ConvBNReLU(192, 64, 1)
        )


class Residual(nn.Module):
    """x + scale * conv2d(concat(branch0, branch1, ...)), then ReLU unless it is the last block.

    Subclasses set their branches as attributes named branch0, branch1, ... (timm's key names).
    """

    def __init__(self, mixed: int, channels: int, scale: float, relu: bool = True):
        super().__init__()
        self.scale = scale
        self.relu = relu
        self.conv2d = nn.Conv2d(mixed, channels, 1)

    def forward(self, x):
        branches = [m(x) for name, m in self.named_children() if name.startswith("branch")]
        out = self.conv2d(torch.cat(branches, 1)) * self.scale + x
        return F.relu(out) if self.relu else out


class Block35(Residual):
    def __init__(self, scale: float = 0.17):
        super().__init__(128, 320, scale)
        self.branch0 = ConvBNReLU(320, 32, 1)
        self.branch1 = nn.Sequential(ConvBNReLU(320, 32, 1), ConvBNReLU(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(
            ConvBNReLU(320, 32, 1), ConvBNReLU(32, 48, 3, padding=1), ConvBNReLU(48, 64, 3, padding=1)
        )


class Block17(Residual):
    def __init__(self, scale: float = 0.10):
        super().__init__(384, 1088, scale)
        self.branch0 = ConvBNReLU(1088, 192, 1)
        self.branch1 = nn.Sequential(
            ConvBNReLU(1088, 128, 1),
            ConvBNReLU(128, 160, (1, 7), padding=(0, 3)),
            ConvBNReLU(160, 192, (7, 1), padding=(3, 0)),
        )


class Block8(Residual):
    def __init__(self, scale: float = 0.20, relu: bool = True):
        super().__init__(448, 2080, scale, relu)
        self.branch0 = ConvBNReLU(2080, 192, 1)
        self.branch1 = nn.Sequential(
            ConvBNReLU(2080, 192, 1),
            ConvBNReLU(192, 224, (1, 3), padding=(0, 1)),
            ConvBNReLU(224, 256, (3, 1), padding=(1, 0)),
        )


class Mixed6a(Concat):
    def __init__(self):
        super().__init__()
        self.branch0 = ConvBNReLU(320, 384, 3, stride=2)
        self.branch1 = nn.Sequential(
            ConvBNReLU(320, 256, 1), ConvBNReLU(256, 256, 3, padding=1), ConvBNReLU(256, 384, 3, stride=2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)


class Mixed7a(Concat):
    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(ConvBNReLU(1088, 256, 1), ConvBNReLU(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(ConvBNReLU(1088, 256, 1), ConvBNReLU(256, 288, 3, stride=2))
        self.branch2 = nn.Sequential(
            ConvBNReLU(1088, 256, 1), ConvBNReLU(256, 288, 3, padding=1), ConvBNReLU(288, 320, 3, stride=2)
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)


class InceptionResNetV2(nn.Module):
    spec = SPEC

    def __init__(self, *, num_classes: int = 1000, aux_logits: bool = False):
        super().__init__()
        if aux_logits:
            raise ValueError("inception_resnet_v2 has no auxiliary head")
        self.conv2d_1a = ConvBNReLU(3, 32, 3, stride=2)
        self.conv2d_2a = ConvBNReLU(32, 32, 3)
        self.conv2d_2b = ConvBNReLU(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = ConvBNReLU(64, 80, 1)
        self.conv2d_4a = ConvBNReLU(80, 192, 3)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)
        self.mixed_5b = Mixed5b()
        self.repeat = nn.Sequential(*[Block35() for _ in range(10)])
        self.mixed_6a = Mixed6a()
        self.repeat_1 = nn.Sequential(*[Block17() for _ in range(20)])
        self.mixed_7a = Mixed7a()
        self.repeat_2 = nn.Sequential(*[Block8() for _ in range(9)])
        self.block8 = Block8(scale=1.0, relu=False)
        self.conv2d_7b = ConvBNReLU(2080, 1536, 1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classif = nn.Linear(1536, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
        x = self.maxpool_5a(self.conv2d_4a(self.conv2d_3b(self.maxpool_3a(x))))
        x = self.mixed_6a(self.repeat(self.mixed_5b(x)))
        x = self.mixed_7a(self.repeat_1(x))
        x = self.conv2d_7b(self.block8(self.repeat_2(x)))
        return self.classif(torch.flatten(self.global_pool(x), 1))
