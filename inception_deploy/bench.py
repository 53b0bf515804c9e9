"""Throughput and latency across backends, measured the way trtexec measures, with parity beside speed.

variant × backend × precision × batch: each combination is run with its input prepared once, outside the
timed region, warmed up by time, then timed for a duration (timing.py). Combinations that cannot run here
are recorded as skipped with the reason, never dropped.
"""

from __future__ import annotations

import importlib
import os
import platform
import resource
import subprocess
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import __version__
from .artifacts import ONNX_FILES, read_manifest
from .compilers import COMPILERS, installed
from .errors import BackendMissing, InceptionDeployError, InputError, first_line
from .registry import get_spec, resolve_name
from .samples import random_batch
from .timing import measure

BENCH_BACKENDS = ("torch", "torch-compile", "onnxruntime", "onnxruntime-cuda", "tensorrt", "tensorrt-rtx")
PRECISIONS = ("fp32", "fp16", "int8")
GPU_BACKENDS = ("onnxruntime-cuda", "tensorrt", "tensorrt-rtx")


@dataclass(frozen=True)
class BenchPlan:
    variants: list[str]
    backends: list[str]
    precisions: list[str]
    batches: list[int]
    device: str = "cpu"
    warmup_s: float = 2.0
    duration_s: float = 5.0
    include_transfers: bool = False
    check_parity: bool = False
    export_root: Path = Path("export")
    description: str = ""

    def check(self) -> "BenchPlan":
        if not self.variants:
            raise InputError("name at least one VARIANT (or a --suite)")
        unknown = [b for b in self.backends if b not in BENCH_BACKENDS]
        if unknown or not self.backends:
            raise InputError(f"unknown backend '{', '.join(unknown)}': choose from {', '.join(BENCH_BACKENDS)}")
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise InputError(f"unknown precision '{', '.join(unknown)}': choose from {', '.join(PRECISIONS)}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise InputError(f"--batch takes positive integers, got {self.batches}")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"--device must be cpu or cuda, not {self.device}")
        if self.warmup_s < 0 or self.duration_s <= 0:
            raise InputError("--warmup-s must be >= 0 and --duration-s > 0")
        return self


def load_suite(name_or_path: str, search: Path = Path("benchmarks/suites")) -> BenchPlan:
    path = Path(name_or_path)
    if not path.suffix:
        path = search / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in search.glob("*.toml"))) if search.is_dir() else "none found"
        raise InputError(f"no suite '{name_or_path}' ({path}): known suites in {search}: {known}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"suite {path} is not valid TOML: {err}") from None
    fields = {k: data[k] for k in ("variants", "backends", "precisions", "batches", "device", "warmup_s",
                                   "duration_s", "include_transfers", "description") if k in data}
    fields["variants"] = [resolve_name(v) for v in fields.get("variants", [])]
    return BenchPlan(**fields).check()


@dataclass
class BenchRecord:
    variant: str
    backend: str
    precision: str
    batch: int
    device: str
    status: str  # "ok", "skipped" or "failed"
    reason: str | None = None
    stats: dict | None = None  # timing.LatencyStats
    memory_mib: float | None = None
    memory_kind: str | None = None  # what memory_mib measures
    parity: str = "unchecked"  # "pass", "fail", "reference", "unchecked"
    settings: dict = field(default_factory=dict)  # backend settings that were used (threads, layout, …)
    include_transfers: bool = False
    warning: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def environment(device: str) -> dict:
    """What the figures were measured on."""
    import onnxruntime

    env = {
        "inception_deploy": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
    }
    if device == "cuda" and torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   driver=_nvidia_driver())
    for name, compiler in COMPILERS.items():
        try:
            env[name] = importlib.import_module(compiler.module).__version__ if installed(compiler) else None
        except Exception as err:  # noqa: BLE001 - installed but broken (native libraries): say so, measure the rest
            env[name] = f"unusable: {first_line(err)}"
    return env


