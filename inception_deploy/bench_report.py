"""Benchmark reports: JSON and CSV for machines, Markdown and PNG plots for people."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .artifacts import atomic_path, write_text_atomic
from .bench import BenchRecord
from .deps import require

CSV_FIELDS = ("variant", "backend", "precision", "batch", "device", "status", "throughput", "min_ms", "mean_ms",
              "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "cv", "iterations", "memory_mib", "parity",
              "include_transfers", "reason", "warning")


def to_json(records: list[BenchRecord], env: dict, plan: dict) -> str:
    return json.dumps({"environment": env, "plan": plan, "records": [r.to_dict() for r in records]}, indent=2) + "\n"


def to_csv(records: list[BenchRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        writer.writerow({**r.to_dict(), **(r.stats or {})})
    return buffer.getvalue()


def to_markdown(records: list[BenchRecord], env: dict, plan: dict, plots: list[str] = ()) -> str:
    lines = ["# inception-deploy bench", ""]
    where = env.get("gpu") or env.get("cpu")
    lines += [f"Measured on **{where}**"
              + (f" (driver {env.get('driver')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')})" if env.get("gpu") else
                 f", {env.get('cpu_count')} cores, torch threads {env.get('torch_threads')}"),
              f"with torch {env['torch']}, onnxruntime {env['onnxruntime']}, TensorRT {env.get('tensorrt') or '—'}, "
              f"Python {env['python']}.",
              f"Warm-up {plan['warmup_s']} s, timed {plan['duration_s']} s per row; host↔device copies "
              f"{'included' if plan['include_transfers'] else 'excluded'}. Throughput in images/s; latency per "
              "batch in ms. Parity: the artifact's check from its manifest (`pass`/`fail`), `reference` for the "
              "PyTorch model itself. Memory: peak allocated (torch on a GPU), device memory in use (other GPU "
              "backends), or the process's peak RSS so far (CPU).", ""]
    for variant in dict.fromkeys(r.variant for r in records):
        lines += [f"## {variant}", "", "| backend | precision | batch | img/s | p50 ms | p90 ms | p99 ms | CV | memory MiB | parity | note |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in (r for r in records if r.variant == variant):
            if r.status != "ok":
                lines.append(f"| {r.backend} | {r.precision} | {r.batch} | — | — | — | — | — | — | {r.parity} | "
                             f"{r.status}: {r.reason} |")
                continue
            s = r.stats
            note = r.warning or ""
            lines.append(f"| {r.backend} | {r.precision} | {r.batch} | {s['throughput']:,.1f} | {s['p50_ms']:.2f} | "
                         f"{s['p90_ms']:.2f} | {s['p99_ms']:.2f} | {s['cv']:.1%} | "
                         f"{r.memory_mib:,.0f} | {r.parity} | {note} |" if r.memory_mib is not None else
                         f"| {r.backend} | {r.precision} | {r.batch} | {s['throughput']:,.1f} | {s['p50_ms']:.2f} | "
                         f"{s['p90_ms']:.2f} | {s['p99_ms']:.2f} | {s['cv']:.1%} | — | {r.parity} | {note} |")
        lines.append("")
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    if plan.get("command"):
        lines += ["", "Reproduce with:", "", "```bash", plan["command"], "```"]
    return "\n".join(lines) + "\n"


def write_plots(records: list[BenchRecord], directory: Path) -> list[Path]:
    """throughput vs batch per backend/precision, and batch-1 latency percentiles; one PNG each per variant."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written = []
    for variant in dict.fromkeys(r.variant for r in records):
        ok = [r for r in records if r.variant == variant and r.status == "ok"]
        if not ok:
            continue
        series = {}
        for r in ok:
            series.setdefault(f"{r.backend} {r.precision}", []).append((r.batch, r.stats["throughput"]))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, points in sorted(series.items()):
            points.sort()
            ax.plot([b for b, _ in points], [t for _, t in points], marker="o", label=label)
        ax.set_xscale("log", base=2)
        batches = sorted({b for points in series.values() for b, _ in points})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch")
        ax.set_ylabel("images / s")
        ax.set_title(f"{variant}: throughput")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, directory / f"{variant}_throughput.png"))
        plt.close(fig)

        ones = [r for r in ok if r.batch == 1]
        if ones:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            labels = [f"{r.backend}\n{r.precision}" for r in ones]
            for offset, key in enumerate(("p50_ms", "p90_ms", "p99_ms")):
                ax.bar([i + offset * 0.27 for i in range(len(ones))], [r.stats[key] for r in ones], width=0.27, label=key[:-3])
            ax.set_xticks([i + 0.27 for i in range(len(ones))], labels, fontsize=8)
            ax.set_ylabel("ms")
            ax.set_title(f"{variant}: batch-1 latency")
            ax.legend()
            written.append(_save(fig, directory / f"{variant}_latency_b1.png"))
            plt.close(fig)
    return written


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def write_reports(records, env: dict, plan: dict, *, json_path=None, csv_path=None, report_dir=None) -> list[Path]:
    written = []
    if json_path:
        write_text_atomic(Path(json_path), to_json(records, env, plan))
        written.append(Path(json_path))
    if csv_path:
        write_text_atomic(Path(csv_path), to_csv(records))
        written.append(Path(csv_path))
    if report_dir:
        directory = Path(report_dir)
        directory.mkdir(parents=True, exist_ok=True)
        plots = write_plots(records, directory)
        for name, text in (("bench.json", to_json(records, env, plan)), ("bench.csv", to_csv(records)),
                           ("README.md", to_markdown(records, env, plan, [p.name for p in plots]))):
            write_text_atomic(directory / name, text)
            written.append(directory / name)
        written += plots
    return written
