"""inception-deploy: the Inception family from PyTorch to verified, deployable artifacts.

The flow, one subpackage per stage: models → export → compile → runners → parity / bench → serving; the CLI
(`cli/`) parses options and makes one call into them. `core/` holds what every stage shares.

The public names below load on first use (PEP 562), so that importing the package, and starting the command
line, does not import torch before it is needed: Ctrl-C during start-up is then ours to answer (launch.py).
"""

from importlib import import_module

from .core.errors import BackendMissing, CheckFailed, InceptionDeployError, InputError
from .core.version import __version__

_LAZY = {
    "export_onnx": ".export",
    "check_parity": ".parity",
    **{name: ".models" for name in ("ModelSpec", "Preprocessing", "create_model", "get_spec", "list_models",
                                    "resolve_name")},
}

__all__ = [
    "BackendMissing", "CheckFailed", "InceptionDeployError", "InputError", "ModelSpec", "Preprocessing",
    "check_parity", "create_model", "export_onnx", "get_spec", "list_models", "resolve_name", "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
