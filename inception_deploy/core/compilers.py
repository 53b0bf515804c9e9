"""The compilers of the precision-carrying ONNX, as data: TensorRT and TensorRT-RTX.

Both expose TensorRT's builder API (modules `tensorrt` and `tensorrt_rtx`); what differs is where they
build and what they build for:
- TensorRT (data-centre GPUs, Jetson) builds on the GPU the engine will run on, with a timing cache, DLA
  and version-compatible engines;
- TensorRT-RTX (RTX-class GPUs, Turing to Blackwell) compiles ahead of time on any machine, a CPU
  included, for a list of compute capabilities, and finishes the kernels on the GPU at run time. It has
  no Hopper target, so its engines do not run on H100/H200.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
from dataclasses import dataclass
from types import ModuleType

from .artifacts import ENGINE_KINDS, engine_file
from .errors import BackendMissing, InputError

log = logging.getLogger(__name__)

# TensorRT-RTX's ComputeCapability targets (1.7), and the GPUs they stand for.
RTX_TARGETS = {"sm75": "Turing", "sm80": "A100-class Ampere", "sm86": "RTX 30", "sm89": "RTX 40",
               "sm120": "RTX 50 / Blackwell workstation", "sm121": "DGX Spark"}
# Its default, portable set (NVIDIA's default too): Turing needs a build of its own, and gets no fp32/int8 GEMM.
RTX_PORTABLE = ("sm80", "sm86", "sm89", "sm120", "sm121")
# Options that only enterprise TensorRT honours; TensorRT-RTX would ignore or fail on them.
TENSORRT_ONLY_OPTIONS = {"timing_cache": "--timing-cache", "dla_core": "--dla-core",
                         "version_compatible": "--version-compatible", "builder_opt_level": "--builder-opt-level"}


@dataclass(frozen=True)
class Compiler:
    name: str  # "tensorrt" or "tensorrt-rtx": the --compiler value and the backend name
    title: str  # for people
    module: str  # the Python module that implements it
    install: str  # how to get it
    builds_without_gpu: bool

    @property
    def kind(self) -> str:
        """The manifest kind of the engines it writes."""
        return ENGINE_KINDS[self.name]

    def engine_file(self, precision: str) -> str:
        return engine_file(precision, self.name)


TENSORRT = Compiler("tensorrt", "TensorRT", "tensorrt", "pip install 'inception-deploy[tensorrt]', on a machine with "
                                                        "an NVIDIA GPU",
                    builds_without_gpu=False)
TENSORRT_RTX = Compiler("tensorrt-rtx", "TensorRT-RTX", "tensorrt_rtx", "pip install 'inception-deploy[rtx]' (Linux "
                                                                        "x86-64 or Windows)",
                        builds_without_gpu=True)
COMPILERS = {c.name: c for c in (TENSORRT, TENSORRT_RTX)}
COMPILER_CHOICES = ("auto", *COMPILERS)


def installed(compiler: Compiler) -> bool:
    return importlib.util.find_spec(compiler.module) is not None


def gpu_capability() -> str | None:
    """The visible CUDA GPU's compute capability as 'smXY', or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return "sm{}{}".format(*torch.cuda.get_device_capability())


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def resolve(name: str, *, tensorrt_options: list[str] = (), targets: bool = False) -> Compiler:
    """The compiler `name` stands for. 'auto': enterprise TensorRT where it imports and a GPU is visible,
    else TensorRT-RTX; options only one of them has decide it. InputError (exit 2) on a contradiction."""
    if name not in COMPILER_CHOICES:
        raise InputError(f"--compiler must be one of {', '.join(COMPILER_CHOICES)}, not '{name}'")
    if name == "auto":
        if tensorrt_options and targets:
            raise InputError(f"{tensorrt_options[0]} is a TensorRT option and --target a TensorRT-RTX one: pick one "
                             "with --compiler tensorrt or --compiler tensorrt-rtx")
        if tensorrt_options:
            return TENSORRT
        if targets or not (installed(TENSORRT) and gpu_capability() is not None):
            return TENSORRT_RTX
        return TENSORRT
    compiler = COMPILERS[name]
    if compiler is TENSORRT_RTX and tensorrt_options:
        option = tensorrt_options[0]
        reason = {"--timing-cache": "it tunes no kernels at build time, so a timing cache would do nothing",
                  "--dla-core": "it has no DLA (Jetson's DLA needs TensorRT)",
                  "--version-compatible": "it cannot build version-compatible engines (no lean runtime)",
                  "--builder-opt-level": "it ignores the builder optimization level"}[option]
        raise InputError(f"{option} is refused with --compiler tensorrt-rtx: {reason}; use --compiler tensorrt")
    if compiler is TENSORRT and targets:
        raise InputError("--target is refused with --compiler tensorrt: enterprise TensorRT builds for the GPU it runs "
                         "on, and --target (the compute capabilities TensorRT-RTX compiles for ahead of time) applies "
                         "to --compiler tensorrt-rtx only; drop --target, or use --compiler tensorrt-rtx")
    return compiler


