"""Triton: repositories whose configs parse against Triton's own ModelConfig schema, refused options, and a
real tritonserver (PyTriton) on this CPU answering concurrent requests that match the local reference."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CLI, VARIANTS, run_and_interrupt
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
    for precision in ("fp32", "fp16", "int8", "int8-cpu"):
        options = TritonOptions(
            precision=precision,
            preferred_batch=(8, 16),
            instances=2,
            device={"int8": "cpu", "int8-cpu": None}.get(precision, "cuda"),  # int8-cpu: cpu by default
            trt_accelerator=precision == "fp16",
        )
        served = write_repository(out, tmp_path / "repo", options)
        config = validate_config((served.model_dir / "config.pbtxt").read_text())
        from tritonclient.grpc import model_config_pb2

        kind = config.instance_group[0].kind
        assert kind == (model_config_pb2.ModelInstanceGroup.KIND_CPU if precision.startswith("int8") else
                        model_config_pb2.ModelInstanceGroup.KIND_GPU)
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
        (["--device", "tpu"], "--device must be cuda or cpu"),
        (["--preferred-batch", "8,128"], "--preferred-batch sizes must be between 1 and --max-batch 64"),
        (["--trt-accelerator", "--kind", "cpu"], "--trt-accelerator is for"),
        (["--runtime", "tensorrt"], "trt googlenet --fp32 --compiler tensorrt"),
        (["--max-batch", "-1"], "--max-batch must be >= 0"),
        (["--kind", "gpu", "--device", "cpu"], "--kind is the former name of --device: give --device once"),
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
    reference = local_reference(out, "fp32")
    with running_server(out, http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch=64) as endpoints:
        assert endpoints.http == f"http://127.0.0.1:{http}"
        report = run_loadtest(endpoints.http, endpoints.model, concurrency=[64], duration_s=4.0, reference=reference)
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
    server = _serve_process(out, http, grpc, metrics)
    try:
        ready = _ready_line(server)
        assert f"http://127.0.0.1:{http}" in ready
        log = Path(re.search(r"server log (\S+)\. Ctrl-C", ready)[1])
        assert log.parent.is_dir()
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
    assert "Please wait" not in stderr, stderr  # PyTriton's own warnings stay quiet
    assert not log.parent.exists()  # a clean stop leaves no temporary folder behind


def test_loadtest_against_no_server_is_one_line(tmp_path):
    (port,) = free_ports(1)
    one_line_error(
        runner.invoke(app, ["loadtest", f"http://127.0.0.1:{port}", "--model", "googlenet", "--duration-s", "1"]),
        2,
        "cannot use model 'googlenet'",
    )


IMAGE_CLIENT = "INCEPTION_DEPLOY_IMAGE_CLIENT"  # an unmodified copy of Triton's image_client.py (see image_client())


def image_client():
    """Triton's own example client, unmodified: triton-inference-server/client, src/python/examples/image_client.py
    (BSD-3-Clause). It is not shipped by any package and not copied into this repository: name a copy in
    INCEPTION_DEPLOY_IMAGE_CLIENT to run the tests that use it as it is."""
    import os
    from pathlib import Path

    path = os.environ.get(IMAGE_CLIENT)
    if not path:
        pytest.skip(f"{IMAGE_CLIENT} names no copy of Triton's image_client.py (triton-inference-server/client, "
                    "src/python/examples/image_client.py)")
    assert Path(path).is_file(), f"{IMAGE_CLIENT}={path} is not a file"
    return Path(path)


def grpc_metadata(config):
    """What Triton's gRPC client returns for a model of this config (ModelMetadataResponse): image_client's input."""
    from tritonclient.grpc import model_config_pb2, service_pb2

    batch = [-1] if config.max_batch_size > 0 else []

    def tensor(io):
        datatype = model_config_pb2.DataType.Name(io.data_type).removeprefix("TYPE_")
        return service_pb2.ModelMetadataResponse.TensorMetadata(name=io.name, datatype=datatype,
                                                                shape=batch + list(io.dims))

    return service_pb2.ModelMetadataResponse(name=config.name, versions=["1"], platform=config.platform,
                                             inputs=[tensor(i) for i in config.input],
                                             outputs=[tensor(o) for o in config.output])


def imagenet_names() -> list[str]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES  # the reference the package's data file was made from

    return list(_IMAGENET_CATEGORIES)


def test_the_packaged_imagenet_class_names_are_torchvisions():
    from inception_deploy.serving.triton_repo import IMAGENET_CLASSES

    assert IMAGENET_CLASSES.read_text(encoding="utf-8").split("\n") == [*imagenet_names(), ""]


def test_a_written_repository_tells_clients_what_to_feed_and_names_its_classes(export_copy, tmp_path):
    """What image_client.py checks (one input of 3 dims with an NCHW/NHWC format, one FP32 vector output) and needs
    (a label file, so that a classification answers score:index:label), and the preprocessing, in the config's
    parameters and the manifest; a user's --labels file in place of ImageNet's."""
    out = export_copy("googlenet")
    result = runner.invoke(app, ["triton", "v1", "--dir", str(out), "--repo", str(tmp_path / "repo"), "--kind", "cpu"])
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "repo" / "googlenet"
    config = validate_config((model_dir / "config.pbtxt").read_text())
    from tritonclient.grpc import model_config_pb2

    assert len(config.input) == 1 and len(config.output) == 1 and len(config.input[0].dims) == 3
    assert config.input[0].format == model_config_pb2.ModelInput.FORMAT_NCHW
    assert config.output[0].data_type == model_config_pb2.TYPE_FP32 and list(config.output[0].dims) == [1000]
    assert config.output[0].label_filename == "labels.txt"
    assert (model_dir / "labels.txt").read_text(encoding="utf-8").splitlines() == imagenet_names()
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters == {"preprocessing.resize": "256", "preprocessing.crop": "224",
                          "preprocessing.interpolation": "bilinear", "preprocessing.mean": "0.485,0.456,0.406",
                          "preprocessing.std": "0.229,0.224,0.225", "preprocessing.scale": "1/255",
                          "preprocessing.channels": "RGB", "preprocessing.layout": "NCHW"}
    served = json.loads((model_dir / "manifest.json").read_text())["served"]
    assert served["preprocessing"]["crop"] == 224 and served["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert served["labels"] == {"file": "labels.txt", "source": "ImageNet", "count": 1000}

    names = [f"kind {i}" for i in range(1000)]
    (tmp_path / "mine.txt").write_text("\r\n".join(names) + "\r\n")  # Windows line ends are read as lines too
    result = runner.invoke(app, ["triton", "v1", "--dir", str(out), "--repo", str(tmp_path / "r2"),
                                 "--name", "mine-1.0", "--labels", str(tmp_path / "mine.txt")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r2" / "mine-1.0" / "labels.txt").read_text().splitlines() == names
    served = json.loads((tmp_path / "r2" / "mine-1.0" / "manifest.json").read_text())["served"]
    assert served["labels"]["source"] == str(tmp_path / "mine.txt")


def test_a_head_that_is_not_imagenets_takes_a_labels_file_or_generic_names(tmp_path):
    from inception_deploy.core.errors import InputError
    from inception_deploy.serving.triton_repo import class_labels

    manifest = {"variant": "googlenet", "output": {"name": "logits", "dtype": "float32", "shape": ["batch", 10]}}
    generic = class_labels(manifest)
    assert generic.names == tuple(f"class_{i}" for i in range(10)) and "--labels FILE" in generic.warning
    (tmp_path / "ten.txt").write_text("".join(f"digit {i}\n" for i in range(10)))
    named = class_labels(manifest, tmp_path / "ten.txt")
    assert named.names[3] == "digit 3" and named.warning is None
    (tmp_path / "gap.txt").write_text("".join(f"digit {i}\n" if i != 4 else "\n" for i in range(10)))
    with pytest.raises(InputError, match="line 5 is empty"):
        class_labels(manifest, tmp_path / "gap.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(InputError, match="has 0 names, but the model's head has 10 classes"):
        class_labels(manifest, tmp_path / "empty.txt")


def test_image_client_parse_model_accepts_the_written_config(export_copy, tmp_path):
    """Triton's image_client.py, unmodified: its parse_model on the written config, as the gRPC client returns it."""
    import importlib.util

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    spec = importlib.util.spec_from_file_location("image_client", image_client())
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    served = write_repository(export_copy("googlenet"), tmp_path / "repo", TritonOptions(device="cpu"))
    config = text_format.Parse((served.model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert client.parse_model(grpc_metadata(config), config) == (
        64, "input", "logits", 3, 224, 224, model_config_pb2.ModelInput.FORMAT_NCHW, "FP32")


def test_a_served_model_answers_a_classification_with_imagenets_names(exported):
    """`serve`'s model as Triton's clients see it: the input's format, the label file and the preprocessing in its
    config (gRPC and HTTP), and a classification request (class_count=3) on the sample photographs answered
    score:index:label, the top 3 of the model's own output, named by ImageNet's classes."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from conftest import sample_photographs
    from tritonclient.grpc import model_config_pb2

    from inception_deploy.models.samples import image_batch
    from inception_deploy.serving.server import running_server

    out, _ = exported("googlenet")
    pixels = image_batch(get_spec("googlenet"), sample_photographs())[0].numpy()
    http, grpc, metrics = free_ports(3)
    with running_server(out, http_port=http, grpc_port=grpc, metrics_port=metrics) as endpoints:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        config = client.get_model_config(endpoints.model).config
        http_config = httpclient.InferenceServerClient(f"127.0.0.1:{http}").get_model_config(endpoints.model)
        request = grpcclient.InferInput("input", list(pixels.shape), "FP32")
        request.set_data_from_numpy(pixels)
        logits = client.infer(endpoints.model, [request]).as_numpy("logits")
        top3 = client.infer(endpoints.model, [request],
                            outputs=[grpcclient.InferRequestedOutput("logits", class_count=3)]).as_numpy("logits")
        client.close()
    assert config.input[0].format == model_config_pb2.ModelInput.FORMAT_NCHW
    assert config.output[0].label_filename == "labels.txt"
    assert http_config["input"][0]["format"] == "FORMAT_NCHW"
    assert http_config["parameters"]["preprocessing.crop"] == {"string_value": "224"}
    assert logits.shape == (2, 1000) and top3.shape == (2, 3)
    names = imagenet_names()
    for row, answer in zip(logits, top3):
        entries = [entry.decode().split(":") for entry in answer]
        assert [int(index) for _, index, _ in entries] == list(np.argsort(-row)[:3])
        assert all(label == names[int(index)] and abs(float(score) - row[int(index)]) < 1e-4
                   for score, index, label in entries), entries


def test_image_client_runs_unpatched_against_serve(exported):
    """Triton's image_client.py, unmodified, against `inception-deploy serve` (gRPC: over HTTP it needs attrdict,
    which nothing here installs): a top 3 with ImageNet's names. -s INCEPTION is its scaling nearest to googlenet's
    ImageNet mean/std (none of its scalings is that one; it also resizes without the centre crop)."""
    import re

    from conftest import sample_photographs

    script = image_client()
    out, _ = exported("googlenet")
    http, grpc, metrics = free_ports(3)
    server = _serve_process(out, http, grpc, metrics)
    try:
        _ready_line(server)
        result = subprocess.run(
            [sys.executable, str(script), "-m", "googlenet", "-s", "INCEPTION", "-c", "3", "-i", "grpc", "-u",
             f"127.0.0.1:{grpc}", str(sample_photographs() / "china.jpg")],
            capture_output=True, text=True, timeout=120,
        )
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=120)
    finally:
        server.kill()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Request 1, batch size 1" and lines[-1] == "PASS", lines
    rows = [re.fullmatch(r" {4}(-?\d+\.\d+) \((\d+)\) = (.+)", line) for line in lines[1:-1]]
    assert len(rows) == 3 and all(rows), lines
    names = imagenet_names()
    assert all(row[3] == names[int(row[2])] for row in rows), lines


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_serve_stops_on_sigterm_and_sighup_as_on_ctrl_c(sig, code, exported):
    """SIGTERM (docker stop, systemd, Kubernetes) and SIGHUP (a closed terminal) stop `serve` as cleanly as Ctrl-C:
    one line naming the signal, the shell's exit status for it, no temporary folder and no process left."""
    out, _ = exported("googlenet")
    server = _serve_process(out, *free_ports(3))
    try:
        log = Path(re.search(r"server log (\S+)\. Ctrl-C", _ready_line(server))[1])
        assert log.parent.is_dir() and _processes_mentioning(str(log.parent))  # tritonserver, its backend stub
        server.send_signal(sig)
        _, stderr = server.communicate(timeout=120)
    finally:
        server.kill()
    assert server.returncode == code, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error: ")] == [
        f"error: stopped by {signal.Signals(sig).name}: the server stopped"], stderr
    assert not log.parent.exists()  # its temporary folder, model store and log: gone
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(log.parent)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_mentioning(str(log.parent)), "tritonserver or its Python backend stub outlived serve"


