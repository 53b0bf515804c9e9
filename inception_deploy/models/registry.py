"""The explicit registry of the zoo: canonical names, aliases, specs and builders."""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Callable

from torch import nn

from ..core.errors import InputError
from . import googlenet, inception_resnet_v2, inception_v2, inception_v3, inception_v4
from .spec import ModelSpec

log = logging.getLogger(__name__)

# name -> model class; each class carries its spec as `cls.spec`.
_MODELS: MappingProxyType[str, Callable[..., nn.Module]] = MappingProxyType(
    {
        module.SPEC.name: cls
        for module, cls in (
            (googlenet, googlenet.GoogLeNet),
            (inception_v2, inception_v2.InceptionV2),
            (inception_v3, inception_v3.InceptionV3),
            (inception_v4, inception_v4.InceptionV4),
            (inception_resnet_v2, inception_resnet_v2.InceptionResNetV2),
        )
    }
)
_ALIASES = MappingProxyType(
    {alias: name for name, cls in _MODELS.items() for alias in (name, *cls.spec.aliases)}
)


def resolve_name(name: str) -> str:
    """Canonical name for a name or alias (case-insensitive, '-' or '_'); InputError if unknown."""
    key = name.strip().lower().replace("-", "_")
    if key not in _ALIASES:
        known = ", ".join(f"{n} ({'/'.join(_MODELS[n].spec.aliases)})" for n in _MODELS)
        raise InputError(f"unknown variant '{name}': choose one of {known}")
    return _ALIASES[key]


def get_spec(name: str) -> ModelSpec:
    return _MODELS[resolve_name(name)].spec


def list_models() -> list[ModelSpec]:
    """Every variant's spec, in the family's historical order."""
    return [cls.spec for cls in _MODELS.values()]


def model_class(name: str) -> Callable[..., nn.Module]:
    return _MODELS[resolve_name(name)]
