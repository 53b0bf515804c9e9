"""`inception-deploy optimize`: the fastest deployment that keeps your accuracy, chosen on this machine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import optimize as search
from ..bench.record import BenchRecord
from ..core.interrupts import honoured_interrupt, interrupted_says
from ..optimize.report import HEADERS, cells, in_order
from .common import StepReporter, app, command_line, csv_list, err, out, warn
from .options import CalibSamples, EvalLabels, EvalLimit, ExportDir, JsonFile, ReportDir, Variant

log = logging.getLogger(__name__)


@app.command()
def optimize(
    variant: Variant,
    weights: Optional[Path] = typer.Option(None, "--weights", help="The checkpoint you will deploy (.pth/.pt/"
                                                                   ".safetensors); default: the export's own."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Head size, when no checkpoint says."),
    eval_dir: Optional[Path] = typer.Option(None, "--eval", help="Labelled images (an ImageFolder tree, or a flat "
                                                                 "folder with --eval-labels): every candidate's top-1 "
                                                                 "against fp32 PyTorch. Without it, int8 is rejected."),
    eval_labels: EvalLabels = None,
    eval_limit: EvalLimit = None,
    calib: Optional[Path] = typer.Option(None, "--calib", help="int8 calibration images; default: the --eval images "
                                                               "(then int8's top-1 is optimistic, and said so)."),
    calib_samples: CalibSamples = 64,
    max_drop: Optional[str] = typer.Option(None, "--max-drop", help="With --eval: the top-1 a candidate may lose "
                                                                    "against fp32, in points (1.0, the default) or "
                                                                    "relative to fp32's top-1 ('1%')."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda: where the deployment will run."),
    objective: str = typer.Option("latency", "--objective", help="latency (median ms at batch 1) or throughput "
                                                                 "(best images/s at a batch <= --max-batch)."),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", help="throughput: the p99 a batch may "
                                                                                  "take."),
    batch: Optional[str] = typer.Option(None, "--batch", help="throughput: the batch sizes measured (default 1, 8, "
                                                              "32, ... up to --max-batch)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="The largest batch measured and served "
                                                                      "(default 8 on cpu, 128 on cuda)."),
    time_budget: Optional[str] = typer.Option(None, "--time-budget", help="Bound the whole search: 90s, 10m, 1h; "
                                                                          "spent in order of promise."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved bench rounds per candidate."),
    warmup_s: float = typer.Option(2.0, "--warmup-s", help="Warm-up per round, seconds."),
    duration_s: float = typer.Option(5.0, "--duration-s", help="Timed window per round, seconds."),
    export_dir: ExportDir = None,
    repo: Optional[Path] = typer.Option(None, "--repo", help="Write the winner's Triton model repository here."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Class names for the repository, one a line; "
                                                                 "default: the --eval tree's class folders when they "
                                                                 "name the head, else ImageNet's."),
    json_out: JsonFile = None,
    report_dir: ReportDir = None,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted search: reuse the rows --report's "
                                                        "bench log holds (artifacts are reused when current anyway)."),
):
    """Choose the fastest deployment that keeps your accuracy, measured on this machine; write it for Triton."""
    options = search.OptimizeOptions(
        variant=variant, weights=weights, num_classes=num_classes, eval_dir=eval_dir, eval_labels=eval_labels,
        eval_limit=eval_limit, calib=calib, calib_samples=calib_samples, max_drop=max_drop, device=device,
        objective=objective, max_latency_ms=max_latency_ms, batches=csv_list(batch, int, "--batch"),
        max_batch=max_batch, time_budget_s=time_budget,
        measurement=search.Measurement(rounds=rounds, warmup_s=warmup_s, duration_s=duration_s),
        export_dir=export_dir, repo=repo, labels=labels, json_out=json_out, report_dir=report_dir, resume=resume)
    kept = (f"; the bench's finished batch sizes are logged in {report_dir / 'bench'} (--resume keeps them)"
            if report_dir else "")
    stopped = f"interrupted: the search stopped; its repository and reports are written whole or not at all{kept}"
    with StepReporter(err) as on_step, interrupted_says(stopped), \
            honoured_interrupt():
        outcome = search.run(options, on_step=on_step, on_record=_row, command=command_line(leave_out=("--resume",)))
    show(outcome)
    outcome.raise_for_none()


def _row(r: BenchRecord) -> None:
    log.info("measured %s %s batch %d: %s", r.backend, r.precision, r.batch,
             f"{r.stats['p50_ms']:.2f} ms p50, {r.stats['throughput']:,.1f} img/s" if r.status == "ok" else r.status)


def show(outcome) -> None:
    o = outcome.options
    table = Table(title=f"optimize {o.variant}: {o.objective} on {o.device}", box=None)
    for header in HEADERS:
        table.add_column(header, overflow="fold")
    for v in in_order(outcome.verdicts, o.objective, o.max_latency_ms):
        table.add_row(*(escape(c) for c in cells(v, o.objective, o.max_latency_ms)))
    out.print(table)
    for warning in outcome.warnings:
        warn(warning)
    for path in outcome.written:
        err.print(f"wrote {path}", highlight=False, soft_wrap=True)
    if outcome.chosen:
        c = outcome.chosen
        out.print(f"[bold green]CHOSEN[/] {escape(c.candidate.name)}: {escape(c.reason or '')}", highlight=False,
                  soft_wrap=True)
