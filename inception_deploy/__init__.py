"""inception-deploy: the Inception family from PyTorch to verified, deployable artifacts."""

from .errors import BackendMissing, CheckFailed, InceptionDeployError, InputError
from .registry import get_spec, list_models, resolve_name
from .spec import ModelSpec, Preprocessing
from .zoo import create_model

__version__ = "0.1.0"


def export_onnx(*args, **kwargs):
    """Export a variant to a verified ONNX artifact; see inception_deploy.export.export_onnx."""
    from .export import export_onnx as _export_onnx  # the exporter stack is heavy: load it on use

    return _export_onnx(*args, **kwargs)


def check_parity(*args, **kwargs):
    """Compare a variant's artifacts with its PyTorch model on every backend; see inception_deploy.parity."""
    from .parity import check_parity as _check_parity

    return _check_parity(*args, **kwargs)


__all__ = [
    "BackendMissing", "CheckFailed", "InceptionDeployError", "InputError", "ModelSpec", "Preprocessing",
    "check_parity", "create_model", "export_onnx", "get_spec", "list_models", "resolve_name", "__version__",
]
