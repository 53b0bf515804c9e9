"""Inception-v2 of "Rethinking the Inception Architecture" (Szegedy et al., 2016).

Built to the module table of seed 004 (Figure-5/6/7 modules, grid reductions, a BN aux head); the
state-dict layout is that seed's, so its checkpoints load unchanged. No public weights exist.
The seed's classifier ends in a Softmax; here the eval graph returns logits, like the rest of the zoo.
"""

from __future__ import annotations

import logging
from collections import namedtuple

import torch
from torch import nn

from .blocks import Concat, ConvBNReLU
from .spec import IMAGENET_MEAN, IMAGENET_STD, CheckpointLayout, ModelSpec, Preprocessing

log = logging.getLogger(__name__)

SPEC = ModelSpec(
    name="inception_v2",
    aliases=("v2",),
    title="Inception-v2 (Rethinking, Figs. 5-7)",
    input_size=(3, 299, 299),
    preprocessing=Preprocessing(342, 299, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    layout=CheckpointLayout(
        source="this package's InceptionV2 (no public weights: your own fine-tuned checkpoint)",
        classifier="classifier.0",
        aux_prefixes=("aux_classifier.",),
        aux_classifiers=("aux_classifier.classifier.2",),
    ),
    params=18_205_320,
    params_with_aux=22_608_624,
    gmacs=5.94,
)

InceptionV2Outputs = namedtuple("InceptionV2Outputs", ["logits", "aux_logits"])


class ModuleF5(Concat):
    """Figure 5: the 5x5 factorised into two 3x3."""

    def __init__(self, cin: int, c: int = 96):
        super().__init__()
        self.branch1 = nn.Sequential(
            ConvBNReLU(cin, c, 1), ConvBNReLU(c, c, 3, padding=1), ConvBNReLU(c, c, 3, padding=1)
        )
        self.branch2 = nn.Sequential(ConvBNReLU(cin, c, 1), ConvBNReLU(c, c, 3, padding=1))
        self.branch3 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), ConvBNReLU(cin, c, 1))
        self.branch4 = nn.Sequential(ConvBNReLU(cin, c, 1))


def _one_by_n(c_in: int, c_out: int, n: int, vertical: bool) -> ConvBNReLU:
    kernel, pad = ((n, 1), (n // 2, 0)) if vertical else ((1, n), (0, n // 2))
    return ConvBNReLU(c_in, c_out, kernel, padding=pad)


class ModuleF6(Concat):
    """Figure 6: n x n factorised into 1 x n and n x 1 (n = 7)."""

    def __init__(self, cin: int, c: int = 160, n: int = 7):
        super().__init__()
        self.branch1 = nn.Sequential(
            ConvBNReLU(cin, c, 1), *[_one_by_n(c, c, n, vertical=i % 2 == 1) for i in range(4)]
        )
        self.branch2 = nn.Sequential(ConvBNReLU(cin, c, 1), _one_by_n(c, c, n, False), _one_by_n(c, c, n, True))
        self.branch3 = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), ConvBNReLU(cin, c, 1))
        self.branch4 = nn.Sequential(ConvBNReLU(cin, c, 1))


class ModuleF7(nn.Module):
    """Figure 7: expanded filter banks, each 3x3 split into parallel 1x3 and 3x1."""

    def __init__(self, cin: int, out: tuple[int, int, int, int, int, int]):
        super().__init__()
        c1, c2 = out[0] // 4, out[2] // 4  # the seed's reduction widths
        self.branch1 = nn.Sequential(ConvBNReLU(cin, c1, 1), ConvBNReLU(c1, c1, 3, padding=1))
        self.subbranch1_1 = nn.Sequential(_one_by_n(c1, out[0], 3, False))
        self.subbranch1_2 = nn.Sequential(_one_by_n(c1, out[1], 3, True))
        self.branch2 = nn.Sequential(ConvBNReLU(cin, c2, 1))
        self.subbranch2_1 = nn.Sequential(_one_by_n(c2, out[2], 3, False))
        self.subbranch2_2 = nn.Sequential(_one_by_n(c2, out[3], 3, True))
        self.branch3 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), ConvBNReLU(cin, out[4], 1))
        self.branch4 = nn.Sequential(ConvBNReLU(cin, out[5], 1))

    def forward(self, x):
        b1, b2 = self.branch1(x), self.branch2(x)
        return torch.cat(
            [self.subbranch1_1(b1), self.subbranch1_2(b1), self.subbranch2_1(b2), self.subbranch2_2(b2),
             self.branch3(x), self.branch4(x)],
            1,
        )


class GridReduction(Concat):
    """Stride-2 conv and stride-2 pool side by side, concatenated."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.branch1 = nn.Sequential(ConvBNReLU(cin, cout, 3, stride=2))
        self.branch2 = nn.Sequential(nn.MaxPool2d(3, stride=2))


class AuxClassifier(nn.Module):
    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((5, 5))
        self.conv = nn.Conv2d(cin, 128, 1)
        self.classifier = nn.Sequential(
            nn.Linear(5 * 5 * 128, 1024), nn.BatchNorm1d(1024), nn.Linear(1024, num_classes)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.conv(self.pool(x)), 1))


class InceptionV2(nn.Module):
    spec = SPEC

    def __init__(self, *, num_classes: int = 1000, aux_logits: bool = False):
        super().__init__()
        self.stem = nn.Sequential(
            ConvBNReLU(3, 32, 3, stride=2),
            ConvBNReLU(32, 32, 3),
            ConvBNReLU(32, 64, 3, padding=1),
            nn.MaxPool2d(3, stride=2),
            ConvBNReLU(64, 80, 3),
            ConvBNReLU(80, 192, 3, stride=2),
            ConvBNReLU(192, 288, 3, padding=1),
        )
        self.inception_module_1 = nn.Sequential(ModuleF5(288), ModuleF5(384), ModuleF5(384))
        self.grid_reduction_1 = GridReduction(384, 384)
        self.aux_classifier = AuxClassifier(768, num_classes) if aux_logits else None
        self.inception_module_2 = nn.Sequential(ModuleF6(768), *[ModuleF6(640) for _ in range(4)])
        self.grid_reduction_2 = GridReduction(640, 640)
        self.inception_module_3 = nn.Sequential(
            ModuleF7(1280, (256, 256, 192, 192, 64, 64)), ModuleF7(1024, (384, 384, 384, 384, 256, 256))
        )
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Linear(2048, num_classes))

    def forward(self, x: torch.Tensor):
        x = self.grid_reduction_1(self.inception_module_1(self.stem(x)))
        aux = self.aux_classifier(x) if self.aux_classifier is not None and self.training else None
        x = self.inception_module_3(self.grid_reduction_2(self.inception_module_2(x)))
        x = self.classifier(torch.flatten(self.avg_pool(x), 1))
        if aux is not None:
            return InceptionV2Outputs(x, aux)
        return x
