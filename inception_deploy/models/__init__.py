"""The zoo: one module per family (each with its frozen spec), the registry, building and loading."""

from .build import build_model, count_parameters
from .load import create_model, deployable_model
from .registry import get_spec, list_models, resolve_name
from .spec import ModelSpec, Preprocessing

__all__ = ["ModelSpec", "Preprocessing", "build_model", "count_parameters", "create_model", "deployable_model",
           "get_spec", "list_models", "resolve_name"]
