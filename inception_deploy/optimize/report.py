"""What `optimize` found, for machines (JSON) and people (Markdown with one plot of accuracy against speed)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..core.artifacts import json_text, made_dirs, write_png_atomic, write_text_atomic
from ..core.deps import pyplot
from .choose import Verdict, describe, value

log = logging.getLogger(__name__)

REPORT_FILES = ("optimize.json", "README.md", "accuracy_vs_speed.png", "accuracy.json", "accuracy.md")  # and bench/
UNITS = {
    "latency_p50_ms": "median milliseconds per request at batch 1 (host wall time, interleaved rounds, the median "
                      "round)",
    "latency_p99_ms": "99th percentile milliseconds per request at batch 1",
    "throughput": "images per second at throughput_batch, the best batch whose p99 is within --max-latency-ms",
    "accuracy.top1": "fraction of the --eval images, with its Wilson 95 % interval",
    "accuracy.drop_points": "percentage points of top-1 below fp32 PyTorch on the CPU on the same images, with the "
                            "Agresti-Min 95 % interval",
    "curve.spread": "how far throughput moved between the bench's rounds: (max - min) / median",
}


def to_dict(outcome) -> dict:
    o = outcome.options
    return {
        "variant": o.variant, "objective": o.objective, "device": o.device, "max_latency_ms": o.max_latency_ms,
        "batches": list(o.batches), "max_batch": o.max_batch,
        "max_drop": {**o.max_drop.to_dict(), "describe": o.max_drop.describe()} if o.eval_dir is not None else None,
        "eval": str(o.eval_dir) if o.eval_dir is not None else None,
        "calibration": str(o.calib or o.eval_dir) if o.eval_dir is not None else None,
        "export_dir": str(o.export_dir),
        "chosen": outcome.chosen.candidate.to_dict() if outcome.chosen else None,
        "chosen_figure": describe(outcome.chosen.figure(o.objective, o.max_latency_ms), o.objective)
        if outcome.chosen else None,
        "served": outcome.served.candidate.to_dict() if outcome.served else None,
        "repository": outcome.repository,
        "candidates": [v.to_dict(o.objective, o.max_latency_ms)
                       for v in in_order(outcome.verdicts, o.objective, o.max_latency_ms)],
        "time": outcome.budget, "seconds": round(outcome.seconds, 1), "machine": outcome.environment,
        "measurement": {"rounds": o.measurement.rounds, "warmup_s": o.measurement.warmup_s,
                        "duration_s": o.measurement.duration_s, "interleaved": not outcome.kept_rows,
                        "kept_rows": outcome.kept_rows, "parity_checked": True},
        "commands": outcome.commands, "warnings": outcome.warnings, "units": UNITS,
    }


ORDER = ("chosen", "lost", "rejected", "failed", "not tried", "skipped")


def in_order(verdicts: list[Verdict], objective: str, max_latency_ms: float | None = None) -> list[Verdict]:
    """The chosen candidate first, then those that lost, best first, then those rejected, failed, not tried, skipped,
    each group in order of promise."""
    def key(v: Verdict):
        point = v.figure(objective, max_latency_ms) if v.status == "lost" else None
        rank = 0.0 if point is None else value(point, objective) * (1 if objective == "latency" else -1)
        return ORDER.index(v.status) if v.status in ORDER else len(ORDER), rank

    return sorted(verdicts, key=key)


def cells(v: Verdict, objective: str, max_latency_ms: float | None) -> list[str]:
    """One candidate's row, as the terminal and the Markdown show it."""
    acc = v.accuracy or {}
    top1 = "—" if acc.get("top1") is None else f"{acc['top1']:.1%}" + (
        f" [{acc['top1_ci95_low']:.1%}, {acc['top1_ci95_high']:.1%}]" if "top1_ci95_low" in acc else "")
    drop = ("0 (reference)" if acc.get("top1") is not None else "—") if acc.get("drop_points") is None else \
        f"{acc['drop_points']:+.2f}" + (f" [{acc['drop_ci95_low_points']:+.1f}, {acc['drop_ci95_high_points']:+.1f}]"
                                        if "drop_ci95_low_points" in acc else " (export --eval)")
    one = next((p for p in v.curve if p["batch"] == 1), None)
    p50 = f"{one['p50_ms']:.2f}" if one else "—"
    p99 = f"{one['p99_ms']:.2f}" if one else "—"
    point = v.figure("throughput", max_latency_ms) if v.curve else None
    speed = f"{point['throughput']:,.1f} (b{point['batch']})" if point else "—"
    spread = max((p["spread"] for p in v.curve), default=None)
    return [v.candidate.name, v.status or "—", top1, drop, p50, p99, speed,
            f"{spread:.0%}" if spread is not None else "—", v.reason or ""]


HEADERS = ("candidate", "verdict", "top-1 [95 % CI]", "drop, points [95 % CI]", "p50 ms (b1)", "p99 ms (b1)",
           "img/s (batch)", "spread", "why")


