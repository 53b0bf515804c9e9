"""Serialized TensorRT and TensorRT-RTX engines behind the Runner interface: tensor-address API on a CUDA stream.

Both compilers share the runtime API; TensorRT-RTX adds a runtime cache (the kernels it finishes on the GPU,
kept beside the engine for the next start) and a CUDA-graph strategy. An engine is refused, in one line,
when it is not the file its manifest lists, or was built for another GPU or library version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import atomic_path, read_manifest, verified_record
from ..compilers import TENSORRT, TENSORRT_RTX, Compiler, gpu_capability, gpu_name, require_runtime
from ..errors import BackendMissing, InputError
from .base import Runner, TensorInfo


class TensorRTRunner(Runner):
    backend = "tensorrt"
    device = "cuda"
    compiler: Compiler = TENSORRT

    def __init__(self, engine_path: str | Path, *, precision: str | None = None):
        engine_path = Path(engine_path)
        trt = require_runtime(self.compiler)
        import torch

        if not engine_path.is_file():
            raise InputError(f"engine {engine_path} does not exist: build it with `inception-deploy trt`")
        self.engine_path, self.trt, self.torch = engine_path, trt, torch
        self.record = verified_record(engine_path, read_manifest(engine_path.parent), made="built",
                                      fix="rebuild it with `inception-deploy trt`")
        data = engine_path.read_bytes()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self._refuse_foreign(data)
        self.precision = precision or (self.record or {}).get("precision", "fp32")
        self._configure_runtime()
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise InputError(f"engine {engine_path} cannot be loaded here: it was built for another GPU or "
                             f"{self.compiler.title} version (this is {trt.__version__}); rebuild it with `inception-deploy trt`")
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

    # Running.
    def _bind(self, feed: dict) -> dict:
        """Set shapes and addresses for device tensors `feed`; allocate and bind the outputs; return them."""
        for name, tensor in feed.items():
            low, _, high = self.profile[name]
            if not all(lo <= d <= hi for lo, d, hi in zip(low, tensor.shape, high)):
                raise InputError(f"input {name} of shape {list(tensor.shape)} is outside the engine's profile "
                                 f"{list(low)}..{list(high)}: rebuild with other --min-batch/--max-batch")
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for info in self._outputs:
            shape = tuple(self.context.get_tensor_shape(info.name))
            outputs[info.name] = self.torch.empty(shape, dtype=self._dtypes[info.name], device="cuda")
            self.context.set_tensor_address(info.name, outputs[info.name].data_ptr())
        return outputs

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.compiler.title} execute_async_v3 failed")

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.cuda.stream(self.stream):
            inputs = {name: torch.from_numpy(array).to("cuda", self._dtypes[name], non_blocking=True).contiguous()
                      for name, array in feed.items()}
            outputs = self._bind(inputs)
            self._execute()
        self.stream.synchronize()  # the device buffers above stay alive until here
        return {name: t.float().cpu().numpy() for name, t in outputs.items()}

    # For benchmarks: inputs on the device, outputs pre-allocated, shapes and addresses set once;
    # run_prepared is execute_async_v3 alone.
    def prepare(self, feed):
        arrays = self._host_arrays(feed)
        torch = self.torch
        with torch.cuda.stream(self.stream):
            inputs = {name: torch.from_numpy(a).to("cuda", self._dtypes[name]).contiguous() for name, a in arrays.items()}
            outputs = self._bind(inputs)
        self.stream.synchronize()
        return inputs, outputs  # kept alive by the caller while it runs

    def run_prepared(self, prepared) -> None:
        self._execute()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def describe(self) -> str:
        return f"{self.backend} ({gpu_name() or 'cuda'}, {self.precision})"

    def close(self) -> None:
        self.context = self.engine = self.runtime = None


class TensorRTRTXRunner(TensorRTRunner):
    """A TensorRT-RTX engine: checked against its targets and the library before loading, its runtime
    cache kept beside the engine, CUDA graphs captured for the whole engine."""

    backend = "tensorrt-rtx"
    compiler = TENSORRT_RTX

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
            reasons = [name.lower().replace("_", " ") for name, flag in self.trt.EngineInvalidityDiagnostics.__members__.items()
                       if int(diagnostics) & int(flag)]
            raise InputError(f"{self.engine_path.name} cannot run here ({', '.join(reasons) or 'TensorRT-RTX says invalid'}): "
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
            with atomic_path(self.cache_path) as tmp:  # the kernels compiled on this GPU, for the next start
                tmp.write_bytes(bytes(self.cache.serialize()))
            self.cache = None
        super().close()


def _torch_dtype(trt, torch, dtype):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8, trt.int32: torch.int32}
    return table[dtype]
