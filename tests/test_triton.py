"""Triton: repositories whose configs parse against Triton's own ModelConfig schema, refused options, and a
real tritonserver (PyTriton) on this CPU answering concurrent requests that match the local reference."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from conftest import CLI, VARIANTS
from typer.testing import CliRunner

from inception_deploy.cli import app
from inception_deploy.models.registry import get_spec
from inception_deploy.serving.triton_repo import TritonOptions, validate_config, write_repository

runner = CliRunner()


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def one_line_error(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr


@pytest.mark.parametrize("name", VARIANTS)
def test_repositories_parse_against_tritons_schema(name, exported, tmp_path):
    out, manifest = exported(name)
    spec = get_spec(name)
    for precision in ("fp32", "fp16", "int8"):
        options = TritonOptions(
            precision=precision,
            preferred_batch=(8, 16),
            instances=2,
            kind="cpu" if precision == "int8" else "gpu",
            trt_accelerator=precision == "fp16",
        )
        served = write_repository(out, tmp_path / "repo", options)
        config = validate_config((served.model_dir / "config.pbtxt").read_text())
        assert config.name == name and config.platform == "onnxruntime_onnx" and config.max_batch_size == 64
        assert list(config.input[0].dims) == list(spec.input_size) and list(config.output[0].dims) == [1000]
        assert config.input[0].name == "input" and config.output[0].name == "logits"
        assert list(config.dynamic_batching.preferred_batch_size) == [8, 16] and config.instance_group[0].count == 2
        assert config.model_warmup[0].inputs["input"].random_data
        assert bool(config.optimization.execution_accelerators.gpu_execution_accelerator) is (precision == "fp16")
        record = next(a for a in manifest["artifacts"] if a["precision"] == precision and a["kind"] == "onnx")
        copied = served.model_dir / "1" / "model.onnx"
        assert copied.read_bytes() == (out / record["path"]).read_bytes()
        provenance = json.loads((served.model_dir / "manifest.json").read_text())
        assert provenance["served"]["sha256"] == record["sha256"] and provenance["variant"] == name


def test_a_tensorrt_repository_takes_the_engines_profile(export_copy, tmp_path):
    """A TensorRT engine record as `trt --compiler tensorrt` writes it (its bytes stand in: the config depends only
    on the record): tensorrt_plan, and a max batch beyond the profile refused."""
    out = export_copy("googlenet")
    engine = out / "model.fp16.engine"
    engine.write_bytes(b"a stand-in for a TensorRT engine")
    manifest = json.loads((out / "manifest.json").read_text())
    import hashlib

    manifest["artifacts"].append({"path": engine.name, "bytes": engine.stat().st_size, "kind": "tensorrt-engine",
                                  "precision": "fp16", "sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
                                  "profile": {"input": "input", "min": 1, "opt": 16, "max": 32},
                                  "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"}})
    (out / "manifest.json").write_text(json.dumps(manifest))
    served = write_repository(out, tmp_path / "repo", TritonOptions(precision="fp16", runtime="tensorrt", max_batch=32))
    config = validate_config(served.config)
    assert config.platform == "tensorrt_plan" and (served.model_dir / "1" / "model.plan").is_file()
    assert any("H100" in w for w in served.warnings)
    result = runner.invoke(app, ["triton", "v1", "--dir", str(out), "--precision", "fp16", "--runtime", "tensorrt",
                                 "--repo", str(tmp_path / "r2")])
    one_line_error(result, 2, "beyond the engine's profile")
    assert not (tmp_path / "r2").exists()


def test_bad_triton_options_are_refused(export_copy, tmp_path):
    out = export_copy("googlenet")
    repo = tmp_path / "repo"
    cases = [
        (["--runtime", "tensorrt", "--kind", "cpu"], "GPU only"),
        (["--runtime", "warp"], "--runtime must be"),
        (["--kind", "tpu"], "--kind must be"),
        (["--preferred-batch", "8,128"], "--preferred-batch sizes must be between 1 and --max-batch 64"),
        (["--trt-accelerator", "--kind", "cpu"], "--trt-accelerator is for"),
        (["--runtime", "tensorrt"], "trt googlenet --fp32 --compiler tensorrt"),
        (["--max-batch", "-1"], "--max-batch must be >= 0"),
    ]
    for args, fragment in cases:
        one_line_error(runner.invoke(app, ["triton", "v1", "--dir", str(out), "--repo", str(repo), *args]), 2, fragment)
    (out / "model.onnx").rename(tmp_path / "held.onnx")  # gone: the hint is a command that exists
    one_line_error(runner.invoke(app, ["triton", "v1", "--dir", str(out), "--repo", str(repo)]), 2,
                   "make it with `inception-deploy export googlenet`")
    shutil.copy(out / "model.fp16.onnx", out / "model.onnx")  # swapped
    one_line_error(runner.invoke(app, ["triton", "v1", "--dir", str(out), "--repo", str(repo)]), 2, "changed since")
    assert not repo.exists()


def test_a_fixed_batch_export_is_served_without_batching_only(tmp_path):
    from inception_deploy import export_onnx

    out = tmp_path / "fixed"
    export_onnx("googlenet", batch=4, out_dir=out)
    one_line_error(runner.invoke(app, ["triton", "v1", "--dir", str(out), "--repo", str(tmp_path / "r")]), 2,
                   "fixed batch of 4: pass --max-batch 0")
    result = runner.invoke(app, ["triton", "v1", "--dir", str(out), "--repo", str(tmp_path / "r"), "--max-batch", "0"])
    assert result.exit_code == 0, result.output
    config = validate_config((tmp_path / "r" / "googlenet" / "config.pbtxt").read_text())
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [4, 3, 224, 224]


def test_a_real_server_answers_64_concurrent_clients_as_the_local_reference_does(exported, tmp_path):
    """PyTriton's tritonserver on this CPU, with its dynamic batcher: 64 clients, no failure, every response equal
    to ONNX Runtime's batch-1 output within the fp32 tolerance; then it stops, and its ports are free again."""
    from inception_deploy.serving.loadtest import local_reference, run_loadtest
    from inception_deploy.serving.server import running_server

    out, _ = exported("googlenet")
    http, grpc, metrics = free_ports(3)
    reference, label = local_reference(out, "fp32")
    with running_server(out, http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch=64) as endpoints:
        assert endpoints.http == f"http://127.0.0.1:{http}"
        report = run_loadtest(endpoints.http, endpoints.model, concurrency=[64], duration_s=4.0, reference=reference,
                              reference_label=label)
        grpc_report = run_loadtest(endpoints.grpc, endpoints.model, protocol="grpc", concurrency=[4], duration_s=1.0)
    row = report.rows[0]
    assert row.failures == 0 and row.requests >= 64 and row.checked == row.requests and row.mismatches == 0, row
    assert report.passed and grpc_report.rows[0].failures == 0 and grpc_report.rows[0].requests > 0
    for port in (http, grpc, metrics):  # stopped: the ports can be bound again
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))


