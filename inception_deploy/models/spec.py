"""The frozen description that travels with every model of the zoo."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Preprocessing:
    """How the public weights expect an image: resize the shorter side, centre-crop, normalise."""

    resize: int
    crop: int
    interpolation: str  # "bilinear" or "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class CheckpointLayout:
    """The state-dict layout a variant loads unchanged, and where its heads live."""

    source: str  # whose checkpoints these are, in words
    classifier: str  # prefix of the final Linear, e.g. "fc"
    aux_prefixes: tuple[str, ...] = ()  # prefixes of the auxiliary heads' keys
    aux_classifiers: tuple[str, ...] = ()  # prefixes of the aux heads' final Linear


@dataclass(frozen=True)
class ModelSpec:
    name: str
    aliases: tuple[str, ...]
    title: str
    input_size: tuple[int, int, int]  # C, H, W
    preprocessing: Preprocessing
    layout: CheckpointLayout
    params: int  # eval graph, 1000 classes
    params_with_aux: int | None  # None: the variant has no aux head
    gmacs: float  # multiply-accumulates per image, eval graph, in billions
    # torchvision's ports of the TF weights re-normalise ImageNet-normalised input to [-1, 1]
    # inside the model; checkpoints of those families expect it, so it is the default.
    transform_input: bool = False

    @property
    def has_aux(self) -> bool:
        return self.params_with_aux is not None

    def to_dict(self) -> dict:
        """Plain JSON types (tuples become lists), as the spec appears in manifests and reports."""
        return json.loads(json.dumps(asdict(self)))
