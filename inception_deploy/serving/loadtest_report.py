"""Load-test reports, as bench's: JSON for machines, Markdown and a PNG plot for people."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..core.artifacts import write_png_atomic, write_text_atomic
from ..core.deps import pyplot
from .loadtest import LoadReport

log = logging.getLogger(__name__)


def to_json(report: LoadReport, command: str | None = None) -> str:
    return json.dumps({**report.to_dict(), "command": command}, indent=2) + "\n"


def to_markdown(report: LoadReport, command: str | None = None, plot: str | None = None) -> str:
    check = (f"every response compared with {report.reference} (the {report.precision} tolerance)"
             if report.reference else "responses not checked (run with --check)")
    lines = ["# inception-deploy loadtest", "",
             f"Model **{report.model}** at {report.url} over {report.protocol}; one {report.inputs} image per request, "
             f"each client sending its next request when the last one is answered; {check}. Latency on the client, "
             "in ms; throughput in responses per second.", "",
             "| concurrency | requests | failed | img/s | p50 ms | p90 ms | p99 ms | checked | mismatched | worst diff "
             "/ scale |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report.rows:
        lat = r.latency or {}
        figures = [f"{lat[k]:.2f}" if lat else "—" for k in ("p50_ms", "p90_ms", "p99_ms")]
        worst = f"{r.worst_scaled:.1e}" if r.worst_scaled is not None else "—"
        lines.append(f"| {r.concurrency} | {r.requests} | {r.failures} | {r.throughput:,.1f} | {' | '.join(figures)} | "
                     f"{r.checked} | {r.mismatches} | {worst} |")
    lines += ["", "**PASS**: no failed request, every checked response within tolerance." if report.passed else
              "**FAIL**: failed requests or responses out of tolerance."]
    if plot:
        lines += ["", f"![{Path(plot).stem}]({Path(plot).name})"]
    if command:
        lines += ["", "Reproduce with:", "", "```bash", command, "```"]
    return "\n".join(lines) + "\n"


def write_plot(report: LoadReport, path: Path) -> Path:
    plt = pyplot()

    rows = [r for r in report.rows if r.latency]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r.concurrency for r in rows], [r.throughput for r in rows], marker="o", label="img/s")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("images / s")
    twin = ax.twinx()
    twin.plot(
        [r.concurrency for r in rows], [r.latency["p99_ms"] for r in rows], marker="s", color="tab:red", label="p99 ms"
    )
    twin.set_ylabel("p99 latency (ms)")
    ax.set_title(f"{report.model} on Triton ({report.protocol})")
    ax.grid(True, alpha=0.3)
    write_png_atomic(fig, path)
    plt.close(fig)
    return path


def write_reports(report: LoadReport, *, json_path=None, report_dir=None, command: str | None = None) -> list[Path]:
    written = []
    if json_path:
        write_text_atomic(Path(json_path), to_json(report, command))
        written.append(Path(json_path))
    if report_dir:
        directory = Path(report_dir)
        plot = (
            write_plot(report, directory / f"{report.model}_loadtest.png")
            if any(r.latency for r in report.rows)
            else None
        )
        write_text_atomic(directory / "loadtest.json", to_json(report, command))
        write_text_atomic(directory / "README.md", to_markdown(report, command, plot.name if plot else None))
        written += [directory / "loadtest.json", directory / "README.md", *([plot] if plot else [])]
    return written
