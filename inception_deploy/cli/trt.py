"""`inception-deploy trt`: an export's fp16, Q/DQ int8 or fp32 ONNX → a TensorRT or TensorRT-RTX engine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from ..compile.engine import BuildOptions, build_engine, find_export
from ..core.artifacts import ONNX_FILES, check_output_dir
from ..core.compilers import gpu_capability, parse_targets, require_builder
from ..core.errors import InputError
from ..core.manifest import read_manifest
from ..models.registry import get_spec
from .common import StepReporter, app, err, out, say
from .options import AcceptOverBudget, OldOut, renamed

log = logging.getLogger(__name__)


@app.command()
def trt(
    variant: Optional[str] = typer.Argument(
        None, help="Variant to build; default: the most recent export under export/."
    ),
    fp16: bool = typer.Option(
        False, "--fp16", help="Compile model.fp16.onnx (the default; made from model.onnx if missing)."
    ),
    int8: bool = typer.Option(
        False, "--int8", help="Compile the Q/DQ model.int8.onnx (from export --int8 --calib DIR)."
    ),
    fp32: bool = typer.Option(False, "--fp32", help="Compile model.onnx as is."),
    compiler: str = typer.Option(
        "auto",
        "--compiler",
        help="auto (TensorRT where it imports and a GPU is visible, else TensorRT-RTX), tensorrt or tensorrt-rtx.",
    ),
    target: Optional[str] = typer.Option(
        None,
        "--target",
        help="TensorRT-RTX: compute capabilities, e.g. sm80,sm86,sm89,sm120 (default: sm80,sm86,sm89,sm120,sm121).",
    ),
    min_batch: int = typer.Option(1, "--min-batch"),
    opt_batch: int = typer.Option(32, "--opt-batch"),
    max_batch: int = typer.Option(256, "--max-batch"),
    workspace_gb: Optional[float] = typer.Option(None, "--workspace-gb", help="Builder workspace limit."),
    tf32: bool = typer.Option(
        False,
        "--tf32",
        help="Let fp32 layers use TF32 (TensorRT's default; off here so that fp32 is fp32). Recorded in the manifest.",
    ),
    timing_cache: Optional[Path] = typer.Option(
        None, "--timing-cache", help="TensorRT: timing cache to reuse and update; default beside the engine."
    ),
    builder_opt_level: Optional[int] = typer.Option(
        None, "--builder-opt-level", help="TensorRT: 0..5; its default is 3."
    ),
    dla_core: Optional[int] = typer.Option(
        None, "--dla-core", help="TensorRT: build for this DLA core (Jetson), with GPU fallback."
    ),
    version_compatible: bool = typer.Option(
        False, "--version-compatible", help="TensorRT: an engine later TensorRT versions can load."
    ),
    export_dir: Optional[Path] = typer.Option(
        None, "--dir", help="The export directory (manifest + ONNX) the engine is built from and written to; default: "
                            "VARIANT's, or the most recent export."
    ),
    old_out: OldOut = None,
    accept_over_budget: AcceptOverBudget = False,
):
    """Compile an export's fp16, Q/DQ int8 or fp32 ONNX into a TensorRT or TensorRT-RTX engine, in its manifest."""
    chosen = [name for name, flag in (("fp16", fp16), ("int8", int8), ("fp32", fp32)) if flag]
    if len(chosen) > 1:
        raise typer.BadParameter("pass one of --fp16, --int8, --fp32", param_hint="precision")
    options = BuildOptions(
        precision=(chosen or ["fp16"])[0],
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_gb=workspace_gb,
        tf32=tf32,
        compiler=compiler,
        targets=target,
        timing_cache=timing_cache,
        builder_opt_level=builder_opt_level,
        dla_core=dla_core,
        version_compatible=version_compatible,
        accept_over_budget=accept_over_budget,
    )
    export_dir = checked_export_dir(variant, renamed(export_dir, old_out, "--dir", "--out"), options)
    fp16_before = (export_dir / ONNX_FILES["fp16"]).exists()
    with StepReporter(err) as on_step:
        manifest = build_engine(export_dir, options, on_step=on_step)
    if options.precision == "fp16" and not fp16_before and (export_dir / ONNX_FILES["fp16"]).is_file():
        out.print(f"wrote {export_dir / ONNX_FILES['fp16']}: the fp16 ONNX the engine is built from, made from "
                  f"{ONNX_FILES['fp32']} and verified against it (in the manifest)", highlight=False, soft_wrap=True)
    print_engine_summary(manifest["artifacts"][-1], export_dir)


def checked_export_dir(variant: Optional[str], out_dir: Optional[Path], options: BuildOptions) -> Path:
    """Where the engine is built from and written, after every check that can fail before the build: exit 2 for
    bad options, then 3 for a missing compiler, then the directory and its variant."""
    if variant is not None:
        get_spec(variant)  # an unknown variant is a usage error, whatever is installed
    chosen_compiler = options.check()
    require_builder(chosen_compiler)
    export_dir = out_dir or find_export(variant)
    if out_dir is None and variant is None:
        say(f"using the most recent export: {export_dir}")
    manifest = read_manifest(export_dir)
    check_output_dir(export_dir, "--dir")  # the engine lands beside its ONNX: writable, before the build
    if variant is not None and manifest is not None and manifest.get("variant") != get_spec(variant).name:
        raise InputError(f"{export_dir} holds an export of {manifest.get('variant')}, not {get_spec(variant).name}: "
                         "name the right VARIANT or --dir")
    here = gpu_capability()
    if chosen_compiler.name == "tensorrt-rtx" and here is not None and here not in parse_targets(options.targets):
        other = ("GPUs; TensorRT (--compiler tensorrt) builds for this one" if here == "sm90" else "GPUs; add "
                                                                                                   f"--target {here}")
        say(f"note: this GPU ({here}) is not among the engine's targets: the engine is for other {other}")
    return export_dir


def print_engine_summary(engine: dict, export_dir: Path) -> None:
    compiler = engine["compiler"]
    where = (f"for {', '.join(engine['targets'])} (built on {engine['built_on']})" if "targets" in engine else
             f"for {engine['gpu']['name']} (sm {engine['gpu']['compute_capability']})")
    out.print(f"{engine['path']}: {compiler['name']} {compiler['version']}, {where}, batch {engine['profile']['min']}/"
              f"{engine['profile']['opt']}/{engine['profile']['max']}, {engine['bytes'] / 2**20:.1f} MiB, "
              f"built in {engine['build_seconds']} s → {export_dir}", highlight=False, soft_wrap=True)
    layers = engine.get("layers")
    if layers and "conv_matmul" in layers:
        compute = ", ".join(f"{n} {signature}" for signature, n in layers["conv_matmul"].items())
        inputs = ", ".join(f"{precision} {n}" for precision, n in layers["by_input_precision"].items())
        out.print(f"  layers: {layers['total']}; conv/matmul: {compute or 'none'}; every layer by its input's "
                  f"precision (graph IO and quantize layers included): {inputs}", highlight=False, soft_wrap=True)
        if "fp32_layers" in layers:
            example = f", e.g. {layers['fp32_layer_names'][0]}" if layers.get("fp32_layer_names") else ""
            out.print(f"  fp32 layers besides conv/matmul and graph IO: {layers['fp32_layers']}{example}",
                      highlight=False, soft_wrap=True)
