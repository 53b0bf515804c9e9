"""INT8 with explicit Q/DQ in the form TensorRT wants (checked in ONNX Runtime and by the static rules), and
enterprise TensorRT, run only where `import tensorrt` works and a GPU is present."""

import importlib.util
import json

import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

import inception_deploy as idp
from inception_deploy.cli import app
from inception_deploy.export.qdq_rules import qdq_violations

runner = CliRunner()
pytestmark = pytest.mark.slow
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _float_tensors(model: onnx.ModelProto) -> dict[str, str]:
    """name -> float type of every float tensor of the graph (initializers, IO and, after shape inference, the
    intermediate tensors)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    kind = onnx.TensorProto
    floats = {kind.FLOAT: "float32", kind.FLOAT16: "float16", kind.DOUBLE: "float64", kind.BFLOAT16: "bfloat16"}
    found = {v.name: floats.get(v.type.tensor_type.elem_type)
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    found.update({i.name: floats.get(i.data_type) for i in inferred.graph.initializer})
    return {name: kind for name, kind in found.items() if kind}


def _in_fp16_but_its_io(model: onnx.ModelProto) -> None:
    """The int8 model in fp16 (--int8-high-precision fp16): every float tensor but the graph's input and output
    (float32, with their Casts) is float16, and the DequantizeLinear scales with them."""
    io = {model.graph.input[0].name, model.graph.output[0].name}
    kinds = _float_tensors(model)
    assert {kinds[name] for name in io} == {"float32"}, kinds
    others = {name: kind for name, kind in kinds.items() if name not in io}
    assert len(others) > 100 and set(others.values()) == {"float16"}, {n: k for n, k in others.items() if
                                                                        k != "float16"}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == 19, opset  # fp16 Q/DQ scales need opset 19; 21's QuantizeLinear trips ONNX Runtime (forms.py)


def _every_conv_is_qdq(model: onnx.ModelProto) -> bool:
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return bool(convs) and all(
        producer.get(n.input[0]) == producer.get(n.input[1]) == "DequantizeLinear" for n in convs
    )


@pytest.mark.parametrize("name", ["inception_v3", "googlenet"])
def test_int8_qdq_export_agrees_with_fp32(name, exported, calib_dir):
    out, manifest = exported(name)
    record = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
    assert record["path"] == "model.int8.onnx" and record["calibration"]["samples"] == 24
    assert record["calibration"]["synthetic"] is False and record["calibration"]["cache_reused"] is False
    assert record["parity"]["cosine"] >= 0.98 and record["parity"]["passed"], record["parity"]
    model = onnx.load(str(out / "model.int8.onnx"))
    assert _every_conv_is_qdq(model) and qdq_violations(model) == []
    assert record["qdq"]["conv"] == sum(n.op_type == "Conv" for n in model.graph.node) and record["qdq"]["gemm"] == 1
    assert (out / record["calibration"]["cache"]).is_file()
    assert record["high_precision"] == "fp16" and record["opset"] == 19  # the default
    _in_fp16_but_its_io(model)

    # parity on the real photographs, through the variant's preprocessing, judged by agreement
    report = idp.check_parity(name, export_dir=out, precisions="int8", images=calib_dir, samples=0)
    [row] = report.rows
    assert row.precision == "int8" and row.passed and row.diff.cosine >= 0.98, row.to_dict()


def test_residual_adds_keep_qdq_on_the_skip_input_only(exported):
    """Inception-ResNet: each residual Add takes the conv branch as it is (the convolution, then its bias in an Add)
    and the skip input through Q/DQ."""
    out, manifest = exported("inception_resnet_v2")
    model = onnx.load(str(out / "model.int8.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    constants = {i.name for i in model.graph.initializer}

    def through_bias(node):  # the convolution behind a bias Add (a computed tensor plus a constant)
        if node.op_type == "Add" and any(i in constants for i in node.input):
            return producer[next(i for i in node.input if i not in constants)]
        return node

    adds = [n for n in model.graph.node if n.op_type == "Add" and all(i in producer for i in n.input)]
    assert len(adds) == 40  # 10 Block35 + 20 Block17 + 10 Block8
    for add in adds:
        kinds = sorted(through_bias(producer[i]).op_type for i in add.input)
        assert kinds == ["Conv", "DequantizeLinear"], (add.name, kinds)
    assert not any(through_bias(producer.get(n.input[0], n)).op_type in ("Conv", "Gemm")
                   for n in model.graph.node if n.op_type == "QuantizeLinear")  # no Q/DQ on conv outputs
    record = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
    assert record["qdq"]["residual_add_skip_inputs"] == 40 and record["parity"]["cosine"] >= 0.98
    _in_fp16_but_its_io(model)


def test_the_fp16_form_agrees_with_the_fp32_form_in_a_stock_session(export_copy, calib_dir):
    """--int8-high-precision fp32 keeps quantize_static's float32 graph at the export's opset; the fp16 form (the
    default, from the same calibration) has each quantized node's bias in an Add after it, and agrees with it in a
    default onnxruntime.InferenceSession, whose passes computed the bias-in-Conv form wrong (forms.py)."""
    from inception_deploy.core.compare import difference
    from inception_deploy.export.quantize import DEFAULT_CALIB_SAMPLES, Int8Recipe, calibration_inputs, quantize_int8

    out = export_copy("googlenet")
    calibration = calibration_inputs(idp.get_spec("googlenet"), calib_dir, DEFAULT_CALIB_SAMPLES, synthetic=False)
    fp32_form, facts, _ = quantize_int8(onnx.load(str(out / "model.onnx")), calibration,
                                        Int8Recipe.of(high_precision="fp32"), cache_dir=out)
    assert facts["calibration"]["cache_reused"]  # the export's calibration: the two forms differ only in precision
    assert facts["high_precision"] == "fp32" and facts["opset"] == 18 and qdq_violations(fp32_form) == []
    kinds = _float_tensors(fp32_form)
    assert set(kinds.values()) == {"float32"}, kinds

    fp16_form = onnx.load(str(out / "model.int8.onnx"))
    fp32_types = {n.op_type for n in fp32_form.graph.node}
    assert {n.op_type for n in fp16_form.graph.node} == fp32_types | {"Cast", "Add"}  # the IO Casts, the bias Adds
    biased = [n.name for n in fp16_form.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2]
    assert biased == [] and sum(n.op_type in ("Conv", "Gemm") for n in fp16_form.graph.node) == 58
    x = calibration.batch
    expected = ort.InferenceSession(fp32_form.SerializeToString()).run(None, {"input": x})[0]
    actual = ort.InferenceSession(str(out / "model.int8.onnx")).run(None, {"input": x})[0]
    diff = difference(expected, actual)
    assert diff.cosine_centred >= 0.999, diff.to_dict()
    reference = ort.InferenceSession(str(out / "model.onnx")).run(None, {"input": x})[0]
    errors = [1 - difference(reference, logits).cosine_centred for logits in (expected, actual)]
    assert errors[1] <= 1.25 * errors[0] + 1e-4, errors  # each is as close to the fp32 model as the other


def test_calibration_cache_is_reused_and_synthetic_is_labelled(tmp_path, calib_dir, library_checkpoints):
    weights, _, _ = library_checkpoints("googlenet")
    first = idp.export_onnx("v1", weights=weights, int8=True, calib=calib_dir, calib_samples=8, out_dir=tmp_path)
    second = idp.export_onnx("v1", weights=weights, int8=True, calib=calib_dir, calib_samples=8, out_dir=tmp_path)
    one, two = (next(a for a in m["artifacts"] if a["precision"] == "int8") for m in (first, second))
    assert not one["calibration"]["cache_reused"] and two["calibration"]["cache_reused"]
    assert one["calibration"]["cache"] == two["calibration"]["cache"] and one["sha256"] == two["sha256"]
    assert len(list(tmp_path.glob("model.int8.calib-*.json"))) == 1

    # A cache whose ranges no calibration run records is discarded, named, rebuilt from the same images (the same
    # bytes), and the int8 model agrees; the warning is about the cache, not the images.
    cache = tmp_path / one["calibration"]["cache"]
    genuine = cache.read_bytes()
    ranges = json.loads(genuine)
    zero_width = {name: {**r, "highest": r["lowest"]} for name, r in ranges["data"].items()}
    absurd = {name: {**r, "lowest": {**r["lowest"], "data": [-1e30]}, "highest": {**r["highest"], "data": [1e30]}}
              for name, r in ranges["data"].items()}
    for data, reason in ((zero_width, "has a zero-width range"), (absurd, "has an absurd range")):
        cache.write_text(json.dumps({**ranges, "data": data}))
        manifest = idp.export_onnx("v1", weights=weights, int8=True, calib=calib_dir, calib_samples=8, out_dir=tmp_path)
        record = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
        assert not record["calibration"]["cache_reused"] and reason in record["calibration"]["cache_discarded"]
        warning = next(w for w in manifest["warnings"] if "calibration cache" in w)
        assert cache.name in warning and reason in warning and "discarded and rebuilt" in warning, warning
        assert "images" not in warning and cache.read_bytes() == genuine
        assert record["parity"]["passed"] and record["parity"]["cosine"] >= 0.98, record["parity"]

    result = runner.invoke(app, ["export", "v1", "--weights", str(weights), "--int8", "--calib-synthetic",
                                 "--calib-samples", "4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.stdout and "calibrated on SYNTHETIC inputs" in result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    calibration = next(a for a in manifest["artifacts"] if a["precision"] == "int8")["calibration"]
    assert calibration["synthetic"] is True and "SYNTHETIC" in calibration["source"]


def test_int8_arguments_are_checked_before_work(tmp_path):
    for args, fragment in [
        (["--int8"], "--int8 needs calibration images"),
        (["--calib", str(tmp_path)], "add --int8"),
        (["--int8", "--calib", str(tmp_path / "none")], "is not a directory"),
        (["--int8", "--calib", str(tmp_path)], "holds no readable image"),
        (["--int8", "--calib-synthetic", "--calib-method", "magic"], "--calib-method must be one of"),
    ]:
        result = runner.invoke(app, ["export", "v1", "--out", str(tmp_path / "o"), *args])
        assert result.exit_code == 2, result.output
        assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(HAS_TENSORRT and torch.cuda.is_available(), reason="TensorRT and a GPU are here: the missing path "
                                                                       "cannot be shown")
def test_enterprise_tensorrt_without_it_or_a_gpu_exits_3(export_copy):
    out = export_copy("googlenet")
    for args in (
        ["trt", "--compiler", "tensorrt", "--out", str(out)],
        ["trt", "v1", "--int8", "--dla-core", "0", "--out", str(out)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 3, result.output
        assert "pip install 'inception-deploy[tensorrt]'" in result.stderr or "no CUDA GPU" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["parity", "v1", "--dir", str(out), "--backends", "tensorrt"])
    assert result.exit_code == 3 and "TensorRT" in result.stderr
    assert sorted(p.name for p in out.iterdir() if "engine" in p.name) == []


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TENSORRT and torch.cuda.is_available()),
                    reason="needs `import tensorrt` and a CUDA GPU; enterprise TensorRT cannot be installed in this "
                           "workplace")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_build_and_parity(precision, export_copy, calib_dir):
    from inception_deploy.compile.engine import BuildOptions, build_engine

    out = export_copy("googlenet")
    manifest = build_engine(out, BuildOptions(precision=precision, compiler="tensorrt", opt_batch=8, max_batch=32))
    engine = manifest["artifacts"][-1]
    assert engine["kind"] == "tensorrt-engine" and engine["path"] == f"model.{precision}.engine"
    assert engine["compiler"]["name"] == "tensorrt" and engine["gpu"]["compute_capability"]
    if precision == "int8":
        assert set(engine["layers"]["conv_matmul"]) and all(
            k.startswith("int8") for k in engine["layers"]["conv_matmul"]
        )
    report = idp.check_parity("v1", export_dir=out, backends="tensorrt", precisions=precision, images=calib_dir)
    assert report.passed, report.to_dict()


def test_a_calibration_cache_that_is_a_directory_is_refused_before_calibrating(exported, tmp_path):
    import re

    from inception_deploy.core.errors import InputError
    from inception_deploy.export.quantize import Int8Recipe, calibration_inputs, quantize_int8

    out, _ = exported("googlenet")
    model = onnx.load(str(out / "model.onnx"))
    calibration = calibration_inputs(idp.get_spec("googlenet"), None, 1, synthetic=True)
    _, facts, _ = quantize_int8(model, calibration, Int8Recipe.of(), cache_dir=tmp_path)
    cache = tmp_path / facts["calibration"]["cache"]
    cache.mkdir()
    calibrated = []
    with pytest.raises(InputError, match=re.escape(f"the calibration cache {cache} is a directory: move it away")):
        quantize_int8(model, calibration, Int8Recipe.of(), cache_dir=tmp_path,
                      progress=lambda done, total: calibrated.append(done))
    assert calibrated == [] and cache.is_dir()
