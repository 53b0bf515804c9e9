"""bench: the timing maths, the measurement contract (warm-up, rounds, recompiles, failures, memory, parity
from the timed runner), the reports, and real CPU sweeps."""

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from inception_deploy.bench.plan import BenchPlan, load_suite
from inception_deploy.bench.record import BenchRecord
from inception_deploy.bench.report import CSV_FIELDS, to_csv, to_markdown
from inception_deploy.bench.sweep import _skip_reason, run_bench
from inception_deploy.cli import app
from inception_deploy.core.errors import InputError
from inception_deploy.core.timing import MIN_WARMUP_ITERATIONS, combine_rounds, measure, summarize
from inception_deploy.runners import BACKENDS
from inception_deploy.runners.base import Runner, reset_peak_rss

runner = CliRunner()
SUITES = Path(__file__).parent.parent / "inception_deploy" / "bench" / "suites"


class FakeClock:
    """A clock the test advances: each step and sync costs what the test says."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_percentiles_and_throughput_on_known_samples():
    stats = summarize([i / 1000 for i in range(1, 101)], batch=4)  # 1..100 ms
    assert stats.iterations == 100 and stats.min_ms == pytest.approx(1) and stats.max_ms == pytest.approx(100)
    assert stats.mean_ms == pytest.approx(50.5)
    assert (stats.p50_ms, stats.p90_ms, stats.p95_ms, stats.p99_ms) == pytest.approx((50.5, 90.1, 95.05, 99.01))
    assert stats.seconds == pytest.approx(5.05) and stats.throughput == pytest.approx(4 * 100 / 5.05)
    assert stats.cv == pytest.approx(28.866 / 50.5, rel=1e-3) and stats.unstable
    steady = summarize([0.010] * 50, batch=1)
    assert steady.cv == pytest.approx(0.0, abs=1e-9) and not steady.unstable and steady.throughput == pytest.approx(100)


def test_a_slow_first_call_stays_out_of_the_warmup_and_the_timed_window():
    """Compilation or graph capture in the first call (5 s here) must not use up the warm-up budget, and
    at least MIN_WARMUP_ITERATIONS run after it however short the warm-up time."""
    clock = FakeClock()
    calls = {"step": 0, "sync": 0}

    def step():
        calls["step"] += 1
        clock.now += 5.0 if calls["step"] == 1 else 0.010

    def sync():
        calls["sync"] += 1
        clock.now += 0.002  # synchronising is part of the latency

    stats = measure(step, batch=8, warmup_s=0.1, duration_s=0.5, synchronize=sync, clock=clock)
    assert stats.first_call_ms == pytest.approx(5002.0)
    assert stats.warmup_iterations == 9  # 0.1 s of 12 ms iterations, counted from the end of the first call
    assert stats.max_ms == pytest.approx(12.0) and stats.iterations == 42  # 0.5 s / 12 ms, rounded up
    assert calls["step"] == calls["sync"] == 1 + 9 + 42
    assert stats.throughput == pytest.approx(8 / 0.012, rel=0.01)

    clock.now, calls["step"] = 0.0, 0
    quick = measure(step, batch=1, warmup_s=0.0, duration_s=0.05, synchronize=sync, clock=clock)
    assert quick.warmup_iterations == MIN_WARMUP_ITERATIONS and quick.max_ms == pytest.approx(12.0)


def test_device_time_is_recorded_beside_host_time():
    clock = FakeClock()

    class Timer:  # a device that computes for 7 ms of each 12 ms iteration
        def start(self):
            self.t = clock.now

        def stop(self):
            pass

        def elapsed_ms(self):
            return 7.0

    def step():
        clock.now += 0.012

    stats = measure(step, batch=2, warmup_s=0, duration_s=0.12, device_timer=Timer(), clock=clock)
    assert stats.gpu_p50_ms == pytest.approx(7.0) and stats.p50_ms == pytest.approx(12.0)
    assert summarize([0.01], batch=1).gpu_p50_ms is None  # no device, no device figure


def test_rounds_report_the_median_and_the_spread():
    rounds = [summarize([t] * 10, batch=1) for t in (0.010, 0.020, 0.0125)]  # 100, 50, 80 img/s
    row = combine_rounds(rounds)
    assert row["throughput"] == pytest.approx(80) and row["p50_ms"] == pytest.approx(12.5)
    assert row["rounds"] == 3 and row["iterations"] == 30
    assert row["throughput_spread"] == pytest.approx((100 - 50) / 80)


def test_device_runners_must_implement_their_benchmark_hooks():
    """A GPU runner that inherited the CPU defaults would time host copies and stop the clock early."""
    with pytest.raises(TypeError, match="must implement prepare, run_prepared, fetch, synchronize, device_timer"):
        class HalfDone(Runner):  # noqa: F841
            devices = ("cuda",)

            def _activate(self):
                pass

            def _run(self, feed):
                return {}


def test_peak_memory_is_per_row():
    """The CPU memory column is the peak during the row, not the process's peak so far."""
    import mmap

    from inception_deploy.runners.base import _proc_status_mib

    # A peak made with fresh pages of its own (mmap, not malloc, which may reuse pages earlier tests left
    # resident) and handed back to the kernel before the reset must not survive it.
    size = 300 * 2**20
    assert reset_peak_rss()
    base = _proc_status_mib("VmHWM")
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    peak = _proc_status_mib("VmHWM")
    assert peak - base > 250
    block.close()
    assert reset_peak_rss()
    assert peak - _proc_status_mib("VmHWM") > 250


