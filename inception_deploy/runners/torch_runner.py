"""The zoo model itself, on CPU or CUDA, in fp32 or fp16, eager or through torch.compile."""

from __future__ import annotations

import copy
import importlib
import logging

import numpy as np
import torch
from torch import nn

from ..core.errors import BackendMissing, InputError
from ..core.logs import quiet_library
from .base import CudaEventTimer, MeasurementInvalid, Runner, TensorInfo

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class TorchRunner(Runner):
    backend = "torch"
    devices = ("cpu", "cuda")

    def __init__(self, model: nn.Module, *, device: str = "cpu", precision: str = "fp32", channels_last: bool = False,
                 compile: str | None = None, tf32: bool = False):
        """compile: a torch.compile backend ("inductor"), or None for eager. tf32: let fp32 convolutions and
        matmuls use TF32 on the GPU (off by default: fp32 means fp32); it does not apply to fp16, whose rows leave
        torch's TF32 switches as they are."""
        if precision not in DTYPES:
            raise InputError(f"torch runs fp32 or fp16, not {precision}")
        if device not in ("cpu", "cuda"):
            raise InputError(f"torch device must be cpu or cuda, not {device}")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendMissing(
                "torch has no CUDA device here: run on a machine with an NVIDIA GPU and a CUDA build of torch"
            )
        self.source_model, self.device, self.precision = model, device, precision
        self.channels_last, self.compile = channels_last, compile
        self.tf32 = (tf32 and device == "cuda") if precision == "fp32" else None  # None: TF32 does not apply
        if compile:
            self.backend = "torch-compile"
        spec = model.spec
        self._inputs = [TensorInfo("input", ("batch", *spec.input_size), "float32")]
        num_classes = model.state_dict()[f"{spec.layout.classifier}.weight"].shape[0]
        self._outputs = [TensorInfo("logits", ("batch", int(num_classes)), "float32")]
        self.model = None

    @classmethod
    def for_backend(cls, backend, *, model=None, artifact=None, precision: str = "fp32", **settings) -> "TorchRunner":
        return cls(model, device=backend.device, precision=precision, compile=backend.compile, **settings)

    @classmethod
    def candidates(cls, backend, precision: str) -> list[dict]:
        # Eager: both memory layouts, in every precision (on the H200, contiguous fp32 beat channels_last at batch 1
        # and 32, and fp16 measured channels_last alone came out slower than fp32). torch.compile fp16 takes
        # channels_last alone, the layout Inductor's fp16 convolutions want: each candidate is a compilation.
        if backend.compile and precision == "fp16":
            return [{"channels_last": True}]
        return [{"channels_last": False}, {"channels_last": True}]

    def settings(self) -> dict:
        # The timed region is fed the input already in the model's dtype (prepare casts it beforehand).
        settings = {"channels_last": self.channels_last, "threads": torch.get_num_threads(),
                    "input_dtype": str(DTYPES[self.precision]).removeprefix("torch.")}
        if self.compile:
            settings.update(compile=self.compile, mode=self._compile_mode(), fullgraph=True)
        if self.device == "cuda":
            settings.update(tf32=self.tf32 if self.tf32 is not None else f"not applicable ({self.precision})",
                            cudnn_benchmark=True)
        return settings

    def _compile_mode(self) -> str:
        # CUDA graphs ("reduce-overhead") remove launch overhead for the fixed shapes a benchmark uses.
        return "reduce-overhead" if self.device == "cuda" else "default"

    def _activate(self) -> None:
        dtype = DTYPES[self.precision]
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        if self.device == "cuda":
            self._saved_flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                                 torch.backends.cudnn.benchmark)
            if self.tf32 is not None:  # fp32 only
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms
        # A copy: converting to half or moving to the GPU must not change the caller's model.
        model = (
            copy.deepcopy(self.source_model)
            .to(device=self.device, dtype=dtype, memory_format=self.memory_format)
            .eval()
        )
        if self.compile:
            # Dynamo keeps one cache per forward() and runs eager code, silently, once it has compiled
            # recompile_limit (8) variants. Every runner starts from an empty cache, and fullgraph=True turns
            # a graph break into an error instead of an eager fallback.
            from torch._dynamo.utils import counters

            with quiet_library("torch.utils.cpp_extension"):  # inductor imports it; on a host without a CUDA
                importlib.import_module("torch.utils.cpp_extension")  # runtime it warns of CUDA_HOME, at import

            torch._dynamo.reset()
            self._graphs_before = counters["stats"]["unique_graphs"]
            self._cudagraph_skips_before = counters["inductor"]["cudagraph_skips"]
            model = torch.compile(
                model,
                backend=self.compile,
                mode=None if self.compile != "inductor" else self._compile_mode(),
                fullgraph=True,
                dynamic=False,
            )
        self.model = model

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            y = self.model(self.prepare(feed))
        return {"logits": y.float().cpu().numpy()}

    def prepare(self, feed) -> torch.Tensor:
        self.activate()
        x = feed["input"]
        x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return x.to(self.device, DTYPES[self.precision]).contiguous(memory_format=self.memory_format)

    def run_prepared(self, prepared: torch.Tensor) -> None:
        with torch.inference_mode():
            self.model(prepared)

    def fetch(self, prepared: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {"logits": self.model(prepared).float().cpu().numpy()}

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def device_timer(self):
        return CudaEventTimer(torch.cuda.current_stream()) if self.device == "cuda" else None

    def audit(self) -> dict:
        if not self.compile:
            return {}
        from torch._dynamo.utils import counters

        graphs = counters["stats"]["unique_graphs"] - self._graphs_before
        if graphs == 0:
            raise MeasurementInvalid("torch.compile compiled no graph: this ran eager code, not compiled code")
        facts = {"compiled_graphs": graphs, "recompiles": graphs - 1}
        warnings = [f"torch.compile recompiled {graphs - 1} time(s) for one input shape"] if graphs > 1 else []
        if self._compile_mode() == "reduce-overhead":
            skips = counters["inductor"]["cudagraph_skips"] - self._cudagraph_skips_before
            facts["cudagraph_skips"] = skips
            if skips:
                warnings.append("Inductor skipped CUDA graphs: this ran without them despite mode=reduce-overhead")
        if warnings:
            facts["warnings"] = warnings
        return facts

    def close(self) -> None:
        self.model = None
        if self._active and self.compile:
            torch._dynamo.reset()  # nothing compiled here carries over to the next runner
        if self._active and self.device == "cuda":
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark) = self._saved_flags
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        super().close()