def markdown(outcome, plot: str | None) -> str:
    o = outcome.options
    env = outcome.environment
    where = (env.get("gpu") if o.device == "cuda" else env.get("cpu")) or "this machine"
    lines = [f"# optimize {o.variant}: {o.objective} on {o.device} ({where})", ""]
    if outcome.commands.get("optimize"):
        lines += [f"Reproduce: `{outcome.commands['optimize']}`", ""]
    if outcome.chosen:
        c = outcome.chosen
        lines += [f"**Chosen: {c.candidate.name}**: {describe(c.figure(o.objective, o.max_latency_ms), o.objective)}"
                  + (f", top-1 {c.accuracy['top1']:.1%}" if c.accuracy and "top1" in c.accuracy else "") + ".", ""]
    else:
        lines += ["**No candidate is within budget on this machine.**", ""]
    if outcome.served and outcome.repository:
        r = outcome.repository
        lines += [f"Triton repository: `{r['path']}` serves {outcome.served.candidate.name} ({r['runtime']}, "
                  f"{r['kind']}, max batch {r['max_batch']}, preferred batch sizes {r['preferred_batch'] or 'none'}, "
                  f"queue delay {r['max_queue_delay_us']} us; {r['why']}).", ""]
    budget = "accuracy: no --eval images, so int8 was not weighed" if o.eval_dir is None else \
        f"accuracy budget: at most {o.max_drop.describe()} lost against fp32 PyTorch on {o.eval_dir}"
    lines += [f"Every figure was measured on {where} ({env.get('cpu_count', '?')} CPU threads): one bench run, "
              f"{o.measurement.rounds} interleaved round(s) of {o.measurement.duration_s:g} s after "
              f"{o.measurement.warmup_s:g} s of warm-up, the median round; each row's outputs checked against fp32 "
              f"PyTorch on the runner that was timed. The {budget}.", ""]
    if outcome.kept_rows:
        lines += [f"--resume kept {outcome.kept_rows} bench row(s) as an earlier run measured them: those were not "
                  "interleaved with the rows measured now (bench/bench.json names the run of each).", ""]
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for v in in_order(outcome.verdicts, o.objective, o.max_latency_ms):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells(v, o.objective, o.max_latency_ms))
                     + " |")
    lines.append("")
    if plot:
        lines += [f"![accuracy against speed]({plot})", ""]
    t = outcome.budget
    if t.get("time_budget_s") is not None:
        lines += [f"Time budget {t['time_budget_s']:g} s; spent {t['spent_s']:g} s. Not tried: "
                  f"{', '.join(t['not_tried']) or 'none'}.", ""]
    if outcome.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in outcome.warnings] + [""]
    lines += ["## Reproduce the parts", ""]
    for name in ("bench", "accuracy"):
        if outcome.commands.get(name):
            lines += [f"- {name}: `{outcome.commands[name]}`"]
    lines.append("")
    return "\n".join(lines)


def plot(outcome, path: Path) -> Path | None:
    """Top-1 against speed, one point a measured candidate (the interval as a bar), the chosen one marked; without
    --eval, the speed alone."""
    o = outcome.options
    points = [(v, v.figure(o.objective, o.max_latency_ms)) for v in outcome.verdicts if v.curve]
    points = sorted(((v, p) for v, p in points if p is not None), key=lambda vp: value(vp[1], o.objective))
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xlabel = "median ms per request at batch 1 (lower is better)" if o.objective == "latency" else \
        "images / s at the best batch within the latency limit (higher is better)"
    speed = [p["p50_ms"] if o.objective == "latency" else p["throughput"] for _, p in points]
    with_top1 = all(v.accuracy and "top1_ci95_low" in v.accuracy for v, _ in points)
    for rank, ((v, _), x) in enumerate(zip(points, speed)):
        chosen = v is outcome.chosen
        if with_top1:
            a = v.accuracy
            y = 100 * a["top1"]
            ax.errorbar([x], [y], yerr=[[y - 100 * a["top1_ci95_low"]], [100 * a["top1_ci95_high"] - y]],
                        fmt="*" if chosen else "o", markersize=14 if chosen else 7, capsize=3,
                        color="tab:red" if chosen else "tab:blue")
        else:
            y = len(speed) - rank
            ax.plot([x], [y], "*" if chosen else "o", markersize=14 if chosen else 7,
                    color="tab:red" if chosen else "tab:blue")
        ax.annotate(v.candidate.name + (" (chosen)" if chosen else ""), (x, y), textcoords="offset points",
                    xytext=(6, 8 if rank % 2 == 0 else -16), fontsize=8)  # neighbours in speed: one above, one below
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 % on --eval (95 % interval)" if with_top1 else "candidate")
    if not with_top1:
        ax.set_yticks([])
    what = "accuracy against speed" if with_top1 else "speed (no accuracy measured: no --eval)"
    ax.set_title(f"{o.variant}: {what} ({o.device})")
    ax.grid(True, alpha=0.3)
    written = write_png_atomic(fig, path)
    plt.close(fig)
    return written


def write_reports(outcome) -> list[Path]:
    o = outcome.options
    text = json_text(to_dict(outcome))
    written = []
    if o.json_out is not None:
        write_text_atomic(Path(o.json_out), text)
        written.append(Path(o.json_out))
    if o.report_dir is not None:
        with made_dirs(o.report_dir):
            png = plot(outcome, o.report_dir / "accuracy_vs_speed.png")
            write_text_atomic(o.report_dir / "optimize.json", text)
            write_text_atomic(o.report_dir / "README.md", markdown(outcome, png.name if png else None))
        written += [o.report_dir / "optimize.json", o.report_dir / "README.md"] + ([png] if png else [])
    return written
