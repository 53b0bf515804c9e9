"""A real Triton Inference Server on this machine, through PyTriton: the verified artifact served by the
project's own runner, behind Triton's HTTP/gRPC endpoints and dynamic batcher. For development, CPU hosts
and tests; a production Triton loads the repository that `triton_repo` writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.artifacts import ONNX_FILES, export_command
from ..core.deps import require
from ..core.errors import InputError
from ..core.manifest import read_manifest, verify_beside
from ..runners import BACKENDS, open_runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoints:
    http: str
    grpc: str
    metrics: str
    model: str
    log: Path  # tritonserver's own log


@contextlib.contextmanager
def running_server(
    export_dir: str | Path,
    *,
    precision: str = "fp32",
    device: str = "cpu",
    max_batch: int = 64,
    max_queue_delay_us: int = 100,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    address: str = "127.0.0.1",
    name: str | None = None,
) -> Iterator[Endpoints]:
    """Serve the export's ONNX of `precision` until the block ends; yield its endpoints once it is ready."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    if manifest is None:
        raise InputError(f"no export in {export_dir}: run `inception-deploy export VARIANT` first")
    if precision not in ONNX_FILES:
        raise InputError(f"--precision must be one of {', '.join(ONNX_FILES)}, not '{precision}'")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, not '{device}'")
    artifact = export_dir / ONNX_FILES[precision]
    if not artifact.is_file():
        raise InputError(f"no {artifact}: make it with `{export_command(manifest['variant'], precision)}`")
    verify_beside(artifact)
    fixed = manifest.get("batch")
    if isinstance(fixed, int) and max_batch != fixed:
        raise InputError(f"this export has a fixed batch of {fixed}: re-export with --batch dynamic to serve it behind "
                         "Triton's dynamic batcher")
    require("pytriton.triton")
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    runner = open_runner(BACKENDS["onnxruntime" if device == "cpu" else "onnxruntime-cuda"], artifact=artifact,
                         precision=precision)
    input_name, output_name = manifest["input"]["name"], manifest["output"]["name"]
    with runner:
        @batch
        def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
            outputs = runner.run({input_name: inputs[input_name]})
            return {output_name: np.asarray(outputs[output_name], dtype=np.float32)}

        log = Path(tempfile.mkdtemp(prefix="inception-deploy-triton-")) / "tritonserver.log"  # its log, not our stdout
        config = TritonConfig(http_address=address, http_port=http_port, grpc_address=address, grpc_port=grpc_port,
                              metrics_address=address, metrics_port=metrics_port, exit_timeout_secs=5, log_file=log)
        model = name or manifest["variant"]
        with _libpython_first(), Triton(config=config) as triton:
            triton.bind(
                model_name=model, infer_func=infer,
                inputs=[Tensor(name=input_name, dtype=np.float32, shape=tuple(manifest["input"]["shape"][1:]))],
                outputs=[Tensor(name=output_name, dtype=np.float32, shape=tuple(manifest["output"]["shape"][1:]))],
                config=ModelConfig(max_batch_size=max_batch,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us)),
                strict=True,
            )
            triton.run()  # returns once the server is up and the model is loaded
            yield Endpoints(f"http://{address}:{http_port}", f"grpc://{address}:{grpc_port}",
                            f"http://{address}:{metrics_port}/metrics", model, log)


@contextlib.contextmanager
def _libpython_first() -> Iterator[None]:
    """Triton's Python backend stub links libpython from the library path, not this interpreter's; under a
    pyenv-style Python it loads the system's and fails ('_thread.RLock' … '_recursion_count'). Put this
    interpreter's LIBDIR first for the server the block starts."""
    previous = os.environ.get("LD_LIBRARY_PATH")
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, previous) if p)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = previous
