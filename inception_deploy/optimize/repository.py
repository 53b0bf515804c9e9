"""The winner as Triton serves it: which candidate Triton can serve, and its model repository, with the dynamic
batcher's preferred sizes taken from the measured curve (serving/triton_repo.py writes and checks it)."""

from __future__ import annotations

import logging

from ..serving.triton_repo import TritonOptions, write_repository
from .choose import Verdict, better, value
from .make import ExportDir
from .options import OptimizeOptions

log = logging.getLogger(__name__)

PREFERRED_SHARE = 0.9  # Triton's preferred batch sizes: those within this share of the best measured throughput


def served_candidate(verdicts: list[Verdict], chosen: Verdict | None, objective: str,
                     max_latency_ms: float | None) -> Verdict | None:
    """What the repository serves: the chosen candidate, or, where Triton cannot serve it, the best that it can."""
    if chosen is None or chosen.candidate.served:
        return chosen
    lost = [v for v in verdicts if v.status == "lost" and v.candidate.served]
    if not lost:
        return None
    best = lost[0]
    for v in lost[1:]:
        if better(objective, value(v.figure(objective, max_latency_ms), objective),
                  value(best.figure(objective, max_latency_ms), objective)):
            best = v
    return best


def write_repository_for(options: OptimizeOptions, export: ExportDir, served: Verdict, warnings: list[str]) -> dict:
    """The repository of `served` (serving/triton_repo.py's writer and checks); what it holds, and why."""
    runtime, device = served.candidate.served
    point = served.figure(options.objective, options.max_latency_ms)
    preferred: tuple[int, ...] = ()
    max_batch = options.max_batch
    if options.objective == "throughput" and point is not None:
        within = [p for p in served.curve if options.max_latency_ms is None or p["p99_ms"] <= options.max_latency_ms]
        preferred = tuple(sorted(p["batch"] for p in within
                                 if p["batch"] > 1 and p["throughput"] >= PREFERRED_SHARE * point["throughput"]))
        if options.max_latency_ms is not None:  # no batch larger than the largest measured within the p99 limit
            max_batch = max(p["batch"] for p in within)
    labels = None if options.labels is None else str(options.labels)
    triton = TritonOptions(precision=served.candidate.precision, runtime=runtime, device=device,
                           max_batch=max_batch, instances=1, preferred_batch=preferred,
                           max_queue_delay_us=0 if options.objective == "latency" else 100, labels=labels,
                           label_names=None if labels else export.class_names)
    written = write_repository(options.export_dir, options.repo, triton)
    warnings += [w for w in written.warnings if w not in warnings]
    runtime_note = ("Triton runs the file with its backend's own settings: what the bench's runner tuned (the "
                    f"settings it measured fastest: {settings_text(served.settings)}) is not in config.pbtxt, so "
                    "Triton's figures may differ from the table's; loadtest measures them")
    return {"path": str(written.model_dir), "name": written.model_dir.name, "serves": served.candidate.to_dict(),
            "measured_with": served.settings, "note": runtime_note,
            "artifact": written.artifact["path"], "sha256": written.artifact["sha256"], "runtime": runtime,
            "kind": "KIND_CPU" if device == "cpu" else "KIND_GPU", "instances": 1, "max_batch": max_batch,
            "preferred_batch": list(preferred), "max_queue_delay_us": triton.max_queue_delay_us,
            "why": ("one instance: ONNX Runtime's CPU provider already spreads one request over every core"
                    if device == "cpu" else "one instance per GPU; preferred sizes: the measured batches within "
                                            f"{PREFERRED_SHARE:.0%} of the best throughput")}


def settings_text(settings: dict | None) -> str:
    """The runner settings a bench row measured fastest, in a few words."""
    keep = ("intra_op_threads", "provider_options", "cuda_graph", "channels_last", "threads")
    return ", ".join(f"{k} {settings[k]}" for k in keep if k in (settings or {})) or "the runner's defaults"
