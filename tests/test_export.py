"""Every variant exported once, and the written ONNX checked in ONNX Runtime against the source model."""

import hashlib
import json

import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import VARIANTS

import inception_deploy as idp
from inception_deploy.core.artifacts import sha256_of
from inception_deploy.core.compare import difference
from inception_deploy.core.errors import InputError
from inception_deploy.models.samples import random_batch

pytestmark = pytest.mark.slow


def _ort_cpu(path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]
    return session


@pytest.mark.parametrize("name", VARIANTS)
def test_export_reproduces_the_source_model_in_onnxruntime(name, exported, library_checkpoints):
    """A torchvision/timm checkpoint (v2: one in the seed's layout), checked against that library's own model."""
    spec = idp.get_spec(name)
    weights, reference, x = library_checkpoints(name)
    out, manifest = exported(name)

    model_path = out / "model.onnx"
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["variant"] == name and manifest["untrained"] is False
    assert manifest["input"] == {"name": "input", "dtype": "float32", "shape": ["batch", *spec.input_size]}
    assert manifest["output"] == {"name": "logits", "dtype": "float32", "shape": ["batch", 1000]}
    assert manifest["params"] == spec.params and manifest["opset"] == 18
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxsim", "onnxruntime"}
    fp32, fp16, int8, int8_cpu = manifest["artifacts"]
    assert fp32["path"] == "model.onnx" and fp32["sha256"] == sha256_of(model_path) and fp32["precision"] == "fp32"
    assert (
        fp32["parity"]["passed"]
        and fp32["parity"]["scaled"] <= 1e-3
        and fp32["parity"]["reference"] == "torch-cpu-fp32"
    )
    assert fp16["path"] == "model.fp16.onnx" and fp16["sha256"] == sha256_of(out / "model.fp16.onnx")
    assert fp16["parity"]["passed"] and fp16["parity"]["cosine"] >= 0.999 and fp16["io_dtype"] == "float32"
    assert int8["path"] == "model.int8.onnx" and int8["parity"]["passed"] and int8["parity"]["cosine"] >= 0.98
    assert int8_cpu["path"] == "model.int8-cpu.onnx" and int8_cpu["form"] == "cpu" and int8_cpu["parity"]["passed"]
    assert int8_cpu["cpu_kernels"]["integer"] == int8_cpu["cpu_kernels"]["of"]  # every Conv/Gemm: integer kernels
    assert int8["calibration"]["samples"] == 24 and not int8["calibration"]["synthetic"]
    assert sorted(p.name for p in out.iterdir()) == sorted([  # no leftovers
        "manifest.json", "model.onnx", "model.fp16.onnx", "model.int8.onnx", int8["calibration"]["cache"],
        "model.int8-cpu.onnx", int8_cpu["calibration"]["cache"]])
    assert onnx.load(str(model_path)).opset_import[0].version == 18
    initializers = onnx.load(str(out / "model.fp16.onnx")).graph.initializer
    assert {i.data_type for i in initializers if len(i.dims) == 4} == {onnx.TensorProto.FLOAT16}

    got = _ort_cpu(model_path).run(["logits"], {"input": x.numpy()})[0]  # batch 3: neither traced nor checked
    with torch.no_grad():
        expected = reference(x).numpy()
    diff = difference(expected, got)
    assert diff.scaled < 1e-3 and diff.cosine > 0.99999 and diff.top1_agreement == 1.0, diff