def test_skip_reasons(tmp_path):
    plan = BenchPlan(variants=["googlenet"], backends=["torch"], precisions=["fp32"], batches=[1], export_root=tmp_path)
    assert "torch runs no int8" in _skip_reason(plan, "googlenet", BACKENDS["torch-compile"], "int8")
    assert "Casts" in _skip_reason(plan, "googlenet", BACKENDS["onnxruntime"], "fp16")
    assert "model.int8.onnx" in _skip_reason(plan, "googlenet", BACKENDS["onnxruntime"], "int8")
    assert _skip_reason(plan, "googlenet", BACKENDS["onnxruntime"], "fp32") is None
    if torch.cuda.is_available():
        assert "not be int8" in _skip_reason(plan, "googlenet", BACKENDS["onnxruntime-cuda"], "int8")


def test_the_device_option_moves_torch_backends_to_the_gpu():
    plan = BenchPlan(variants=["googlenet"], backends=["torch", "torch-compile", "onnxruntime"], precisions=["fp32"],
                     batches=[1], device="cuda")
    assert [b.name for b in plan.resolved_backends()] == ["torch-cuda", "torch-compile-cuda", "onnxruntime"]
    assert BACKENDS["torch-compile-cuda"].compile == "inductor" and BACKENDS["torch-cuda"].compile is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine these combinations can run")
def test_combinations_that_cannot_run_are_listed_with_the_reason(tmp_path):
    plan = BenchPlan(variants=["googlenet"], backends=["torch", "onnxruntime-cuda", "tensorrt"],
                     precisions=["fp16", "int8"], batches=[1, 4], device="cuda", export_root=tmp_path)
    records = run_bench(plan)
    assert len(records) == 3 * 2 * 2 and all(r.status == "skipped" and r.reason for r in records)
    reasons = {(r.backend, r.precision): r.reason for r in records}
    assert "torch runs no int8" in reasons[("torch-cuda", "int8")]
    assert (
        reasons[("torch-cuda", "fp16")]
        == reasons[("onnxruntime-cuda", "fp16")]
        == reasons[("tensorrt", "fp16")]
        == "no CUDA GPU here"
    )
    assert not list(tmp_path.iterdir())  # nothing was exported for combinations that cannot run


def test_onnxruntime_cuda_is_fp32_unless_tf32_is_asked_for(exported):
    """ONNX Runtime's CUDA provider uses TF32 by default; the runner turns it off (parity on a GPU relies on
    it), and the choice is in its settings. Construction is cheap: nothing is loaded until activation."""
    from inception_deploy.core.errors import BackendMissing
    from inception_deploy.runners import OnnxRuntimeRunner

    path = exported("googlenet")[0] / "model.onnx"
    try:
        plain = OnnxRuntimeRunner(path, device="cuda")
    except BackendMissing:
        pytest.skip("this onnxruntime has no CUDA provider at all")
    assert plain.session is None and plain.provider_options["use_tf32"] == "0" and plain.settings()["tf32"] is False
    tf32 = OnnxRuntimeRunner(path, device="cuda", tf32=True, cuda_graph=True)
    assert tf32.provider_options["use_tf32"] == "1" and tf32.provider_options["enable_cuda_graph"] == "1"
    assert OnnxRuntimeRunner(path, device="cpu", tf32=True).settings().get("tf32") is None  # no TF32 on the CPU
    if not torch.cuda.is_available():
        with pytest.raises(BackendMissing):
            plain.activate()  # no GPU: activation refuses instead of running "CUDA" on the CPU


def test_each_compile_starts_from_an_empty_dynamo_cache(monkeypatch):
    """Dynamo caches per forward(); past recompile_limit it runs eager code under the torch-compile label.
    Each runner resets it, so batch after batch compiles its own graph (limit 1 here: no reset, no graph)."""
    from inception_deploy.models import create_model
    from inception_deploy.runners.torch_runner import TorchRunner

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    model = create_model("googlenet")
    for batch in (1, 2, 3):
        with TorchRunner(model, compile="eager") as compiled:
            compiled.run({"input": np.zeros((batch, 3, 224, 224), np.float32)})
            facts = compiled.audit()
        assert facts == {"compiled_graphs": 1, "recompiles": 0}, batch


