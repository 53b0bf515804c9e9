"""Benchmark reports: JSON and CSV for machines, Markdown and PNG plots for people."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

from ..core.artifacts import write_png_atomic, write_text_atomic
from ..core.deps import pyplot
from .record import BenchRecord

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "variant",
    "backend",
    "precision",
    "batch",
    "device",
    "status",
    "throughput",
    "throughput_spread",
    "rounds",
    "min_ms",
    "mean_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "cv",
    "gpu_mean_ms",
    "gpu_p50_ms",
    "gpu_p99_ms",
    "first_call_ms",
    "iterations",
    "memory_mib",
    "memory_kind",
    "tf32",
    "parity",
    "parity_source",
    "include_transfers",
    "reason",
    "warnings",
    "source",
    "resumed_from",
)


def to_json(records: list[BenchRecord], env: dict, plan: dict) -> str:
    return json.dumps({"environment": env, "plan": plan, "records": [r.to_dict() for r in records]}, indent=2) + "\n"


def to_csv(records: list[BenchRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        writer.writerow({**r.to_dict(), **(r.stats or {}), "warnings": "; ".join(r.warnings)})
    return buffer.getvalue()


def precision_label(r: BenchRecord) -> str:
    return f"{r.precision} (TF32)" if r.tf32 else r.precision


def to_markdown(records: list[BenchRecord], env: dict, plan: dict, plots: list[str] = ()) -> str:
    lines = ["# inception-deploy bench", ""]
    where = env.get("gpu") or env.get("cpu")
    lines += [f"Measured on **{where}**"
              + (f" ({env.get('compute_capability')}, driver {env.get('driver')}, CUDA {env.get('cuda')}, cuDNN "
                 f"{env.get('cudnn')}),"
                 f" host CPU {env.get('cpu')}" if env.get("gpu") else
                 f", {env.get('cpu_count')} cores, torch threads {env.get('torch_threads')}"),
              f"with torch {env['torch']}, onnxruntime {env['onnxruntime']}, TensorRT {env.get('tensorrt') or '—'}, "
              f"TensorRT-RTX {env.get('tensorrt-rtx') or '—'}, Python {env['python']}.", "",
              f"Each row: {plan.get('rounds', 1)} round(s), the rows alternating round by round; per round a first "
              "call "
              f"(compilation, autotuning, graph capture: not timed), warm-up of ≥3 iterations and {plan['warmup_s']} "
              "s, "
              f"then {plan['duration_s']} s timed. Figures are medians over rounds; *spread* is how far throughput "
              "moved "
              f"between rounds. Host↔device copies {'included' if plan['include_transfers'] else 'excluded'}. "
              "Throughput in images/s over host wall time; latency per batch in ms on the host; *GPU ms*: time on "
              "the runner's CUDA stream per batch (CUDA events; without a CUDA graph it includes gaps where the GPU "
              "waits for the host to launch). fp32 on a GPU is true fp32 unless the precision says TF32; TF32 "
              "does not apply to fp16 and int8 rows, whose runtimes keep their defaults. "
              "Memory: on a GPU measured one way for every backend: device memory in use (cudaMemGetInfo) at the "
              "row's end, above the baseline taken before the runner was activated (allocator pools or ONNX "
              "Runtime's arena, grown as requested, workspaces, CUDA graphs); on the CPU the process peak RSS during "
              "the row. "
              "Parity: from this backend when the run used --check-parity, from the export's own check only for "
              "onnxruntime on the CPU, `reference` for the PyTorch model, else `unchecked`.", ""]
    resumed = sorted({r.resumed_from for r in records if r.resumed_from})
    if resumed:
        count = sum(1 for r in records if r.resumed_from)
        lines += [f"Resumed (`--resume`): {count} of {len(records)} rows were measured by earlier runs of this sweep "
                  f"({', '.join(resumed)}), with the same settings, the same kind of machine and software (each "
                  "backend's own library included), and the same artifacts. Rows measured in one run alternated round "
                  "by round; rows from different runs did not: the note names the run of each kept row.", ""]
    for variant in dict.fromkeys(r.variant for r in records):
        lines += [f"## {variant}", "",
                  "| backend | precision | batch | img/s | spread | p50 ms | p99 ms | GPU ms | CV | memory MiB | "
                  "parity | note |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in (r for r in records if r.variant == variant):
            if r.status != "ok":
                lines.append(f"| {r.backend} | {r.precision} | {r.batch} | — | — | — | — | — | — | — | {r.parity} | "
                             f"{r.status}: {r.reason} |")
                continue
            s = r.stats
            gpu = f"{s['gpu_p50_ms']:.2f}" if s.get("gpu_p50_ms") is not None else "—"
            memory = f"{r.memory_mib:,.0f}" if r.memory_mib is not None else "—"
            lines.append(f"| {r.backend} | {precision_label(r)} | {r.batch} | {s['throughput']:,.1f} | "
                         f"{s['throughput_spread']:.0%} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {gpu} | "
                         f"{s['cv']:.1%} | "
                         f"{memory} | {r.parity} | {'; '.join(_notes(r))} |")
        lines.append("")
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    if plan.get("command"):
        lines += ["", "Reproduce with:", "", "```bash", plan["command"], "```"]
    return "\n".join(lines) + "\n"


def _notes(r: BenchRecord) -> list[str]:
    return r.warnings + ([f"run {r.resumed_from}"] if r.resumed_from else [])


def write_plots(records: list[BenchRecord], directory: Path) -> list[Path]:
    """throughput vs batch per backend/precision, and batch-1 latency percentiles; one PNG each per variant."""
    plt = pyplot()

    written = []
    for variant in dict.fromkeys(r.variant for r in records):
        ok = [r for r in records if r.variant == variant and r.status == "ok"]
        if not ok:
            continue
        series = {}
        for r in ok:
            series.setdefault(f"{r.backend} {precision_label(r)}", []).append((r.batch, r.stats["throughput"]))
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
        written.append(write_png_atomic(fig, directory / f"{variant}_throughput.png"))
        plt.close(fig)

        ones = [r for r in ok if r.batch == 1]
        if ones:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            labels = [f"{r.backend}\n{precision_label(r)}" for r in ones]
            for offset, key in enumerate(("p50_ms", "p90_ms", "p99_ms")):
                ax.bar(
                    [i + offset * 0.27 for i in range(len(ones))],
                    [r.stats[key] for r in ones],
                    width=0.27,
                    label=key[:-3],
                )
            ax.set_xticks([i + 0.27 for i in range(len(ones))], labels, fontsize=8)
            ax.set_ylabel("ms")
            ax.set_title(f"{variant}: batch-1 latency")
            ax.legend()
            written.append(write_png_atomic(fig, directory / f"{variant}_latency_b1.png"))
            plt.close(fig)
    return written


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
