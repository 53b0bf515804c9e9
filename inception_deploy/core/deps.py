"""Optional heavy dependencies, imported on use, with a one-line fix when one is missing."""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from .errors import BackendMissing
from .interrupts import deferred_interrupt

log = logging.getLogger(__name__)

INSTALL_HINTS = {
    "onnxruntime": "pip install onnxruntime-gpu (Linux x86-64) or onnxruntime (elsewhere)",
    "onnxsim": "pip install onnxsim, or export with --no-simplify",
    "onnxscript": "pip install onnxscript (torch.onnx's exporter needs it)",
    "tritonclient.grpc.model_config_pb2": "pip install 'inception-deploy[triton]' (tritonclient[grpc])",
    "tritonclient.http": "pip install 'inception-deploy[triton]' (tritonclient[http])",
    "pytriton.triton": "pip install 'inception-deploy[triton]' (nvidia-pytriton)",
}


def require(module: str) -> ModuleType:
    """`module`, imported; a missing one is a one-line BackendMissing. Ctrl-C during the import is noted and
    raised once it ends: onnxruntime's native import swallows a KeyboardInterrupt raised inside it."""
    try:
        with deferred_interrupt():
            return importlib.import_module(module)
    except ImportError as err:
        if _interrupted(err):  # Ctrl-C inside the import, which a library turned into an ImportError
            raise KeyboardInterrupt from None
        hint = INSTALL_HINTS.get(module, f"pip install {module}")
        raise BackendMissing(f"{module} is not available ({err}): {hint}") from None


def _interrupted(err: BaseException) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def pyplot() -> ModuleType:
    """matplotlib's pyplot, drawing to files only (no display needed)."""
    require("matplotlib").use("Agg")
    import matplotlib.pyplot as plt

    return plt


class _LazyModule(ModuleType):
    def __getattr__(self, attr: str):
        module = require(self.__name__)
        return getattr(module, attr)


def lazy_import(name: str) -> ModuleType:
    """`onnx = lazy_import("onnx")`: a module imported on first use, as Polygraphy's mod.lazy_import does, so that
    `inception-deploy --help` does not load the heavy libraries; a missing one is a one-line BackendMissing."""
    return _LazyModule(name)
