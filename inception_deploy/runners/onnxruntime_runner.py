"""Any ONNX artifact in ONNX Runtime, on the CPU, CUDA or TensorRT execution provider."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.deps import lazy_import, require
from ..core.errors import BackendMissing, InputError, first_line
from ..core.manifest import verify_beside
from .base import CudaEventTimer, Runner, TensorInfo

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# What ONNX Runtime's cudnn_conv_algo_search=EXHAUSTIVE is under cuDNN 9 (read in its conv.cc, 1.2x): its convolutions
# go through the cuDNN frontend, which maps EXHAUSTIVE to heuristic mode B and builds the first plan that the
# heuristics rank and that builds. No algorithm is timed (cudnnFind* belongs to its cuDNN 8 path).
CUDA_CONV_SEARCH = "cuDNN frontend heuristic mode B (ONNX Runtime's EXHAUSTIVE under cuDNN 9: ranked, none timed)"
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}
# Every model runs with ONNX Runtime's default graph optimizations, as any other consumer's session would load it
# (Polygraphy, Triton's onnxruntime backend, a plain InferenceSession): what parity measures is what they compute.
# An int8 file the tool writes is made so that those passes compute it right (export/forms.py).


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"
    devices = tuple(PROVIDERS)

    def __init__(self, model: str | Path | onnx.ModelProto, *, device: str = "cpu", precision: str | None = None,
                 threads: int | None = None, provider_options: dict | None = None, tf32: bool = False,
                 cuda_graph: bool = False):
        """tf32: let fp32 convolutions use TF32 on the CUDA provider (off by default: fp32 means fp32). For fp16 and
        int8 models TF32 does not apply and `use_tf32` is left to ONNX Runtime: its cuDNN path reads the option
        whatever the data type, and "0" there can rule out the tensor-core engines of fp16 convolutions.
        cuda_graph: capture one CUDA graph per input shape and replay it."""
        ort = require("onnxruntime")
        if device not in PROVIDERS:
            raise InputError(f"onnxruntime device must be one of {', '.join(PROVIDERS)}, not {device}")
        self.provider = PROVIDERS[device]
        if self.provider not in ort.get_available_providers():
            raise BackendMissing(f"this onnxruntime has no {self.provider}: pip install onnxruntime-gpu, on a machine "
                                 "with an NVIDIA GPU")
        self.ort, self.model_source = ort, model
        self.device = device
        self.precision = precision or "fp32"
        self.source = str(model) if not isinstance(model, onnx.ModelProto) else "<in memory>"
        self.threads = threads
        fp32 = self.precision == "fp32"
        # TF32 applies to fp32 alone. TensorRT's provider has no TF32 switch and enables it by default: say so.
        self.tf32 = ((tf32 and device == "cuda") or device == "tensorrt") if fp32 else None
        self.cuda_graph = cuda_graph and device == "cuda"
        self.provider_options = {}
        if device == "cuda":
            # Memory is measured one way for every backend (Runner.memory): the arena grows by what is asked for,
            # not by the next power of two, so that what it holds is what the model needs.
            self.provider_options["arena_extend_strategy"] = "kSameAsRequested"
            if fp32:
                self.provider_options["use_tf32"] = "1" if self.tf32 else "0"
        if self.cuda_graph:
            self.provider_options["enable_cuda_graph"] = "1"
        self.provider_options.update(provider_options or {})
        self.session = None

    @classmethod
    def for_backend(
        cls, backend, *, model=None, artifact=None, precision: str = "fp32", **settings
    ) -> "OnnxRuntimeRunner":
        return cls(artifact, device=backend.device, precision=precision, **settings)

    @classmethod
    def candidates(cls, backend, precision: str) -> list[dict]:
        if backend.device == "cpu":
            return [{"threads": os.cpu_count()}]
        if backend.device == "tensorrt":
            return [{}]
        # NCHW or NHWC convolutions, whichever measures faster, each replayed as one CUDA graph per shape (on the
        # H200 the graph won every one of its 12 comparisons with plain runs, batch 1 to 256). Each convolution's
        # engine comes from cuDNN's heuristics (CUDA_CONV_SEARCH), in their mode B.
        return [
            {"provider_options": {"prefer_nhwc": str(nhwc), "cudnn_conv_algo_search": "EXHAUSTIVE"}, "cuda_graph": True}
            for nhwc in (0, 1)
        ]

    def settings(self) -> dict:
        settings = {"provider": self.provider, "provider_options": {k: v for k, v in self.provider_options.items()
                                                                    if k != "user_compute_stream"}}
        if self.device == "cpu":
            settings["intra_op_threads"] = self.threads or "onnxruntime default"
        else:
            settings.update(tf32=self.tf32 if self.tf32 is not None else f"not applicable ({self.precision})",
                            cuda_graph=self.cuda_graph)
            if self.provider_options.get("cudnn_conv_algo_search") == "EXHAUSTIVE":
                settings["conv_engine_choice"] = CUDA_CONV_SEARCH
        if hasattr(self, "_inputs"):  # what the timed region is fed: an fp16-IO export takes float16 as it is
            settings["input_dtype"] = self._inputs[0].dtype
        return settings

    def _activate(self) -> None:
        ort = self.ort
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")  # nodes per provider
        if self.threads:
            options.intra_op_num_threads = self.threads
        provider_options = dict(self.provider_options)
        if self.device != "cpu":
            import torch

            # ORT runs on our stream, so that CUDA events recorded on it time ORT's kernels.
            self.stream = torch.cuda.Stream()
            provider_options["user_compute_stream"] = str(self.stream.cuda_stream)
        first = (self.provider, provider_options) if provider_options else self.provider
        providers = [first] if self.device == "cpu" else [first, "CPUExecutionProvider"]
        if self.device == "tensorrt":
            providers.insert(1, "CUDAExecutionProvider")
        if not isinstance(self.model_source, onnx.ModelProto):
            verify_beside(Path(self.model_source))  # the file its export's manifest lists, or nothing runs
        payload = (
            self.model_source.SerializeToString()
            if isinstance(self.model_source, onnx.ModelProto)
            else str(self.model_source)
        )
        with _native_stderr_captured() as native_log:
            if self.device != "cpu" and hasattr(ort, "preload_dlls"):
                with contextlib.suppress(Exception):
                    ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, where torch has not loaded them
            try:
                self.session = ort.InferenceSession(payload, sess_options=options, providers=providers)
            except Exception as err:
                raise InputError(f"ONNX Runtime cannot load {self.source}: {first_line(err)}") from None
        # ORT falls back to the CPU silently when a GPU provider fails to start: a "CUDA" figure measured on
        # the CPU would be the worst bug a parity or benchmark tool can have, so refuse instead.
        if self.session.get_providers()[0] != self.provider:
            reason = _last_line(native_log())
            self.session = None
            raise BackendMissing(
                f"ONNX Runtime could not start {self.provider} here ({reason or 'no usable GPU'}): "
                "run on a machine with an NVIDIA GPU and the CUDA/cuDNN libraries onnxruntime-gpu needs"
            )
        self._inputs = [_info(i) for i in self.session.get_inputs()]
        self._outputs = [_info(o) for o in self.session.get_outputs()]
        self._slots: dict[tuple, _Slot] = {}
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 3

    def nodes_per_provider(self) -> dict[str, int] | None:
        if not hasattr(self.session, "get_provider_graph_assignment_info"):
            return None  # an onnxruntime before 1.24 does not say
        counts: dict[str, int] = {}
        for subgraph in self.session.get_provider_graph_assignment_info():
            counts[subgraph.ep_name] = counts.get(subgraph.ep_name, 0) + len(subgraph.get_nodes())
        return counts

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._outputs]
        if self.device == "cpu":
            return dict(zip(names, self.session.run(names, feed, self._run_options)))
        return self.fetch(self._slot(feed))

    def _slot(self, arrays: dict[str, np.ndarray]) -> "_Slot":
        """Device buffers for one input shape, made once: a CUDA graph replays fixed addresses, so each shape
        gets its own buffers and its own graph (gpu_graph_id); later runs copy new data into them.

        The buffers are torch tensors bound by address: copies into them are ordered on the runner's stream
        (ORT's own copies go through the legacy default stream, which our non-blocking stream does not wait
        for), and they return to torch's allocator, not ORT's process-wide one, when the runner closes.
        """
        import torch

        key = tuple((name, array.shape) for name, array in arrays.items())
        slot = self._slots.get(key)
        if slot is None:
            binding = self.session.io_binding()
            inputs = {name: torch.empty(array.shape, dtype=getattr(torch, array.dtype.name), device="cuda")
                      for name, array in arrays.items()}
            for name, tensor in inputs.items():
                binding.bind_input(name, "cuda", 0, arrays[name].dtype, list(tensor.shape), tensor.data_ptr())
            batch = next(iter(arrays.values())).shape[0]
            outputs = {}
            for info in self._outputs:
                shape = [batch if isinstance(d, str) else d for d in info.shape]  # the symbolic dim is the batch
                outputs[info.name] = torch.empty(shape, dtype=getattr(torch, info.dtype), device="cuda")
                binding.bind_output(info.name, "cuda", 0, np.dtype(info.dtype), shape, outputs[info.name].data_ptr())
            run_options = self.ort.RunOptions()
            run_options.log_severity_level = 3
            # Return once the work is queued: the caller synchronises the stream (timing.measure, fetch), so
            # the host clock and the CUDA events bracket the device's work, not ORT's own wait.
            run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
            if self.cuda_graph:  # 0 is ORT's default graph; each shape gets its own
                run_options.add_run_config_entry("gpu_graph_id", str(len(self._slots) + 1))
            slot = self._slots[key] = _Slot(binding, inputs, outputs, run_options)
        with torch.cuda.stream(self.stream):
            for name, array in arrays.items():
                slot.inputs[name].copy_(torch.from_numpy(array))
        self.stream.synchronize()
        return slot

    def prepare(self, feed):
        self.activate()
        arrays = self._host_arrays(feed)
        return arrays if self.device == "cpu" else self._slot(arrays)

    def run_prepared(self, prepared) -> None:
        if self.device == "cpu":
            self.session.run(None, prepared, self._run_options)
        else:
            self.session.run_with_iobinding(prepared.binding, prepared.run_options)

    def fetch(self, prepared) -> dict[str, np.ndarray]:
        if self.device == "cpu":
            return self._run(prepared)
        self.run_prepared(prepared)
        self.stream.synchronize()
        return {name: tensor.float().cpu().numpy() for name, tensor in prepared.outputs.items()}

    def synchronize(self) -> None:
        if self.device != "cpu":
            self.stream.synchronize()

    def device_timer(self):
        return CudaEventTimer(self.stream) if self.device != "cpu" else None

    def audit(self) -> dict:
        nodes = self.nodes_per_provider()
        facts: dict = {"nodes_per_provider": nodes if nodes is not None else "not reported by this onnxruntime"}
        on_cpu = (nodes or {}).get("CPUExecutionProvider", 0)
        if self.device != "cpu" and on_cpu:
            facts["warnings"] = [f"{on_cpu} of {sum(nodes.values())} nodes run on the CPU provider"]
        return facts

    def _memory_in_use(self) -> float | None:
        if self.device != "cpu":
            import torch

            if not torch.cuda.is_available():  # our stream and events come from torch: no GPU there, none here
                raise BackendMissing(f"ONNX Runtime could not start {self.provider} here (no CUDA GPU visible): run "
                                     "on a machine with an NVIDIA GPU and the CUDA/cuDNN libraries onnxruntime-gpu "
                                     "needs")
        return super()._memory_in_use()

    def describe(self) -> str:
        return f"onnxruntime ({self.device}, {self.precision})"

    def close(self) -> None:
        self.session = None
        self._slots = {}
        super().close()


@dataclass
class _Slot:
    binding: object
    inputs: dict
    outputs: dict
    run_options: object


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
