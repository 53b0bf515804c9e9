"""Both INT8 forms are right where they are used, not only in our runner: every int8 artifact agrees, in a stock
onnxruntime.InferenceSession (default options, and every optimization level a consumer may set) and in
`polygraphy run --onnxrt`, with what `parity` reports for it; the CPU form is ONNX Runtime's integer form."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

import inception_deploy as idp
from inception_deploy.cli import app
from inception_deploy.core.compare import difference
from inception_deploy.core.tolerances import TOLERANCES
from inception_deploy.export.forms import form_of, stock_ort_problems
from inception_deploy.models.samples import image_batch

pytestmark = pytest.mark.slow
POLYGRAPHY = str(Path(sys.executable).parent / "polygraphy")  # its console script, beside this interpreter
LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")


def _int8_records(manifest: dict) -> list[dict]:
    return [a for a in manifest["artifacts"] if a["kind"] == "onnx" and a["precision"] in ("int8", "int8-cpu")]


def _reference(name: str, manifest: dict, x: np.ndarray) -> np.ndarray:
    """parity's reference: the export's checkpoint in fp32 PyTorch on the CPU."""
    model = idp.create_model(name, weights=manifest["weights"]["path"])
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _inputs(name: str, calib_dir) -> np.ndarray:
    """The photographs, as `parity --images DIR --samples 0` reads them."""
    return image_batch(idp.get_spec(name), calib_dir)[0].numpy()


@pytest.mark.parametrize("name", ["googlenet", "inception_resnet_v2"])  # irv2: the residual Adds' Q/DQ form
def test_every_int8_artifact_agrees_in_a_stock_session_as_parity_says(name, exported, calib_dir):
    out, manifest = exported(name)
    records = _int8_records(manifest)
    assert {r["precision"] for r in records} == {"int8", "int8-cpu"}
    x = _inputs(name, calib_dir)
    reference = _reference(name, manifest, x)
    for record in records:
        path = out / record["path"]
        assert stock_ort_problems(onnx.load(str(path))) == []
        report = idp.check_parity(name, export_dir=out, precisions=record["precision"], images=calib_dir, samples=0)
        [row] = report.rows
        assert row.passed, row.to_dict()
        stock = ort.InferenceSession(str(path)).run(None, {"input": x})[0]  # what any consumer writes
        diff = difference(reference, stock)
        assert TOLERANCES[record["precision"]].passes(diff), (record["path"], diff.to_dict())
        assert diff.cosine_centred == pytest.approx(row.diff.cosine_centred, abs=1e-6), record["path"]
        assert diff.top1_agreement == row.diff.top1_agreement
        for level in LEVELS:  # Triton's onnxruntime backend and Polygraphy let a user set any of them
            options = ort.SessionOptions()
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
            at_level = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            other = difference(reference, at_level.run(None, {"input": x})[0])
            assert abs(other.cosine_centred - diff.cosine_centred) < 2e-3, (record["path"], level, other.to_dict())
            assert TOLERANCES[record["precision"]].passes(other), (record["path"], level, other.to_dict())


def test_polygraphy_run_onnxrt_computes_what_parity_says(exported, calib_dir, tmp_path):
    pytest.importorskip("polygraphy")
    from polygraphy.json import load_json

    out, manifest = exported("googlenet")
    x = _inputs("googlenet", calib_dir)
    np.save(tmp_path / "x.npy", x)
    loader = tmp_path / "loader.py"
    inputs = str(tmp_path / "x.npy")
    loader.write_text(f"import numpy as np\n\n\ndef load_data():\n    yield {{'input': np.load({inputs!r})}}\n")
    reference = _reference("googlenet", manifest, x)
    for record in _int8_records(manifest):
        saved = tmp_path / f"{record['precision']}.json"
        result = subprocess.run([POLYGRAPHY, "run", str(out / record["path"]), "--onnxrt",
                                 "--data-loader-script", str(loader), "--save-outputs", str(saved)],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        [(_, [outputs])] = load_json(str(saved)).items()
        diff = difference(reference, np.asarray(outputs["logits"]))
        parity = idp.check_parity("googlenet", export_dir=out, precisions=record["precision"], images=calib_dir,
                                  samples=0).rows[0]
        assert TOLERANCES[record["precision"]].passes(diff) and parity.passed, diff.to_dict()
        assert diff.cosine_centred == pytest.approx(parity.diff.cosine_centred, abs=1e-6)


def test_the_cpu_form_is_onnx_runtimes_integer_form(exported):
    """uint8 activations, per-channel int8 weights, int32 biases, Q/DQ around outputs: every Conv/Gemm runs in ONNX
    Runtime's integer kernels (its optimised graph, counted at export)."""
    out, manifest = exported("googlenet")
    record = next(a for a in manifest["artifacts"] if a["precision"] == "int8-cpu")
    assert record["path"] == "model.int8-cpu.onnx" and record["form"] == "cpu" and record["reduce_range"] is False
    assert record["high_precision"] == "fp32" and record["parity"]["passed"]
    kernels = record["cpu_kernels"]
    assert kernels["of"] == 58 and kernels["integer"] == 58 and kernels["float"] == 0, kernels
    assert kernels["kernels"] == {"QLinearConv": 57, "QGemm": 1}
    assert (out / record["calibration"]["cache"]).is_file()
    assert record["calibration"]["cache"].startswith("model.int8-cpu.calib-minmax-")
    model = onnx.load(str(out / "model.int8-cpu.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert form_of(model) == "int8-cpu"
    types = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = {i: n for n in model.graph.node for i in n.input}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        activation, weight, bias = (producers[name] for name in conv.input)
        assert types[activation.input[2]].data_type == onnx.TensorProto.UINT8  # asymmetric uint8 activations
        assert types[weight.input[0]].data_type == onnx.TensorProto.INT8
        assert len(types[weight.input[1]].dims) == 1  # a scale per output channel
        assert types[bias.input[0]].data_type == onnx.TensorProto.INT32
        assert consumers[conv.output[0]].op_type in ("QuantizeLinear", "Relu")  # its output quantized (after ReLU)
    tensorrt_form = onnx.load(str(out / "model.int8.onnx"))
    assert form_of(tensorrt_form) == "int8" and stock_ort_problems(tensorrt_form) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (ONNX Runtime's CUDA provider)")
def test_the_tensorrt_form_agrees_in_a_stock_cuda_session(exported, calib_dir):
    out, manifest = exported("googlenet")
    x = _inputs("googlenet", calib_dir)
    reference = _reference("googlenet", manifest, x)
    session = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CUDAExecutionProvider"])
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    diff = difference(reference, session.run(None, {"input": x})[0])
    assert TOLERANCES["int8"].passes(diff), diff.to_dict()
    row = idp.check_parity("googlenet", export_dir=out, backends="onnxruntime-cuda", precisions="int8",
                           images=calib_dir, samples=0).rows[0]
    assert row.passed and diff.cosine_centred == pytest.approx(row.diff.cosine_centred, abs=1e-4)


def _relisted(out, path: str, content: bytes) -> None:
    """Put `content` in `path` and list it in the manifest with its sha256, as a user copying files around would.
    A new file: export_copy's artifacts are hard links to the shared export."""
    (out / path).unlink()
    (out / path).write_bytes(content)
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        if entry["path"] == path:
            entry["sha256"], entry["bytes"] = hashlib.sha256(content).hexdigest(), len(content)
    (out / "manifest.json").write_text(json.dumps(manifest))


def _one_line(args, code, *fragments):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (args, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_each_form_is_refused_where_the_other_is_wanted(export_copy, tmp_path):
    """TensorRT cannot build the CPU form, and the CPU form's users would get TensorRT's slow one: either file in the
    other's place (listed with its sha256), or the CPU form alone, is one line, exit 2, nothing written."""
    out = export_copy("googlenet")
    cpu, tensorrt = (out / "model.int8-cpu.onnx").read_bytes(), (out / "model.int8.onnx").read_bytes()
    _relisted(out, "model.int8.onnx", cpu)
    _one_line(["trt", "v1", "--int8", "--out", out], 2, "model.int8.onnx is the int8 form for ONNX Runtime's CPU",
              "--int8 --calib DIR")
    _one_line(["triton", "v1", "--precision", "int8", "--kind", "cpu", "--dir", out, "--repo", tmp_path / "r"], 2,
              "is the int8 form for ONNX Runtime's CPU provider")
    _relisted(out, "model.int8.onnx", tensorrt)
    _relisted(out, "model.int8-cpu.onnx", tensorrt)
    for args in (["parity", "v1", "--dir", out, "--precision", "int8-cpu"],
                 ["serve", "v1", "--dir", out, "--precision", "int8-cpu"],
                 ["triton", "v1", "--dir", out, "--precision", "int8-cpu", "--repo", tmp_path / "r"],
                 ["bench", "v1", "--export-root", out.parent, "--backends", "onnxruntime", "--precision", "int8-cpu",
                  "--batch", "1", "--rounds", "1", "--duration-s", "0.1", "--warmup-s", "0"]):
        _one_line(args, 2, "model.int8-cpu.onnx is the int8 form for TensorRT", "--int8-form cpu")
    # the CPU form asked of what cannot run it
    _one_line(["triton", "v1", "--dir", out, "--precision", "int8-cpu", "--kind", "gpu", "--repo", tmp_path / "r"], 2,
              "int8-cpu is ONNX Runtime's CPU form", "--device cpu")
    _one_line(["serve", "v1", "--dir", out, "--precision", "int8-cpu", "--device", "cuda"], 2,
              "int8-cpu is ONNX Runtime's CPU form", "--device cpu")
    _one_line(["bench", "v1", "--export-root", out.parent, "--backends", "onnxruntime-cuda,tensorrt-rtx",
               "--precision", "int8-cpu"], 2, "no backend of this sweep runs int8-cpu")
    # an export with the CPU form alone: trt --int8 names it, and what to run
    (out / "model.int8.onnx").unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] != "model.int8.onnx"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    _one_line(["trt", "v1", "--int8", "--out", out], 2, "holds ONNX Runtime's CPU int8 form (model.int8-cpu.onnx)",
              "TensorRT cannot build", "export googlenet --int8 --calib DIR")
    assert not (tmp_path / "r").exists() and not list(out.glob("*.engine"))


def test_an_int8_file_of_an_earlier_version_is_named_and_not_kept(export_copy, calib_dir, library_checkpoints):
    """The form earlier versions wrote (opset 21, biases inside the quantized convolutions) computes wrong in a stock
    session: it is refused, naming why and what to run, where ONNX Runtime would run it; TensorRT still builds it;
    a re-export does not carry it forward."""
    from inception_deploy.export.fp16 import convert_to_fp16
    from inception_deploy.export.quantize import (
        DEFAULT_CALIB_SAMPLES,
        Int8Recipe,
        _at_opset,
        calibration_inputs,
        quantize_int8,
    )

    out = export_copy("googlenet")
    calibration = calibration_inputs(idp.get_spec("googlenet"), calib_dir, DEFAULT_CALIB_SAMPLES, synthetic=False)
    fp32_form, _, _ = quantize_int8(onnx.load(str(out / "model.onnx")), calibration,
                                    Int8Recipe.of(high_precision="fp32"), cache_dir=out)
    old = convert_to_fp16(_at_opset(fp32_form, 21), keep_io_types=True)  # as 0.1 wrote it
    assert len(stock_ort_problems(old)) > 1
    _relisted(out, "model.int8.onnx", old.SerializeToString())
    _one_line(["parity", "v1", "--dir", out, "--precision", "int8"], 2,
              "computes wrong in a default onnxruntime session, as written by an earlier inception-deploy",
              "export googlenet --int8 --calib DIR")
    _one_line(["triton", "v1", "--dir", out, "--precision", "int8", "--kind", "cpu", "--repo", out / "repo"], 2,
              "as written by an earlier inception-deploy")
    result = CliRunner().invoke(app, ["trt", "v1", "--int8", "--target", "sm86", "--out", str(out)])
    assert result.exit_code == 0, result.output  # TensorRT computes it right: built
    weights, _, _ = library_checkpoints("googlenet")
    manifest = idp.export_onnx("googlenet", weights=weights, fp16=True, out_dir=out)
    removed = {entry["path"]: entry["why"] for entry in manifest["removed"]}
    assert "computes wrong in a default onnxruntime session" in removed["model.int8.onnx"], removed
    assert "model.int8.rtx.engine" in removed and not (out / "model.int8.onnx").exists()
    assert "model.int8-cpu.onnx" in manifest["kept"]
