"""The `inception-deploy` command line: thin wrappers over the library API."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from typer.core import TyperGroup

from .errors import InceptionDeployError, InputError
from .interrupts import honoured_interrupt, interrupted_says
from .registry import list_models

INTERRUPTED = 130  # Ctrl-C, as shells report it
INTERRUPTED_MESSAGE = "interrupted: nothing was written"


class OneLineErrors(TyperGroup):
    """Every failure ends as one line on stderr and a documented exit code, never a traceback.

    2: usage and input errors; 1: a failed check; 3: a missing backend or device.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
            if code == INTERRUPTED:  # typer turns a KeyboardInterrupt into a silent Exit(130)
                code = _fail(INTERRUPTED_MESSAGE, INTERRUPTED)
        except InceptionDeployError as error:
            code = _fail(str(error), error.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            code = _fail(INTERRUPTED_MESSAGE, INTERRUPTED)
        except Exception as error:
            if _is_click_error(error):  # a usage error: unknown option, missing argument, bad value
                ctx, message = getattr(error, "ctx", None), error.format_message()
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                # An empty message follows the help printed for a bare command: nothing to add.
                code = _fail(f"{message}{hint}", error.exit_code) if message else error.exit_code
            elif os.environ.get("INCEPTION_DEPLOY_DEBUG"):
                raise
            else:
                code = _fail(f"unexpected {type(error).__name__}: {error} (INCEPTION_DEPLOY_DEBUG=1 shows the traceback)", 1)
        return _finish(code, standalone_mode)


def _is_click_error(error: Exception) -> bool:
    # typer vendors its own copy of click, so match click's exception interface, not its class.
    return hasattr(error, "format_message") and isinstance(getattr(error, "exit_code", None), int)


def _finish(code, standalone_mode: bool) -> int:
    code = code if isinstance(code, int) else 0
    if standalone_mode:
        sys.exit(code)
    return code


def _fail(message: str, code: int) -> int:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return code


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Take the Inception family from PyTorch to verified ONNX artifacts.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console()
err = Console(stderr=True)


def model_rows() -> list[dict]:
    return [
        {
            "name": s.name,
            "aliases": list(s.aliases),
            "params": s.params,
            "params_with_aux": s.params_with_aux,
            "input_size": list(s.input_size),
            "gmacs": s.gmacs,
            "checkpoint_layout": s.layout.source,
        }
        for s in list_models()
    ]


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table.")):
    """List the variants, their reference sizes and the checkpoints they load."""
    rows = model_rows()
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title="The Inception zoo (1000 classes)")
    for column, justify in (("name", "left"), ("aliases", "left"), ("params", "right"), ("+ aux heads", "right"),
                            ("input", "left"), ("GMACs", "right")):
        table.add_column(column, justify=justify, no_wrap=True)
    for r in rows:
        table.add_row(
            r["name"], ", ".join(r["aliases"]), f"{r['params']:,}",
            f"{r['params_with_aux']:,}" if r["params_with_aux"] else "—",
            "×".join(map(str, r["input_size"][1:])), f"{r['gmacs']:.2f}",
        )
    out.print(table)
    out.print("Checkpoints each one loads unchanged (--weights):")
    for r in rows:
        out.print(f"  {r['name']:<20} {r['checkpoint_layout']}", highlight=False)


