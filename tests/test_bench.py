"""bench: the timing maths, the skip reasons, the reports, and a tiny real CPU sweep."""

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from inception_deploy.bench import BenchPlan, BenchRecord, _skip_reason, run_bench
from inception_deploy.bench_report import CSV_FIELDS, to_csv, to_markdown
from inception_deploy.cli import app
from inception_deploy.timing import measure, summarize

runner = CliRunner()
SUITES = Path(__file__).parent.parent / "benchmarks" / "suites"


def test_percentiles_and_throughput_on_known_samples():
    stats = summarize([i / 1000 for i in range(1, 101)], batch=4)  # 1..100 ms
    assert stats.iterations == 100 and stats.min_ms == pytest.approx(1) and stats.max_ms == pytest.approx(100)
    assert stats.mean_ms == pytest.approx(50.5)
    assert (stats.p50_ms, stats.p90_ms, stats.p95_ms, stats.p99_ms) == pytest.approx((50.5, 90.1, 95.05, 99.01))
    assert stats.seconds == pytest.approx(5.05) and stats.throughput == pytest.approx(4 * 100 / 5.05)
    assert stats.cv == pytest.approx(28.866 / 50.5, rel=1e-3) and stats.unstable
    steady = summarize([0.010] * 50, batch=1)
    assert steady.cv == pytest.approx(0.0, abs=1e-9) and not steady.unstable and steady.throughput == pytest.approx(100)


def test_measure_warms_up_by_time_then_times_a_duration():
    now = [0.0]
    calls = {"step": 0, "sync": 0}

    def step():
        calls["step"] += 1
        now[0] += 0.010  # every iteration takes 10 ms…

    def sync():
        calls["sync"] += 1
        now[0] += 0.002  # …and 2 ms to synchronise, which is part of the latency

    stats = measure(step, batch=8, warmup_s=0.1, duration_s=0.5, synchronize=sync, clock=lambda: now[0])
    assert stats.p50_ms == pytest.approx(12.0) and stats.cv == pytest.approx(0.0, abs=1e-6)
    assert stats.iterations == 42  # 0.5 s / 12 ms, rounded up to cover the window
    assert calls["step"] == calls["sync"] == 42 + 9  # 9 warm-up iterations fill 0.1 s
    assert stats.throughput == pytest.approx(8 / 0.012, rel=0.01)


def test_skip_reasons(tmp_path):
    plan = BenchPlan(variants=["googlenet"], backends=["torch"], precisions=["fp32"], batches=[1], export_root=tmp_path)
    assert "torch runs no int8" in _skip_reason(plan, "googlenet", "torch-compile", "int8")
    assert "Casts" in _skip_reason(plan, "googlenet", "onnxruntime", "fp16")
    assert "model.int8.onnx" in _skip_reason(plan, "googlenet", "onnxruntime", "int8")
    assert _skip_reason(plan, "googlenet", "onnxruntime", "fp32") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine these combinations can run")
def test_combinations_that_cannot_run_are_listed_with_the_reason(tmp_path):
    plan = BenchPlan(variants=["googlenet"], backends=["torch", "onnxruntime-cuda", "tensorrt"],
                     precisions=["fp16", "int8"], batches=[1, 4], device="cuda", export_root=tmp_path)
    records = run_bench(plan)
    assert len(records) == 3 * 2 * 2 and all(r.status == "skipped" and r.reason for r in records)
    reasons = {(r.backend, r.precision): r.reason for r in records}
    assert "torch runs no int8" in reasons[("torch", "int8")]
    assert reasons[("torch", "fp16")] == reasons[("onnxruntime-cuda", "fp16")] == reasons[("tensorrt", "fp16")] == "no CUDA GPU here"
    assert not list(tmp_path.iterdir())  # nothing was exported for combinations that cannot run


def test_reports_render_records_and_skips():
    ok = BenchRecord("googlenet", "onnxruntime", "fp32", 2, "cpu", "ok", stats=summarize([0.01, 0.012], batch=2),
                     memory_mib=512.0, memory_kind="process peak RSS so far (MiB)", parity="pass")
    ok.stats = ok.stats.to_dict()
    skipped = BenchRecord("googlenet", "tensorrt", "fp16", 2, "cuda", "skipped", "no CUDA GPU here")
    rows = list(csv.DictReader(io.StringIO(to_csv([ok, skipped]))))
    assert tuple(rows[0]) == CSV_FIELDS and rows[0]["throughput"] and rows[1]["reason"] == "no CUDA GPU here"
    env = {"cpu": "test cpu", "cpu_count": 2, "torch_threads": 2, "torch": "x", "onnxruntime": "y", "python": "3"}
    md = to_markdown([ok, skipped], env, {"warmup_s": 1, "duration_s": 2, "include_transfers": False, "command": "inception-deploy bench v1"})
    assert "## googlenet" in md and "| onnxruntime | fp32 | 2 | 181.8 |" in md
    assert "skipped: no CUDA GPU here" in md and "inception-deploy bench v1" in md


def test_cpu_smoke_suite_end_to_end(tmp_path):
    """A tiny real sweep: googlenet, batch 1 and 2, torch and onnxruntime, on this CPU."""
    report = tmp_path / "report"
    result = runner.invoke(app, ["bench", "--suite", str(SUITES / "cpu-smoke.toml"), "--export-root", str(tmp_path / "export"),
                                 "--report", str(report), "--json", str(tmp_path / "b.json"), "--csv", str(tmp_path / "b.csv")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["environment"]["cpu_count"] and data["plan"]["batches"] == [1, 2]
    records = data["records"]
    assert [(r["backend"], r["batch"], r["status"]) for r in records] == [
        ("torch", 1, "ok"), ("torch", 2, "ok"), ("onnxruntime", 1, "ok"), ("onnxruntime", 2, "ok")]
    for r in records:
        s = r["stats"]
        assert s["iterations"] >= 5 and s["throughput"] > 0 and s["min_ms"] <= s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert r["parity"] == ("reference" if r["backend"] == "torch" else "pass")
    assert r["settings"]["intra_op_threads"] >= 1
    assert {p.name for p in report.iterdir()} == {"README.md", "bench.json", "bench.csv", "googlenet_throughput.png",
                                                   "googlenet_latency_b1.png"}
    assert (report / "googlenet_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_bench_arguments(tmp_path):
    for args, fragment in [
        (["bench", "--suite", "nonesuch"], "no suite 'nonesuch'"),
        (["bench", "v1", "--backends", "torch,warp"], "unknown backend 'warp'"),
        (["bench", "v1", "--batch", "1,x"], "comma-separated list"),
        (["bench", "v1", "--device", "tpu"], "--device must be cpu or cuda"),
        (["bench"], "name at least one VARIANT"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
