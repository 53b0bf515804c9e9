"""TensorRT engines from the precision-carrying ONNX: fp16 tensors or Q/DQ nodes, compiled strongly typed.

TensorRT 10.1+ deprecates the INT8 calibrators and TensorRT 11 removes them with the FP16/INT8 builder
flags: precision lives in the ONNX, which export made and proved in ONNX Runtime. This module compiles
exactly that file. It imports tensorrt lazily and is the only place (with runners/tensorrt_runner.py)
that touches it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .artifacts import ONNX_FILES, add_artifact, artifact_record, atomic_path, engine_file, read_manifest, sha256_of
from .errors import BackendMissing, CheckFailed, InputError
from .registry import get_spec

INSTALL_HINT = "pip install 'inception-deploy[tensorrt]', on a machine with an NVIDIA GPU"


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 256
    workspace_gb: float | None = None
    timing_cache: Path | None = None  # default: beside the engine
    builder_opt_level: int | None = None
    dla_core: int | None = None
    version_compatible: bool = False

    def check(self) -> None:
        if self.precision not in ONNX_FILES:
            raise InputError(f"precision must be one of {', '.join(ONNX_FILES)}, not {self.precision}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise InputError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if self.builder_opt_level is not None and not 0 <= self.builder_opt_level <= 5:
            raise InputError(f"--builder-opt-level must be 0..5, got {self.builder_opt_level}")
        if self.workspace_gb is not None and self.workspace_gb <= 0:
            raise InputError(f"--workspace-gb must be positive, got {self.workspace_gb}")


def require_tensorrt():
    """tensorrt and a CUDA GPU, or BackendMissing (exit 3) saying what is missing and how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise BackendMissing(f"TensorRT is not installed: {INSTALL_HINT}") from None
    import torch

    if not torch.cuda.is_available():
        raise BackendMissing("TensorRT needs a CUDA GPU and none is visible here: run on a machine with an NVIDIA GPU")
    return tensorrt


def find_export(variant: str | None, export_root: Path = Path("export")) -> Path:
    """The export directory of `variant`, or, without one, the most recent export under export_root."""
    if variant is not None:
        directory = export_root / get_spec(variant).name
        if read_manifest(directory) is None:
            raise InputError(f"no export of {get_spec(variant).name} in {directory}: run `inception-deploy export {variant}` first")
        return directory
    candidates = [d for d in export_root.glob("*") if (d / "manifest.json").is_file()] if export_root.is_dir() else []
    if not candidates:
        raise InputError(f"no export under {export_root}/: run `inception-deploy export VARIANT` first, or name the VARIANT")
    return max(candidates, key=lambda d: (d / "manifest.json").stat().st_mtime)


def build_engine(export_dir: Path, options: BuildOptions, *, on_step: Callable[[str], None] | None = None) -> dict:
    """Compile export_dir's ONNX of the requested precision into model.<precision>.engine; return the manifest.

    The ONNX must exist (export --fp16 / --int8 make and verify it); the engine and its facts (TensorRT
    version, GPU, compute capability, profile, build time) are added to the manifest.
    """
    step = on_step or (lambda _: None)
    options.check()
    trt = require_tensorrt()
    import torch

    manifest = read_manifest(export_dir)
    if manifest is None:
        raise InputError(f"no manifest.json in {export_dir}: run `inception-deploy export` first")
    onnx_path = export_dir / ONNX_FILES[options.precision]
    if not onnx_path.is_file() and options.precision == "fp16":
        from .export import add_fp16

        step(f"{onnx_path.name} is missing: making it from model.onnx and verifying it in ONNX Runtime")
        manifest = add_fp16(export_dir)
    if not onnx_path.is_file():
        flag = {"fp32": "--onnx", "int8": "--int8 --calib DIR"}[options.precision]
        raise InputError(f"{onnx_path} does not exist: run `inception-deploy export {manifest['variant']} {flag}` first")
    spec = get_spec(manifest["variant"])
    engine_path = export_dir / engine_file(options.precision)
    cache_path = options.timing_cache or export_dir / "timing.cache"

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    step(f"parsing {onnx_path.name}")
    if not parser.parse_from_file(str(onnx_path)):
        raise CheckFailed(f"TensorRT's ONNX parser rejects {onnx_path.name}: {_parser_errors(parser)}")

    config = builder.create_builder_config()
    if options.workspace_gb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * (1 << 30)))
    if options.builder_opt_level is not None:
        config.builder_optimization_level = options.builder_opt_level
    if not strongly_typed:
        # An older TensorRT: precision comes from builder flags, where it still has them.
        for precision, flag in (("fp16", "FP16"), ("int8", "INT8")):
            if options.precision == precision and hasattr(trt.BuilderFlag, flag):
                config.set_flag(getattr(trt.BuilderFlag, flag))
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)

    input_name = network.get_input(0).name
    c, h, w = spec.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (options.min_batch, c, h, w), (options.opt_batch, c, h, w), (options.max_batch, c, h, w))
    config.add_optimization_profile(profile)

    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    step(f"building the {options.precision} engine (minutes for the larger variants)")
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise CheckFailed(f"TensorRT could not build an engine from {onnx_path.name}: see its log above")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))

    major, minor = torch.cuda.get_device_capability()
    record = artifact_record(
        export_dir, engine_path, kind="tensorrt-engine", precision=options.precision,
        source={"path": onnx_path.name, "sha256": sha256_of(onnx_path)},
        tensorrt={"version": trt.__version__, "strongly_typed": strongly_typed,
                  "version_compatible": options.version_compatible, "dla_core": options.dla_core,
                  "builder_optimization_level": options.builder_opt_level},
        gpu={"name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"},
        profile={"input": input_name, "min": options.min_batch, "opt": options.opt_batch, "max": options.max_batch},
        build_seconds=round(seconds, 1), timing_cache=str(cache_path),
    )
    return add_artifact(export_dir, manifest, record)


def _parser_errors(parser) -> str:
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = getattr(e, "node_name", lambda: "")() or f"node #{e.node()}"
        op = getattr(e, "node_operator", lambda: "")()
        errors.append(f"{node}{f' ({op})' if op else ''}: {e.desc()}")
    return "; ".join(errors[:3]) + (f"; … {len(errors) - 3} more" if len(errors) > 3 else "")
