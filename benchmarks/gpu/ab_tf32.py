"""The A/B that tests the cause named in issue 25: does `use_tf32="0"` slow ONNX Runtime CUDA's fp16 convolutions?

    python benchmarks/gpu/ab_tf32.py EXPORT_DIR [EXPORT_DIR ...] --device cuda --batch 1,256 --json OUT.json

For each export's model.fp16.onnx and batch: two arms, `use_tf32` left out (ONNX Runtime's default, as the runner
now leaves it for fp16) and `use_tf32="0"` (as the runner set it for every session before), each in NCHW and NHWC
with a CUDA graph, as the bench's candidates run; the arms alternate round by round, and each reports its median
images/s and GPU ms per batch. Then, for each arm, the CUDA kernels one run launches (torch.profiler, without a
graph), the longest first, and the share of kernel time in kernels whose names mark tensor-core code (xmma, hmma,
gmma, tensorop: read from the names, a heuristic). ONNX Runtime's source (conv.cc, cuDNN frontend path) deselects
engines with the TENSOR_CORE numerical note when use_tf32 is false, whatever the data type: this measures whether
that is what made the first H200 figures slow. The JSON is rewritten after every measurement.

--device cpu is the CPU rehearsal (tests/test_proof.py): the arms cannot differ there (use_tf32 is a CUDA option),
so both run the CPU provider alike; it shows that the script runs, not a result.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from inception_deploy.core.errors import InceptionDeployError
from inception_deploy.core.manifest import read_manifest
from inception_deploy.core.timing import measure
from inception_deploy.models.registry import get_spec
from inception_deploy.models.samples import random_batch
from inception_deploy.runners.onnxruntime_runner import OnnxRuntimeRunner

LEFT_OUT, ZERO = "use_tf32 left out", 'use_tf32="0"'
ARMS = {LEFT_OUT: {}, ZERO: {"use_tf32": "0"}}
TENSOR_CORE_NAMES = re.compile(r"xmma|hmma|gmma|tensorop|16816|1688", re.IGNORECASE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", type=Path, nargs="+")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--batch", default="1,256", help="comma-separated batch sizes")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "fp32"), help="fp32 only for the rehearsal")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=0.5)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    result = {"device": args.device, "precision": args.precision, "rounds": args.rounds, "window_s": args.window_s,
              "arms": list(ARMS), "measured": [], "kernels": [], "verdicts": []}
    if args.device == "cuda":
        import onnxruntime
        import torch

        result.update(gpu=torch.cuda.get_device_name(), onnxruntime=onnxruntime.__version__)
    try:
        for export in args.exports:
            for batch in (int(b) for b in args.batch.split(",")):
                ab(export, batch, args, result)
    except InceptionDeployError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    finally:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    for line in result["verdicts"]:
        print(line)
    return 0


def ab(export: Path, batch: int, args, result: dict) -> None:
    variant = (read_manifest(export) or {}).get("variant") or export.name
    model = export / ("model.fp16.onnx" if args.precision == "fp16" else "model.onnx")
    x = random_batch(get_spec(variant), batch, seed=0).numpy()
    timed = {}
    for arm, options in ARMS.items():
        for nhwc in ("0", "1"):
            timed[arm, nhwc] = _runner(model, args, options, nhwc, cuda_graph=True)
    try:
        prepared = {key: r.prepare({r.inputs[0].name: x}) for key, r in timed.items()}
        rounds = {key: [] for key in timed}
        for index in range(args.rounds):  # the arms alternate round by round
            for key, runner in timed.items():
                stats = measure(lambda r=runner, p=prepared[key]: r.run_prepared(p), batch=batch, warmup_s=0.2,
                                duration_s=args.window_s, synchronize=runner.synchronize,
                                device_timer=runner.device_timer())
                rounds[key].append(stats.to_dict())
                print(f"[ab] {variant} b{batch} {key[0]} prefer_nhwc={key[1]} round {index + 1}: "
                      f"{stats.throughput:,.0f} img/s", flush=True)
                result["measured"].append({"variant": variant, "batch": batch, "arm": key[0], "prefer_nhwc": key[1],
                                           "round": index + 1, "stats": stats.to_dict()})
                args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        for runner in timed.values():
            runner.close()
    medians = {key: statistics.median(r["throughput"] for r in rs) for key, rs in rounds.items()}
    gpu = {key: _median_or_none([r.get("gpu_p50_ms") for r in rs]) for key, rs in rounds.items()}
    for nhwc in ("0", "1"):
        a, b = medians[LEFT_OUT, nhwc], medians[ZERO, nhwc]
        result["verdicts"].append(f"{variant} b{batch} prefer_nhwc={nhwc}: {LEFT_OUT} {a:,.0f} img/s (GPU "
                                  f"{_ms(gpu[LEFT_OUT, nhwc])}), {ZERO} {b:,.0f} img/s (GPU {_ms(gpu[ZERO, nhwc])}): "
                                  f"{a / b:.2f}x")
    for arm, options in ARMS.items():  # the kernels behind each arm, NCHW and NHWC, without a graph
        for nhwc in ("0", "1"):
            result["kernels"].append({"variant": variant, "batch": batch, "arm": arm, "prefer_nhwc": nhwc,
                                      **_kernels(_runner(model, args, options, nhwc, cuda_graph=False), x, args)})
            args.json.write_text(json.dumps(result, indent=2) + "\n")


def _runner(model: Path, args, options: dict, nhwc: str, *, cuda_graph: bool) -> OnnxRuntimeRunner:
    if args.device == "cpu":  # the rehearsal: no CUDA option applies, both arms run the CPU provider alike
        return OnnxRuntimeRunner(model, device="cpu", precision=args.precision).activate()
    provider_options = {"prefer_nhwc": nhwc, "cudnn_conv_algo_search": "EXHAUSTIVE", **options}
    return OnnxRuntimeRunner(model, device="cuda", precision=args.precision, provider_options=provider_options,
                             cuda_graph=cuda_graph).activate()


def _kernels(runner: OnnxRuntimeRunner, x, args, runs: int = 3, top: int = 12) -> dict:
    from torch.profiler import ProfilerActivity, profile

    try:
        prepared = runner.prepare({runner.inputs[0].name: x})
        runner.run_prepared(prepared)  # the first run builds the cuDNN plans: not profiled
        runner.synchronize()
        activity = ProfilerActivity.CUDA if args.device == "cuda" else ProfilerActivity.CPU
        with profile(activities=[activity]) as prof:
            for _ in range(runs):
                runner.run_prepared(prepared)
            runner.synchronize()
    finally:
        runner.close()
    rows = []
    for event in prof.key_averages():
        if args.device == "cuda":
            total = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
        else:
            total = event.self_cpu_time_total
        if total:
            rows.append((event.key, total / runs / 1000, event.count // runs))
    rows.sort(key=lambda row: -row[1])
    all_ms = sum(ms for _, ms, _ in rows)
    tensor_core_ms = sum(ms for name, ms, _ in rows if TENSOR_CORE_NAMES.search(name))
    return {"ms_per_run": round(all_ms, 4), "tensor_core_share_by_name": round(tensor_core_ms / all_ms, 4) if all_ms
            else None, "top": [{"name": name[:160], "ms_per_run": round(ms, 4), "calls_per_run": n}
                               for name, ms, n in rows[:top]]}


def _median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ms(value) -> str:
    return f"{value:.3f} ms" if value is not None else "—"


if __name__ == "__main__":
    sys.exit(main())