@app.command()
def export(
    variant: str = typer.Argument(..., help="googlenet (v1), inception_v2 (v2), inception_v3 (v3), inception_v4 (v4), inception_resnet_v2 (irv2)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Write the verified fp32 ONNX (the base every other artifact derives from)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint (.pth/.pt/.safetensors) in the variant's layout. Without it the model is untrained."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Head size; default: the checkpoint's, else 1000."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset."),
    batch: str = typer.Option("dynamic", "--batch", help="'dynamic' or a fixed batch size."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify the graph with onnxsim."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write model.fp16.onnx (fp16 weights and compute), verified against model.onnx."),
    fp16_io: bool = typer.Option(False, "--fp16-io", help="With --fp16: float16 graph inputs/outputs instead of float32."),
    int8: bool = typer.Option(False, "--int8", help="Also write model.int8.onnx with explicit Q/DQ, calibrated on --calib images."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of calibration images (fed through the variant's preprocessing)."),
    calib_samples: int = typer.Option(64, "--calib-samples", help="How many calibration images to use."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="minmax, entropy or percentile."),
    calib_synthetic: bool = typer.Option(False, "--calib-synthetic", help="Calibrate on random tensors: SMOKE TESTS ONLY."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output directory; default export/<name>/."),
    force: bool = typer.Option(False, "--force", help="Replace an export of another variant in --out."),
):
    """Export VARIANT to ONNX, prove it in ONNX Runtime, then write model.onnx and manifest.json."""
    from .export import export_onnx  # heavy: torch.onnx, onnxscript, onnxsim
    from .registry import get_spec

    if not onnx:
        raise typer.BadParameter("--no-onnx leaves nothing to export: the ONNX model is the base artifact", param_hint="--onnx")
    where = out_dir or Path("export") / get_spec(variant).name
    with StepReporter(err) as on_step, interrupted_says(f"interrupted: no artifact was written; {where} is as it was"):
        manifest = export_onnx(variant, weights=weights, num_classes=num_classes, opset=opset, batch=batch,
                               simplify=simplify, fp16=fp16, fp16_io=fp16_io, int8=int8, calib=calib,
                               calib_samples=calib_samples, calib_method=calib_method, calib_synthetic=calib_synthetic,
                               out_dir=out_dir, force=force, on_step=on_step)
    print_export_summary(manifest, out_dir)


class StepReporter:
    """Shows the long steps as they happen on a terminal; silent in logs, where the summary says it all.

    Starts on the first step, and is transient, so that an error stays the only line of output.
    """

    def __init__(self, console: Console):
        self.console = console
        self._last: str | None = None
        self.progress: Progress | None = None
        self.task = None

    def __enter__(self):
        return self

    def __call__(self, label: str, done: int | None = None, total: int | None = None) -> None:
        """A step's label; with done/total, the bar shows how far a counted step (calibration, a sweep) is."""
        if not self.console.is_terminal:
            if os.environ.get("INCEPTION_DEPLOY_PROGRESS") == "lines" and label != self._last:  # for logs and CI
                self.console.print(f"step: {label}", highlight=False, soft_wrap=True)
                self._last = label
            return
        if self.progress is None:
            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(label, total=None)
        self.progress.update(self.task, description=label, completed=done or 0, total=total)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def print_export_summary(manifest: dict, out_dir: Optional[Path]) -> None:
    where = out_dir or Path("export") / manifest["variant"]
    table = Table(title=f"{manifest['variant']} → {where}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("weights", manifest["weights"]["path"] if manifest["weights"] else "none: UNTRAINED (seeded init, BN conditioned)")
    table.add_row("input", f"{manifest['input']['name']} {manifest['input']['shape']} {manifest['input']['dtype']}")
    table.add_row("output", f"{manifest['output']['name']} {manifest['output']['shape']} {manifest['output']['dtype']}")
    table.add_row("opset / params", f"{manifest['opset']} / {manifest['params']:,}")
    kept = set(manifest.get("kept", []))
    for a in manifest["artifacts"]:
        if a["path"] in kept:
            table.add_row(a["path"], f"kept from the previous export: its source is unchanged (sha256 {a['sha256'][:12]}…)")
            continue
        p = a["parity"]
        verdict = "[green]PASS[/]" if p["passed"] else "[bold red]POOR[/]"
        figures = (f"top-1 {p['top1_agreement']:.0%}, top-5 {p['top5_overlap']:.0%}, cosine {p['cosine']:.4f}"
                   if a["precision"] == "int8" else
                   f"max abs {p['max_abs']:.2e}, max rel {p['max_rel']:.2e}, {p['scaled']:.1e} of scale, cosine {p['cosine']:.6f}")
        lines = [f"{a['bytes'] / 2**20:.1f} MiB, sha256 {a['sha256'][:12]}…",
                 f"{verdict} vs {p['reference']} in ORT CPU: {figures} ({p['samples']} samples)"]
        if "calibration" in a:
            c = a["calibration"]
            lines.append(f"calibration: {c['method']} on {c['samples']} "
                         + ("[bold yellow]SYNTHETIC inputs — smoke test only[/]" if c["synthetic"] else f"images from {c['source']}")
                         + f"; cache {'reused' if c['cache_reused'] else 'written'}: {c['cache']}")
        table.add_row(a["path"], "\n".join(lines))
    table.add_row("seconds", ", ".join(f"{k} {v:.1f}" for k, v in manifest["export"]["seconds"].items()))
    out.print(table)
    for entry in manifest.get("removed", []):
        err.print(f"removed {entry['path']}: {entry['why']}", highlight=False, soft_wrap=True)
    for warning in manifest.get("warnings", []):
        err.print(f"[bold yellow]WARNING:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    for a in manifest["artifacts"]:
        if a["path"] in kept:
            continue
        if not a["parity"]["passed"]:
            err.print(f"[bold red]WARNING:[/] {a['path']} agrees poorly with the fp32 model (top-1 "
                      f"{a['parity']['top1_agreement']:.0%}, cosine {a['parity']['cosine']:.4f}): calibrate on more, and more "
                      "representative, images (--calib, --calib-samples) or try --calib-method entropy/percentile")
        if a.get("calibration", {}).get("synthetic"):
            err.print(f"[bold yellow]WARNING:[/] {a['path']} was calibrated on SYNTHETIC inputs: for smoke tests only, "
                      "not for deployment")
    if manifest["untrained"]:
        err.print("[yellow]note:[/] no --weights given: this is an [bold]untrained[/] model (seeded random init, "
                  "BatchNorm conditioned on seeded inputs); pass --weights to export a trained one")


@app.command()
def parity(
    variant: str = typer.Argument(..., help="The variant whose artifacts to check (name or alias)."),
    onnx_files: Optional[list[Path]] = typer.Option(None, "--onnx", help="ONNX file(s) to check; default: every artifact in the variant's manifest."),
    export_dir: Optional[Path] = typer.Option(None, "--dir", help="Export directory holding manifest.json; default export/<name>/."),
    backends: str = typer.Option("onnxruntime", "--backends", help="Comma-separated: torch, torch-cuda, onnxruntime, onnxruntime-cuda, onnxruntime-trt, tensorrt, tensorrt-rtx."),
    reference: str = typer.Option("torch", "--reference", help="torch (fp32, CPU) or onnxruntime (model.onnx on the CPU)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Comma-separated fp32,fp16,int8; default: every artifact present."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="The checkpoint the artifacts came from; default: the one the manifest names."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Head size, when no checkpoint or manifest says."),
    images: Optional[Path] = typer.Option(None, "--images", help="A folder of images, fed through the variant's own preprocessing."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Seeded random inputs (default 8, or 0 with --images)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random inputs."),
    atol: Optional[float] = typer.Option(None, "--atol", help="Elementwise: |a-b| <= atol + rtol*|ref|, instead of the precision's tolerance."),
    rtol: Optional[float] = typer.Option(None, "--rtol", help="See --atol."),
    localize_failures: bool = typer.Option(False, "--localize", help="For a failing ONNX, name the first block whose output leaves tolerance."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the JSON report to PATH, or '-' for stdout."),
    report_md: Optional[Path] = typer.Option(None, "--report", help="Write a Markdown report to PATH.md."),
):
    """Check that every backend computes what the PyTorch model computes. Exit 1 if any row fails."""
    from .artifacts import check_output_file, write_text_atomic
    from .parity import check_parity
    from .report import localization_lines, markdown, rich_table, to_json

    if json_out and json_out != "-":
        check_output_file(Path(json_out), "--json")  # before the work, not after it
    if report_md:
        check_output_file(report_md, "--report")
    with StepReporter(err) as on_step, interrupted_says(INTERRUPTED_MESSAGE), honoured_interrupt():
        report = check_parity(
            variant, onnx_files=onnx_files or None, export_dir=export_dir, backends=backends, reference=reference,
            precisions=precision, weights=weights, num_classes=num_classes, images=images, samples=samples, seed=seed,
            atol=atol, rtol=rtol, localize_failures=localize_failures, on_step=on_step,
        )
    human = err if json_out == "-" else out  # keep stdout pure JSON when it carries the JSON
    human.print(rich_table(report))
    for skipped in report.inputs.get("skipped_images", []):
        err.print(f"[yellow]skipped image[/] {skipped['file']}: {skipped['reason']}", highlight=False)
    for warning in report.warnings:
        err.print(f"[bold yellow]WARNING:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    for line in localization_lines(report):
        human.print(line, highlight=False, soft_wrap=True)
    if report.untrained:
        err.print("[yellow]note:[/] the reference is an [bold]untrained[/] model (seeded init): parity holds for these "
                  "weights; pass --weights to check a trained checkpoint")
    if json_out == "-":
        sys.stdout.write(to_json(report))
    elif json_out:
        write_text_atomic(Path(json_out), to_json(report))
    if report_md:
        write_text_atomic(report_md, markdown(report))
    human.print("[bold green]PASS[/]" if report.passed else "[bold red]FAIL[/]: a backend leaves tolerance")
    if not report.passed:
        raise typer.Exit(1)


@app.command()
def trt(
    variant: Optional[str] = typer.Argument(None, help="Variant to build; default: the most recent export under export/."),
    fp16: bool = typer.Option(False, "--fp16", help="Compile model.fp16.onnx (the default; made from model.onnx if missing)."),
    int8: bool = typer.Option(False, "--int8", help="Compile the Q/DQ model.int8.onnx (from export --int8 --calib DIR)."),
    fp32: bool = typer.Option(False, "--fp32", help="Compile model.onnx as is."),
    compiler: str = typer.Option("auto", "--compiler", help="auto (TensorRT where it imports and a GPU is visible, else TensorRT-RTX), tensorrt or tensorrt-rtx."),
    target: Optional[str] = typer.Option(None, "--target", help="TensorRT-RTX: compute capabilities, e.g. sm80,sm86,sm89,sm120 (default: sm80,sm86,sm89,sm120,sm121)."),
    min_batch: int = typer.Option(1, "--min-batch"),
    opt_batch: int = typer.Option(32, "--opt-batch"),
    max_batch: int = typer.Option(256, "--max-batch"),
    workspace_gb: Optional[float] = typer.Option(None, "--workspace-gb", help="Builder workspace limit."),
    tf32: bool = typer.Option(False, "--tf32", help="Let fp32 layers use TF32 (TensorRT's default; off here so that fp32 is fp32). Recorded in the manifest."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT: timing cache to reuse and update; default beside the engine."),
    builder_opt_level: Optional[int] = typer.Option(None, "--builder-opt-level", help="TensorRT: 0..5; its default is 3."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="TensorRT: build for this DLA core (Jetson), with GPU fallback."),
    version_compatible: bool = typer.Option(False, "--version-compatible", help="TensorRT: an engine later TensorRT versions can load."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="The export directory (manifest + ONNX) the engine is built from and written to."),
):
    """Compile an export's fp16, Q/DQ int8 or fp32 ONNX into a TensorRT or TensorRT-RTX engine and list it in the manifest."""
    from .artifacts import check_output_dir
    from .compilers import gpu_capability, parse_targets, require_builder
    from .engine import BuildOptions, build_engine, find_export
    from .manifest import read_manifest
    from .registry import get_spec

    chosen = [name for name, flag in (("fp16", fp16), ("int8", int8), ("fp32", fp32)) if flag]
    if len(chosen) > 1:
        raise typer.BadParameter("pass one of --fp16, --int8, --fp32", param_hint="precision")
    options = BuildOptions(precision=(chosen or ["fp16"])[0], min_batch=min_batch, opt_batch=opt_batch,
                           max_batch=max_batch, workspace_gb=workspace_gb, tf32=tf32, compiler=compiler,
                           targets=parse_targets(target) if target is not None else None, timing_cache=timing_cache,
                           builder_opt_level=builder_opt_level, dla_core=dla_core, version_compatible=version_compatible)
    if variant is not None:
        get_spec(variant)  # an unknown variant is a usage error, whatever is installed
    chosen_compiler = options.check()
    require_builder(chosen_compiler)  # exit 2 for bad options, then 3 for a missing compiler, before any work
    export_dir = out_dir or find_export(variant)
    if out_dir is None and variant is None:
        err.print(f"using the most recent export: {export_dir}", highlight=False)
    manifest = read_manifest(export_dir)
    check_output_dir(export_dir, "--out")  # the engine lands beside its ONNX: writable, before the build
    if variant is not None and manifest is not None and manifest.get("variant") != get_spec(variant).name:
        raise InputError(f"{export_dir} holds an export of {manifest.get('variant')}, not {get_spec(variant).name}: "
                         "name the right VARIANT or --out")
    here = gpu_capability()
    if chosen_compiler.name == "tensorrt-rtx" and here is not None and here not in parse_targets(options.targets):
        err.print(f"[yellow]note:[/] this GPU ({here}) is not among the engine's targets: the engine is for other "
                  + ("GPUs; TensorRT (--compiler tensorrt) builds for this one" if here == "sm90" else f"GPUs; add --target {here}"),
                  highlight=False, soft_wrap=True)
    with StepReporter(err) as on_step:
        manifest = build_engine(export_dir, options, on_step=on_step)
    print_engine_summary(manifest["artifacts"][-1], export_dir)


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
        out.print(f"  layers: {layers['total']}; conv/matmul: {compute or 'none'}; by input precision: {inputs}", highlight=False, soft_wrap=True)


def _command_line(*, leave_out: tuple[str, ...] = ()) -> str | None:
    """The command as it was typed, for a report's "reproduce with" line."""
    import shlex

    argv = [a for a in sys.argv[1:] if a not in leave_out]
    return "inception-deploy " + " ".join(shlex.quote(a) for a in argv) if argv else None


def _csv(text: Optional[str], cast=str, option: str = "") -> Optional[list]:
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        try:
            cast(item)
        except ValueError:
            kind = "an integer" if cast is int else "valid"
            raise InputError(f"{option} '{item}' is not {kind}: expected a comma-separated list, got '{text}'") from None
    return [cast(item) for item in items]


@app.command()
def bench(
    variants: Optional[list[str]] = typer.Argument(None, help="Variants to measure (default: the suite's)."),
    backends: Optional[str] = typer.Option(None, "--backends", help="torch,torch-compile,onnxruntime,onnxruntime-cuda,tensorrt,tensorrt-rtx (default torch,onnxruntime)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32,fp16,int8 (default fp32)."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Batch sizes, e.g. 1,8,32,128,256 (default 1,8)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda, for the torch backends (default cpu)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Measure every row N times, rows alternating round by round; report the median and the spread (default 3)."),
    warmup_s: Optional[float] = typer.Option(None, "--warmup-s", help="Warm-up per round, seconds, after at least 3 iterations (default 2)."),
    duration_s: Optional[float] = typer.Option(None, "--duration-s", help="Timed window per round, seconds (default 5)."),
    tf32: Optional[bool] = typer.Option(None, "--tf32/--no-tf32", help="Let fp32 rows on a GPU use TF32, labelled so (default: off, fp32 is fp32)."),
    include_transfers: Optional[bool] = typer.Option(None, "--include-transfers/--exclude-transfers", help="Time host↔device copies too (default: excluded)."),
    check_parity: bool = typer.Option(False, "--check-parity", help="Check every row's outputs on the runner that was timed, against torch fp32."),
    suite: Optional[str] = typer.Option(None, "--suite", help="A sweep: a built-in suite (cpu-smoke, cpu-2core, h100-full), ./benchmarks/suites/NAME.toml, or a .toml path; options given here override it."),
    export_root: Path = typer.Option(Path("export"), "--export-root", help="Where the artifacts are (missing fp32/fp16 ONNX are exported there)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the records as JSON; each measurement is also appended to a .jsonl beside it as it happens."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write the records as CSV."),
    report_dir: Optional[Path] = typer.Option(None, "--report", help="Write JSON, JSON lines, CSV, a Markdown summary and PNG plots into DIR."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted sweep: keep the (variant, batch) groups that --report's (or --json's) log already holds, measured under the same settings, machine and artifacts; measure the rest."),
):
    """Measure throughput and latency across backends, precisions and batch sizes."""
    import dataclasses

    from .artifacts import check_output_dir, check_output_file
    from .bench import run_bench
    from .bench_plan import BenchPlan, load_suite
    from .bench_log import MeasurementLog, new_run_id, resumable_groups
    from .bench_report import write_reports
    from .environment import environment
    from .registry import resolve_name

    base = load_suite(suite) if suite else BenchPlan(variants=[], backends=["torch", "onnxruntime"],
                                                     precisions=["fp32"], batches=[1, 8])
    overrides = {k: v for k, v in {
        "variants": [resolve_name(v) for v in variants] if variants else None, "backends": _csv(backends),
        "precisions": _csv(precision), "batches": _csv(batch, int, "--batch"), "device": device, "warmup_s": warmup_s,
        "duration_s": duration_s, "include_transfers": include_transfers, "rounds": rounds, "tf32": tf32,
    }.items() if v is not None}
    plan = dataclasses.replace(base, **overrides, check_parity=check_parity, export_root=export_root).check()
    for path, option in ((json_out, "--json"), (csv_out, "--csv")):
        if path is not None:
            check_output_file(path, option)  # before the sweep, not after it
    if report_dir is not None:
        check_output_dir(report_dir, "--report")
    env = environment(plan.device)
    plan_dict = plan.to_dict()
    # The command that reproduces the report measures everything: --resume would keep what is already there.
    plan_dict["command"] = _command_line(leave_out=("--resume",))
    # One log per file: --json DIR/bench.json with --report DIR names the same one twice.
    log_paths: list[Path] = []
    for path in ([report_dir / "bench.jsonl"] if report_dir else []) + ([json_out.with_suffix(".jsonl")] if json_out else []):
        if all(path.resolve() != other.resolve() for other in log_paths):
            log_paths.append(path)
    resumed, resumes, previous = {}, [], None
    if resume:
        if not log_paths:
            raise InputError("--resume continues the sweep logged in --report DIR (its bench.jsonl) or beside --json FILE: name the one to continue")
        previous = next((p for p in log_paths if p.is_file()), None)
        if previous is None:
            err.print(f"nothing to resume in {log_paths[0]}: measuring every group", highlight=False, soft_wrap=True)
        else:
            resumed, resumes, ignored = resumable_groups(previous, env, plan_dict)
            err.print(f"resuming from {previous}: {len(resumed)} group(s) logged by {len(resumes)} earlier run(s)"
                      + (f" ({ignored} run(s) with other settings or on another machine ignored)" if ignored else "")
                      + "; each is kept if it still fits, else measured again", highlight=False, soft_wrap=True)
    logs = []
    run_id = new_run_id()
    for path in log_paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            logs.append(MeasurementLog(path, env, plan_dict, run=run_id, resumes=resumes if path == previous else ()))
        except OSError as e:
            raise InputError(f"cannot write {path} ({e.strerror}): choose another --json/--report path") from None

    table = Table(title=f"bench on {env.get('gpu') or env['cpu']}", box=None)
    for column in ("variant", "backend", "prec", "batch", "img/s", "spread", "p50 ms", "GPU ms", "parity", "note"):
        table.add_column(column, justify="right" if column in ("batch", "img/s", "spread", "p50 ms", "GPU ms") else "left")

    def on_record(r) -> None:
        from .bench_report import precision_label

        if not r.resumed_from:  # a kept record is in the log already
            for log in logs:
                log.record(r)
        if r.status == "ok":
            s = r.stats
            gpu = f"{s['gpu_p50_ms']:.2f}" if s.get("gpu_p50_ms") is not None else "—"
            row = [r.variant, r.backend, precision_label(r), str(r.batch), f"{s['throughput']:,.1f}",
                   f"{s['throughput_spread']:.0%}", f"{s['p50_ms']:.2f}", gpu, r.parity,
                   "; ".join(r.warnings + ([f"kept: measured by run {r.resumed_from}"] if r.resumed_from else []))]
        else:
            row = [r.variant, r.backend, r.precision, str(r.batch), "—", "—", "—", "—", r.parity, f"{r.status}: {r.reason}"]
        table.add_row(*row)
        if not out.is_terminal:
            out.print("  ".join(row), highlight=False, soft_wrap=True)

    def on_measurement(m: dict) -> None:
        for log in logs:
            log.measurement(m)

    kept = (f"the measurements so far are in {', '.join(str(log.path) for log in logs)} (the same command with --resume "
            "continues)" if logs else "nothing was written")
    with StepReporter(err) as on_step, interrupted_says(f"interrupted: {kept}; no report was written"), honoured_interrupt():
        if out.is_terminal:
            from rich.live import Live

            with Live(table, console=out, refresh_per_second=4):
                records = run_bench(plan, on_step=on_step, on_record=on_record, on_measurement=on_measurement, resumed=resumed)
        else:
            records = run_bench(plan, on_step=on_step, on_record=on_record, on_measurement=on_measurement, resumed=resumed)
    for path in write_reports(records, env, plan_dict, json_path=json_out, csv_path=csv_out, report_dir=report_dir):
        err.print(f"wrote {path}", highlight=False)
    for log in logs:
        err.print(f"wrote {log.path} (appended as measured)", highlight=False)
    if resume:
        kept = {(r.variant, r.batch) for r in records if r.resumed_from}
        err.print(f"--resume: kept {len(kept)} group(s) as earlier runs measured them; measured "
                  f"{len({(r.variant, r.batch) for r in records} - kept)} now", highlight=False, soft_wrap=True)
    failed = [r for r in records if r.status == "failed"]
    if failed:
        raise InceptionDeployError(f"{len(failed)} combination(s) failed: first {failed[0].variant} {failed[0].backend} "
                                   f"{failed[0].precision} b{failed[0].batch}: {failed[0].reason}")


@app.command()
def triton(
    variant: str = typer.Argument(..., help="The exported variant to serve (name or alias)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or int8: which artifact of the export."),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="onnxruntime (the ONNX) or tensorrt (an engine from `trt --compiler tensorrt`)."),
    max_batch: int = typer.Option(64, "--max-batch", help="Triton's max_batch_size; 0 for a fixed-batch export (no batching)."),
    instances: int = typer.Option(1, "--instances", help="Model instances per device (instance_group count)."),
    kind: str = typer.Option("gpu", "--kind", help="gpu or cpu: where Triton runs the instances."),
    preferred_batch: Optional[str] = typer.Option(None, "--preferred-batch", help="The dynamic batcher's preferred sizes, e.g. 8,16,32."),
    max_queue_delay_us: int = typer.Option(100, "--max-queue-delay-us", help="How long the dynamic batcher may hold a request to fill a batch."),
    trt_accelerator: bool = typer.Option(False, "--trt-accelerator", help="onnxruntime on a GPU: let Triton's ORT backend use TensorRT."),
    name: Optional[str] = typer.Option(None, "--name", help="The model's name in the repository; default: the variant's."),
    export_dir: Optional[Path] = typer.Option(None, "--dir", help="The export directory; default export/<name>/."),
    repo: Path = typer.Option(Path("model_repository"), "--repo", help="The Triton model repository to write into."),
):
    """Write a Triton model repository (config.pbtxt + the verified artifact + its manifest) for production Triton."""
    from .export import default_out_dir
    from .manifest import read_manifest
    from .registry import get_spec
    from .triton_repo import RUNTIMES, TritonOptions, write_repository

    spec = get_spec(variant)
    options = TritonOptions(precision=precision, runtime=runtime, max_batch=max_batch, instances=instances, kind=kind,
                            preferred_batch=tuple(_csv(preferred_batch, int, "--preferred-batch") or ()),
                            max_queue_delay_us=max_queue_delay_us, trt_accelerator=trt_accelerator, name=name).check()
    directory = export_dir or default_out_dir(spec.name)
    manifest = read_manifest(directory)
    if manifest is not None and manifest["variant"] != spec.name:
        raise InputError(f"{directory} holds an export of {manifest['variant']}, not {spec.name}: name the right VARIANT or --dir")
    with interrupted_says(f"interrupted: {repo} is as it was"):
        served = write_repository(directory, repo, options)
    out.print(f"wrote {served.model_dir}: {served.artifact['path']} (sha256 {served.artifact['sha256'][:12]}…, "
              f"{RUNTIMES[options.runtime][0]}), config.pbtxt, manifest.json", highlight=False, soft_wrap=True)
    for warning in served.warnings:
        err.print(f"[bold yellow]WARNING:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    out.print(f"serve it: docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v {repo.resolve()}:/models "
              "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models", highlight=False, soft_wrap=True)


@app.command()
def serve(
    variant: str = typer.Argument(..., help="The exported variant to serve (name or alias)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or int8: which ONNX of the export."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda: where ONNX Runtime runs it."),
    http_port: int = typer.Option(8000, "--http-port"),
    grpc_port: int = typer.Option(8001, "--grpc-port"),
    metrics_port: int = typer.Option(8002, "--metrics-port"),
    address: str = typer.Option("127.0.0.1", "--address", help="Where to listen; 0.0.0.0 for every interface."),
    max_batch: int = typer.Option(64, "--max-batch", help="The largest batch Triton's dynamic batcher forms."),
    max_queue_delay_us: int = typer.Option(100, "--max-queue-delay-us"),
    export_dir: Optional[Path] = typer.Option(None, "--dir", help="The export directory; default export/<name>/."),
):
    """Start a real Triton Inference Server here (PyTriton) serving the verified ONNX, until Ctrl-C. For
    development, CPU hosts and tests; production Triton loads the repository `inception-deploy triton` writes."""
    from .export import default_out_dir
    from .registry import get_spec
    from .serve import running_server

    spec = get_spec(variant)
    for port, option in ((http_port, "--http-port"), (grpc_port, "--grpc-port"), (metrics_port, "--metrics-port")):
        if not 0 < port < 65536:
            raise InputError(f"{option} must be a port number (1..65535), got {port}")
    directory = export_dir or default_out_dir(spec.name)
    with interrupted_says("interrupted: the server stopped"):
        with running_server(directory, precision=precision, device=device, max_batch=max_batch,
                            max_queue_delay_us=max_queue_delay_us, http_port=http_port, grpc_port=grpc_port,
                            metrics_port=metrics_port, address=address) as endpoints:
            out.print(f"serving {endpoints.model} ({precision}, onnxruntime on {device}) with Triton's dynamic batcher "
                      f"(max batch {max_batch}): HTTP {endpoints.http}, gRPC {endpoints.grpc}, metrics "
                      f"{endpoints.metrics}; server log {endpoints.log}. Ctrl-C stops it.", highlight=False, soft_wrap=True)
            sys.stdout.flush()  # a pipe buffers: whoever waits for the endpoints gets them now
            while True:
                time.sleep(3600)


@app.command()
def loadtest(
    url: str = typer.Argument(..., help="The server, e.g. http://127.0.0.1:8000 (HTTP) or 127.0.0.1:8001 with --protocol grpc."),
    model: str = typer.Option(..., "--model", help="The model's name on the server."),
    protocol: str = typer.Option("http", "--protocol", help="http or grpc."),
    concurrency: str = typer.Option("1,4,16,64", "--concurrency", help="Concurrent clients, one level after another."),
    duration_s: float = typer.Option(10.0, "--duration-s", help="Seconds per concurrency level."),
    images: Optional[Path] = typer.Option(None, "--images", help="Send these images (through the variant's preprocessing) instead of random inputs."),
    check: bool = typer.Option(False, "--check", help="Compare every response with the local export's ONNX run at batch 1."),
    precision: str = typer.Option("fp32", "--precision", help="With --check: which of the export's ONNX the server serves."),
    variant: Optional[str] = typer.Option(None, "--variant", help="The variant, for --images and --check; default: the model's name."),
    export_dir: Optional[Path] = typer.Option(None, "--dir", help="With --check: the export directory; default export/<variant>/."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report to PATH."),
    report_dir: Optional[Path] = typer.Option(None, "--report", help="Write JSON, Markdown and a PNG plot into DIR."),
):
    """Load a Triton server with concurrent clients; report throughput, latency, failures, and parity under load."""
    from .artifacts import check_output_dir, check_output_file
    from .export import default_out_dir
    from .loadtest import local_reference, run_loadtest
    from .loadtest_report import write_reports
    from .registry import get_spec
    from .samples import image_batch

    levels = _csv(concurrency, int, "--concurrency")
    if json_out is not None:
        check_output_file(json_out, "--json")
    if report_dir is not None:
        check_output_dir(report_dir, "--report")
    spec = get_spec(variant) if variant else None
    if (images is not None or check) and spec is None:
        try:
            spec = get_spec(model)
        except InputError:
            raise InputError(f"model '{model}' is not a variant's name: pass --variant for --images/--check") from None
    samples, label = None, "random"
    if images is not None:
        batch, used, skipped = image_batch(spec, images)
        samples, label = batch.numpy(), f"image from {images}"
        for name, reason in skipped:
            err.print(f"[yellow]skipped image[/] {name}: {reason}", highlight=False, soft_wrap=True)
    reference = reference_label = None
    if check:
        reference, reference_label = local_reference(export_dir or default_out_dir(spec.name), precision)
    with StepReporter(err) as on_step, interrupted_says(INTERRUPTED_MESSAGE), honoured_interrupt():
        report = run_loadtest(url, model, protocol=protocol, concurrency=levels, duration_s=duration_s, samples=samples,
                              reference=reference, precision=precision, inputs_label=label,
                              reference_label=reference_label, on_step=on_step)
    table = Table(title=f"{model} at {url} ({protocol})", box=None)
    for column in ("clients", "requests", "failed", "img/s", "p50 ms", "p99 ms", "checked", "mismatched"):
        table.add_column(column, justify="right")
    for r in report.rows:
        lat = r.latency or {}
        table.add_row(str(r.concurrency), str(r.requests), str(r.failures), f"{r.throughput:,.1f}",
                      f"{lat['p50_ms']:.2f}" if lat else "—", f"{lat['p99_ms']:.2f}" if lat else "—",
                      str(r.checked) if check else "—", str(r.mismatches) if check else "—")
    out.print(table)
    command = _command_line()
    for path in write_reports(report, json_path=json_out, report_dir=report_dir, command=command):
        err.print(f"wrote {path}", highlight=False)
    first = next((r.first_error for r in report.rows if r.first_error), None)
    if not report.passed:
        failed = sum(r.failures for r in report.rows)
        mismatched = sum(r.mismatches for r in report.rows)
        raise InceptionDeployError(f"{failed} request(s) failed and {mismatched} response(s) were out of tolerance"
                                   + (f"; first error: {first}" if first else ""))
    out.print("[bold green]PASS[/]: no failed request" + (", every response within tolerance" if check else ""))


def main() -> None:
    import warnings

    # Libraries' notices to their own developers (torch 2.11 warns about its own internals on every export,
    # from copyreg) would break the one-line errors; this tool's own warnings are printed through rich.
    warnings.filterwarnings("ignore", category=FutureWarning)
    app()
