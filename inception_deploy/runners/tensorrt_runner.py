"""Serialized TensorRT and TensorRT-RTX engines behind the Runner interface: tensor-address API on a CUDA stream.

Both compilers share the runtime API; TensorRT-RTX adds a runtime cache (the kernels it finishes on the GPU,
kept beside the engine for the next start) and a CUDA-graph strategy. An engine is refused, in one line,
when it is not the file its manifest lists, or was built for another GPU or library version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.artifacts import atomic_path, missing_artifact
from ..core.compilers import TENSORRT, TENSORRT_RTX, Compiler, gpu_capability, gpu_name, require_runtime
from ..core.errors import BackendMissing, InceptionDeployError, InputError, first_line
from ..core.manifest import verify_beside
from .base import CudaEventTimer, Runner, TensorInfo

log = logging.getLogger(__name__)


class TensorRTRunner(Runner):
    backend = "tensorrt"
    device = "cuda"
    compiler: Compiler = TENSORRT

    devices = ("cuda",)

    def __init__(self, engine_path: str | Path, *, precision: str | None = None, cuda_graph: bool = False):
        """cuda_graph: capture execute_async_v3 once per input shape and replay it, as trtexec --useCudaGraph."""
        engine_path = Path(engine_path)
        self.trt = require_runtime(self.compiler)
        if not engine_path.is_file():
            raise missing_artifact(engine_path, "build it with `inception-deploy trt`")
        self.engine_path, self.cuda_graph = engine_path, cuda_graph
        self.precision = precision or "fp32"
        self.context = self.engine = self.runtime = None

    @classmethod
    def candidates(cls, backend, precision: str) -> list[dict]:
        return [{"cuda_graph": False}, {"cuda_graph": True}]

    def settings(self) -> dict:
        record = getattr(self, "record", None) or {}
        return {"cuda_graph": self.cuda_graph, "tf32": record.get("tf32"), "compiler": record.get("compiler")}

    def _activate(self) -> None:
        trt, engine_path = self.trt, self.engine_path
        import torch

        self.torch = torch
        self.record = verify_beside(engine_path, made="built", fix="rebuild it with `inception-deploy trt`")
        data = engine_path.read_bytes()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self._refuse_foreign(data)
        self.precision = (self.record or {}).get("precision", self.precision)
        self._configure_runtime()
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise InputError(f"engine {engine_path} cannot be loaded here: it was built for another GPU or "
                             f"{self.compiler.title} version (this is {trt.__version__}); rebuild it with "
                             "`inception-deploy trt`")
        self.context = self._create_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._dtypes = {n: _torch_dtype(trt, torch, self.engine.get_tensor_dtype(n)) for n in names}

        def info(name: str) -> TensorInfo:  # -1 in an engine shape is a dynamic dimension
            shape = tuple("batch" if d == -1 else d for d in self.engine.get_tensor_shape(name))
            return TensorInfo(name, shape, str(self._dtypes[name]).replace("torch.", ""))

        self._inputs = [info(n) for n in names if is_input[n]]
        self._outputs = [info(n) for n in names if not is_input[n]]
        self.profile = {t.name: self.engine.get_tensor_profile_shape(t.name, 0) for t in self._inputs}
        self._slots: dict[tuple, _Slot] = {}

    # Hooks for what differs between the compilers.
    def _refuse_foreign(self, data: bytes) -> None:
        """Refuse an engine the manifest says was built for another GPU or TensorRT version."""
        record = self.record
        if not record or "gpu" not in record:
            return
        built = (record.get("compiler") or record.get("tensorrt") or {}).get("version")  # "tensorrt": before 0.2
        here = self.trt.__version__
        if built and built != here and not record.get("version_compatible"):
            raise InputError(f"{self.engine_path.name} was built with TensorRT {built}, this is {here}: "
                             "rebuild it here with `inception-deploy trt`")
        here_cc = gpu_capability()
        built_cc = "sm" + record["gpu"]["compute_capability"].replace(".", "")
        if built_cc != here_cc:
            raise InputError(f"{self.engine_path.name} was built for {record['gpu']['name']} ({built_cc}), this GPU is "
                             f"{gpu_name()} ({here_cc}): rebuild it here with `inception-deploy trt`")

    def _configure_runtime(self) -> None:
        if self.record and self.record.get("version_compatible"):
            self.runtime.engine_host_code_allowed = True  # a version-compatible engine carries its lean runtime

    def _create_context(self):
        return self.engine.create_execution_context()

    # Running: one slot per input shape (device buffers, addresses, and optionally a CUDA graph), made once.
    def _slot(self, arrays: dict[str, np.ndarray]) -> "_Slot":
        torch = self.torch
        key = tuple((name, array.shape) for name, array in arrays.items())
        slot = self._slots.get(key)
        with torch.cuda.stream(self.stream):
            if slot is None:
                for name, array in arrays.items():
                    low, _, high = self.profile[name]
                    if not all(lo <= d <= hi for lo, d, hi in zip(low, array.shape, high)):
                        raise InputError(f"input {name} of shape {list(array.shape)} is outside the engine's profile "
                                         f"{list(low)}..{list(high)}: rebuild with other --min-batch/--max-batch")
                inputs = {
                    name: torch.empty(array.shape, dtype=self._dtypes[name], device="cuda")
                    for name, array in arrays.items()
                }
                slot = self._slots[key] = _Slot(inputs, {})
                self._bind(slot)
                slot.outputs = {
                    info.name: torch.empty(
                        tuple(self.context.get_tensor_shape(info.name)), dtype=self._dtypes[info.name], device="cuda"
                    )
                    for info in self._outputs
                }
            for name, array in arrays.items():
                slot.inputs[name].copy_(torch.from_numpy(array))
            self._bind(slot)
            if self.cuda_graph and slot.graph is None:
                self._execute()  # one plain run first: TensorRT finishes its deferred set-up outside the capture
                self.stream.synchronize()
                slot.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(slot.graph, stream=self.stream):
                    self._execute()
        self.stream.synchronize()
        return slot

    def _bind(self, slot: "_Slot") -> None:
        """Shapes and addresses of this slot's tensors, in the context (cheap: a few calls per tensor)."""
        for name, tensor in slot.inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        for name, tensor in slot.outputs.items():
            self.context.set_tensor_address(name, tensor.data_ptr())

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.compiler.title} execute_async_v3 failed")

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.fetch(self._slot(feed))

    # For benchmarks: inputs on the device, outputs pre-allocated, shapes and addresses set once;
    # run_prepared is execute_async_v3 alone, or the replay of its CUDA graph.
    def prepare(self, feed):
        self.activate()
        return self._slot(self._host_arrays(feed))

    def run_prepared(self, prepared: "_Slot") -> None:
        if prepared.graph is not None:
            with self.torch.cuda.stream(self.stream):  # replay() launches on the current stream: make it ours
                prepared.graph.replay()
        else:
            self._execute()

    def fetch(self, prepared: "_Slot") -> dict[str, np.ndarray]:
        self._bind(prepared)
        with self.torch.cuda.stream(self.stream):
            self.run_prepared(prepared)
        self.stream.synchronize()
        return {name: t.float().cpu().numpy() for name, t in prepared.outputs.items()}

    def synchronize(self) -> None:
        self.stream.synchronize()

    def device_timer(self):
        return CudaEventTimer(self.stream)

    def audit(self) -> dict:
        return {"context_memory_mib": round(self.engine.device_memory_size_v2 / 2**20, 1)}

    def describe(self) -> str:
        return f"{self.backend} ({gpu_name() or 'cuda'}, {self.precision})"

    def close(self) -> None:
        for slot in getattr(self, "_slots", {}).values():  # a caller may still hold a slot: empty it
            slot.inputs, slot.outputs, slot.graph = {}, {}, None
        self._slots = {}
        self.context = self.engine = self.runtime = None
        super().close()


