"""Backends behind one Runner interface, in one table. Each runner module is imported only when asked for.

A new backend is one entry in BACKENDS and its runner module: open_runner, runner_class and the lazy
`inception_deploy.runners.<RunnerClass>` attributes all come from the table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..core.artifacts import QUANTIZED
from ..core.errors import InputError
from .base import Runner, TensorInfo


@dataclass(frozen=True)
class Backend:
    name: str
    engine: str  # the library: "torch", "onnxruntime", "tensorrt", "tensorrt-rtx"
    device: str  # for onnxruntime: the execution provider's short name
    runs: str  # what it runs: "model" (the zoo model), or an artifact kind: "onnx", "tensorrt-engine", …
    runner: str  # "module:Class" in this package: the Runner that runs it
    compile: str | None = None  # for torch: the torch.compile backend, None for eager


BACKENDS = {
    b.name: b
    for b in (
        Backend("torch", "torch", "cpu", "model", "torch_runner:TorchRunner"),
        Backend("torch-cuda", "torch", "cuda", "model", "torch_runner:TorchRunner"),
        Backend("torch-compile", "torch", "cpu", "model", "torch_runner:TorchRunner", compile="inductor"),
        Backend("torch-compile-cuda", "torch", "cuda", "model", "torch_runner:TorchRunner", compile="inductor"),
        Backend("onnxruntime", "onnxruntime", "cpu", "onnx", "onnxruntime_runner:OnnxRuntimeRunner"),
        Backend("onnxruntime-cuda", "onnxruntime", "cuda", "onnx", "onnxruntime_runner:OnnxRuntimeRunner"),
        Backend("onnxruntime-trt", "onnxruntime", "tensorrt", "onnx", "onnxruntime_runner:OnnxRuntimeRunner"),
        Backend("tensorrt", "tensorrt", "cuda", "tensorrt-engine", "tensorrt_runner:TensorRTRunner"),
        Backend("tensorrt-rtx", "tensorrt-rtx", "cuda", "tensorrt-rtx-engine", "tensorrt_runner:TensorRTRTXRunner"),
    )
}
# Every runner class by name, for `from inception_deploy.runners import OnnxRuntimeRunner`.
_RUNNERS = {b.runner.split(":")[1]: b.runner for b in BACKENDS.values()}


def parse_backends(text: str | list[str]) -> list[Backend]:
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise InputError(f"unknown backend '{', '.join(unknown) or text}': choose from {', '.join(BACKENDS)}")
    return [BACKENDS[n] for n in dict.fromkeys(names)]


def unsupported(backend: Backend, precision: str) -> str | None:
    """Why `backend` cannot run an artifact of `precision`, or None: torch runs no Q/DQ model, and ONNX Runtime's CPU
    int8 form (int8-cpu) is made for its CPU provider's integer kernels alone."""
    if backend.runs == "model" and precision in QUANTIZED:
        return f"torch runs no {precision}: it is checked through its Q/DQ ONNX"
    if precision == "int8-cpu" and (backend.engine, backend.device) != ("onnxruntime", "cpu"):
        return ("int8-cpu is ONNX Runtime's CPU form (uint8 activations, int32 biases, integer CPU kernels): only "
                "ONNX Runtime's CPU provider (backend onnxruntime) runs it; TensorRT and the CUDA provider take int8")
    return None


def check_each_runs(rows: list[tuple], wanted: list[str] | None, reference: str) -> None:
    """InputError (exit 2, before any work) when a precision asked for by name runs on none of the backends asked
    for. rows: (backend, target, precision), a str target being why that backend skips that precision."""
    for precision in wanted or []:
        mine = [(backend, target) for backend, target, p in rows if p == precision]
        if mine and all(isinstance(target, str) for _, target in mine):
            reasons = dict.fromkeys(f"{backend.name}: {target}" for backend, target in mine)
            raise InputError(f"nothing to compare with the reference ({reference}) in {precision}: "
                             f"{'; '.join(reasons)}")


def _load(path: str) -> type[Runner]:
    module, name = path.split(":")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def runner_class(backend: Backend) -> type[Runner]:
    """The Runner class of `backend`, imported now (its library loads with it)."""
    return _load(backend.runner)


def open_runner(backend: Backend, *, model=None, artifact=None, precision: str = "fp32", **settings) -> Runner:
    """A runner for `backend`, not yet activated: the zoo `model` for torch, an ONNX/engine `artifact` path for
    the others; `settings` are the runner's own keywords (one of its candidates()).

    Raises BackendMissing (exit 3) when the backend or its device is not available here.
    """
    return runner_class(backend).for_backend(backend, model=model, artifact=artifact, precision=precision, **settings)


def __getattr__(name: str):
    # The concrete runners import their backends: load them only when named.
    if name in _RUNNERS:
        return _load(_RUNNERS[name])
    raise AttributeError(name)


__all__ = ["BACKENDS", "Backend", "Runner", "TensorInfo", "check_each_runs", "open_runner", "parse_backends",
           "runner_class", "unsupported", *_RUNNERS]