@pytest.mark.slow
def test_torch_compile_on_a_host_without_cuda_prints_nothing_of_its_own():
    """Inductor imports torch.utils.cpp_extension, which on a host without a CUDA runtime warns of CUDA_HOME at
    import: a stray line beside bench's and optimize's output. A fresh process, so that nothing imported it before."""
    import subprocess
    import sys

    code = ("import numpy as np\nfrom inception_deploy.models import create_model\n"
            "from inception_deploy.runners.torch_runner import TorchRunner\n"
            "with TorchRunner(create_model('googlenet'), compile='inductor') as r:\n"
            "    r.run({'input': np.zeros((1, 3, 224, 224), np.float32)})\nprint('ran')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ran", done.stderr
    assert "CUDA_HOME" not in done.stderr, done.stderr


def test_a_row_that_ran_no_compiled_code_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(torch._dynamo.config, "disable", True)  # torch.compile then returns eager code
    plan = BenchPlan(variants=["googlenet"], backends=["torch-compile"], precisions=["fp32"], batches=[1],
                     warmup_s=0, duration_s=0.01, rounds=1, export_root=tmp_path)
    (record,) = run_bench(plan)
    # torch itself refuses under fullgraph=True ("no compiled frames"); the runner's audit refuses otherwise.
    assert record.status == "failed" and record.stats is None
    assert "no compiled frames" in record.reason or "compiled no graph" in record.reason


def test_a_backend_that_fails_mid_sweep_is_a_failed_row_and_the_sweep_goes_on(tmp_path):
    """A batch-1 ONNX asked for batch 2: ONNX Runtime raises its own exception type (not RuntimeError).
    The row fails with the reason, the other rows are measured, and everything measured is already on disk."""
    from inception_deploy import export_onnx

    export_onnx("googlenet", batch=1, out_dir=tmp_path / "export" / "googlenet")
    result = runner.invoke(app, ["bench", "v1", "--backends", "onnxruntime,torch", "--batch", "1,2", "--rounds", "1",
                                 "--warmup-s", "0", "--duration-s", "0.05", "--export-root", str(tmp_path / "export"),
                                 "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 1, result.output
    assert "1 combination(s) failed: first googlenet onnxruntime fp32 b2" in result.stderr
    records = json.loads((tmp_path / "b.json").read_text())["records"]
    status = {(r["backend"], r["batch"]): r["status"] for r in records}
    assert status == {("onnxruntime", 1): "ok", ("torch", 1): "ok", ("onnxruntime", 2): "failed", ("torch", 2): "ok"}
    failed = next(r for r in records if r["status"] == "failed")
    assert "input" in failed["reason"].lower() and failed["reason"].split(":")[0] in (
        "InvalidArgument",
        "Fail",
        "RuntimeException",
    )
    lines = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert lines[0]["type"] == "run" and {line["run"] for line in lines} == {lines[0]["run"]}
    assert (
        sum(line["type"] == "measurement" for line in lines) == 2 * (1 + 2)
        and sum(line["type"] == "record" for line in lines) == 4
    )


def test_parity_comes_from_the_timed_runner(export_copy, tmp_path):
    """--check-parity: each row's verdict from its own runner, through the prepared path, at the timed batch."""
    root = export_copy("googlenet").parent
    plan = BenchPlan(variants=["googlenet"], backends=["torch", "onnxruntime"], precisions=["fp32", "int8"],
                     batches=[3], warmup_s=0, duration_s=0.05, rounds=1, check_parity=True, export_root=root)
    records = {(r.backend, r.precision): r for r in run_bench(plan)}
    assert records[("torch", "int8")].status == "skipped"
    for key in (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")):
        r = records[key]
        assert r.status == "ok" and r.parity == "pass", (key, r.parity_detail)
        assert r.parity_source.startswith("checked here") and r.parity_detail["samples"] == 8
    assert records[("onnxruntime", "fp32")].parity_detail["scaled"] < 1e-4
    assert 0 < records[("onnxruntime", "int8")].parity_detail["scaled"]  # int8 is not fp32: the comparison is real
    unchecked = run_bench(BenchPlan(variants=["googlenet"], backends=["onnxruntime"], precisions=["fp32"], batches=[1],
                                    warmup_s=0, duration_s=0.01, rounds=1, export_root=root))[0]
    assert unchecked.parity == "pass" and "export's check on onnxruntime-cpu" in unchecked.parity_source


def test_reports_render_records_and_skips():
    stats = summarize([0.01, 0.012], batch=2)
    ok = BenchRecord(
        "googlenet",
        "onnxruntime",
        "fp32",
        2,
        "cpu",
        "ok",
        stats=combine_rounds([stats]),
        rounds=[stats.to_dict()],
        memory_mib=512.0,
        memory_kind="process peak RSS during this row (MiB)",
        parity="pass",
    )
    tf32 = BenchRecord("googlenet", "torch-cuda", "fp32", 2, "cuda", "ok", stats=combine_rounds([stats]), tf32=True,
                       warnings=["unstable"])
    skipped = BenchRecord("googlenet", "tensorrt", "fp16", 2, "cuda", "skipped", "no CUDA GPU here")
    rows = list(csv.DictReader(io.StringIO(to_csv([ok, tf32, skipped]))))
    assert tuple(rows[0]) == CSV_FIELDS and rows[0]["throughput"] and rows[2]["reason"] == "no CUDA GPU here"
    assert rows[1]["tf32"] == "True" and rows[1]["warnings"] == "unstable"
    env = {"cpu": "test cpu", "cpu_count": 2, "torch_threads": 2, "torch": "x", "onnxruntime": "y", "python": "3"}
    md = to_markdown([ok, tf32, skipped], env, {"warmup_s": 1, "duration_s": 2, "rounds": 1, "include_transfers": False,
                                                "command": "inception-deploy bench v1"})
    assert "## googlenet" in md and "| onnxruntime | fp32 | 2 | 181.8 | 0% |" in md
    assert "| torch-cuda | fp32 (TF32) | 2 |" in md
    assert "skipped: no CUDA GPU here" in md and "inception-deploy bench v1" in md


def test_cpu_smoke_suite_end_to_end(tmp_path):
    """A tiny real sweep: googlenet, batch 1 and 2, torch and onnxruntime, two interleaved rounds, on this CPU."""
    report = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "bench",
            "--suite",
            str(SUITES / "cpu-smoke.toml"),
            "--export-root",
            str(tmp_path / "export"),
            "--report",
            str(report),
            "--json",
            str(tmp_path / "b.json"),
            "--csv",
            str(tmp_path / "b.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["environment"]["cpu_count"] and data["plan"]["batches"] == [1, 2] and data["plan"]["rounds"] == 2
    records = data["records"]
    assert [(r["backend"], r["batch"], r["status"]) for r in records] == [
        ("torch", 1, "ok"), ("onnxruntime", 1, "ok"), ("torch", 2, "ok"), ("onnxruntime", 2, "ok")]
    for r in records:
        s = r["stats"]
        assert s["rounds"] == 2 and len(r["rounds"]) == 2 and s["throughput_spread"] >= 0
        assert (
            s["iterations"] >= 10 and s["throughput"] > 0 and s["min_ms"] <= s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
        )
        assert s["first_call_ms"] > 0 and s["warmup_iterations"] >= 2 * MIN_WARMUP_ITERATIONS
        assert r["memory_mib"] > 100 and "during this row" in r["memory_kind"] and r["tf32"] is None
        assert r["parity"] == ("reference" if r["backend"] == "torch" else "pass")
    ort = records[1]["settings"]
    assert ort["intra_op_threads"] >= 1 and ort["nodes_per_provider"]["CPUExecutionProvider"] > 100
    assert {p.name for p in report.iterdir()} == {"README.md", "bench.json", "bench.jsonl", "bench.csv",
                                                   "googlenet_throughput.png", "googlenet_latency_b1.png"}
    assert (report / "googlenet_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [line["type"] for line in log].count("measurement") == 2 * 2 * 3  # rounds × batches × candidates


def test_resume_keeps_the_groups_already_measured_and_measures_the_rest(tmp_path):
    """An interrupted sweep goes on: whole groups from the log stay as measured, the rest is measured now, a
    log cut off in mid-line (a killed process) neither fails nor corrupts what is appended after it, and a
    group kept by one resume is still kept by the next (rows skipped at planning included)."""
    report = tmp_path / "report"
    args = [
        "bench",
        "v1",
        "--backends",
        "torch,onnxruntime",
        "--precision",
        "fp32,int8",
        "--rounds",
        "1",
        "--warmup-s",
        "0",
        "--duration-s",
        "0.05",
        "--export-root",
        str(tmp_path / "export"),
        "--report",
        str(report),
    ]
    first = runner.invoke(app, [*args, "--batch", "1", "--json", str(report / "bench.json")])  # one log, not two
    assert first.exit_code == 0, first.output
    before = {(r["backend"], r["precision"]): r for r in json.loads((report / "bench.json").read_text())["records"]}
    log = report / "bench.jsonl"
    assert sum('"type": "run"' in line for line in log.read_text().splitlines()) == 1
    first_run = json.loads(log.read_text().splitlines()[0])["run"]
    with open(log, "a") as f:
        f.write('{"run": "killed", "type": "measurem')  # the append a kill cut short

    second = runner.invoke(app, [*args, "--batch", "1,2", "--resume"])
    assert second.exit_code == 0, second.output
    assert "kept 4 row(s) as earlier runs measured them; measured 4 now" in second.stderr
    records = json.loads((report / "bench.json").read_text())["records"]
    order = [("torch", "int8"), ("onnxruntime", "int8"), ("torch", "fp32"), ("onnxruntime", "fp32")]  # skips first
    assert [(r["backend"], r["precision"], r["batch"]) for r in records] == [(*k, b) for b in (1, 2) for k in order]
    for r in records[:4]:  # kept exactly as measured, and said so
        assert r["resumed_from"] == first_run and r == {
            **before[(r["backend"], r["precision"])],
            "resumed_from": first_run,
        }
    assert all(r["resumed_from"] is None for r in records[4:]) and [r["status"] for r in records[6:]] == ["ok", "ok"]
    assert records[2]["source"].startswith("PyTorch model") and records[3]["source"].startswith("model.onnx sha256:")
    readme = (report / "README.md").read_text()
    assert "Resumed (`--resume`): 4 of 8 rows" in readme and "--resume" not in readme.split("Reproduce with:")[1]
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line whole again
    headers = [line for line in lines if line["type"] == "run"]
    assert len(headers) == 2 and headers[1]["resumes"] == [first_run]
    assert [line["batch"] for line in lines if line["type"] == "record"] == [1] * 4 + [
        2
    ] * 4  # kept rows not logged twice

    third = runner.invoke(app, [*args, "--batch", "1,2", "--resume"])  # everything is kept: nothing to measure
    assert third.exit_code == 0, third.output
    assert "kept 8 row(s) as earlier runs measured them; measured 0 now" in third.stderr
    second_run = headers[1]["run"]
    assert json.loads((report / "bench.json").read_text())["records"] == records[:4] + [
        {**r, "resumed_from": second_run} for r in records[4:]]

    other = runner.invoke(app, [*args, "--batch", "1,2", "--rounds", "2", "--resume"])
    assert other.exit_code == 2 and "measured with rounds=1, this one asks rounds=2" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    stray = runner.invoke(app, [*args, "--batch", "4", "--rounds", "2"])  # appended to the same log, other settings
    assert stray.exit_code == 0, stray.output
    again = runner.invoke(app, [*args, "--batch", "1,2", "--resume"])
    assert again.exit_code == 0 and "(1 run(s) with other settings or on another machine ignored)" in again.stderr
    assert "measured 0 now" in again.stderr


@pytest.mark.parametrize("line, problem", [
    ("not json", "Expecting value"),
    ('{"run": "r", "type": "record", "variant": "googlenet"}', "a record without backend, batch, device"),
    ('{"run": "r", "type": "run", "plan": "x", "environment": {}}', "a run header without its plan and environment"),
    ('{"run": ["r"], "type": "run"}', "not a bench log line"),
    ('{"run": "r", "type": "record", "variant": "googlenet", "backend": "torch", "precision": "fp32", "batch": [1], '
     '"device": "cpu", "status": "ok"}', "a record with fields of the wrong type"),
    ('{"run": "r", "type": "record", "variant": "googlenet", "backend": "torch", "precision": "fp32", "batch": 1, '
     '"device": "cpu", "status": "ok", "stats": null}', "an ok record without its stats"),
])
def test_a_damaged_log_is_named_by_line(tmp_path, line, problem):
    from inception_deploy.bench.log import read_log

    log = tmp_path / "bench.jsonl"
    header = json.dumps({"run": "r", "type": "run", "plan": {}, "environment": {}})
    log.write_text(f"{header}\n{line}\n")
    with pytest.raises(InputError, match=f"line 2 is damaged \\({problem}"):
        read_log(log)
    log.write_text(f"{header}\n{header}")  # a whole line without its newline: an append that did not finish
    assert len(read_log(log)) == 1


def test_a_kept_group_must_match_the_rows_and_artifacts_of_now():
    from inception_deploy.bench.sweep import _Row, _still_fits

    def rows(onnx_source="model.onnx sha256:aa", ort_skipped=None):
        return [_Row(BACKENDS["torch"], "fp32", None, [], source="PyTorch model"),
                _Row(BACKENDS["onnxruntime"], "fp32", None, [], skipped=ort_skipped, source=onnx_source),
                _Row(BACKENDS["torch"], "int8", None, [], skipped="torch runs no int8")]

    def earlier(ort_status="ok", ort_source="model.onnx sha256:aa"):
        return [
            BenchRecord("googlenet", "onnxruntime", "fp32", 1, "cpu", ort_status, source=ort_source, resumed_from="r1"),
            BenchRecord("googlenet", "torch", "int8", 1, "cpu", "skipped", "torch runs no int8", resumed_from="r1"),
            BenchRecord("googlenet", "torch", "fp32", 1, "cpu", "ok", source="PyTorch model", resumed_from="r1"),
        ]

    kept = _still_fits(earlier(), rows())
    assert [(r.backend, r.precision) for r in kept] == [("torch", "int8"), ("torch", "fp32"), ("onnxruntime", "fp32")]
    assert all(r.resumed_from == "r1" for r in kept)
    assert _still_fits(earlier(), rows(onnx_source="model.onnx sha256:bb")) is None  # re-exported since
    assert _still_fits(earlier(ort_status="failed"), rows()) is None  # a failure is measured again
    partial = _still_fits(earlier()[1:], rows())  # a run that measured fewer rows: lends those, the rest is measured
    assert [(r.backend, r.precision) for r in partial] == [("torch", "int8"), ("torch", "fp32")]
    assert _still_fits([], rows()) is None
    assert _still_fits(earlier() + [BenchRecord("googlenet", "tensorrt", "fp32", 1, "cuda", "ok", source="x")],
                       rows()) is None  # a row this plan does not have
    assert _still_fits(earlier() + earlier()[:1], rows()) is None  # a row twice
    assert _still_fits(earlier(), rows(ort_skipped="no model.onnx now")) is None  # measured then, cannot run now
    # found missing while it ran (not at planning): the same machine and software would find it missing again
    missing = _still_fits(earlier(ort_status="skipped", ort_source=None), rows())
    assert missing is not None and missing[2].status == "skipped"


def test_rows_from_several_runs_make_one_group():
    """A run that measured the torch rows and a later one that measured ONNX Runtime's lend both to a resume;
    each run's rows are kept whole or not at all, and a newer run's copy of a row wins."""
    from inception_deploy.bench.sweep import _kept_rows, _Row

    rows = [
        _Row(BACKENDS["torch"], "fp32", None, [], source="w"),
        _Row(BACKENDS["onnxruntime"], "fp32", None, [], source="o"),
    ]

    def record(backend, run, status="ok", source=None):
        return BenchRecord(
            "googlenet",
            backend,
            "fp32",
            1,
            "cpu",
            status,
            source=source or {"torch": "w"}.get(backend, "o"),
            resumed_from=run,
        )

    kept = _kept_rows([[record("onnxruntime", "r2")], [record("torch", "r1")]], rows)
    assert {k: r.resumed_from for k, r in kept.items()} == {("torch", "fp32"): "r1", ("onnxruntime", "fp32"): "r2"}
    kept = _kept_rows([[record("onnxruntime", "r3")], [record("torch", "r2"), record("onnxruntime", "r2")]], rows)
    assert {k: r.resumed_from for k, r in kept.items()} == {("onnxruntime", "fp32"): "r3"}  # r2 overlaps r3: not split
    kept = _kept_rows([[record("onnxruntime", "r2", "failed")], [record("torch", "r1")]], rows)
    assert list(kept) == [("torch", "fp32")]  # the failed row is measured again


def test_a_suite_names_its_rows_and_the_options_narrow_them(tmp_path):
    plan = load_suite("gpu-core")
    assert [(b.name, p) for b, p in plan.pairs()] == [
        ("torch-cuda", "fp32"), ("torch-cuda", "fp16"), ("torch-compile-cuda", "fp16"), ("onnxruntime-cuda", "fp32"),
        ("onnxruntime-cuda", "fp16"), ("tensorrt-rtx", "fp16")]
    narrowed = dataclasses.replace(plan, backends=["torch", "torch-compile"]).check()
    assert [(b.name, p) for b, p in narrowed.pairs()] == [("torch-cuda", "fp32"), ("torch-cuda", "fp16"),
                                                          ("torch-compile-cuda", "fp16")]
    with pytest.raises(InputError, match="no row left"):
        dataclasses.replace(plan, backends=["tensorrt"]).check()
    bad = tmp_path / "bad.toml"
    bad.write_text('variants = ["v1"]\nbackends = ["torch"]\nprecisions = ["fp32"]\nbatches = [1]\nrows = '
                   '["torch-fp32"]\n')
    with pytest.raises(InputError, match="row 'torch-fp32' is not BACKEND:PRECISION"):
        load_suite(str(bad))


def test_suites_load_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_suite("cpu-smoke").variants == ["googlenet"]
    (tmp_path / "typo.toml").write_text('variants = ["v1"]\nbackend = ["torch"]\n')
    result = runner.invoke(app, ["bench", "--suite", str(tmp_path / "typo.toml")])
    assert result.exit_code == 2 and "unknown key 'backend'" in result.stderr


def test_bad_bench_arguments(tmp_path):
    for args, fragment in [
        (["bench", "--suite", "nonesuch"], "no suite 'nonesuch'"),
        (["bench", "v1", "--backends", "torch,warp"], "unknown backend 'warp'"),
        (["bench", "v1", "--batch", "1,x"], "comma-separated list"),
        (["bench", "v1", "--device", "tpu"], "--device must be cpu or cuda"),
        (["bench", "v1", "--rounds", "0"], "--rounds must be a positive integer"),
        (["bench"], "name at least one VARIANT"),
        (["bench", "v1", "--resume"], "--resume continues the sweep logged in --report DIR"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _gpu_plan(tmp_path, backends, **extra) -> BenchPlan:
    return BenchPlan(
        variants=["googlenet"],
        backends=backends,
        precisions=["fp32", "fp16"],
        batches=[1, 8],
        device="cuda",
        warmup_s=0.2,
        duration_s=0.3,
        rounds=2,
        check_parity=True,
        export_root=tmp_path,
        **extra,
    )


def _assert_measured_on_the_gpu(records) -> None:
    for r in records:
        assert r.status == "ok" and r.device == "cuda", (r.backend, r.precision, r.batch, r.reason)
        assert r.stats["gpu_p50_ms"] > 0 and r.parity == "pass", (r.backend, r.precision, r.parity_detail)
        assert r.tf32 is (False if r.precision == "fp32" else None)
        assert r.memory_mib > 0 and ("above the baseline" in r.memory_kind or "allocator" in r.memory_kind)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: runs on the lent device")
def test_gpu_torch_rows_are_measured_on_the_gpu_with_their_own_parity(tmp_path):
    records = run_bench(_gpu_plan(tmp_path, ["torch", "torch-compile"]))
    assert len(records) == 2 * 2 * 2
    _assert_measured_on_the_gpu(records)
    for r in records:
        if r.backend == "torch-compile-cuda":
            assert r.settings["compiled_graphs"] == 1 and r.settings["mode"] == "reduce-overhead"
            assert r.settings["cudagraph_skips"] == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: runs on the lent device")
def test_gpu_onnxruntime_rows_run_on_cuda_and_rtx_says_where_it_cannot(tmp_path):
    from inception_deploy.core.compilers import RTX_TARGETS, gpu_capability

    plan = _gpu_plan(tmp_path, ["onnxruntime-cuda", "tensorrt-rtx"],
                     rows=["onnxruntime-cuda:fp32", "onnxruntime-cuda:fp16", "tensorrt-rtx:fp16"])
    records = run_bench(plan)
    ort = [r for r in records if r.backend == "onnxruntime-cuda"]
    assert len(ort) == 2 * 2
    _assert_measured_on_the_gpu(ort)
    for r in ort:
        assert isinstance(r.settings["cuda_graph"], bool) and r.settings["provider_options"]["use_tf32"] == "0"
        assert r.settings["nodes_per_provider"].get("CUDAExecutionProvider", 0) > 50
    rtx = [r for r in records if r.backend == "tensorrt-rtx"]
    assert len(rtx) == 2 and all(r.status == "skipped" for r in rtx)  # no engine built here, or not a target
    if gpu_capability() not in RTX_TARGETS:
        assert all("is not a TensorRT-RTX target" in r.reason for r in rtx), rtx[0].reason


def test_a_run_before_another_onnxruntime_lends_its_torch_rows_only(tmp_path):
    """The GPU proof measures torch rows before onnxruntime-gpu is installed: those rows still fit a later run,
    while rows that ran on the other onnxruntime are measured again."""
    from inception_deploy.bench.log import MeasurementLog, resumable_groups

    env = {"torch": "2.11", "onnxruntime": "1.30.0", "gpu": "H100"}
    plan = {"rounds": 2, "warmup_s": 0.25, "duration_s": 1.0}
    log = MeasurementLog(tmp_path / "bench.jsonl", env, plan, run="early")
    stats = combine_rounds([summarize([0.01, 0.012], batch=1)])  # an ok row's whole stats: read_log checks them
    for backend in ("torch-cuda", "onnxruntime-cuda"):
        log.record(BenchRecord("googlenet", backend, "fp32", 1, "cuda", "ok", stats=stats, source="s"))
    groups, runs, ignored = resumable_groups(tmp_path / "bench.jsonl", {**env, "onnxruntime": "1.31.1"}, plan)
    assert [[r.backend for r in copy] for copy in groups[("googlenet", 1)]] == [["torch-cuda"]] and runs == ["early"]
    assert not ignored
    groups, _, _ = resumable_groups(tmp_path / "bench.jsonl", env, plan)
    assert [[r.backend for r in copy] for copy in groups[("googlenet", 1)]] == [["torch-cuda", "onnxruntime-cuda"]]
    with pytest.raises(InputError, match="ran with torch '2.11', this machine has '2.12'"):
        resumable_groups(tmp_path / "bench.jsonl", {**env, "torch": "2.12"}, plan)


def _ok_record(**changes) -> str:
    stats = combine_rounds([summarize([0.01, 0.012, 0.011], batch=1)])
    record = BenchRecord("googlenet", "torch", "fp32", 1, "cpu", "ok", stats=stats, source="PyTorch model")
    return json.dumps({"run": "r", "type": "record", **{**record.to_dict(), **changes}})


@pytest.mark.parametrize("line, problem", [
    (_ok_record(stats={}), "an ok record whose stats lack throughput, throughput_spread, p50_ms, p90_ms, p99_ms, cv"),
    (_ok_record(stats={**json.loads(_ok_record())["stats"], "p99_ms": "12"}), "an ok record whose stats lack p99_ms"),
    (_ok_record(stats=None), "an ok record without its stats (throughput, throughput_spread, p50_ms"),
    (_ok_record(warnings="unstable"), "a record with fields of the wrong type: warnings"),
    (_ok_record(memory_mib="765", settings=None), "a record with fields of the wrong type: memory_mib, settings"),
    (_ok_record(include_transfers=1), "a record with fields of the wrong type: include_transfers"),
    (_ok_record(status="done"), "a record whose status 'done' is none of ok, skipped, failed"),
], ids=["stats-empty", "stats-figure-a-string", "stats-null", "warnings-a-string", "two-wrong-types", "bool-an-int",
        "unknown-status"])
def test_a_record_of_the_wrong_shape_is_named_by_line(tmp_path, line, problem):
    """An edited or half-written record would be kept by --resume and break the reports: it is named instead."""
    from inception_deploy.bench.log import read_log

    log = tmp_path / "bench.jsonl"
    header = json.dumps({"run": "r", "type": "run", "plan": {}, "environment": {}})
    log.write_text(f"{header}\n{_ok_record()}\n")
    assert len(read_log(log)) == 2  # the record as the sweep logs it
    log.write_text(f"{header}\n{_ok_record()}\n{line}\n")
    with pytest.raises(InputError) as caught:
        read_log(log)
    message = str(caught.value)
    assert f"line 3 is damaged ({problem}" in message and "remove that line" in message and "\n" not in message


def test_every_record_field_has_a_type_to_check():
    from inception_deploy.bench.log import _RECORD_TYPES

    assert set(_RECORD_TYPES) == {f.name for f in dataclasses.fields(BenchRecord)}


def test_parity_at_a_batch_larger_than_its_samples_counts_each_sample_once(export_copy):
    """--check-parity at batch 32 feeds the 8 parity samples padded with 24 repeats: the verdict and its figures
    are over the 8 distinct samples, and the record says so."""
    root = export_copy("googlenet").parent
    plan = BenchPlan(variants=["googlenet"], backends=["onnxruntime"], precisions=["fp32"], batches=[32],
                     warmup_s=0, duration_s=0.01, rounds=1, check_parity=True, export_root=root)
    [record] = run_bench(plan)
    assert record.status == "ok" and record.parity == "pass", record.parity_detail
    assert record.parity_detail["samples"] == 8 and record.parity_detail["repeats_not_compared"] == 24
    assert "8 distinct random inputs at batch 32 (padded with 24 repeats, not compared)" in record.parity_source
    assert record.parity_detail["cosine_centred"] > 0.99999


def test_parity_padding_repeats_weigh_no_sample_twice(export_copy):
    """At batch 5, 8 samples take two batches, the second padded with repeats of samples 0 and 1: a wrong sample 0
    counts once (7 of 8 agree), not twice (8 of 10)."""
    from inception_deploy.bench.sweep import PARITY_SAMPLES, PARITY_SEED, _parity
    from inception_deploy.models.registry import get_spec
    from inception_deploy.models.samples import random_batch
    from inception_deploy.runners import open_runner

    path = export_copy("googlenet") / "model.onnx"
    x = random_batch(get_spec("googlenet"), PARITY_SAMPLES, seed=PARITY_SEED).numpy()
    with open_runner(BACKENDS["onnxruntime"], artifact=path, precision="fp32") as runner:
        expected = next(iter(runner.run({runner.inputs[0].name: x}).values())).astype(np.float32)
        wrong = expected.copy()
        wrong[0, (int(expected[0].argmax()) + 1) % expected.shape[1]] = expected[0].max() + 10  # another top-1
        verdict, detail = _parity(runner, (x, wrong), 5, "fp32", False, tf32=False)
    assert verdict == "fail" and detail["samples"] == 8 and detail["repeats_not_compared"] == 2
    assert detail["top1_agreement"] == 7 / 8, detail


def test_gpu_candidates_are_those_that_can_win():
    """Eager torch tries both layouts in fp16 as in fp32; torch.compile fp16 takes channels_last alone (each
    candidate is a compilation); ONNX Runtime CUDA tries NCHW and NHWC, each replayed as a CUDA graph."""
    from inception_deploy.runners import runner_class

    def candidates(name, precision):
        return runner_class(BACKENDS[name]).candidates(BACKENDS[name], precision)

    both = [{"channels_last": False}, {"channels_last": True}]
    assert candidates("torch-cuda", "fp16") == candidates("torch-cuda", "fp32") == both
    assert candidates("torch", "fp16") == both
    assert candidates("torch-compile-cuda", "fp16") == [{"channels_last": True}]
    ort = candidates("onnxruntime-cuda", "fp16")
    assert [c["provider_options"]["prefer_nhwc"] for c in ort] == ["0", "1"] and all(c["cuda_graph"] for c in ort)


def test_tf32_is_set_for_fp32_alone():
    """ONNX Runtime's cuDNN path reads use_tf32 whatever the data type: an fp16 or int8 session leaves it out, and
    its row says TF32 does not apply; an fp32 session says "0" (true fp32) unless TF32 was asked for."""
    from inception_deploy.runners.onnxruntime_runner import OnnxRuntimeRunner

    onnxruntime = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider to configure (pip install onnxruntime-gpu)")
    made = {}
    for precision, tf32 in (("fp32", False), ("fp32", True), ("fp16", False), ("fp16", True), ("int8", False)):
        r = OnnxRuntimeRunner("unused.onnx", device="cuda", precision=precision, tf32=tf32, cuda_graph=True)
        made[precision, tf32] = r  # construction is cheap: nothing is loaded before activation
    assert made["fp32", False].provider_options["use_tf32"] == "0"
    assert made["fp32", True].provider_options["use_tf32"] == "1" and made["fp32", True].settings()["tf32"] is True
    for key in (("fp16", False), ("fp16", True), ("int8", False)):
        options = made[key].provider_options
        assert "use_tf32" not in options and options["arena_extend_strategy"] == "kSameAsRequested"
        assert made[key].settings()["tf32"] == f"not applicable ({key[0]})"
    assert made["fp16", False].settings()["provider_options"]["enable_cuda_graph"] == "1"


def test_resume_keys_on_the_code_and_the_candidates(tmp_path):
    """Rows measured by other code (the package's source hash), or over other candidate settings, are not kept."""
    from inception_deploy.bench.environment import environment
    from inception_deploy.bench.log import MeasurementLog, resumable_groups
    from inception_deploy.bench.sweep import _Candidate, _Row, _still_fits
    from inception_deploy.core.version import source_digest

    env = environment("cpu")
    assert env["inception_deploy_source"] == source_digest() and len(source_digest()) == 64
    plan = {"device": "cpu", "rounds": 1}
    log = tmp_path / "bench.jsonl"
    MeasurementLog(log, {**env, "inception_deploy_source": "0" * 64}, plan, run="old")
    with pytest.raises(InputError, match="was measured by other code of inception-deploy .source sha256 000000000000"):
        resumable_groups(log, env, plan)
    MeasurementLog(log, env, plan, run="now")
    assert resumable_groups(log, env, plan)[2] == 1  # the old code's run ignored, this code's kept

    row = _Row(BACKENDS["onnxruntime"], "fp32", None, [_Candidate({"threads": 2})], source="o")
    record = BenchRecord("googlenet", "onnxruntime", "fp32", 1, "cpu", "ok", source="o", candidates=[{"threads": 2}])
    assert _still_fits([record], [row]) == [record]
    assert _still_fits([dataclasses.replace(record, candidates=[{"threads": 1}])], [row]) is None
    assert _still_fits([dataclasses.replace(record, candidates=[])], [row]) is None  # logged before candidates were