@dataclass
class _Slot:
    inputs: dict
    outputs: dict
    graph: object = None


class TensorRTRTXRunner(TensorRTRunner):
    """A TensorRT-RTX engine: checked against its targets and the library before loading, its runtime
    cache kept beside the engine, CUDA graphs captured for the whole engine."""

    backend = "tensorrt-rtx"
    compiler = TENSORRT_RTX

    @classmethod
    def candidates(cls, backend, precision: str) -> list[dict]:
        return [{}]  # its runtime captures CUDA graphs itself (WHOLE_GRAPH_CAPTURE)

    def settings(self) -> dict:
        return {**super().settings(), "cuda_graph": "whole-graph capture by the TensorRT-RTX runtime"}

    def _refuse_foreign(self, data: bytes) -> None:
        here = gpu_capability()
        targets = (self.record or {}).get("targets")
        if here == "sm90":
            raise BackendMissing(f"{gpu_name()} (sm90) is not a TensorRT-RTX target: use --compiler tensorrt")
        if targets and here not in targets:
            raise BackendMissing(f"{gpu_name()} ({here}) is not among {self.engine_path.name}'s targets "
                                 f"({', '.join(targets)}): rebuild with `inception-deploy trt --compiler tensorrt-rtx "
                                 f"--target {here}`")
        validity, diagnostics = self.runtime.get_engine_validity(data)
        if validity == self.trt.EngineValidity.INVALID:
            reasons = [
                name.lower().replace("_", " ")
                for name, flag in self.trt.EngineInvalidityDiagnostics.__members__.items()
                if int(diagnostics) & int(flag)
            ]
            raise InputError(f"{self.engine_path.name} cannot run here "
                             f"({', '.join(reasons) or 'TensorRT-RTX says invalid'}): "
                             "rebuild it with `inception-deploy trt --compiler tensorrt-rtx`")

    def _configure_runtime(self) -> None:
        pass

    def _create_context(self):
        config = self.engine.create_runtime_config()
        self.cache_path = self.engine_path.with_name(self.engine_path.name + ".runtime-cache")
        self.cache = config.create_runtime_cache()
        if self.cache_path.is_file():
            self.cache.deserialize(self.cache_path.read_bytes())  # an incompatible cache is ignored by the library
        config.set_runtime_cache(self.cache)
        config.cuda_graph_strategy = self.trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        return self.engine.create_execution_context(config)

    def close(self) -> None:
        if getattr(self, "cache", None) is not None:
            try:  # the kernels compiled on this GPU, for the next start: worth keeping, not worth failing for
                with atomic_path(self.cache_path) as tmp:
                    tmp.write_bytes(bytes(self.cache.serialize()))
            except (OSError, InceptionDeployError) as err:
                log.warning("the runtime cache %s was not saved (%s)", self.cache_path, first_line(err))
            self.cache = None
        super().close()


def _torch_dtype(trt, torch, dtype):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8, trt.int32: torch.int32}
    return table[dtype]
