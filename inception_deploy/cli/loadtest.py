"""`inception-deploy loadtest`: concurrent clients against a Triton server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..core.interrupts import honoured_interrupt, interrupted_says
from ..serving.loadtest_job import load_test, raise_for_failures
from .common import INTERRUPTED_MESSAGE, StepReporter, app, command_line, csv_list, err, out
from .options import JsonFile, ReportDir

log = logging.getLogger(__name__)


@app.command()
def loadtest(
    url: str = typer.Argument(..., help="The server's address, e.g. http://127.0.0.1:8000 (https:// for TLS), or "
                                        "grpc://127.0.0.1:8001 (grpcs://) with --protocol grpc; no path."),
    model: str = typer.Option(..., "--model", help="The model's name on the server."),
    protocol: str = typer.Option("http", "--protocol", help="http or grpc."),
    concurrency: str = typer.Option("1,4,16,64", "--concurrency", help="Concurrent clients, one level after another."),
    duration_s: float = typer.Option(10.0, "--duration-s", help="Seconds per concurrency level."),
    images: Optional[Path] = typer.Option(None, "--images", help="Send these images (through the variant's "
                                                                 "preprocessing) instead of random inputs."),
    check: bool = typer.Option(False, "--check", help="Compare every response with the local export's ONNX run at "
                                                      "batch 1."),
    precision: str = typer.Option("fp32", "--precision", help="With --check: which of the export's ONNX the server "
                                                              "serves."),
    variant: Optional[str] = typer.Option(None, "--variant", help="The variant, for --images and --check; default: the "
                                                                  "model's name."),
    export_dir: Optional[Path] = typer.Option(None, "--dir", help="With --check: the export directory; default "
                                                                  "export/<variant>/."),
    json_out: JsonFile = None,
    report_dir: ReportDir = None,
):
    """Load a Triton server with concurrent clients; report throughput, latency, failures, and parity under load."""
    levels = csv_list(concurrency, int, "--concurrency")
    with StepReporter(err) as on_step, interrupted_says(INTERRUPTED_MESSAGE), honoured_interrupt():
        report, written = load_test(url, model, protocol=protocol, concurrency=levels, duration_s=duration_s,
                                    images=images, check=check, precision=precision, variant=variant,
                                    export_dir=export_dir, json_out=json_out, report_dir=report_dir,
                                    command=command_line(), on_step=on_step)
    out.print(levels_table(report, f"{model} at {url} ({report.protocol})", check))
    if report.reference:  # which ONNX, so that an int8 deployment is seen compared with the int8 model
        out.print(f"responses compared with {report.reference}, within the {report.precision} tolerance",
                  markup=False, highlight=False, soft_wrap=True)
    for path in written:
        err.print(f"wrote {path}", highlight=False)
    raise_for_failures(report)
    out.print("[bold green]PASS[/]: no failed request"
              + (f", every response within the {report.precision} tolerance" if check else ""))


def levels_table(report, title: str, checked: bool) -> Table:
    table = Table(title=title, box=None)
    for column in ("clients", "requests", "failed", "img/s", "p50 ms", "p99 ms", "checked", "mismatched"):
        table.add_column(column, justify="right")
    for r in report.rows:
        lat = r.latency or {}
        table.add_row(str(r.concurrency), str(r.requests), str(r.failures), f"{r.throughput:,.1f}",
                      f"{lat['p50_ms']:.2f}" if lat else "—", f"{lat['p99_ms']:.2f}" if lat else "—",
                      str(r.checked) if checked else "—", str(r.mismatches) if checked else "—")
    return table
