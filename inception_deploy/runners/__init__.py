"""Backends behind one Runner interface. Each is imported only when asked for."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .base import Runner, TensorInfo


@dataclass(frozen=True)
class Backend:
    name: str
    engine: str  # the library: "torch", "onnxruntime", "tensorrt", "tensorrt-rtx"
    device: str  # for onnxruntime: the execution provider's short name
    runs: str  # what it runs: "model" (the zoo model), or an artifact kind: "onnx", "tensorrt-engine", …
    compile: str | None = None  # for torch: the torch.compile backend, None for eager


BACKENDS = {
    b.name: b
    for b in (
        Backend("torch", "torch", "cpu", "model"),
        Backend("torch-cuda", "torch", "cuda", "model"),
        Backend("torch-compile", "torch", "cpu", "model", compile="inductor"),
        Backend("torch-compile-cuda", "torch", "cuda", "model", compile="inductor"),
        Backend("onnxruntime", "onnxruntime", "cpu", "onnx"),
        Backend("onnxruntime-cuda", "onnxruntime", "cuda", "onnx"),
        Backend("onnxruntime-trt", "onnxruntime", "tensorrt", "onnx"),
        Backend("tensorrt", "tensorrt", "cuda", "tensorrt-engine"),
        Backend("tensorrt-rtx", "tensorrt-rtx", "cuda", "tensorrt-rtx-engine"),
    )
}


def parse_backends(text: str | list[str]) -> list[Backend]:
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise InputError(f"unknown backend '{', '.join(unknown) or text}': choose from {', '.join(BACKENDS)}")
    return [BACKENDS[n] for n in dict.fromkeys(names)]


def runner_class(backend: Backend) -> type[Runner]:
    """The Runner class of `backend`, imported now (its library loads with it)."""
    if backend.engine == "torch":
        from .torch_runner import TorchRunner

        return TorchRunner
    if backend.engine == "onnxruntime":
        from .onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner
    from .tensorrt_runner import TensorRTRTXRunner, TensorRTRunner

    return TensorRTRTXRunner if backend.engine == "tensorrt-rtx" else TensorRTRunner


def open_runner(backend: Backend, *, model=None, artifact=None, precision: str = "fp32", **settings) -> Runner:
    """A runner for `backend`, not yet activated: the zoo `model` for torch, an ONNX/engine `artifact` path for
    the others; `settings` are the runner's own keywords (one of its candidates()).

    Raises BackendMissing (exit 3) when the backend or its device is not available here.
    """
    cls = runner_class(backend)
    if backend.engine == "torch":
        return cls(model, device=backend.device, precision=precision, compile=backend.compile, **settings)
    if backend.engine == "onnxruntime":
        return cls(artifact, device=backend.device, precision=precision, **settings)
    return cls(artifact, precision=precision, **settings)


def __getattr__(name: str):
    # The concrete runners import their backends: load them only when named.
    if name == "OnnxRuntimeRunner":
        from .onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner
    if name in ("TensorRTRunner", "TensorRTRTXRunner"):
        from . import tensorrt_runner

        return getattr(tensorrt_runner, name)
    if name == "TorchRunner":
        from .torch_runner import TorchRunner

        return TorchRunner
    raise AttributeError(name)


__all__ = ["BACKENDS", "Backend", "OnnxRuntimeRunner", "Runner", "TensorInfo", "TensorRTRTXRunner", "TensorRTRunner", "TorchRunner", "open_runner", "parse_backends", "runner_class"]
