"""optimize: the fastest deployment that keeps the accuracy, on the digits googlenet (a model with real decisions,
tests/digits.py), measured for real on this CPU with a small time budget; its choice checked against separate bench
and accuracy runs, its repository against Triton's schema and a real server."""

from __future__ import annotations

import hashlib
import json
import math
import shlex

import pytest
from conftest import run_and_interrupt
from test_triton import free_ports, one_line_error
from typer.testing import CliRunner

from inception_deploy import optimize
from inception_deploy.cli import app
from inception_deploy.optimize.candidates import Candidate
from inception_deploy.optimize.choose import STATUSES, Verdict, choose
from inception_deploy.optimize.options import OptimizeOptions, parse_duration

runner = CliRunner()
QUICK = ["--rounds", "2", "--warmup-s", "0.2", "--duration-s", "0.5"]


@pytest.fixture(scope="module")
def searched(digits, tmp_path_factory):
    """One search on the digits googlenet: latency on the CPU, int8 calibrated on its calibration split and held to
    the default budget on its 200 eval images, a time budget of 150 s."""
    root = tmp_path_factory.mktemp("optimize")
    args = ["optimize", "v1", "--weights", str(digits.checkpoint), "--eval", str(digits.eval), "--calib",
            str(digits.calib), "--dir", str(root / "googlenet"), "--repo", str(root / "repo"), "--report",
            str(root / "report"), "--json", str(root / "optimize.json"), "--time-budget", "150s", *QUICK]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return root, json.loads((root / "optimize.json").read_text()), result


def _by_name(data: dict) -> dict:
    return {f"{c['backend']} {c['precision']}": c for c in data["candidates"]}


@pytest.mark.slow
def test_it_chooses_the_fastest_within_budget_and_says_why_each_other_lost(searched):
    root, data, result = searched
    rows = _by_name(data)
    # every candidate of the CPU, in order of promise, each with a verdict and a reason
    assert set(rows) == {"onnxruntime int8-cpu", "onnxruntime fp32", "torch fp32", "onnxruntime int8",
                         "torch-compile fp32", "onnxruntime fp16"}
    assert all(c["status"] in STATUSES and c["reason"]
               for c in data["candidates"])
    assert "inserted Casts" in rows["onnxruntime fp16"]["reason"] and rows["onnxruntime fp16"]["status"] == "skipped"
    # torch.compile compiles at every measurement: 20 fp32 exports' worth here, more than the budget has left
    assert rows["torch-compile fp32"]["status"] == "not tried"
    assert "--time-budget" in rows["torch-compile fp32"]["reason"]
    assert "torch-compile fp32" in data["time"]["not_tried"]
    # the choice: ONNX Runtime's CPU int8 form, within the accuracy budget, faster than every other within it
    chosen = rows["onnxruntime int8-cpu"]
    assert data["chosen"]["precision"] == "int8-cpu" and chosen["status"] == "chosen"
    accuracy = chosen["accuracy"]
    assert accuracy["passed"] and accuracy["drop_points"] <= accuracy["allowed_drop_points"]
    timed = [c for c in data["candidates"] if c["status"] in ("chosen", "lost")]
    assert min(timed, key=lambda c: c["latency_p50_ms"]) is chosen or chosen["reason"].startswith("within the noise")
    fp32 = rows["onnxruntime fp32"]
    assert fp32["status"] == "lost" and "x the time of onnxruntime int8-cpu" in fp32["reason"]
    ratio = fp32["latency_p50_ms"] / chosen["latency_p50_ms"]
    assert f"{ratio:.2f}x" in fp32["reason"]
    # each row's outputs were checked on the runner timed; every figure says where it was measured
    assert rows["onnxruntime fp32"]["parity"] == "pass" and rows["torch fp32"]["parity"] == "pass"
    assert data["machine"]["cpu_count"] and data["measurement"] == {"rounds": 2, "warmup_s": 0.2, "duration_s": 0.5,
                                                                     "interleaved": True, "kept_rows": None,
                                                                     "parity_checked": True}
    assert set(data["commands"]) == {"optimize", "bench", "accuracy"}  # the command typed: sys.argv, not here
    assert "CHOSEN onnxruntime int8-cpu" in result.stdout
    # the variant's manifest records the choice
    manifest = json.loads((root / "googlenet" / "manifest.json").read_text())
    assert manifest["optimize"]["chosen"]["artifact"] == "model.int8-cpu.onnx"
    assert manifest["optimize"]["objective"] == "latency"


