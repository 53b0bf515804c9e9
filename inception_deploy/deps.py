"""Optional heavy dependencies, imported on use, with a one-line fix when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import BackendMissing

INSTALL_HINTS = {
    "onnxruntime": "pip install onnxruntime-gpu (Linux x86-64) or onnxruntime (elsewhere)",
    "onnxsim": "pip install onnxsim, or export with --no-simplify",
    "onnxscript": "pip install onnxscript (torch.onnx's exporter needs it)",
    "tritonclient.grpc.model_config_pb2": "pip install 'inception-deploy[triton]' (tritonclient[grpc])",
    "tritonclient.http": "pip install 'inception-deploy[triton]' (tritonclient[http])",
    "pytriton.triton": "pip install 'inception-deploy[triton]' (nvidia-pytriton)",
}


def require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        hint = INSTALL_HINTS.get(module, f"pip install {module}")
        raise BackendMissing(f"{module} is not available ({err}): {hint}") from None


def pyplot() -> ModuleType:
    """matplotlib's pyplot, drawing to files only (no display needed)."""
    require("matplotlib").use("Agg")
    import matplotlib.pyplot as plt

    return plt