def parse_targets(text: str | list[str] | None) -> tuple[str, ...]:
    """'sm80,sm86' (or 80, 8.6, SM86) -> ('sm80', 'sm86'); None -> the portable set, RTX_PORTABLE."""
    if text is None:
        return RTX_PORTABLE
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not items:
        raise InputError(f"--target needs at least one of {', '.join(RTX_TARGETS)}")
    targets = []
    for item in items:
        digits = re.fullmatch(r"(?:sm_?)?(\d+)(?:\.(\d+))?", item.lower())
        target = f"sm{digits.group(1)}{digits.group(2) or ''}" if digits else item
        if target == "sm90":
            raise InputError("sm90 (H100/H200, Hopper) is not a TensorRT-RTX target: its engines cannot run there; "
                             "build on that GPU with --compiler tensorrt")
        if target not in RTX_TARGETS:
            raise InputError(f"unknown --target '{item}': TensorRT-RTX builds for {', '.join(RTX_TARGETS)}")
        targets.append(target)
    return tuple(dict.fromkeys(targets))


def check_target_precision(targets: tuple[str, ...], precision: str) -> None:
    """Refuse (exit 2), before any work, a precision TensorRT-RTX cannot compile for one of `targets`: Turing (sm75)
    gets fp16 only (it has no fp32 or int8 GEMM: its builder fails on the classifier, after the whole build)."""
    if "sm75" in targets and precision != "fp16":
        others = [t for t in targets if t != "sm75"]
        rest = f"--target {','.join(others)}" if others else "no --target: the portable set"
        raise InputError(f"TensorRT-RTX compiles only fp16 for Turing (sm75), not {precision}: build sm75 from "
                         f"model.fp16.onnx with --fp16 --target sm75, and {precision} for sm80 and later ({rest})")


def import_module(compiler: Compiler) -> ModuleType:
    try:
        return importlib.import_module(compiler.module)
    except (ImportError, OSError) as err:  # OSError: installed, but its native libraries do not load
        raise BackendMissing(f"{compiler.title} is not installed ({err}): {compiler.install}") from None


def require_builder(compiler: Compiler) -> ModuleType:
    """The compiler's module, ready to build here; BackendMissing (exit 3) naming what is missing."""
    module = import_module(compiler)
    if not compiler.builds_without_gpu and gpu_capability() is None:
        raise BackendMissing(f"{compiler.title} builds on the GPU its engines will run on and no CUDA GPU is visible "
                             "here: "
                             "build on that machine, or use --compiler tensorrt-rtx for RTX GPUs")
    return module


def require_runtime(compiler: Compiler) -> ModuleType:
    """The compiler's module, ready to run engines here: both need a CUDA GPU."""
    module = import_module(compiler)
    if gpu_capability() is None:
        raise BackendMissing(f"{compiler.title} runs engines on a CUDA GPU and none is visible here: "
                             "run on a machine with an NVIDIA GPU")
    return module
