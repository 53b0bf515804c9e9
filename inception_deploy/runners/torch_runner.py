"""The zoo model itself, on CPU or CUDA, in fp32 or fp16."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..errors import BackendMissing, InputError
from .base import Runner, TensorInfo

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: nn.Module, *, device: str = "cpu", precision: str = "fp32", channels_last: bool = False,
                 compile: bool = False):
        if precision not in DTYPES:
            raise InputError(f"torch runs fp32 or fp16, not {precision}")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendMissing(
                "torch has no CUDA device here: run on a machine with an NVIDIA GPU and a CUDA build of torch"
            )
        if device not in ("cpu", "cuda"):
            raise InputError(f"torch device must be cpu or cuda, not {device}")
        self.device, self.precision = device, precision
        self.dtype = DTYPES[precision]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # A copy: converting to half or moving to the GPU must not change the caller's model.
        self.model = copy.deepcopy(model).to(device=device, dtype=self.dtype, memory_format=self.memory_format).eval()
        if device == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms
        if compile:
            self.backend = "torch-compile"
            # CUDA graphs ("reduce-overhead") remove launch overhead for the fixed shapes a benchmark uses.
            self.model = torch.compile(self.model, mode="reduce-overhead" if device == "cuda" else "default", dynamic=False)
        spec = model.spec
        self._inputs = [TensorInfo("input", ("batch", *spec.input_size), "float32")]
        num_classes = model.state_dict()[f"{spec.layout.classifier}.weight"].shape[0]
        self._outputs = [TensorInfo("logits", ("batch", int(num_classes)), "float32")]

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            y = self.model(self.prepare(feed))
        return {"logits": y.float().cpu().numpy()}

    def prepare(self, feed) -> torch.Tensor:
        x = feed["input"]
        x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return x.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)

    def run_prepared(self, prepared: torch.Tensor) -> None:
        with torch.inference_mode():
            self.model(prepared)

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            torch.cuda.empty_cache()

