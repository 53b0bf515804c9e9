"""Inception-v4 (Szegedy et al., 2016), with timm's inception_v4 layout."""

from __future__ import annotations

import logging

import torch
from torch import nn

from .blocks import Concat, ConvBNReLU
from .spec import INCEPTION_MEAN, INCEPTION_STD, CheckpointLayout, ModelSpec, Preprocessing

log = logging.getLogger(__name__)

SPEC = ModelSpec(
    name="inception_v4",
    aliases=("v4",),
    title="Inception-v4",
    input_size=(3, 299, 299),
    # timm: crop_pct 0.875 -> resize floor(299 / 0.875) = 341
    preprocessing=Preprocessing(341, 299, "bicubic", INCEPTION_MEAN, INCEPTION_STD),
    layout=CheckpointLayout(source="timm inception_v4", classifier="last_linear"),
    params=42_679_816,
    params_with_aux=None,
    gmacs=12.25,
)


def _avg_pool() -> nn.AvgPool2d:
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class Mixed3a(Concat):
    def __init__(self):
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.conv = ConvBNReLU(64, 96, 3, stride=2)


class Mixed4a(Concat):
    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(ConvBNReLU(160, 64, 1), ConvBNReLU(64, 96, 3))
        self.branch1 = nn.Sequential(
            ConvBNReLU(160, 64, 1),
            ConvBNReLU(64, 64, (1, 7), padding=(0, 3)),
            ConvBNReLU(64, 64, (7, 1), padding=(3, 0)),
            ConvBNReLU(64, 96, 3),
        )


class Mixed5a(Concat):
    def __init__(self):
        super().__init__()
        self.conv = ConvBNReLU(192, 192, 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2)


class InceptionA(Concat):
    def __init__(self):
        super().__init__()
        self.branch0 = ConvBNReLU(384, 96, 1)
        self.branch1 = nn.Sequential(ConvBNReLU(384, 64, 1), ConvBNReLU(64, 96, 3, padding=1))
        self.branch2 = nn.Sequential(
            ConvBNReLU(384, 64, 1), ConvBNReLU(64, 96, 3, padding=1), ConvBNReLU(96, 96, 3, padding=1)
        )
        self.branch3 = nn.Sequential(_avg_pool(), ConvBNReLU(384, 96, 1))


class ReductionA(Concat):
    def __init__(self):
        super().__init__()
        self.branch0 = ConvBNReLU(384, 384, 3, stride=2)
        self.branch1 = nn.Sequential(
            ConvBNReLU(384, 192, 1), ConvBNReLU(192, 224, 3, padding=1), ConvBNReLU(224, 256, 3, stride=2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)


class InceptionB(Concat):
    def __init__(self):
        super().__init__()
        self.branch0 = ConvBNReLU(1024, 384, 1)
        self.branch1 = nn.Sequential(
            ConvBNReLU(1024, 192, 1),
            ConvBNReLU(192, 224, (1, 7), padding=(0, 3)),
            ConvBNReLU(224, 256, (7, 1), padding=(3, 0)),
        )
        self.branch2 = nn.Sequential(
            ConvBNReLU(1024, 192, 1),
            ConvBNReLU(192, 192, (7, 1), padding=(3, 0)),
            ConvBNReLU(192, 224, (1, 7), padding=(0, 3)),
            ConvBNReLU(224, 224, (7, 1), padding=(3, 0)),
            ConvBNReLU(224, 256, (1, 7), padding=(0, 3)),
        )
        self.branch3 = nn.Sequential(_avg_pool(), ConvBNReLU(1024, 128, 1))


class ReductionB(Concat):
    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(ConvBNReLU(1024, 192, 1), ConvBNReLU(192, 192, 3, stride=2))
        self.branch1 = nn.Sequential(
            ConvBNReLU(1024, 256, 1),
            ConvBNReLU(256, 256, (1, 7), padding=(0, 3)),
            ConvBNReLU(256, 320, (7, 1), padding=(3, 0)),
            ConvBNReLU(320, 320, 3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)


class InceptionC(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = ConvBNReLU(1536, 256, 1)
        self.branch1_0 = ConvBNReLU(1536, 384, 1)
        self.branch1_1a = ConvBNReLU(384, 256, (1, 3), padding=(0, 1))
        self.branch1_1b = ConvBNReLU(384, 256, (3, 1), padding=(1, 0))
        self.branch2_0 = ConvBNReLU(1536, 384, 1)
        self.branch2_1 = ConvBNReLU(384, 448, (3, 1), padding=(1, 0))
        self.branch2_2 = ConvBNReLU(448, 512, (1, 3), padding=(0, 1))
        self.branch2_3a = ConvBNReLU(512, 256, (1, 3), padding=(0, 1))
        self.branch2_3b = ConvBNReLU(512, 256, (3, 1), padding=(1, 0))
        self.branch3 = nn.Sequential(_avg_pool(), ConvBNReLU(1536, 256, 1))

    def forward(self, x):
        b1 = self.branch1_0(x)
        b2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat(
            [self.branch0(x), self.branch1_1a(b1), self.branch1_1b(b1), self.branch2_3a(b2), self.branch2_3b(b2),
             self.branch3(x)],
            1,
        )


class InceptionV4(nn.Module):
    spec = SPEC

    def __init__(self, *, num_classes: int = 1000, aux_logits: bool = False):
        super().__init__()
        if aux_logits:
            raise ValueError("inception_v4 has no auxiliary head")
        self.features = nn.Sequential(
            ConvBNReLU(3, 32, 3, stride=2),
            ConvBNReLU(32, 32, 3),
            ConvBNReLU(32, 64, 3, padding=1),
            Mixed3a(),
            Mixed4a(),
            Mixed5a(),
            *[InceptionA() for _ in range(4)],
            ReductionA(),
            *[InceptionB() for _ in range(7)],
            ReductionB(),
            *[InceptionC() for _ in range(3)],
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Linear(1536, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(torch.flatten(self.global_pool(self.features(x)), 1))
