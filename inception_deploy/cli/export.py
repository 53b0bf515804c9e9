"""`inception-deploy export`: PyTorch → verified ONNX (fp32, and fp16 / Q/DQ int8 on request)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..core.artifacts import QUANTIZED
from ..core.interrupts import interrupted_says
from ..export import default_out_dir, export_onnx
from .common import StepReporter, app, err, out, say, warn
from .options import CalibSamples, EvalLabels, EvalLimit, OldOut, Variant, WriteDir, renamed

log = logging.getLogger(__name__)


@app.command()
def export(
    variant: Variant,
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Write the verified fp32 ONNX (the base every other "
                                                             "artifact derives from)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint (.pth/.pt/.safetensors) in the "
                                                                   "variant's layout. Without it the model is "
                                                                   "untrained."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Head size; default: the checkpoint's, else "
                                                                          "1000."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset."),
    batch: str = typer.Option("dynamic", "--batch", help="'dynamic' or a fixed batch size."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify the graph with onnxsim."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write model.fp16.onnx (fp16 weights and compute), verified "
                                                    "against model.onnx."),
    fp16_io: bool = typer.Option(False, "--fp16-io", help="With --fp16: float16 graph inputs/outputs instead of "
                                                          "float32."),
    int8: bool = typer.Option(False, "--int8", help="Also write an INT8 ONNX with explicit Q/DQ, calibrated on --calib "
                                                    "images, in the form --int8-form names."),
    int8_form: Optional[str] = typer.Option(None, "--int8-form", help="tensorrt (model.int8.onnx, the default: for "
                                            "TensorRT and TensorRT-RTX), cpu (model.int8-cpu.onnx: ONNX Runtime's "
                                            "integer CPU kernels), or tensorrt,cpu for both."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of calibration images (fed through the "
                                                               "variant's preprocessing)."),
    calib_samples: CalibSamples = 64,
    calib_method: Optional[str] = typer.Option(None, "--calib-method", help="minmax, entropy, percentile, or auto "
                                               "(the best of them on --eval images). Default: auto with --eval, else "
                                               "minmax."),
    calib_synthetic: bool = typer.Option(False, "--calib-synthetic", help="Calibrate on random tensors: SMOKE TESTS "
                                                                          "ONLY."),
    int8_high_precision: Optional[str] = typer.Option(None, "--int8-high-precision", help="TensorRT form: the "
                                                      "precision of the layers between the Q/DQ pairs (pooling, "
                                                      "concat, bias, ReLU): fp16 (the default, fast), or fp32 (for "
                                                      "comparison). Graph IO stays float32."),
    int8_reduce_range: bool = typer.Option(False, "--int8-reduce-range", help="CPU form: 7-bit weights, for x86 CPUs "
                                           "without VNNI (AVX2 only), whose 8-bit products can saturate."),
    eval_dir: Optional[Path] = typer.Option(None, "--eval", help="Labelled images (an ImageFolder tree, or a flat "
                                                                 "folder with --eval-labels) that hold the int8 model "
                                                                 "to an accuracy budget: see --max-drop."),
    eval_labels: EvalLabels = None,
    eval_limit: EvalLimit = None,
    max_drop: Optional[str] = typer.Option(None, "--max-drop", help="With --eval: the top-1 int8 may lose against "
                                                                    "fp32, in points (1.0, the default), or relative "
                                                                    "to fp32's top-1 ('1%')."),
    fallback_limit: Optional[int] = typer.Option(None, "--fallback-limit", help="With --eval: at most N nodes leave "
                                                                                "int8 to meet the budget (default a "
                                                                                "quarter of them; 0: measure only)."),
    export_dir: WriteDir = None,
    old_out: OldOut = None,
    force: bool = typer.Option(False, "--force", help="Replace an export of another variant in --dir."),
):
    """Export VARIANT to ONNX, prove it in ONNX Runtime, then write model.onnx and manifest.json."""
    if not onnx:
        raise typer.BadParameter(
            "--no-onnx leaves nothing to export: the ONNX model is the base artifact", param_hint="--onnx"
        )
    out_dir = renamed(export_dir, old_out, "--dir", "--out")
    where = out_dir or default_out_dir(variant)
    with StepReporter(err) as on_step, interrupted_says(f"interrupted: no artifact was written; {where} is as it was"):
        manifest = export_onnx(variant, weights=weights, num_classes=num_classes, opset=opset, batch=batch,
                               simplify=simplify, fp16=fp16, fp16_io=fp16_io, int8=int8, calib=calib,
                               calib_samples=calib_samples, calib_method=calib_method, calib_synthetic=calib_synthetic,
                               int8_form=int8_form, int8_high_precision=int8_high_precision,
                               int8_reduce_range=int8_reduce_range, eval_dir=eval_dir, eval_labels=eval_labels,
                               eval_limit=eval_limit, max_drop=max_drop, fallback_limit=fallback_limit, out_dir=out_dir,
                               force=force, on_step=on_step)
    print_export_summary(manifest, where)
    print_export_warnings(manifest)
    over = over_budget_lines(manifest)
    for line in over:
        err.print(f"[bold red]OVER BUDGET:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if over:
        raise typer.Exit(1)


def over_budget_lines(manifest: dict) -> list[str]:
    """One line for each int8 model this export wrote over its accuracy budget."""
    kept = set(manifest.get("kept", []))  # an earlier export's int8, not this one's: said when it was made
    lines = []
    for a in manifest["artifacts"]:
        acc = a.get("accuracy")
        if acc and not acc.get("within_budget", True) and a["path"] not in kept:
            excluded = len(acc.get("fallback", {}).get("excluded_nodes", []))
            lines.append(f"{a['path']} loses {acc['drop_points']:.2f} points of top-1 against fp32 on the --eval "
                         f"images, more than the {acc['allowed_drop_points']:.2f} allowed, with {excluded} node(s) "
                         "left out of int8: it was kept as the best effort, and trt, bench, triton and serve refuse it "
                         "without --accept-over-budget. Calibrate on more representative images, raise "
                         "--fallback-limit, or ship fp16")
    return lines


def print_export_summary(manifest: dict, where: Path) -> None:
    table = Table(title=f"{manifest['variant']} → {where}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("weights", manifest["weights"]["path"] if manifest["weights"] else "none: UNTRAINED (seeded init, BN "
                                                                                     "conditioned)")
    table.add_row("input", f"{manifest['input']['name']} {manifest['input']['shape']} {manifest['input']['dtype']}")
    table.add_row("output", f"{manifest['output']['name']} {manifest['output']['shape']} {manifest['output']['dtype']}")
    table.add_row("opset / params", f"{manifest['opset']} / {manifest['params']:,}")
    kept = set(manifest.get("kept", []))
    for a in manifest["artifacts"]:
        if a["path"] in kept:
            source = a.get("source") or {}
            table.add_row(a["path"], f"kept from the previous export: its source {source.get('path', 'model.onnx')} is "
                                     f"unchanged (sha256 {str(source.get('sha256', '?'))[:12]}…)")
        else:
            table.add_row(a["path"], "\n".join(_artifact_lines(a)))
    table.add_row("seconds", ", ".join(f"{k} {v:.1f}" for k, v in manifest["export"]["seconds"].items()))
    out.print(table)


def _artifact_lines(a: dict) -> list[str]:
    p = a["parity"]
    verdict = "[green]PASS[/]" if p["passed"] else "[bold red]POOR[/]"
    cosine = p.get("cosine_centred", p["cosine"])  # manifests before 0.1 kept only the raw cosine
    figures = (f"top-1 {p['top1_agreement']:.0%}, top-5 {p['top5_overlap']:.0%}, centred cosine {cosine:.4f}"
               if a["precision"] in QUANTIZED else
               f"max abs {p['max_abs']:.2e}, max rel {p['max_rel']:.2e}, {p['scaled']:.1e} of scale, centred cosine "
               f"{cosine:.6f}")
    lines = [f"{a['bytes'] / 2**20:.1f} MiB, sha256 {a['sha256'][:12]}…",
             f"{verdict} vs {p['reference']} in ORT CPU: {figures} ({p['samples']} samples)"]
    if "accuracy" in a:
        lines += _accuracy_lines(a["accuracy"], a["precision"], a.get("high_precision", "fp32"))
    elif p.get("proxy"):
        lines.append(f"[yellow]{escape(p['proxy'])}[/]")
    if "calibration" in a:
        c = a["calibration"]
        lines.append(f"calibration: {c['method']} on {c['samples']} "
                     + ("[bold yellow]SYNTHETIC inputs — smoke test only[/]" if c["synthetic"] else "images from "
                                                                                                    f"{c['source']}")
                     + f"; cache {'reused' if c['cache_reused'] else 'written'}: {c['cache']}")
    if "cpu_kernels" in a:
        k = a["cpu_kernels"]
        kernels = ", ".join(f"{op} {n}" for op, n in k["kernels"].items()) or "none"
        lines.append(f"ONNX Runtime CPU: {k['integer']} of {k['of']} Conv/Gemm in integer kernels ({kernels})")
    return lines


def _accuracy_lines(acc: dict, precision: str, high: str) -> list[str]:
    """The int8 model's measured accuracy: fp32 and int8 top-1 with their intervals, the drop, the calibration
    methods tried, the fall-back."""
    def top1(f: dict) -> str:
        low, high = f["top1_interval"]
        return f"{f['top1']:.2%} [{low:.1%}, {high:.1%}]"

    ref = acc["reference"]
    verdict = "[green]within budget[/]" if acc["within_budget"] else "[bold red]OVER BUDGET[/]"
    lines = [f"top-1 on {acc['eval']['images']} --eval images (ORT CPU, 95 % Wilson): fp32 {top1(ref)}, {precision} "
             f"{top1(acc)}; drop {acc['drop_points']:+.2f} points (allowed {acc['allowed_drop_points']:.2f}): "
             f"{verdict}; flips {acc['right_to_wrong']} right→wrong, {acc['wrong_to_right']} wrong→right, McNemar "
             f"p={acc['mcnemar_p']:.3g}"]
    if len(acc["methods"]) > 1:
        tried = ", ".join(f"{name} {f['top1']:.2%}" for name, f in acc["methods"].items())
        lines.append(f"calibration methods: {tried}; kept {acc['chosen_method']}")
    fallback = acc.get("fallback")
    if fallback:
        steps = "; ".join(f"{s['excluded']} out: {s['top1']:.2%}" for s in fallback["steps"])
        modules = ", ".join(e["module"] for e in fallback["excluded_nodes"]) or "none"
        lines.append(f"fall-back (top-1 with N nodes out of int8): {steps}; left in {high}: {escape(modules)}")
    return lines


def print_export_warnings(manifest: dict) -> None:
    kept = set(manifest.get("kept", []))
    for entry in manifest.get("removed", []):
        err.print(f"removed {entry['path']}: {entry['why']}", highlight=False, soft_wrap=True)
    for warning in manifest.get("warnings", []):
        warn(warning)
    for a in (a for a in manifest["artifacts"] if a["path"] not in kept):
        if not a["parity"]["passed"] and "accuracy" not in a:  # measured accuracy is the verdict, not agreement
            p, calibration = a["parity"], a.get("calibration", {})
            fix = (f"the calibration cache {calibration['cache']} was reused: delete it to recalibrate, or"
                   if calibration.get("cache_reused") else "calibrate on more, and more representative, images "
                   "(--calib, --calib-samples), or")
            err.print(f"[bold red]WARNING:[/] {escape(a['path'])} agrees poorly with the fp32 model (top-1 "
                      f"{p['top1_agreement']:.0%}, centred cosine {p.get('cosine_centred', p['cosine']):.4f}): "
                      f"{escape(fix)} try --calib-method entropy/percentile", highlight=False, soft_wrap=True)
        if a.get("calibration", {}).get("synthetic"):
            warn(f"{a['path']} was calibrated on SYNTHETIC inputs: for smoke tests only, not for deployment")
    if manifest["untrained"]:
        say("note: no --weights given: this is an untrained model (seeded random init, BatchNorm conditioned on "
            "seeded inputs); pass --weights to export a trained one")
