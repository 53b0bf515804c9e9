"""Parity reports for people (a rich table, Markdown) and for machines (JSON)."""

from __future__ import annotations

import logging
import math

from rich import box
from rich.table import Table

from ..core.artifacts import json_text
from ..core.tolerances import ElementwiseTolerance
from .check import ParityReport, ParityRow
from .localize import first_divergence

log = logging.getLogger(__name__)

COLUMNS = ("backend", "artifact", "prec", "max |Δ|", "mean |Δ|", "p99 |Δ|", "max rel", "cosine", "centred cosine",
           "top-1", "top-5", "min atol", "tolerance", "result")  # the verdicts use the centred cosine


def _cells(row: ParityRow) -> list[str]:
    head = [row.backend, row.artifact, row.precision]
    if row.diff is None:
        return head + ["—"] * (len(COLUMNS) - 4) + [f"SKIP: {row.skipped}"]
    d = row.diff
    return head + [
        f"{d.max_abs:.2e}", f"{d.mean_abs:.2e}", f"{d.p99_abs:.2e}", f"{d.max_rel:.2e}", f"{d.cosine:.6f}",
        f"{d.cosine_centred:.6f}", f"{d.top1_agreement:.0%}", f"{d.top5_overlap:.0%}", f"{d.needed_atol:.2e}",
        row.tolerance.describe(),
        "PASS" if row.passed else "FAIL",
    ]


def _title(report: ParityReport) -> str:
    untrained = " — UNTRAINED model (seeded init)" if report.untrained else ""
    inputs = report.inputs
    what = ", ".join(filter(None, [
        f"{inputs['random']} seeded random (seed {inputs['seed']})" if inputs["random"] else "",
        f"{len(inputs['images'])} images" if inputs["images"] else "",
    ]))
    return f"parity of {report.variant} vs {report.reference} on {what}{untrained}"


def rich_table(report: ParityReport) -> Table:
    """The terminal view: fits 80 columns; JSON and Markdown carry every figure."""
    table = Table(title=_title(report), title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for column in ("backend / artifact", "prec", "max |Δ|", "max rel", "centred cos", "top-1", "top-5", "result"):
        table.add_column(column, justify="left" if column in ("backend / artifact", "prec", "result") else "right",
                         min_width=15 if column == "backend / artifact" else None)
    for row in report.rows:
        target = f"{row.backend}\n{row.artifact}" if row.artifact != "model" else f"{row.backend} ({row.device})"
        if row.diff is None:
            table.add_row(target, row.precision, "—", "—", "—", "—", "—", f"[yellow]SKIP[/] {row.skipped}")
            continue
        d = row.diff
        verdict = "[green]PASS[/]" if row.passed else "[bold red]FAIL[/]"
        table.add_row(target, row.precision, f"{d.max_abs:.1e}", f"{d.max_rel:.1e}",
                      f"{d.cosine_centred:.6f}", f"{d.top1_agreement:.0%}", f"{d.top5_overlap:.0%}", verdict)
    return table


def verdict_line(report: ParityReport, *, atol: float | None = None, rtol: float | None = None) -> str:
    """PASS, or FAIL with what would pass: with --rtol, the atol it needs; with --atol alone, the rtol it needs."""
    if report.passed:
        return "PASS"
    line = "FAIL: a backend leaves tolerance"
    checked = [r.diff for r in report.rows if r.diff is not None and isinstance(r.tolerance, ElementwiseTolerance)]
    if not checked or (atol is None and rtol is None):
        return line
    line += _worst_element(report)
    if rtol is not None:  # --rtol (alone or with --atol): the atol that passes at this rtol
        need = max(d.needed_atol for d in checked)
        return f"{line}; with --rtol {rtol:g}, --atol {_at_least(need)} would pass"
    need = max(d.needed_rtol for d in checked)
    if not math.isfinite(need):
        return (f"{line}; no --rtol passes with --atol {atol:g} (an element whose reference is 0 differs by more): "
                f"--atol {_at_least(max(d.needed_atol for d in checked))} alone would pass")
    return f"{line}; with --atol {atol:g}, --rtol {_at_least(need)} would pass"


def _worst_element(report: ParityReport) -> str:
    """The element of the first failing row that is furthest beyond its bound: which one, and which bound."""
    row = next((r for r in report.rows if r.passed is False and r.diff is not None and r.diff.worst), None)
    if row is None:
        return ""
    w = row.diff.worst
    where = f"sample {w['sample']}" + (f", output {w['index']}" if w["index"] is not None else "")
    return (f" ({row.backend} {row.precision}, {where}: |{w['actual']:.6g} - {w['reference']:.6g}| = "
            f"{w['error']:.3g} > atol {w['atol']:g} + rtol {w['rtol']:g} x |{w['reference']:.3g}| = {w['bound']:.3g})")


def _at_least(value: float) -> str:
    """value rounded up to 3 significant digits: the printed number, read back, is never below it."""
    if value <= 0:
        return "0"
    step = 10.0 ** (math.floor(math.log10(value)) - 2)
    digits = math.ceil(value / step)
    while float(f"{digits * step:.3g}") < value:
        digits += 1
    return f"{digits * step:.3g}"


def localization_lines(report: ParityReport) -> list[str]:
    lines = []
    for row in report.rows:
        if row.localization is None:
            continue
        first = first_divergence(row.localization)
        where = f"first leaves tolerance at block {first.block} ({first.scaled:.2e} of scale)" if first else \
            "every block stays within tolerance: the divergence is after the last block"
        lines.append(f"{row.backend} {row.artifact} ({row.precision}): {where}")
    return lines


def markdown(report: ParityReport) -> str:
    out = [f"# {_title(report)}", "", f"**{'PASS' if report.passed else 'FAIL'}**", ""]
    out.append("| " + " | ".join(c.replace("|", "\\|") for c in COLUMNS) + " |")
    out.append("|" + "---|" * len(COLUMNS))
    for row in report.rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    if report.inputs.get("skipped_images"):
        out += [
            "",
            "Skipped images: " + ", ".join(f"{s['file']} ({s['reason']})" for s in report.inputs["skipped_images"]),
        ]
    for row in report.rows:
        if row.localization is None:
            continue
        out += ["", f"## Where {row.backend} {row.artifact} ({row.precision}) diverges", "",
                "| block | ONNX tensor | max \\|Δ\\| / scale | centred cosine | judged as | within |",
                "|---|---|---|---|---|---|"]
        for b in row.localization:
            out.append(f"| {b.block} | {b.onnx_tensor or '—'} | {b.scaled:.2e} | {b.cosine_centred:.6f} | "
                       f"{b.judged_as} | {'yes' if b.within else '**no**'} |")
    return "\n".join(out) + "\n"


def to_json(report: ParityReport) -> str:
    return json_text(report.to_dict())

