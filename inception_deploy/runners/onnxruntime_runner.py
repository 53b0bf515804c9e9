"""Any ONNX artifact in ONNX Runtime, on the CPU, CUDA or TensorRT execution provider."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx

from ..deps import require
from ..errors import BackendMissing, InputError, first_line
from .base import Runner, TensorInfo

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, model: str | Path | onnx.ModelProto, *, device: str = "cpu", precision: str | None = None,
                 threads: int | None = None, provider_options: dict | None = None):
        ort = require("onnxruntime")
        if device not in PROVIDERS:
            raise InputError(f"onnxruntime device must be one of {', '.join(PROVIDERS)}, not {device}")
        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise BackendMissing(f"this onnxruntime has no {provider}: pip install onnxruntime-gpu, on a machine with an NVIDIA GPU")
        self.device = device
        self.precision = precision or "fp32"
        self.source = str(model) if not isinstance(model, onnx.ModelProto) else "<in memory>"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.provider_options = dict(provider_options or {})
        first = (provider, self.provider_options) if self.provider_options else provider
        providers = [first] if device == "cpu" else [first, "CPUExecutionProvider"]
        if device == "tensorrt":
            providers.insert(1, "CUDAExecutionProvider")
        payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
        with _native_stderr_captured() as native_log:
            if device != "cpu" and hasattr(ort, "preload_dlls"):
                with contextlib.suppress(Exception):
                    ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, where torch has not loaded them
            try:
                self.session = ort.InferenceSession(payload, sess_options=options, providers=providers)
            except Exception as err:
                raise InputError(f"ONNX Runtime cannot load {self.source}: {first_line(err)}") from None
        # ORT falls back to the CPU silently when a GPU provider fails to start: a "CUDA" figure measured on
        # the CPU would be the worst bug a parity or benchmark tool can have, so refuse instead.
        if self.session.get_providers()[0] != provider:
            reason = _last_line(native_log())
            raise BackendMissing(
                f"ONNX Runtime could not start {provider} here ({reason or 'no usable GPU'}): "
                "run on a machine with an NVIDIA GPU and the CUDA/cuDNN libraries onnxruntime-gpu needs"
            )
        self._inputs = [_info(i) for i in self.session.get_inputs()]
        self._outputs = [_info(o) for o in self.session.get_outputs()]

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._outputs]
        if self.device == "cpu":
            return dict(zip(names, self.session.run(names, feed)))
        # On a GPU: bind inputs once and keep outputs on the device until the run is over.
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        for name in names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu()))

    def prepare(self, feed):
        arrays = self._host_arrays(feed)
        if self.device == "cpu":
            return arrays
        # Inputs copied to the device once, outputs pre-allocated there: fixed addresses, as CUDA graphs need.
        ort = require("onnxruntime")
        binding = self.session.io_binding()
        keep = []
        for name, array in arrays.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
            binding.bind_ortvalue_input(name, value)
            keep.append(value)
        batch = next(iter(arrays.values())).shape[0]
        for info in self._outputs:
            shape = [batch if isinstance(d, str) else d for d in info.shape]  # the symbolic dim is the batch
            value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.dtype(info.dtype), "cuda", 0)
            binding.bind_ortvalue_output(info.name, value)
            keep.append(value)
        return binding, keep

    def run_prepared(self, prepared) -> None:
        if self.device == "cpu":
            self.session.run(None, prepared)
        else:
            self.session.run_with_iobinding(prepared[0])

    def describe(self) -> str:
        return f"onnxruntime ({self.device}, {self.precision})"

    def close(self) -> None:
        self.session = None


def _info(node) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else (d or "?") for d in node.shape)
    return TensorInfo(node.name, shape, ORT_DTYPES.get(node.type, node.type))


def _last_line(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # ORT colours its log lines
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


@contextlib.contextmanager
def _native_stderr_captured():
    """Capture what native libraries print on fd 2 (ORT's provider loader does), for our own message."""
    captured = tempfile.TemporaryFile(mode="w+b")
    saved = os.dup(2)
    os.dup2(captured.fileno(), 2)

    def text() -> str:
        captured.seek(0)
        return captured.read().decode(errors="replace")

    try:
        yield text
    finally:
        os.dup2(saved, 2)
        os.close(saved)
