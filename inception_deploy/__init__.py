"""inception-deploy: the Inception family from PyTorch to verified, deployable artifacts.

The flow, one subpackage per stage: models → export → compile → runners → parity / bench → serving; the CLI
(`cli/`) parses options and makes one call into them. `core/` holds what every stage shares.
"""

from .core.errors import BackendMissing, CheckFailed, InceptionDeployError, InputError
from .core.version import __version__
from .export import export_onnx
from .models import ModelSpec, Preprocessing, create_model, get_spec, list_models, resolve_name
from .parity import check_parity

__all__ = [
    "BackendMissing", "CheckFailed", "InceptionDeployError", "InputError", "ModelSpec", "Preprocessing",
    "check_parity", "create_model", "export_onnx", "get_spec", "list_models", "resolve_name", "__version__",
]