def run_bench(plan: BenchPlan, *, on_step: Callable[[str], None] | None = None,
              on_record: Callable[[BenchRecord], None] | None = None) -> list[BenchRecord]:
    report_step = on_step or (lambda *_: None)
    emit = on_record or (lambda _: None)
    plan.check()
    records: list[BenchRecord] = []
    total = len(plan.variants) * len(plan.backends) * len(plan.precisions) * len(plan.batches)

    def step(label: str) -> None:
        report_step(label, len(records), total)  # the sweep's progress, in combinations

    def add(record: BenchRecord) -> None:
        records.append(record)
        emit(record)

    for variant in plan.variants:
        spec = get_spec(variant)
        for backend in plan.backends:
            for precision in plan.precisions:
                reason = _skip_reason(plan, spec.name, backend, precision)
                if reason:
                    for batch in plan.batches:
                        add(BenchRecord(spec.name, backend, precision, batch, _device_of(backend, plan), "skipped", reason))
                    continue
                step(f"{spec.name} · {backend} · {precision}: loading")
                try:
                    _bench_combination(plan, spec, backend, precision, add, step)
                except BackendMissing as err:
                    for batch in plan.batches:
                        add(BenchRecord(spec.name, backend, precision, batch, _device_of(backend, plan), "skipped", str(err)))
    if plan.check_parity:
        _fill_parity(plan, records, step)
    return records


def _device_of(backend: str, plan: BenchPlan) -> str:
    if backend in GPU_BACKENDS:
        return "cuda"
    if backend == "onnxruntime":
        return "cpu"
    return plan.device


def _skip_reason(plan: BenchPlan, variant: str, backend: str, precision: str) -> str | None:
    device = _device_of(backend, plan)
    if backend.startswith("torch") and precision == "int8":
        return "torch runs no int8: the Q/DQ ONNX runs on onnxruntime, tensorrt or tensorrt-rtx"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU here"
    if backend == "onnxruntime" and precision == "fp16":
        return "ONNX Runtime's CPU provider runs fp16 through inserted Casts: a timing would measure the Casts"
    if backend in COMPILERS:
        compiler = COMPILERS[backend]
        if not installed(compiler):
            return f"{compiler.title} is not installed ({compiler.install})"
        engine = plan.export_root / variant / compiler.engine_file(precision)
        if not engine.is_file():
            return f"no {engine}: build it with `inception-deploy trt {variant} --{precision} --compiler {backend}`"
    if backend.startswith("onnxruntime") and precision == "int8":
        if not (plan.export_root / variant / ONNX_FILES["int8"]).is_file():
            return f"no {plan.export_root / variant / ONNX_FILES['int8']}: make it with `export {variant} --int8 --calib DIR`"
    return None


def _bench_combination(plan: BenchPlan, spec, backend: str, precision: str, add, step) -> None:
    device = _device_of(backend, plan)
    artifact = None
    if backend.startswith("onnxruntime") or backend in COMPILERS:
        artifact = _artifact(plan, spec.name, backend, precision, step)
    parity = _manifest_parity(plan, spec.name, artifact, backend, precision)
    for batch in plan.batches:
        x = random_batch(spec, batch, seed=0).numpy()
        step(f"{spec.name} · {backend} · {precision} · batch {batch}")
        candidates = []
        try:
            for settings, runner in _runners(spec, backend, precision, device, artifact, plan.include_transfers):
                with runner:
                    if torch.cuda.is_available() and device == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    baseline = _device_used_mib() if device == "cuda" else None
                    if plan.include_transfers:
                        feed = {runner.inputs[0].name: x}
                        stats = measure(lambda: runner.run(feed), batch=batch, warmup_s=plan.warmup_s,
                                        duration_s=plan.duration_s)
                    else:
                        prepared = runner.prepare({runner.inputs[0].name: x})
                        stats = measure(lambda: runner.run_prepared(prepared), batch=batch, warmup_s=plan.warmup_s,
                                        duration_s=plan.duration_s, synchronize=runner.synchronize)
                    memory, kind = _memory(device, backend, baseline)
                    candidates.append((stats, settings, memory, kind))
        except BackendMissing:
            raise
        except (InceptionDeployError, RuntimeError, ValueError, MemoryError) as err:
            add(BenchRecord(spec.name, backend, precision, batch, device, "failed", first_line(err), parity=parity,
                            include_transfers=plan.include_transfers))
            continue
        stats, settings, memory, kind = max(candidates, key=lambda c: c[0].throughput)
        warning = f"unstable: latency CV {stats.cv:.1%} > 5 %" if stats.unstable else None
        add(BenchRecord(spec.name, backend, precision, batch, device, "ok", None, stats.to_dict(), memory, kind, parity,
                        settings, plan.include_transfers, warning))


