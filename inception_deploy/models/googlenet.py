"""GoogLeNet (Inception v1), with torchvision's layout (including its 3x3 "5x5" branch)."""

from __future__ import annotations

import logging
from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Concat, ConvBNReLU, TFRangeInput
from .spec import IMAGENET_MEAN, IMAGENET_STD, CheckpointLayout, ModelSpec, Preprocessing

log = logging.getLogger(__name__)

SPEC = ModelSpec(
    name="googlenet",
    aliases=("v1",),
    title="GoogLeNet (Inception v1)",
    input_size=(3, 224, 224),
    preprocessing=Preprocessing(256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    layout=CheckpointLayout(
        source="torchvision googlenet",
        classifier="fc",
        aux_prefixes=("aux1.", "aux2."),
        aux_classifiers=("aux1.fc2", "aux2.fc2"),
    ),
    params=6_624_904,
    params_with_aux=13_004_888,
    gmacs=1.50,
    transform_input=True,
)

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])


class Inception(Concat):
    def __init__(self, cin: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int):
        super().__init__()
        self.branch1 = ConvBNReLU(cin, ch1x1, 1)
        self.branch2 = nn.Sequential(ConvBNReLU(cin, ch3x3red, 1), ConvBNReLU(ch3x3red, ch3x3, 3, padding=1))
        # torchvision's layout uses a 3x3 here where the paper has a 5x5; its weights need it.
        self.branch3 = nn.Sequential(ConvBNReLU(cin, ch5x5red, 1), ConvBNReLU(ch5x5red, ch5x5, 3, padding=1))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), ConvBNReLU(cin, pool_proj, 1)
        )


class InceptionAux(nn.Module):
    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, 128, 1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(0.7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))


class GoogLeNet(nn.Module):
    spec = SPEC

    def __init__(self, *, num_classes: int = 1000, aux_logits: bool = False, transform_input: bool = True):
        super().__init__()
        self.transform_input = transform_input
        self.tf_range = TFRangeInput() if transform_input else None
        self.conv1 = ConvBNReLU(3, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBNReLU(64, 64, 1)
        self.conv3 = ConvBNReLU(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor):
        if self.tf_range is not None:
            x = self.tf_range(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if aux1 is not None:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x