@pytest.mark.slow
def test_the_choice_agrees_with_separate_bench_and_accuracy_runs(searched):
    """The accuracy command the report gives reproduces every top-1 exactly; the bench command, run on its own,
    ranks the chosen candidate first among those within budget."""
    root, data, _ = searched
    rows = _by_name(data)
    accuracy = shlex.split(data["commands"]["accuracy"])[1:] + ["--json", str(root / "accuracy-again.json")]
    result = runner.invoke(app, accuracy)
    assert result.exit_code == 0, result.output
    again = json.loads((root / "accuracy-again.json").read_text())
    for row in again["rows"]:
        name = f"{row['backend']} {row['precision']}"
        if name in rows and not row["skipped"] and rows[name]["accuracy"]:
            assert row["top1"] == rows[name]["accuracy"]["top1"], name
    bench = shlex.split(data["commands"]["bench"])[1:] + ["--json", str(root / "bench-again.json")]
    result = runner.invoke(app, bench)
    assert result.exit_code == 0, result.output
    records = json.loads((root / "bench-again.json").read_text())["records"]
    within = {name for name, c in rows.items() if c["status"] in ("chosen", "lost")}
    timed = [r for r in records if f"{r['backend']} {r['precision']}" in within and r["status"] == "ok"]
    fastest = min(timed, key=lambda r: r["stats"]["p50_ms"])
    assert f"{fastest['backend']} {fastest['precision']}" == "onnxruntime int8-cpu"


