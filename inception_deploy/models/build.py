"""Building a variant of the zoo: an untrained model of the right shape, in eval mode."""

from __future__ import annotations

import inspect
import logging

from torch import nn

from ..core.errors import InputError
from .registry import model_class
from .spec import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_NUM_CLASSES = 1000
DEFAULT_INIT_SEED = 0


def check_num_classes(num_classes: int | None) -> None:
    if num_classes is not None and num_classes < 1:
        raise InputError(f"--num-classes must be at least 1, got {num_classes}")


def build_model(name: str, *, num_classes: int = DEFAULT_NUM_CLASSES, aux_logits: bool = False,
                transform_input: bool | None = None) -> nn.Module:
    """An untrained model of the variant (random init), in eval mode."""
    cls = model_class(name)
    spec: ModelSpec = cls.spec
    check_num_classes(num_classes)
    if aux_logits and not spec.has_aux:
        raise InputError(f"{spec.name} has no auxiliary head: drop aux_logits")
    kwargs = {"num_classes": num_classes, "aux_logits": aux_logits}
    if "transform_input" in inspect.signature(cls).parameters:
        kwargs["transform_input"] = spec.transform_input if transform_input is None else transform_input
    elif transform_input:
        raise InputError(f"{spec.name} has no transform_input: its weights take normalised input directly")
    return cls(**kwargs).eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
