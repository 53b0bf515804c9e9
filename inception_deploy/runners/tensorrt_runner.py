"""A serialized TensorRT engine behind the Runner interface: tensor-address API on a CUDA stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..engine import require_tensorrt
from ..errors import InputError
from .base import Runner, TensorInfo


class TensorRTRunner(Runner):
    backend = "tensorrt"
    device = "cuda"

    def __init__(self, engine_path: str | Path, *, precision: str | None = None):
        trt = require_tensorrt()
        import torch

        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise InputError(f"engine {engine_path} does not exist: build it with `inception-deploy trt`")
        _refuse_foreign(engine_path, trt, torch)
        self.precision = precision or "fp32"
        self.torch = torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise InputError(f"engine {engine_path} cannot be loaded here: it was built for another GPU or "
                             f"TensorRT version (this is TensorRT {trt.__version__}); rebuild it with `inception-deploy trt`")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._dtypes = {n: _torch_dtype(trt, torch, self.engine.get_tensor_dtype(n)) for n in names}
        self._inputs = [TensorInfo(n, tuple(self.engine.get_tensor_shape(n)), _np_name(self._dtypes[n])) for n in names if is_input[n]]
        self._outputs = [TensorInfo(n, tuple(self.engine.get_tensor_shape(n)), _np_name(self._dtypes[n])) for n in names if not is_input[n]]
        self.profile = {n.name: self.engine.get_tensor_profile_shape(n.name, 0) for n in self._inputs}
        # -1 in an engine shape is a dynamic dimension
        self._inputs = [TensorInfo(t.name, tuple("batch" if d == -1 else d for d in t.shape), t.dtype) for t in self._inputs]

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        keep = []  # device buffers must outlive the asynchronous run
        with torch.cuda.stream(self.stream):
            for name, array in feed.items():
                low, _, high = self.profile[name]
                if not all(lo <= d <= hi for lo, d, hi in zip(low, array.shape, high)):
                    raise InputError(f"input {name} of shape {list(array.shape)} is outside the engine's profile "
                                     f"{list(low)}..{list(high)}: rebuild with other --min/--max-batch")
                tensor = torch.from_numpy(array).to("cuda", self._dtypes[name], non_blocking=True).contiguous()
                self.context.set_input_shape(name, tuple(array.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
                keep.append(tensor)
            outputs = {}
            for info in self._outputs:
                shape = tuple(self.context.get_tensor_shape(info.name))
                outputs[info.name] = torch.empty(shape, dtype=self._dtypes[info.name], device="cuda")
                self.context.set_tensor_address(info.name, outputs[info.name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        return {name: t.float().cpu().numpy() for name, t in outputs.items()}

    def close(self) -> None:
        self.context = self.engine = self.runtime = None


def _refuse_foreign(engine_path: Path, trt, torch) -> None:
    """Refuse, in one line, an engine the manifest says was built for another GPU or TensorRT version."""
    manifest_path = engine_path.parent / "manifest.json"
    if not manifest_path.is_file():
        return
    record = next((a for a in json.loads(manifest_path.read_text()).get("artifacts", []) if a.get("path") == engine_path.name), None)
    if not record:
        return
    built_trt = record["tensorrt"]["version"]
    built_cc = record["gpu"]["compute_capability"]
    here_cc = "{}.{}".format(*torch.cuda.get_device_capability())
    if built_trt != trt.__version__ and not record["tensorrt"].get("version_compatible"):
        raise InputError(f"{engine_path.name} was built with TensorRT {built_trt}, this is {trt.__version__}: rebuild it here with `inception-deploy trt`")
    if built_cc != here_cc:
        raise InputError(f"{engine_path.name} was built for compute capability {built_cc} ({record['gpu']['name']}), "
                         f"this GPU is {here_cc}: rebuild it here with `inception-deploy trt`")


def _torch_dtype(trt, torch, dtype):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8, trt.int32: torch.int32}
    return table[dtype]


def _np_name(dtype) -> str:
    return str(dtype).replace("torch.", "")