def test_serve_and_loadtest_from_the_command_line(exported, tmp_path):
    """`serve` in its own process until a real Ctrl-C (exit 130, one line); `loadtest --check` against it."""
    out, _ = exported("googlenet")
    http, grpc, metrics = free_ports(3)
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI,
            "serve",
            "v1",
            "--dir",
            str(out),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        seen = []
        for line in server.stdout:  # tritonserver may say a word first (no NVML on a CPU host)
            seen.append(line)
            if line.startswith("serving ") or len(seen) > 20:
                break
        ready = seen[-1] if seen else ""
        assert ready.startswith("serving googlenet") and f"http://127.0.0.1:{http}" in ready, seen
        result = runner.invoke(
            app,
            [
                "loadtest",
                f"http://127.0.0.1:{http}",
                "--model",
                "googlenet",
                "--concurrency",
                "1,8",
                "--duration-s",
                "1",
                "--check",
                "--dir",
                str(out),
                "--report",
                str(tmp_path / "lt"),
            ],
        )
        assert result.exit_code == 0 and "PASS" in result.stdout, result.output
        assert {p.name for p in (tmp_path / "lt").iterdir()} == {"README.md", "loadtest.json", "googlenet_loadtest.png"}
        data = json.loads((tmp_path / "lt" / "loadtest.json").read_text())
        assert data["passed"] and [r["concurrency"] for r in data["rows"]] == [1, 8]
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=120)
    finally:
        server.kill()
    assert server.returncode == 130, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: interrupted: the server stopped"], stderr


def test_loadtest_against_no_server_is_one_line(tmp_path):
    (port,) = free_ports(1)
    one_line_error(
        runner.invoke(app, ["loadtest", f"http://127.0.0.1:{port}", "--model", "googlenet", "--duration-s", "1"]),
        2,
        "cannot use model 'googlenet'",
    )
