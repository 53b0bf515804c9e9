"""`inception-deploy bench`: throughput and latency across backends, precisions and batch sizes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.live import Live
from rich.table import Table

from ..bench import run as bench_run
from ..bench.record import BenchRecord
from ..bench.report import precision_label
from ..core.interrupts import honoured_interrupt, interrupted_says
from .common import StepReporter, app, command_line, csv_list, err, out, say
from .options import BACKEND_LIST, AcceptOverBudget, JsonFile, ReportDir

log = logging.getLogger(__name__)

COLUMNS = ("variant", "backend", "prec", "batch", "img/s", "spread", "p50 ms", "GPU ms", "parity", "note")
NUMERIC = ("batch", "img/s", "spread", "p50 ms", "GPU ms")


@app.command()
def bench(
    variants: Optional[list[str]] = typer.Argument(None, help="Variants to measure (default: the suite's)."),
    backends: Optional[str] = typer.Option(
        None,
        "--backends",
        help=f"Comma-separated, of: {BACKEND_LIST} (default torch,onnxruntime; --device cuda moves torch and "
             "torch-compile to the GPU).",
    ),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32,fp16,int8,int8-cpu (default fp32)."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Batch sizes, e.g. 1,8,32,128,256 (default 1,8)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda, for the torch backends (default cpu)."),
    rounds: Optional[int] = typer.Option(
        None,
        "--rounds",
        help="Measure every row N times, rows alternating round by "
        "round; report the median and the spread (default 3).",
    ),
    warmup_s: Optional[float] = typer.Option(
        None, "--warmup-s", help="Warm-up per round, seconds, after at least 3 iterations (default 2)."
    ),
    duration_s: Optional[float] = typer.Option(
        None, "--duration-s", help="Timed window per round, seconds (default 5)."
    ),
    tf32: Optional[bool] = typer.Option(
        None, "--tf32/--no-tf32", help="Let fp32 rows on a GPU use TF32, labelled so (default: off, fp32 is fp32)."
    ),
    include_transfers: Optional[bool] = typer.Option(
        None, "--include-transfers/--exclude-transfers", help="Time host↔device copies too (default: excluded)."
    ),
    check_parity: bool = typer.Option(
        False, "--check-parity", help="Check every row's outputs on the runner that was timed, against torch fp32."
    ),
    suite: Optional[str] = typer.Option(
        None,
        "--suite",
        help="A sweep: a built-in suite (cpu-smoke, cpu-2core, "
        "gpu-core, h100-full), ./benchmarks/suites/NAME.toml, or "
        "a .toml path; options given here override it.",
    ),
    export_root: Path = typer.Option(
        Path("export"), "--export-root", help="Where the artifacts are (missing fp32/fp16 ONNX are exported there)."
    ),
    accept_over_budget: AcceptOverBudget = False,
    json_out: JsonFile = None,
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write the records as CSV."),
    report_dir: ReportDir = None,
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue an interrupted sweep: keep the rows that --report's "
        "(or --json's) log already holds, measured under the same "
        "settings, machine and artifacts; measure the rest.",
    ),
):
    """Measure throughput and latency across backends, precisions and batch sizes.

    --json and --report also append every measurement to a .jsonl, as it happens."""
    plan = bench_run.make_plan(
        suite,
        variants=variants,
        backends=csv_list(backends),
        precisions=csv_list(precision),
        batches=csv_list(batch, int, "--batch"),
        device=device,
        warmup_s=warmup_s,
        duration_s=duration_s,
        include_transfers=include_transfers,
        rounds=rounds,
        tf32=tf32,
        check_parity=check_parity,
        export_root=export_root,
        accept_over_budget=accept_over_budget,
    )
    live = LiveTable()
    logs = [str(p) for p in bench_run.log_paths(json_out, report_dir)]
    kept = (f"the measurements so far are in {', '.join(logs)} (the same command with --resume continues)" if logs
            else "nothing was written")
    with StepReporter(err) as on_step, interrupted_says(f"interrupted: {kept}; no report was written"), \
            honoured_interrupt(), live:
        outcome = bench_run.run(plan, json_out=json_out, csv_out=csv_out, report_dir=report_dir, resume=resume,
                                command=command_line(leave_out=("--resume",)), on_step=on_step,
                                on_record=live.add, on_start=live.start)
    for path in outcome.written:
        err.print(f"wrote {path}", highlight=False)
    for path in outcome.logs:
        err.print(f"wrote {path} (appended as measured)", highlight=False)
    if outcome.kept_rows is not None:
        say(f"--resume: kept {outcome.kept_rows} row(s) as earlier runs measured them; measured "
            f"{len(outcome.records) - outcome.kept_rows} now")
    outcome.raise_for_failures()


class LiveTable:
    """The rows as they are measured: a live table on a terminal, one plain line per row elsewhere."""

    def __init__(self):
        self.table = self.live = None

    def start(self, env: dict, logs: list[Path]) -> None:
        self.table = Table(title=f"bench on {env.get('gpu') or env['cpu']}", box=None)
        for column in COLUMNS:
            self.table.add_column(column, justify="right" if column in NUMERIC else "left")
        if out.is_terminal:
            # Log lines (notes, -v steps) stay on stderr: Live would redirect them into the table's stream.
            self.live = Live(self.table, console=out, refresh_per_second=4, redirect_stderr=False)
            self.live.start()

    def add(self, r: BenchRecord) -> None:
        self.table.add_row(*row_cells(r))
        if not out.is_terminal:
            out.print("  ".join(row_cells(r)), highlight=False, soft_wrap=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()


def row_cells(r: BenchRecord) -> list[str]:
    if r.status != "ok":
        return [
            r.variant,
            r.backend,
            r.precision,
            str(r.batch),
            "—",
            "—",
            "—",
            "—",
            r.parity,
            f"{r.status}: {r.reason}",
        ]
    s = r.stats
    gpu = f"{s['gpu_p50_ms']:.2f}" if s.get("gpu_p50_ms") is not None else "—"
    notes = r.warnings + ([f"kept: measured by run {r.resumed_from}"] if r.resumed_from else [])
    return [r.variant, r.backend, precision_label(r), str(r.batch), f"{s['throughput']:,.1f}",
            f"{s['throughput_spread']:.0%}", f"{s['p50_ms']:.2f}", gpu, r.parity, "; ".join(notes)]