def _artifact(plan: BenchPlan, variant: str, backend: str, precision: str, step) -> Path:
    directory = plan.export_root / variant
    if backend in COMPILERS:
        return directory / COMPILERS[backend].engine_file(precision)
    path = directory / ONNX_FILES[precision]
    if not path.is_file() and precision in ("fp32", "fp16"):
        from .export import export_onnx

        step(f"{variant}: no {path}, exporting it (untrained weights) first")
        export_onnx(variant, fp16=precision == "fp16", out_dir=directory)
    return path


def _manifest_parity(plan: BenchPlan, variant: str, artifact: Path | None, backend: str, precision: str) -> str:
    if artifact is None:
        return "reference" if precision == "fp32" and backend == "torch" else "unchecked"
    manifest = read_manifest(artifact.parent) or {}
    record = next((a for a in manifest.get("artifacts", []) if a.get("path") == artifact.name), None)
    passed = (record or {}).get("parity", {}).get("passed")
    return "unchecked" if passed is None else ("pass" if passed else "fail")


def _runners(spec, backend: str, precision: str, device: str, artifact: Path | None, include_transfers: bool):
    """(settings, runner) candidates for one combination; the fastest is reported, with its settings."""
    if backend in ("torch", "torch-compile"):
        from .runners.torch_runner import TorchRunner
        from .zoo import deployable_model

        model = deployable_model(spec.name)
        # channels_last is what fp16 tensor cores want; on the CPU it often wins in fp32 too: measure both.
        for channels_last in (True,) if precision == "fp16" else (False, True):
            yield ({"channels_last": channels_last, "threads": torch.get_num_threads(), "compile": backend == "torch-compile"},
                   TorchRunner(model, device=device, precision=precision, channels_last=channels_last,
                               compile=backend == "torch-compile"))
    elif backend == "onnxruntime":
        from .runners.onnxruntime_runner import OnnxRuntimeRunner

        threads = os.cpu_count()
        yield {"intra_op_threads": threads}, OnnxRuntimeRunner(artifact, precision=precision, threads=threads)
    elif backend == "onnxruntime-cuda":
        from .runners.onnxruntime_runner import OnnxRuntimeRunner

        for nhwc in (0, 1):  # whichever layout measures faster is kept
            options = {"prefer_nhwc": str(nhwc), "cudnn_conv_algo_search": "EXHAUSTIVE"}
            if not include_transfers:  # a CUDA graph replays fixed device addresses: only with prepared inputs
                options["enable_cuda_graph"] = "1"
            yield options, OnnxRuntimeRunner(artifact, device="cuda", precision=precision, provider_options=options)
    elif backend in COMPILERS:
        from .runners import BACKENDS, open_runner

        yield {}, open_runner(BACKENDS[backend], artifact=artifact, precision=precision)


def _memory(device: str, backend: str, baseline: float | None) -> tuple[float | None, str]:
    if device == "cuda":
        if backend.startswith("torch"):
            return torch.cuda.max_memory_allocated() / 2**20, "torch peak allocated (MiB)"
        used = _device_used_mib()
        return (used - baseline if baseline is not None else used), "device memory in use, over the idle baseline (MiB)"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS so far (MiB)"


def _device_used_mib() -> float:
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def _fill_parity(plan: BenchPlan, records: list[BenchRecord], step) -> None:
    """--check-parity: run parity now for every combination that ran."""
    from .parity import check_parity

    from .runners import BACKENDS

    for variant in plan.variants:
        for backend in {r.backend for r in records if r.variant == variant and r.status == "ok"}:
            name = ("torch" if plan.device == "cpu" else "torch-cuda") if backend == "torch" else backend
            if name not in BACKENDS:
                continue  # torch-compile computes what torch does; no separate artifact
            step(f"checking parity: {variant} on {backend}")
            report = check_parity(variant, export_dir=plan.export_root / variant, backends=name, samples=4)
            verdicts = {r.precision: r.passed for r in report.rows if r.passed is not None}
            for r in records:
                if r.variant == variant and r.backend == backend and r.precision in verdicts:
                    r.parity = "pass" if verdicts[r.precision] else "fail"




def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None