@pytest.mark.slow
def test_the_repository_is_tritons_and_is_served(searched):
    """The winner's repository: Triton's schema, KIND_CPU, labels from the eval tree's class folders, the verified
    file; the export is then served by `serve` and passes `loadtest --check` in the chosen precision."""
    from inception_deploy.serving.server import running_server
    from inception_deploy.serving.triton_repo import validate_config

    root, data, _ = searched
    model = root / "repo" / "googlenet"
    config = validate_config((model / "config.pbtxt").read_text())
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert config.instance_group[0].kind == config.instance_group[0].KIND_CPU
    assert config.parameters["preprocessing.resize"].string_value  # the preprocessing travels with the model
    assert (model / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    served = json.loads((model / "manifest.json").read_text())["served"]
    assert served["artifact"] == "model.int8-cpu.onnx" and served["labels"]["count"] == 10
    assert data["repository"]["serves"]["precision"] == "int8-cpu"
    # PyTriton's tritonserver has only the Python backend, so `serve` runs the export's file through it: the very
    # bytes the repository holds, behind the batcher its config.pbtxt sets
    export = json.loads((root / "googlenet" / "manifest.json").read_text())
    entry = next(a for a in export["artifacts"] if a["path"] == "model.int8-cpu.onnx")
    assert hashlib.sha256((model / "1" / "model.onnx").read_bytes()).hexdigest() == entry["sha256"] == \
        served["sha256"]
    http, grpc, metrics = free_ports(3)
    with running_server(root / "googlenet", precision="int8-cpu", http_port=http, grpc_port=grpc,
                        metrics_port=metrics, max_batch=config.max_batch_size,
                        max_queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds) as endpoints:
        result = runner.invoke(app, ["loadtest", endpoints.http, "--model", "googlenet", "--concurrency", "2",
                                     "--duration-s", "1", "--check", "--precision", "int8-cpu", "--dir",
                                     str(root / "googlenet")])
    assert result.exit_code == 0 and "PASS" in result.stdout, result.output


@pytest.mark.slow
def test_the_report_holds_the_table_the_plot_and_the_parts(searched):
    root, data, _ = searched
    report = root / "report"
    assert {"README.md", "optimize.json", "accuracy_vs_speed.png", "accuracy.json", "accuracy.md", "bench"} <= \
        {p.name for p in report.iterdir()}
    text = (report / "README.md").read_text()
    assert "**Chosen: onnxruntime int8-cpu**" in text and "![accuracy against speed](accuracy_vs_speed.png)" in text
    assert "| onnxruntime fp32 | lost |" in text and "torch-compile fp32 | not tried |" in text
    assert (report / "bench" / "bench.jsonl").is_file()  # what --resume continues from
    assert json.loads((report / "optimize.json").read_text()) == data


@pytest.mark.slow
def test_without_eval_int8_is_rejected_and_throughput_is_weighed(searched, tmp_path):
    """From Python, as the CLI calls it: no labelled images, so int8 is rejected unmeasured; throughput at batch 1 and
    8, the repository's preferred sizes taken from the curve; then --resume keeps every bench row."""
    root, _, _ = searched
    options = OptimizeOptions("googlenet", export_dir=root / "googlenet", objective="throughput", max_batch=8,
                              time_budget_s="60s", report_dir=tmp_path / "report",
                              repo=tmp_path / "repo", measurement=optimize.Measurement(1, 0.1, 0.3))
    outcome = optimize.run(options)
    by_name = {v.candidate.name: v for v in outcome.verdicts}
    for name in ("onnxruntime int8-cpu", "onnxruntime int8"):
        assert by_name[name].status == "rejected" and "no accuracy measured" in by_name[name].reason
    assert by_name["torch-compile fp32"].status == "not tried"
    assert outcome.chosen is not None and outcome.chosen.candidate.precision == "fp32"
    assert [p["batch"] for p in outcome.chosen.curve] == [1, 8]
    point = outcome.chosen.figure("throughput")
    assert point["throughput"] == max(p["throughput"] for p in outcome.chosen.curve)
    by_batch = {p["batch"]: p["throughput"] for p in outcome.chosen.curve}
    assert outcome.repository["preferred_batch"] == ([8] if by_batch[8] >= 0.9 * point["throughput"] else [])
    again = optimize.run(OptimizeOptions(**{**options.__dict__, "resume": True}))
    assert {v.candidate.name: v.curve for v in again.verdicts} == {v.candidate.name: v.curve for v in outcome.verdicts}
    bench = json.loads((tmp_path / "report" / "bench" / "bench.json").read_text())
    assert all(r["resumed_from"] for r in bench["records"] if r["status"] == "ok")


@pytest.mark.slow
def test_no_candidate_within_budget_is_exit_1_naming_the_closest(searched):
    root, _, _ = searched
    result = runner.invoke(app, ["optimize", "v1", "--dir", str(root / "googlenet"), "--objective", "throughput",
                                 "--max-batch", "1", "--max-latency-ms", "0.001", "--time-budget", "60s", "--rounds",
                                 "1", "--warmup-s", "0", "--duration-s", "0.2"])
    assert result.exit_code == 1, result.output
    assert "no candidate is within budget on this machine; the closest" in result.stderr
    assert "p99 over --max-latency-ms 0.001" in result.stderr


@pytest.mark.slow
def test_ctrl_c_leaves_no_repository_and_the_export_as_it_was(searched, tmp_path):
    root, _, _ = searched
    manifest = (root / "googlenet" / "manifest.json").read_bytes()
    args = ["optimize", "v1", "--dir", str(root / "googlenet"), "--repo", str(tmp_path / "repo"), "--report",
            str(tmp_path / "report"), "--rounds", "3", "--warmup-s", "1", "--duration-s", "2"]
    result = run_and_interrupt(args, None, lambda steps: "round 1/3" in steps[-1], delay_s=0.5)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: interrupted: the search stopped")
    assert not (tmp_path / "repo").exists()
    assert (root / "googlenet" / "manifest.json").read_bytes() == manifest


@pytest.mark.parametrize(("args", "fragment"), [
    (["--objective", "speed"], "--objective must be latency or throughput"),
    (["--max-latency-ms", "5"], "--max-latency-ms bounds the p99"),
    (["--time-budget", "5s"], "cannot measure even one candidate"),
    (["--time-budget", "soon"], "is not a duration"),
    (["--batch", "1,8"], "--batch is for --objective throughput"),
    (["--max-drop", "1"], "--max-drop is measured on labelled images"),
    (["--resume"], "--resume continues the search logged in --report DIR"),
])
def test_bad_options_are_one_line_and_exit_2_before_any_work(args, fragment, tmp_path):
    one_line_error(runner.invoke(app, ["optimize", "v1", "--dir", str(tmp_path / "x"), *args]), 2, fragment)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_an_int8_export_over_its_budget_is_rejected_not_measured(searched, digits, tmp_path):
    """An int8 file that export --eval kept as its best effort over the budget is rejected with the export's figures,
    never measured, even where optimize's own accuracy run would have let it pass. The checkpoint the export names
    has moved since: --weights names it where it is now (the same sha256), and the accuracy and bench runs use it."""
    import os
    import shutil

    root, _, _ = searched
    copy = tmp_path / "googlenet"
    copy.mkdir()
    for path in (root / "googlenet").iterdir():
        if path.name == "manifest.json":
            manifest = json.loads(path.read_text())
            for entry in manifest["artifacts"]:
                if entry["path"] == "model.int8-cpu.onnx":
                    entry["accuracy"].update(within_budget=False, drop_points=1.5)
            manifest["weights"]["path"] = str(tmp_path / "moved-away.pth")
            (copy / path.name).write_text(json.dumps(manifest))
        elif path.is_file():
            os.link(path, copy / path.name)
    digits_args = json.loads((root / "optimize.json").read_text())
    result = runner.invoke(app, ["optimize", "v1", "--weights", str(digits.checkpoint), "--eval", digits_args["eval"],
                                 "--calib", digits_args["calibration"], "--dir", str(copy), "--json",
                                 str(tmp_path / "o.json"), "--time-budget", "120s", *QUICK])
    assert result.exit_code == 0, result.output
    rows = _by_name(json.loads((tmp_path / "o.json").read_text()))
    rejected = rows["onnxruntime int8-cpu"]
    assert rejected["status"] == "rejected" and "as export --eval measured it" in rejected["reason"]
    assert rejected["accuracy"]["drop_points"] == 1.5 and rejected["within_accuracy_budget"] is False
    assert rejected["curve"] == []  # never measured
    assert rows["onnxruntime fp32"]["status"] in ("chosen", "lost")
    assert rows["torch fp32"]["status"] in ("chosen", "lost") and rows["torch fp32"]["parity"] == "pass"
    assert rows["onnxruntime fp32"]["accuracy"]["top1"] is not None
    shutil.rmtree(copy)


def test_bad_inputs_need_the_model_are_refused_before_any_work(digits, tmp_path, monkeypatch):
    flat = tmp_path / "flat"
    flat.mkdir()
    first = next(next(p for p in sorted(digits.eval.iterdir())).iterdir())
    (flat / first.name).write_bytes(first.read_bytes())
    (tmp_path / "labels.csv").write_text(f"{first.name},12\n")
    base = ["optimize", "v1", "--weights", str(digits.checkpoint), "--dir", str(tmp_path / "x")]
    one_line_error(runner.invoke(app, [*base, "--eval", str(flat), "--eval-labels", str(tmp_path / "labels.csv")]),
                   2, "labelled with a class the model does not have")
    one_line_error(runner.invoke(app, ["optimize", "v1", "--dir", str(tmp_path / "x"), "--eval", str(digits.eval)]),
                   2, "untrained model")
    one_line_error(runner.invoke(app, [*base, "--repo", str(tmp_path / "x" / "repo")]), 2, "inside the export")
    one_line_error(runner.invoke(app, ["optimize", "v9"]), 2, "v9")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # a GPU host too: the machine without one
    one_line_error(runner.invoke(app, [*base, "--device", "cuda"]), 3, "no CUDA GPU")
    assert not (tmp_path / "x").exists()


def test_durations_and_ties():
    assert parse_duration("90") == 90 and parse_duration("10m") == 600 and parse_duration("1h30m") == 5400
    fast, slow = Verdict(Candidate("tensorrt", "int8")), Verdict(Candidate("onnxruntime", "fp16"))
    fast.curve = [{"batch": 1, "p50_ms": 1.00, "p99_ms": 1.2, "throughput": 1000.0, "spread": 0.05}]
    slow.curve = [{"batch": 1, "p50_ms": 1.03, "p99_ms": 1.3, "throughput": 970.0, "spread": 0.01}]
    winner = choose([fast, slow], "latency")  # 3 % apart, within the 5 % spread: the simpler runtime wins
    assert winner is slow and fast.status == "lost" and "tie" in fast.reason
    fast.status = slow.status = None
    fast.curve[0]["spread"] = 0.0
    assert choose([fast, slow], "latency") is fast and "1.03x the time" in slow.reason
    assert math.isclose(fast.figure("throughput")["throughput"], 1000.0)
    # ties do not chain: ONNX Runtime is within the noise of the winner, not of the fastest, and is told so
    trt_int8, trt_fp16, ort = (Verdict(Candidate(b, p)) for b, p in (("tensorrt", "int8"), ("tensorrt", "fp16"),
                                                                     ("onnxruntime-cuda", "fp16")))
    for verdict, ms, spread in ((trt_int8, 1.00, 0.05), (trt_fp16, 1.04, 0.0), (ort, 1.08, 0.05)):
        verdict.curve = [{"batch": 1, "p50_ms": ms, "p99_ms": ms, "throughput": 1000 / ms, "spread": spread}]
    assert choose([trt_int8, trt_fp16, ort], "latency") is trt_fp16
    assert trt_int8.reason.startswith("the fastest") and "a tie" in trt_int8.reason
    assert ort.status == "lost" and "not of the fastest, tensorrt int8" in ort.reason and "1.08x" in ort.reason


@pytest.mark.slow
def test_the_pytorch_model_needs_no_onnx_file(searched):
    """torch fp16 on a GPU runs the PyTorch model: no model.fp16.onnx is needed (none was made on this CPU)."""
    from inception_deploy.optimize.make import ExportDir

    root, _, _ = searched
    assert not (root / "googlenet" / "model.fp16.onnx").exists()
    export = ExportDir(OptimizeOptions("googlenet", export_dir=root / "googlenet").check(), lambda *_a, **_k: None)
    for backend in ("torch-cuda", "torch-compile-cuda"):
        made = export.make(Candidate(backend, "fp16"))
        assert made.reused and made.failure is None, made


def test_outputs_in_the_way_are_refused_before_any_work(tmp_path):
    """A repository whose model directory cannot be written, or a report Triton would load as a model: exit 2
    before the search, not after it."""
    (tmp_path / "repo" / "googlenet").mkdir(parents=True)
    (tmp_path / "repo" / "googlenet" / "config.pbtxt").mkdir()
    base = ["optimize", "v1", "--dir", str(tmp_path / "x")]
    one_line_error(runner.invoke(app, [*base, "--repo", str(tmp_path / "repo")]), 2, "config.pbtxt")
    one_line_error(runner.invoke(app, [*base, "--repo", str(tmp_path / "r2"), "--report", str(tmp_path / "r2" / "a")]),
                   2, "inside --repo")
    assert not (tmp_path / "x").exists() and not (tmp_path / "r2").exists()


def test_a_time_budget_counts_the_export_it_must_make_first(tmp_path):
    """With no export yet, the fp32 export itself comes out of the budget (estimated from the model's size)."""
    from inception_deploy.optimize.make import EXPORT_ESTIMATE_S, ExportDir

    options = OptimizeOptions("v4", export_dir=tmp_path / "v4", time_budget_s="1h").check()
    fixed, per_million = EXPORT_ESTIMATE_S
    export = ExportDir(options, lambda *_a, **_k: None)
    assert not export.fp32_current() and export.base_seconds() == pytest.approx(fixed + per_million * 42.679816)
    # one ONNX Runtime fp32 row: 3 rounds x 7 s; with the v4 export first (about 18 s), 30 s is too little
    one_line_error(runner.invoke(app, ["optimize", "v4", "--dir", str(tmp_path / "v4"), "--time-budget", "30s"]), 2,
                   "cannot make and measure even one candidate")
    assert not (tmp_path / "v4").exists()
