"""Engines from the precision-carrying ONNX (fp16 tensors or Q/DQ nodes), compiled strongly typed by
TensorRT or TensorRT-RTX (compilers.py), with one build path for both.

TensorRT 10.1+ deprecates the INT8 calibrators and TensorRT 11 removes them with the FP16/INT8 builder
flags: precision lives in the ONNX, which export made and proved in ONNX Runtime. This module compiles
exactly that file, after checking it is the file the manifest lists, and records in the manifest which
compiler built what, for which GPUs, and in which precision each layer runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.artifacts import (
    ONNX_FILES,
    atomic_path,
    check_output_file,
    check_targets,
    export_command,
    missing_artifact,
    remove_quietly,
    staged,
)
from ..core.compilers import (
    TENSORRT,
    TENSORRT_ONLY_OPTIONS,
    TENSORRT_RTX,
    Compiler,
    check_target_precision,
    gpu_capability,
    gpu_name,
    parse_targets,
    require_builder,
    resolve,
)
from ..core.deps import lazy_import
from ..core.errors import CheckFailed, InceptionDeployError, InputError, check_number, first_line
from ..core.interrupts import deferred_interrupt, writes_complete_first
from ..core.manifest import (
    MANIFEST_NAME,
    artifact_record,
    check_budget,
    listed_with,
    read_manifest,
    stage_manifest,
    verified_record,
)
from ..export.forms import check_form
from ..export.onnx import stage_fp16, verified_fp16
from ..export.qdq_rules import check_qdq
from ..models.registry import get_spec
from ..runners import BACKENDS, unsupported
from .layers import inspected_layers, logged_layers

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 256
    workspace_gb: float | None = None
    tf32: bool = False  # TensorRT turns TF32 on by default, which makes an "fp32" engine TF32: off unless asked
    compiler: str = "auto"  # "auto", "tensorrt" or "tensorrt-rtx"
    targets: str | tuple[str, ...] | None = None  # TensorRT-RTX: compute capabilities ("sm86,sm89"); None: portable
    # enterprise TensorRT only
    timing_cache: Path | None = None  # default: beside the engine
    builder_opt_level: int | None = None
    dla_core: int | None = None
    version_compatible: bool = False
    accept_over_budget: bool = False  # build from an int8 ONNX written over its accuracy budget

    def check(self) -> Compiler:
        """Refuse bad or contradictory options (InputError, exit 2); return the compiler they resolve to."""
        buildable = [p for p in ONNX_FILES if not unsupported(BACKENDS["tensorrt"], p)]
        if self.precision not in buildable:
            why = unsupported(BACKENDS["tensorrt"], self.precision) if self.precision in ONNX_FILES else None
            raise InputError(f"{why}: build TensorRT's int8 form with --int8" if why else
                             f"precision must be one of {', '.join(buildable)}, not {self.precision}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise InputError("batch profile must satisfy 1 <= min <= opt <= max, got "
                             f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if self.builder_opt_level is not None and not 0 <= self.builder_opt_level <= 5:
            raise InputError(f"--builder-opt-level must be 0..5, got {self.builder_opt_level}")
        if self.workspace_gb is not None:
            check_number(self.workspace_gb, "--workspace-gb", above=0)
        if self.dla_core is not None and self.dla_core < 0:
            raise InputError(f"--dla-core must be 0 or more, got {self.dla_core}")
        # which compiler --target goes with before what it names (sm90 under --compiler tensorrt is refused for the
        # compiler, not for Hopper); then whether the targets can compile this precision
        compiler = resolve(self.compiler, tensorrt_options=self.tensorrt_options(), targets=self.targets is not None)
        if self.targets is not None:
            check_target_precision(parse_targets(self.targets), self.precision)
        return compiler

    def tensorrt_options(self) -> list[str]:
        """The enterprise-only options that are set, as their flags."""
        return [flag for name, flag in TENSORRT_ONLY_OPTIONS.items()
                if getattr(self, name) is not None and getattr(self, name) is not False]  # --dla-core 0 is set


def find_export(variant: str | None, export_root: Path = Path("export")) -> Path:
    """The export directory of `variant`, or, without one, the most recent export under export_root."""
    if variant is not None:
        directory = export_root / get_spec(variant).name
        if read_manifest(directory) is None:
            raise InputError(f"no export of {get_spec(variant).name} in {directory}: run `inception-deploy export "
                             f"{variant}` first")
        return directory
    candidates = [d for d in export_root.glob("*") if (d / MANIFEST_NAME).is_file()] if export_root.is_dir() else []
    if not candidates:
        raise InputError(f"no export under {export_root}/: run `inception-deploy export VARIANT` first, or name the "
                         "VARIANT")
    return max(candidates, key=lambda d: (d / MANIFEST_NAME).stat().st_mtime)


def build_engine(
    export_dir: str | Path, options: BuildOptions, *, on_step: Callable[[str], None] | None = None
) -> dict:
    """Compile export_dir's ONNX of the requested precision into an engine beside it; return the manifest.

    The ONNX must be the one the manifest lists (sha256); an int8 file must keep TensorRT's Q/DQ rules.
    The engine, its compiler, targets or GPU, profile, build time and per-layer precisions are added to
    the manifest. Raises InputError (exit 2), BackendMissing (exit 3) or CheckFailed (exit 1).
    """
    step = on_step or (lambda _: None)
    export_dir = Path(export_dir)
    compiler = options.check()
    targets = parse_targets(options.targets) if compiler is TENSORRT_RTX else None
    trt = require_builder(compiler)
    if compiler is TENSORRT and options.timing_cache is not None:
        check_output_file(Path(options.timing_cache), "--timing-cache")  # before the build, not after it

    manifest = read_manifest(export_dir)
    if manifest is None:
        raise InputError(f"no manifest.json in {export_dir}: run `inception-deploy export` first")
    onnx_path = export_dir / ONNX_FILES[options.precision]
    engine_path = export_dir / compiler.engine_file(options.precision)
    runtime_cache = engine_path.with_name(engine_path.name + ".runtime-cache")  # stale once the engine changes
    make_fp16 = options.precision == "fp16" and not onnx_path.exists() and not onnx_path.is_symlink()
    # before the build, not after it: every file this build will write
    check_targets([engine_path, runtime_cache, export_dir / MANIFEST_NAME, *([onnx_path] if make_fp16 else [])])
    if make_fp16:
        step(f"{onnx_path.name} is missing: making it from model.onnx and verifying it in ONNX Runtime")
    pending_fp16, source_sha = _source_onnx(onnx_path, manifest, options.precision, make_fp16,
                                             options.accept_over_budget)
    spec = get_spec(manifest["variant"])

    logger = _make_logger(trt)  # kept for the layer list and the build's errors
    with deferred_interrupt() as interrupted:  # TensorRT would swallow Ctrl-C raised in its callbacks
        builder = trt.Builder(logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        step(f"parsing {onnx_path.name} with {compiler.title}")
        parsed = (parser.parse(pending_fp16[0].SerializeToString()) if pending_fp16 is not None
                  else parser.parse_from_file(str(onnx_path)))
        if parsed and not interrupted():
            config = builder.create_builder_config()
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the layer list, with precisions
            config.progress_monitor = _make_monitor(trt, interrupted)
            if not options.tf32:
                config.clear_flag(trt.BuilderFlag.TF32)
            if options.workspace_gb:
                config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * (1 << 30)))
            input_name = network.get_input(0).name
            c, h, w = spec.input_size
            profile = builder.create_optimization_profile()
            profile.set_shape(input_name, (options.min_batch, c, h, w), (options.opt_batch, c, h, w),
                              (options.max_batch, c, h, w))
            config.add_optimization_profile(profile)
            if compiler is TENSORRT_RTX:
                facts = _configure_rtx(trt, config, targets)
            else:
                facts = _configure_tensorrt(trt, config, options, engine_path)
            step(f"building the {options.precision} engine with {compiler.title}")
            start = time.perf_counter()
            serialized = builder.build_serialized_network(network, config)
            seconds = time.perf_counter() - start
    # past this point Ctrl-C behaves as usual: the writes below are atomic
    if not parsed:
        raise CheckFailed(f"{compiler.title}'s ONNX parser rejects {onnx_path.name}: {_parser_errors(parser)}")
    if serialized is None:
        turing = (" (TensorRT-RTX compiles only fp16 for Turing: build sm75 on its own, from model.fp16.onnx)"
                  if targets and "sm75" in targets and options.precision != "fp16" else "")
        raise CheckFailed(f"{compiler.title} could not build an engine from {onnx_path.name}: "
                          f"{logger.last_error()}{turing}")
    # The engine and its manifest entry land together (staged, renamed in one go); Ctrl-C waits for both.
    data = bytes(serialized)
    with writes_complete_first(f"{engine_path.name} was completed first, and listed in the manifest"):
        with staged(export_dir) as staging:
            if pending_fp16 is not None:
                made = stage_fp16(staging, export_dir, *pending_fp16)
                manifest, source_sha = listed_with(manifest, made), made["sha256"]
            engine_tmp = staging.path(engine_path)
            engine_tmp.write_bytes(data)
            try:  # a summary the compiler's output no longer yields must not cost the engine
                layers = (inspected_layers(trt, data, logger, options.version_compatible) if compiler is TENSORRT
                          else logged_layers(logger.messages))
            except Exception as err:  # noqa: BLE001
                layers = {"source": None, "error": first_line(err)}
            record = artifact_record(
                export_dir,
                engine_path,
                content=engine_tmp,
                kind=compiler.kind,
                precision=options.precision,
                source={"path": onnx_path.name, "sha256": source_sha},
                compiler={"name": compiler.name, "version": trt.__version__},
                strongly_typed=True,
                **facts,
                profile={
                    "input": input_name,
                    "min": options.min_batch,
                    "opt": options.opt_batch,
                    "max": options.max_batch,
                },
                workspace_gb=options.workspace_gb,
                build_seconds=round(seconds, 2),
                layers=layers,
            )
            stage_manifest(staging, export_dir, listed_with(manifest, record))
        # the previous engine's runtime cache holds kernels of that engine, not of this one
        remove_quietly(runtime_cache)
    if compiler is TENSORRT:  # a cache for the next build: worth keeping, not worth failing the engine for
        try:
            with atomic_path(Path(facts["timing_cache"])) as tmp:
                tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        except (OSError, InceptionDeployError) as err:
            step(f"the timing cache was not saved ({first_line(err)})")
    return manifest


def _source_onnx(onnx_path: Path, manifest: dict, precision: str, make_fp16: bool,
                 accept_over_budget: bool = False) -> tuple[tuple | None, str | None]:
    """The ONNX the engine is built from, checked: (None, its sha256) for the listed file, or, for an fp16 ONNX to
    make, ((model, facts), None): made in memory and verified, written with the engine or not at all."""
    if make_fp16:
        return verified_fp16(onnx_path.parent, manifest), None
    cpu_form = onnx_path.with_name(ONNX_FILES["int8-cpu"])
    if not (onnx_path.exists() or onnx_path.is_symlink()) and precision == "int8" and cpu_form.is_file():
        raise InputError(f"{onnx_path.parent} holds ONNX Runtime's CPU int8 form ({cpu_form.name}), which TensorRT "
                         "cannot build (uint8 activations, int32 biases, Q/DQ on outputs): export TensorRT's form "
                         f"with `{export_command(manifest['variant'], 'int8')}`")
    if not onnx_path.is_file():
        raise missing_artifact(onnx_path, f"run `{export_command(manifest['variant'], precision)}`")
    record = verified_record(onnx_path, manifest, required=True)
    sha256 = record["sha256"]
    accepted = check_budget(manifest, record, accept_over_budget)
    if accepted:
        log.warning(accepted)
    if precision == "int8":
        check_form(onnx_path, "int8", manifest["variant"], stock_ort=False)  # the CPU form in TensorRT's place
        check_qdq(onnx.load(str(onnx_path), load_external_data=False), str(onnx_path),
                  f"re-export it with `inception-deploy export {manifest['variant']} --int8 --calib DIR`")
    return None, sha256


def _configure_rtx(trt, config, targets: tuple[str, ...]) -> dict:
    """Ahead-of-time compilation for a list of compute capabilities, with or without a GPU here."""
    config.num_compute_capabilities = len(targets)
    for index, target in enumerate(targets):
        if not config.set_compute_capability(getattr(trt.ComputeCapability, target.upper()), index):
            raise InputError(f"TensorRT-RTX {trt.__version__} refuses --target {target}")
    here = gpu_name()
    return {"targets": list(targets), "built_on": "cpu" if here is None else f"{here} ({gpu_capability()})",
            "tf32": bool(config.get_flag(trt.BuilderFlag.TF32))}


def _configure_tensorrt(trt, config, options: BuildOptions, engine_path: Path) -> dict:
    """Building on the GPU the engine is for: timing cache, builder level, DLA, version compatibility."""
    cache_path = options.timing_cache or engine_path.parent / "timing.cache"
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if options.builder_opt_level is not None:
        config.builder_optimization_level = options.builder_opt_level
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    capability = gpu_capability()
    return {"gpu": {"name": gpu_name(), "compute_capability": f"{capability[2:-1]}.{capability[-1]}"},
            "tf32": bool(config.get_flag(trt.BuilderFlag.TF32)), "timing_cache": str(cache_path),
            "version_compatible": options.version_compatible, "dla_core": options.dla_core,
            "builder_optimization_level": options.builder_opt_level}


def _make_logger(trt):
    """TensorRT's logger, keeping every message: the layer list and the build errors come from here."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple[object, str]] = []

        def log(self, severity, msg):
            # TensorRT-RTX prints its layer list at VERBOSE; enterprise TensorRT's VERBOSE is tactic timing.
            if severity != trt.ILogger.Severity.VERBOSE or msg.lstrip().startswith("Layers:"):
                self.messages.append((severity, msg))

        def last_error(self) -> str:
            errors = [m for s, m in self.messages
                      if s in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR) and m.strip()]
            return errors[-1].strip().splitlines()[0][:300] if errors else "it reported no error"

    return Logger()


def _make_monitor(trt, interrupted: Callable[[], bool]):
    """A progress monitor that stops the build (step_complete -> False) once Ctrl-C was pressed."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            pass

        def step_complete(self, phase_name, step):
            return not interrupted()

        def phase_finish(self, phase_name):
            pass

    return Monitor()


def _parser_errors(parser) -> str:
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = e.node_name() or f"node #{e.node()}"
        errors.append(
            f"node '{node}' ({e.node_operator() or 'unknown operator'}): {first_line(RuntimeError(e.desc()))}"
        )
    return "; ".join(errors[:3]) + (f"; … {len(errors) - 3} more" if len(errors) > 3 else "")