def _processes_mentioning(text: str) -> list[str]:
    """The command lines of the processes on this machine that mention `text` (a server's temporary folder)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


def _serve_process(out, http: int, grpc: int, metrics: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLI, "serve", "v1", "--dir", str(out), "--http-port", str(http),
                             "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _ready_line(server: subprocess.Popen) -> str:
    """The line `serve` prints once it serves (tritonserver may say a word first: no NVML on a CPU host)."""
    seen = []
    for line in server.stdout:
        seen.append(line)
        if line.startswith("serving ") or len(seen) > 20:
            break
    assert seen and seen[-1].startswith("serving googlenet"), seen
    return seen[-1]


def _status(port: int, path: str) -> int | None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def test_serve_is_ready_only_with_its_model_and_a_tritonserver_that_dies_ends_it(exported):
    """Triton's /v2/health/ready, polled from the moment the port accepts (a Kubernetes probe, Triton's own health
    example), never says ready without the model; then tritonserver killed under `serve`: exit 1 in seconds, one
    line saying so."""
    import os
    import time

    out, _ = exported("googlenet")
    http, grpc, metrics = free_ports(3)
    shm_before = set(os.listdir("/dev/shm"))
    server = _serve_process(out, http, grpc, metrics)
    try:
        polls, ready_without_model, until = 0, [], time.monotonic() + 180
        while time.monotonic() < until and server.poll() is None:
            status = _status(http, "/v2/health/ready")
            polls += status is not None
            if status == 200:
                model = _status(http, "/v2/models/googlenet/ready")
                if model == 200:
                    break
                ready_without_model.append(model)
        assert not ready_without_model, f"server ready, model not ({ready_without_model[:3]}…) in {polls} polls"
        assert _status(http, "/v2/models/googlenet/ready") == 200, (polls, server.poll())
        ready = next(line for line in server.stdout if line.startswith("serving googlenet"))  # serve says it is up
        root = str(Path(re.search(r"server log (\S+)\. Ctrl-C", ready)[1]).parent)
        # under load: clients in flight, PyTriton's tensor store holding shared memory
        load = subprocess.Popen([sys.executable, "-c", CLI, "loadtest", f"http://127.0.0.1:{http}", "--model",
                                 "googlenet", "--concurrency", "8", "--duration-s", "30"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(4)
        children = open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()
        [tritonserver] = [int(c) for c in children if open(f"/proc/{c}/comm").read().strip() == "tritonserver"]
        os.kill(tritonserver, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = server.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        server.kill()
        if "load" in locals():
            load.kill()
            load.wait()
    assert server.returncode == 1 and took < 20, (server.returncode, took, stderr)
    assert stderr.strip().splitlines() == [stderr.strip()] and stderr.startswith(
        "error: tritonserver stopped: killed by SIGKILL (its log: "), stderr  # no raw resource-tracker warnings
    _remove_kept_log(stderr)
    assert not _processes_mentioning(root), "the Python backend stub outlived tritonserver and serve"
    assert not [p for p in _processes_mentioning("multiprocessing") if f"{server.pid}" in p]
    def left() -> set[str]:  # what the tracker removes, it removes as serve exits: give it a moment
        return {name for name in set(os.listdir("/dev/shm")) - shm_before if name.startswith(("pytrtion", "psm_"))}

    until = time.monotonic() + 10
    while left() and time.monotonic() < until:
        time.sleep(0.2)
    assert not left(), f"shared memory left behind: {sorted(left())}"


def test_a_tritonserver_that_fails_to_start_is_one_line_from_its_log_in_seconds(exported, monkeypatch):
    """The gRPC port taken between the check and tritonserver's start (a race no check closes): tritonserver's
    own error, in seconds, not PyTriton's two-minute wait and its traceback."""
    import time

    from inception_deploy.serving import server

    monkeypatch.setattr(server, "_check_free", lambda *args: None)  # the check passed; then the port was taken
    out, _ = exported("googlenet")
    http, grpc, metrics = free_ports(3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", grpc))
        busy.listen()
        started = time.monotonic()
        result = runner.invoke(app, ["serve", "v1", "--dir", str(out), "--http-port", str(http), "--grpc-port",
                                     str(grpc), "--metrics-port", str(metrics)])
        took = time.monotonic() - started
    one_line_error(result, 1, f"tritonserver stopped as it started: failed to start GRPC service: Unavailable - "
                              f"Socket '127.0.0.1:{grpc}' already in use (its log: ")
    _remove_kept_log(result.stderr)
    assert took < 60 and not result.stdout, (took, result.stdout)


def _remove_kept_log(message: str) -> None:
    """A failed serve keeps tritonserver's log for the error it names; the test, having read it, removes its folder
    (the temporary folder is shared)."""
    kept = re.search(r"its log: (\S+?)\)", message)
    assert kept, message
    folder = Path(kept[1]).parent
    assert folder.name.startswith("inception-deploy-triton-"), folder
    shutil.rmtree(folder)


def test_loadtest_says_its_reference_refuses_another_model_and_stops_its_clients_on_ctrl_c(exported, calib_dir,
                                                                                           tmp_path):
    """An int8 deployment checked against the int8 ONNX, and saying so (terminal and JSON); --check against a
    server of another model named before any request (exit 2); Ctrl-C stops every client before the command
    ends (an interpreter that exits under tritonclient.http's gevent crashed), and a real SIGINT is exit 130."""
    import os
    import threading
    import time

    from inception_deploy import export_onnx
    from inception_deploy.serving.loadtest import run_loadtest
    from inception_deploy.serving.server import running_server

    ten = tmp_path / "ten-classes"
    export_onnx("googlenet", num_classes=10, out_dir=ten)
    out, _ = exported("googlenet")
    http, grpc, metrics = free_ports(3)
    # ONNX Runtime's CPU int8 form, served and checked against its own file
    with running_server(out, precision="int8-cpu", http_port=http, grpc_port=grpc, metrics_port=metrics) as endpoints:
        result = runner.invoke(app, ["loadtest", endpoints.http, "--model", "googlenet", "--concurrency", "2",
                                     "--duration-s", "1", "--check", "--precision", "int8-cpu", "--dir", str(out)])
        assert result.exit_code == 0, result.output
        said = " ".join(result.stdout.split())
        assert f"compared with {out / 'model.int8-cpu.onnx'} (int8-cpu)" in said, said
        assert "PASS: no failed request, every response within the int8-cpu tolerance" in said, said
    http, grpc, metrics = free_ports(3)
    with running_server(out, precision="int8", http_port=http, grpc_port=grpc, metrics_port=metrics) as endpoints:
        result = runner.invoke(app, ["loadtest", endpoints.http, "--model", "googlenet", "--concurrency", "2",
                                     "--duration-s", "1", "--check", "--precision", "int8", "--dir", str(out),
                                     "--json", str(tmp_path / "lt.json")])
        assert result.exit_code == 0, result.output
        said = " ".join(result.stdout.split())
        assert f"compared with {out / 'model.int8.onnx'} (int8)" in said and "within the int8 tolerance" in said, said
        data = json.loads((tmp_path / "lt.json").read_text())
        assert data["precision"] == "int8" and data["reference"].startswith(f"{out / 'model.int8.onnx'} (int8)")

        one_line_error(runner.invoke(app, ["loadtest", endpoints.http, "--model", "googlenet", "--duration-s", "1",
                                           "--check", "--dir", str(ten)]),
                       2, f"the server's model 'googlenet' returns 'logits' FP32 [-1, 1000] but {ten / 'model.onnx'} "
                          "returns 'logits' FP32 [-1, 10]: point URL and --model at the server that serves this export")
        one_line_error(runner.invoke(app, ["loadtest", endpoints.http, "--model", "googlenet", "--duration-s", "1",
                                           "--variant", "inception_v3", "--images", str(calib_dir)]),
                       2, "the images are prepared as [3, 299, 299] but the server's model 'googlenet' takes "
                          "[3, 224, 224]: pass the --variant it serves")

    # Ctrl-C, against the fp32 model: ONNX Runtime runs TensorRT's int8 form slowly on the CPU (float convolutions,
    # fp16 through Casts), and a request it is in the middle of when Ctrl-C comes may outlast the clients' stop wait
    http, grpc, metrics = free_ports(3)
    with running_server(out, precision="fp32", http_port=http, grpc_port=grpc, metrics_port=metrics) as endpoints:
        threads_before = set(threading.enumerate())
        timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            run_loadtest(endpoints.http, endpoints.model, concurrency=[8], duration_s=60.0)
        timer.join()
        left = [t.name for t in set(threading.enumerate()) - threads_before if "client" in t.name]
        assert not left and time.monotonic() - started < 20, left

        for delay in (0.0, 1.5):  # at the start of the level (clients warming up), and within it
            stopped = _interrupt_loadtest(endpoints.http, delay)
            assert stopped.returncode == 130, (delay, stopped.stderr)
            assert stopped.stderr.strip() == "error: interrupted: nothing was written", (delay, stopped.stderr)
        stopped = _interrupt_loadtest(endpoints.http, 1.5, signal.SIGTERM)  # as docker stop, within the level
        assert stopped.returncode == 143, stopped.stderr
        assert stopped.stderr.strip() == "error: stopped by SIGTERM: nothing was written", stopped.stderr


def _interrupt_loadtest(url: str, delay_s: float, sig: int = signal.SIGINT) -> subprocess.CompletedProcess:
    """The real loadtest command, a real SIGINT (or SIGTERM) once its level has begun, and what it said (its steps
    aside)."""
    args = ["loadtest", url, "--model", "googlenet", "--concurrency", "8", "--duration-s", "60"]
    return run_and_interrupt(args, None, lambda steps: "concurrency 8" in steps[-1], delay_s, sig=sig)


def test_running_server_checks_its_ports_for_python_callers_too(exported):
    """The checks live in running_server, not only in the CLI: a port out of range or not a number is refused
    before tritonserver starts."""
    import re

    from inception_deploy.core.errors import InputError
    from inception_deploy.serving.server import running_server

    out, _ = exported("googlenet")
    for ports, fragment in (({"http_port": 70000}, "--http-port must be a port number (1..65535), not 70000"),
                            ({"grpc_port": "8001"}, "--grpc-port must be a port number (1..65535), not '8001'"),
                            ({"metrics_port": 0}, "--metrics-port must be a port number (1..65535), not 0")):
        with pytest.raises(InputError, match=re.escape(fragment)):
            with running_server(out, **ports):
                pass


def test_a_server_url_is_read_for_what_it_says():
    from inception_deploy.core.errors import InputError
    from inception_deploy.serving.loadtest import server_address

    assert server_address("http://127.0.0.1:8000/", "http") == ("127.0.0.1:8000", False)
    assert server_address("https://triton.example:443", "http") == ("triton.example:443", True)  # TLS, not plain
    assert server_address("127.0.0.1:8001", "grpc") == ("127.0.0.1:8001", False)
    assert server_address("grpcs://h:8001", "grpc") == ("h:8001", True)
    for url, protocol in (("https://h:1/v2/models", "http"), ("http://", "http"), ("http://h:1", "grpc")):
        with pytest.raises(InputError):
            server_address(url, protocol)
