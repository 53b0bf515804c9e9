"""`inception-deploy parity`: does every backend compute what the PyTorch model computes?"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..core.artifacts import check_output_dir, check_output_file, check_targets, made_dirs, write_text_atomic
from ..core.interrupts import honoured_interrupt, interrupted_says
from ..parity import check_parity
from ..parity.report import localization_lines, markdown, rich_table, to_json, verdict_line
from .common import INTERRUPTED_MESSAGE, StepReporter, app, check_json_out, err, out, say, write_json_out
from .options import BACKEND_LIST, ExportDir, JsonOrStdout, Precisions

log = logging.getLogger(__name__)


@app.command()
def parity(
    variant: str = typer.Argument(..., help="The variant whose artifacts to check (name or alias)."),
    onnx_files: Optional[list[Path]] = typer.Option(None, "--onnx", help="ONNX file(s) to check; default: every "
                                                                         "artifact in the variant's manifest."),
    export_dir: ExportDir = None,
    backends: str = typer.Option("onnxruntime", "--backends", help=f"Comma-separated, of: {BACKEND_LIST}."),
    reference: str = typer.Option("torch", "--reference", help="torch (fp32, CPU) or onnxruntime (model.onnx on the "
                                                               "CPU)."),
    precision: Precisions = None,
    weights: Optional[Path] = typer.Option(None, "--weights", help="The checkpoint the artifacts came from; default: "
                                                                   "the one the manifest names."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Head size, when no checkpoint or manifest "
                                                                          "says."),
    images: Optional[Path] = typer.Option(None, "--images", help="A folder of images, fed through the variant's own "
                                                                 "preprocessing."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Seeded random inputs (default 8, or 0 with "
                                                                  "--images)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random inputs."),
    atol: Optional[float] = typer.Option(None, "--atol", help="Elementwise: |a-b| <= atol + rtol*|ref|, instead of the "
                                                              "precision's tolerance."),
    rtol: Optional[float] = typer.Option(None, "--rtol", help="See --atol."),
    localize_failures: bool = typer.Option(False, "--localize", help="For a failing ONNX, name the first block whose "
                                                                     "output leaves tolerance."),
    json_out: JsonOrStdout = None,
    report: Optional[Path] = typer.Option(None, "--report", help="Write the report into DIR, as every command does: "
                                                                 "parity.json for machines, parity.md for people (a "
                                                                 "PATH.md names that one file, as before)."),
):
    """Check that every backend computes what the PyTorch model computes. Exit 1 if any row fails."""
    check_json_out(json_out)
    files = _report_files(report)
    with StepReporter(err) as on_step, interrupted_says(INTERRUPTED_MESSAGE), honoured_interrupt():
        report = check_parity(
            variant, onnx_files=onnx_files or None, export_dir=export_dir, backends=backends, reference=reference,
            precisions=precision, weights=weights, num_classes=num_classes, images=images, samples=samples, seed=seed,
            atol=atol, rtol=rtol, localize_failures=localize_failures, on_step=on_step,
        )
    show(report, to_stdout=json_out == "-")
    write_json_out(json_out, to_json(report))
    if files:
        with made_dirs(files[0].parent):
            write_text_atomic(files[0], markdown(report))
            if len(files) > 1:
                write_text_atomic(files[1], to_json(report))
    verdict = verdict_line(report, atol=atol, rtol=rtol)  # FAIL names what would pass, where the user set atol/rtol
    (err if json_out == "-" else out).print(
        "[bold green]PASS[/]" if report.passed else f"[bold red]FAIL[/]{escape(verdict.removeprefix('FAIL'))}",
        highlight=False, soft_wrap=True,
    )
    if not report.passed:
        raise typer.Exit(1)


def _report_files(report: Optional[Path]) -> list[Path]:
    """--report DIR: DIR/parity.md and DIR/parity.json, checked before any work; a PATH.md (the former use): that
    one file."""
    if report is None:
        return []
    if report.suffix.lower() in (".md", ".markdown") or report.is_file():  # the former use: one Markdown file
        check_output_file(report, "--report")
        return [report]
    check_output_dir(report, "--report")
    files = [report / "parity.md", report / "parity.json"]
    check_targets(files, "--report")
    return files


def show(report, *, to_stdout: bool) -> None:
    human = err if to_stdout else out  # keep stdout pure JSON when it carries the JSON
    human.print(rich_table(report))
    for skipped in report.inputs.get("skipped_images", []):
        err.print(f"[yellow]skipped image[/] {skipped['file']}: {skipped['reason']}", highlight=False)
    for warning in report.warnings:
        err.print(f"[bold yellow]WARNING:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    for line in localization_lines(report):
        human.print(line, highlight=False, soft_wrap=True)
    if report.untrained:
        say("note: the reference is an untrained model (seeded init): parity holds for these weights; pass --weights "
            "to check a trained checkpoint")
