"""The candidates `optimize` weighs: backend x precision (or form) for a device, as data, in order of promise.

The order of promise is where the time budget goes first: the forms that usually win on that device (measured on this
project's hosts: ONNX Runtime's CPU int8 form ran 2.3-3.1x fp32 on the 2-core host; engines lead on a GPU). The order
of simplicity breaks ties: the simpler runtime first (ONNX Runtime, then TensorRT, then the PyTorch model, which
Triton does not serve from this tool), and within one, fp32 before fp16 before int8.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..bench.sweep import not_here
from ..core.artifacts import QUANTIZED
from ..runners import BACKENDS, runner_class

log = logging.getLogger(__name__)

PROMISE = {
    "cpu": (("onnxruntime", "int8-cpu"), ("onnxruntime", "fp32"), ("torch", "fp32"), ("onnxruntime", "int8"),
            ("torch-compile", "fp32"), ("onnxruntime", "fp16")),
    "cuda": (("tensorrt", "int8"), ("tensorrt", "fp16"), ("tensorrt-rtx", "int8"), ("tensorrt-rtx", "fp16"),
             ("onnxruntime-cuda", "fp16"), ("torch-compile-cuda", "fp16"), ("torch-cuda", "fp16"),
             ("onnxruntime-cuda", "fp32"), ("onnxruntime-cuda", "int8")),
}
SIMPLER_RUNTIMES = ("onnxruntime", "onnxruntime-cuda", "tensorrt", "tensorrt-rtx", "torch", "torch-cuda",
                    "torch-compile", "torch-compile-cuda")
SIMPLER_PRECISIONS = ("fp32", "fp16", "int8-cpu", "int8")
# What Triton serves from this tool's artifacts (`inception-deploy triton`): backend -> (--runtime, --device).
SERVED_BY_TRITON = {"onnxruntime": ("onnxruntime", "cpu"), "onnxruntime-cuda": ("onnxruntime", "cuda"),
                    "tensorrt": ("tensorrt", "cuda")}


@dataclass(frozen=True)
class Candidate:
    backend: str
    precision: str

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}"

    @property
    def row(self) -> str:
        """As a bench suite names a row: BACKEND:PRECISION."""
        return f"{self.backend}:{self.precision}"

    @property
    def quantized(self) -> bool:
        return self.precision in QUANTIZED

    @property
    def compiled(self) -> bool:
        """Its runner compiles the PyTorch model at each activation (torch.compile)."""
        return BACKENDS[self.backend].compile is not None

    @property
    def engine(self) -> str | None:
        """The compiler whose engine it runs, if any."""
        engine = BACKENDS[self.backend].engine
        return engine if engine in ("tensorrt", "tensorrt-rtx") else None

    @property
    def simplicity(self) -> tuple[int, int]:
        return SIMPLER_RUNTIMES.index(self.backend), SIMPLER_PRECISIONS.index(self.precision)

    @property
    def served(self) -> tuple[str, str] | None:
        """(--runtime, --device) of the Triton repository that serves it; None where Triton cannot."""
        return SERVED_BY_TRITON.get(self.backend)

    def settings(self) -> int:
        """How many runner settings the bench measures for it (each a session per round)."""
        backend = BACKENDS[self.backend]
        return len(runner_class(backend).candidates(backend, self.precision))

    def to_dict(self) -> dict:
        return {"backend": self.backend, "precision": self.precision, "device": BACKENDS[self.backend].device}


def candidates(device: str) -> list[tuple[Candidate, str | None]]:
    """Every candidate for `device`, in order of promise, each with why it cannot run here (None where it can)."""
    return [(Candidate(b, p), not_here(BACKENDS[b], p)) for b, p in PROMISE[device]]
