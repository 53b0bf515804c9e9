"""`inception-deploy accuracy`: top-1/top-5 of every artifact on labelled images, against fp32 PyTorch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..accuracy import evaluate_accuracy
from ..accuracy.evaluate import DEFAULT_BATCH
from ..accuracy.report import markdown, rich_table, skip_lines, to_json, verdict_line
from ..core.artifacts import check_output_dir, check_targets, made_dirs, write_text_atomic
from ..core.interrupts import honoured_interrupt, interrupted_says
from .common import INTERRUPTED_MESSAGE, StepReporter, app, check_json_out, command_line, err, out, warn, write_json_out
from .options import BACKEND_LIST, ExportDir, JsonOrStdout, Precisions, Variant

log = logging.getLogger(__name__)

SHOWN_SKIPPED = 20  # unreadable images listed on the terminal; the JSON and Markdown list them all
REPORT_FILES = ("accuracy.json", "accuracy.md")


@app.command()
def accuracy(
    variant: Variant,
    data: Path = typer.Option(..., "--data", help="Labelled images: an ImageFolder tree (one folder per class, the "
                                                  "class index its position in sorted order), or a flat folder with "
                                                  "--labels."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV of 'file,class' rows (class: an integer index) "
                                                                 "for a flat --data folder."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate only the first N images (round-robin over "
                                                              "the classes)."),
    batch: int = typer.Option(DEFAULT_BATCH, "--batch", help="Images per run call."),
    backends: str = typer.Option("onnxruntime", "--backends", help=f"Comma-separated, of: {BACKEND_LIST}."),
    precision: Precisions = None,
    export_dir: ExportDir = None,
    json_out: JsonOrStdout = None,
    report_dir: Optional[Path] = typer.Option(None, "--report", help="Write accuracy.json and accuracy.md into DIR."),
    max_drop: str = typer.Option("1.0", "--max-drop", help="Allowed top-1 drop against fp32 PyTorch: "
                                                           "absolute points (1.0), or a percentage of its top-1 (1%: "
                                                           "99 % of it)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="The checkpoint of the reference; default: the "
                                                                   "one the manifest names."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Head size, when no checkpoint or manifest "
                                                                          "says."),
):
    """Top-1/top-5 of every artifact on labelled images vs fp32 PyTorch on the CPU; exit 1 past --max-drop."""
    check_json_out(json_out)
    if report_dir is not None:
        check_output_dir(report_dir, "--report")
        check_targets([report_dir / name for name in REPORT_FILES], "--report")
    with StepReporter(err) as on_step, interrupted_says(INTERRUPTED_MESSAGE), honoured_interrupt():
        report = evaluate_accuracy(
            variant, data=data, labels=labels, limit=limit, batch=batch, backends=backends, precisions=precision,
            export_dir=export_dir, max_drop=max_drop, weights=weights, num_classes=num_classes, on_step=on_step,
        )
    to_stdout = json_out == "-"
    show(report, to_stdout=to_stdout)
    text = to_json(report)
    write_json_out(json_out, text)
    if report_dir is not None:
        with made_dirs(report_dir):
            write_text_atomic(report_dir / "accuracy.json", text)
            write_text_atomic(report_dir / "accuracy.md", markdown(report, command_line()))
    verdict = verdict_line(report)
    (err if to_stdout else out).print(
        "[bold green]PASS[/]" + escape(verdict.removeprefix("PASS")) if report.passed
        else "[bold red]FAIL[/]" + escape(verdict.removeprefix("FAIL")), highlight=False, soft_wrap=True)
    if not report.passed:
        raise typer.Exit(1)


def show(report, *, to_stdout: bool) -> None:
    human = err if to_stdout else out  # keep stdout pure JSON when it carries the JSON
    if report.untrained:
        warn(f"{report.variant} is UNTRAINED (no weights in the manifest: the seeded init): its accuracy is chance "
             f"(about 1/{report.data.get('head_classes') or 'classes'}) and meaningless; pass --weights, or export a "
             "trained checkpoint")
    human.print(rich_table(report))
    for line in skip_lines(report):
        human.print(line, highlight=False, soft_wrap=True)
    for file, why in report.skipped_images[:SHOWN_SKIPPED]:
        warn(f"skipped image {file}: {why}")
    if len(report.skipped_images) > SHOWN_SKIPPED:
        warn(f"… and {len(report.skipped_images) - SHOWN_SKIPPED} more skipped image(s): --json or --report lists "
             "them all")
    if report.data.get("unlabelled"):
        warn(f"{report.data['unlabelled']} file(s) of {report.data['root']} are not named by --labels: not evaluated")
    for warning in report.warnings:
        warn(warning)