def test_untrained_export_says_so(tmp_path):
    manifest = idp.export_onnx("v1", out_dir=tmp_path, samples=2, fp16=True, fp16_io=True)
    assert manifest["untrained"] is True and manifest["weights"] is None
    assert manifest["untrained_init"] == {"init_seed": 0, "bn_shift": 1.0, "bn_samples": 4, "bn_seed": 1234}
    fp32, fp16 = manifest["artifacts"]
    assert fp32["parity"]["passed"] and fp32["parity"]["samples"] == 2
    assert fp16["io_dtype"] == "float16"
    session = ort.InferenceSession(str(tmp_path / "model.fp16.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)" and session.get_outputs()[0].type == "tensor(float16)"
    # a runner feeds it float16 as it is (a bench row says so: its timed region has no input Cast)
    from inception_deploy.runners.onnxruntime_runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(tmp_path / "model.fp16.onnx", precision="fp16") as runner:
        assert runner.run({"input": torch.zeros(1, 3, 224, 224)})["logits"].shape == (1, 1000)
        assert runner.settings()["input_dtype"] == "float16"


def test_cli_export_fixed_batch_replaces_atomically_and_refuses_on_failed_parity(
    tmp_path, library_checkpoints, monkeypatch
):
    from typer.testing import CliRunner

    from inception_deploy.cli import app
    from inception_deploy.core import tolerances

    weights, reference, _ = library_checkpoints("googlenet")
    out = tmp_path / "g"
    out.mkdir()
    (out / "model.fp16.onnx").write_bytes(b"stale")
    (out / "manifest.json").write_text(json.dumps({"variant": "googlenet", "artifacts": [
        {"path": "model.fp16.onnx", "sha256": hashlib.sha256(b"stale").hexdigest()}]}))
    runner = CliRunner()
    with monkeypatch.context() as here:  # a checkpoint named relative to the working folder is recorded where it is
        here.chdir(weights.parent)
        result = runner.invoke(
            app, ["export", "v1", "--onnx", "--weights", weights.name, "--batch", "2", "--out", str(out)]
        )
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout and "model.onnx" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["batch"] == 2 and manifest["input"]["shape"] == [2, 3, 224, 224]
    assert manifest["weights"]["path"] == str(weights.resolve())  # parity, bench, accuracy find it from anywhere
    assert not (out / "model.fp16.onnx").exists()  # derived from the old export: removed
    x = random_batch(idp.get_spec("v1"), 2, seed=3)
    with torch.no_grad():
        expected = reference(x).numpy()
    assert difference(expected, _ort_cpu(out / "model.onnx").run(None, {"input": x.numpy()})[0]).scaled < 1e-3

    # What `trt --fp16` does when the fp16 model is missing: make it from model.onnx, verified, and list it.
    from inception_deploy.export.onnx import add_fp16

    manifest = add_fp16(out)
    fp16 = next(a for a in manifest["artifacts"] if a["path"] == "model.fp16.onnx")
    assert fp16["parity"]["passed"] and fp16["parity"]["reference"] == "onnxruntime-cpu-fp32"
    assert json.loads((out / "manifest.json").read_text()) == manifest and (out / "model.fp16.onnx").is_file()

    # A failed parity check writes nothing: the previous artifacts stay as they were.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    impossible = tolerances.Tolerance(max_scaled=0.0, min_cosine=1.1)
    monkeypatch.setitem(tolerances.TOLERANCES, "fp32", impossible)
    result = runner.invoke(app, ["export", "v1", "--weights", str(weights), "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "does not reproduce googlenet" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_bad_export_arguments_are_input_errors(tmp_path):
    for kwargs, expected in [
        ({"batch": "x"}, "--batch must be"),
        ({"batch": 0}, "--batch must be"),
        ({"opset": 9}, "--opset must be between"),
        ({"num_classes": 0}, "--num-classes must be at least 1"),
        ({"fp16_io": True}, "--fp16-io applies to the fp16 model"),
    ]:
        with pytest.raises(InputError, match=expected):
            idp.export_onnx("v1", out_dir=tmp_path, **kwargs)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        idp.export_onnx("v1", out_dir=tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("name", VARIANTS)
def test_every_written_onnx_passes_the_full_onnx_checker(name, exported):
    """Stricter consumers (Polygraphy's lint, onnx.checker with full_check) reject what ORT tolerates, such as
    nodes out of topological order: every ONNX an export writes passes the full check."""
    out, manifest = exported(name)
    for artifact in (a for a in manifest["artifacts"] if a["kind"] == "onnx"):
        onnx.checker.check_model(onnx.load(str(out / artifact["path"])), full_check=True)
    assert {a["precision"] for a in manifest["artifacts"] if a["kind"] == "onnx"} == {"fp32", "fp16", "int8",
                                                                                       "int8-cpu"}
