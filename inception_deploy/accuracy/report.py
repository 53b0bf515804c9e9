"""Accuracy reports for people (a rich table, Markdown) and for machines (JSON: a flat list of rows, units named)."""

from __future__ import annotations

import logging

from rich import box
from rich.table import Table

from ..core.artifacts import json_text
from .evaluate import REFERENCE, AccuracyReport, AccuracyRow

log = logging.getLogger(__name__)

COLUMNS = ("backend (device)", "artifact", "prec", "images", "top-1", "top-1 95% CI", "top-5", "top-5 95% CI",
           "drop (points)", "drop 95% CI", "allowed", "right→wrong", "wrong→right", "McNemar p",
           "img/s (run calls only)", "result")


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def _ci(low: float, high: float, sign: str = "%") -> str:
    return f"{_figure(100 * low)}–{_figure(100 * high)}{sign}"


def _figure(percent: float) -> str:
    return "100" if percent >= 100 else f"{percent:.1f}"


def _rate(row: AccuracyRow) -> str:
    return f"{row.images_per_s:,.0f}" if row.images_per_s else "—"


def _verdict(row: AccuracyRow, markup: bool) -> str:
    if row.reference:
        return "ref" if markup else "reference"
    if row.skipped:
        return f"[yellow]SKIP[/] {row.skipped}" if markup else f"SKIP: {row.skipped}"
    if row.passed:
        return "[green]PASS[/]" if markup else "PASS"
    return "[bold red]FAIL[/]" if markup else "**FAIL**"


def title(report: AccuracyReport) -> str:
    data = report.data
    untrained = " — UNTRAINED model (seeded init): chance accuracy, meaningless" if report.untrained else ""
    return (f"accuracy of {report.variant} on {data.get('evaluated', 0)} labelled images of {data.get('root')} vs "
            f"{REFERENCE} (torch on the CPU, same images){untrained}")


def caption(report: AccuracyReport) -> str:
    return (f"ref: the reference row; drop: top-1 points below the reference (allowed: {report.max_drop.describe()}); "
            "flips: top-1 images "
            f"right→wrong / wrong→right against the reference, McNemar's exact p; img/s: the backend's run calls only, "
            f"full batches of {report.batch} after the first (warm-up), image decoding excluded")


def rich_table(report: AccuracyReport) -> Table:
    """The terminal view, within 80 columns; JSON and Markdown carry every figure."""
    table = Table(title=title(report), caption=caption(report), title_justify="left", caption_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False)
    for column in ("backend\nartifact", "prec", "top-1\n95% CI", "top-5\n95% CI", "drop pts\n95% CI",
                   "r→w/w→r\nMcNemar", "img/s\nrun", "result"):
        left = column.split("\n")[0] in ("backend", "prec", "result")
        label = column.startswith("backend")  # an engine's long file name may fold: the figures never do
        table.add_column(column, justify="left" if left else "right", no_wrap=not label, overflow="fold",
                         min_width=12 if label else None)
    for row in report.rows:
        target = f"{row.backend} {row.device}\n{row.artifact}"
        if row.skipped:
            table.add_row(target, row.precision, "—", "—", "—", "—", "—", "[yellow]SKIP[/]")  # why: skip_lines
            continue
        top1 = f"{_pct(row.top1)}\n{_ci(*row.top1_ci95, sign='')}"
        top5 = f"{_pct(row.top5)}\n{_ci(*row.top5_ci95, sign='')}"
        if row.reference:
            drop = flips = "—"
        else:
            low, high = row.drop_ci95_points
            drop = f"{row.drop_points:+.2f}\n{low:+.1f}…{high:+.1f}"
            flips = f"{row.right_to_wrong}/{row.wrong_to_right}\np={row.mcnemar_p:.2g}"
        table.add_row(target, row.precision, top1, top5, drop, flips, _rate(row), _verdict(row, True))
    return table


def skip_lines(report: AccuracyReport) -> list[str]:
    """Why each skipped row did not run (too long for the table's cell)."""
    return [f"{row.backend} ({row.device}) skipped: {row.skipped}" for row in report.rows if row.skipped]


def verdict_line(report: AccuracyReport) -> str:
    if report.meaningless:
        return (f"FAIL: no verdict: {report.meaningless}; evaluate the checkpoint you deploy (--weights at export) on "
                "images labelled as its head was trained")
    if report.passed:
        compared = sum(1 for r in report.rows if r.passed)
        return (f"PASS: {compared} row(s) within the allowed top-1 drop ({report.max_drop.describe()}) of "
                f"{REFERENCE} on {report.reference_row.images} images")
    if not report.failed:
        return "FAIL: no row was compared with the reference (every one was skipped): see the table"
    worst = ", ".join(f"{r.backend} {r.artifact} ({r.precision}) drops {r.drop_points:.2f} points > "
                      f"{r.allowed_drop_points:.2f} allowed" for r in report.failed)
    return f"FAIL: {worst}"


def _cells(row: AccuracyRow) -> list[str]:
    head = [f"{row.backend} ({row.device})", row.artifact, row.precision]
    if row.skipped:
        return head + ["—"] * (len(COLUMNS) - 4) + [_verdict(row, False)]
    cells = head + [str(row.images), _pct(row.top1), _ci(*row.top1_ci95), _pct(row.top5), _ci(*row.top5_ci95)]
    if row.reference:
        cells += ["—"] * 6
    else:
        low, high = row.drop_ci95_points
        cells += [f"{row.drop_points:+.2f}", f"{low:+.2f} … {high:+.2f}", f"{row.allowed_drop_points:.2f}",
                  str(row.right_to_wrong), str(row.wrong_to_right), f"{row.mcnemar_p:.3g}"]
    return cells + [_rate(row), _verdict(row, False)]


def markdown(report: AccuracyReport, command: str | None = None) -> str:
    data = report.data
    out = [f"# {title(report)}", "", f"**{verdict_line(report)}**", ""]
    if report.untrained:
        out += ["> **The model is untrained** (no weights in the manifest: the seeded init). Its accuracy is chance "
                "and says nothing; pass `--weights`, or export a trained checkpoint.", ""]
    out += [f"Images: {data.get('evaluated')} evaluated of {data.get('images')} listed in `{data.get('root')}` "
            f"({data.get('layout')}, {data.get('classes')} classes); {data.get('skipped')} skipped. Reference: "
            f"{REFERENCE} (the PyTorch model, fp32, on the CPU), on the same images as every row.", "",
            "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in report.rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    out += ["", "- top-1 / top-5: fraction of images whose label is the highest / among the five highest logits; "
                "95 % intervals: Wilson's score interval.",
            f"- drop: the reference's top-1 minus the row's, in percentage points, on the same images; its 95 % "
            f"interval: Agresti–Min for paired proportions. Allowed: {report.max_drop.describe()}.",
            "- right→wrong / wrong→right: images whose top-1 verdict flipped against the reference; McNemar p: the "
            "two-sided exact test that the flips are balanced.",
            f"- img/s: the backend's run calls only, over the full batches of {report.batch} after the first (the "
            "first is the warm-up; a smaller last batch is a new shape, left out too where there are others; "
            "`timed_images` in the JSON says how many); image decoding and preprocessing excluded."]
    if report.warnings:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    if report.skipped_images:
        out += ["", "## Skipped images", ""] + [f"- `{f}`: {why}" for f, why in report.skipped_images]
    if command:
        out += ["", f"Reproduce with `{command}`."]
    return "\n".join(out) + "\n"


def to_json(report: AccuracyReport) -> str:
    return json_text(report.to_dict())

