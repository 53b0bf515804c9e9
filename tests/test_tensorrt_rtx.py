"""TensorRT-RTX, for real, on the CPU: every variant's fp16 and int8 ONNX parsed and compiled ahead of time;
the Q/DQ rules that TensorRT's parser enforces; the options each compiler refuses. Running an engine needs an
RTX-class GPU: that test is marked gpu."""

import hashlib
import json
import platform
import sys

import numpy as np
import onnx
import pytest
import torch
from conftest import VARIANTS
from onnx import TensorProto, helper
from typer.testing import CliRunner

import inception_deploy as idp
from inception_deploy.cli import app
from inception_deploy.compile.engine import BuildOptions, build_engine
from inception_deploy.core.compilers import RTX_PORTABLE, gpu_capability
from inception_deploy.core.errors import BackendMissing, CheckFailed
from inception_deploy.export.qdq_rules import check_qdq, qdq_violations
from inception_deploy.models.samples import image_batch

runner = CliRunner()
pytestmark = pytest.mark.slow
if sys.platform == "linux" and platform.machine() == "x86_64":
    import tensorrt_rtx  # in the dev extra here: a failed install must fail the suite, not skip it
else:
    tensorrt_rtx = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx wheels exist for Linux x86-64 and Windows")


def _one_line_error(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("name", VARIANTS)
def test_fp16_and_int8_engines_build_on_the_cpu(name, export_copy):
    out = export_copy(name)
    int8_onnx = onnx.load(str(out / "model.int8.onnx"))
    assert qdq_violations(int8_onnx) == []

    for precision in ("fp16", "int8"):
        manifest = build_engine(
            out, BuildOptions(precision=precision, compiler="tensorrt-rtx", opt_batch=8, max_batch=32)
        )
        engine = manifest["artifacts"][-1]
        path = out / f"model.{precision}.rtx.engine"
        assert (
            engine["path"] == path.name and engine["kind"] == "tensorrt-rtx-engine" and engine["precision"] == precision
        )
        assert engine["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and engine["bytes"] > 1_000_000
        assert engine["compiler"] == {"name": "tensorrt-rtx", "version": tensorrt_rtx.__version__}
        assert engine["targets"] == list(RTX_PORTABLE) and engine["strongly_typed"] is True
        assert engine["source"]["path"] == f"model.{precision}.onnx"
        assert engine["profile"] == {"input": "input", "min": 1, "opt": 8, "max": 32}
        if not torch.cuda.is_available():
            assert engine["built_on"] == "cpu"
        # every Conv and Gemm of the ONNX it was built from is one conv/matmul layer, those Myelin fuses included
        # (a 1x1 Conv run as '__myl_FcAddRelu', the classifier as '__myl_FcAddCast'), in the engine's precision
        source = onnx.load(str(out / f"model.{precision}.onnx"), load_external_data=False)
        layers = engine["layers"]["conv_matmul"]
        assert sum(layers.values()) == sum(n.op_type in ("Conv", "Gemm") for n in source.graph.node), layers
        if precision == "int8":  # every convolution and the classifier run int8 x int8, their epilogues in fp16
            assert set(layers) == {"int8 x int8 -> fp16"}, layers
        else:  # the classifier's fp32 output is its fused output cast
            assert set(layers) <= {"fp16 x fp16 -> fp16", "fp16 x fp16 -> fp32"}, layers
        # and nothing else computes in fp32 but the layers that read the graph input and write its output
        assert engine["layers"]["fp32_layers"] == 0, engine["layers"]
        # stream markers ('signal', 'wait') are no layers: only Myelin's shape call has no input
        assert engine["layers"]["by_input_precision"].get("none", 0) <= 1, engine["layers"]
    assert json.loads((out / "manifest.json").read_text())["artifacts"][-1] == engine


# Lines of a real 'Layers:' message (googlenet fp16, TensorRT-RTX 1.7), Strides and Formats left out; each ends
# with a backslash, which joins it to the next, as in the one-line-a-layer original.
LAYER_LOG = """Layers:
Name: __myl_CastMulAddReplConc_myl0_1, LayerType: kgen, Inputs: [ { Name: input, Dimensions: [-1,3,224,224], \
Datatype: Float }], Constants: [ { Name: __mye4509_dconst_myl0, Dimensions: [1,3,1,1], Datatype: Half }], Outputs: [ \
{ Name: relu.1_38_myl0, Dimensions: [-1,4,224,224], Datatype: Half }], TacticName: __myl_CastMulAddReplConc_0xcdcc, \
StreamId: 0, Metadata: [ONNX Layer: graph_input_cast0][ONNX Layer: node_mul][ONNX Layer: node_Conv_822]
Name: node_Conv_824_myl0_4, LayerType: correlation, Inputs: [ { Name: relu_1.1_40_myl0, Dimensions: [-1,64,56,56], \
Datatype: Half }], Constants: [ { Name: __mye3763dconst_myl0, Dimensions: [64,64,1,1], Datatype: Half }, { Name: \
__mye7279_const_myl0, Dimensions: [1], Datatype: Float }], Outputs: [ { Name: relu_2.1_41_myl0, Dimensions: \
[-1,64,56,56], Datatype: Half }], TacticName: __myelin_CASK_STUB, StreamId: 0, Metadata: [ONNX Layer: node_Conv_824]
Name: __mye6637_myl0_7, LayerType: signal, Inputs: [], Constants: [], Outputs: [], TacticName: , StreamId: 0, \
EventId: 1, Metadata:
Name: __mye6639_myl0_8, LayerType: wait, Inputs: [], Constants: [], Outputs: [], TacticName: , StreamId: 3, EventId: \
1, Metadata:
Name: __myl_FcAddRelu_myl0_177, LayerType: runtime_fusion, Inputs: [ { Name: __myln_k_arg__bb1_102_myl0, Dimensions: \
[-1,832,49], Datatype: Half }], Constants: [ { Name: __mye4478_dconst_myl0, Dimensions: [1,384,1], Datatype: Half }, { \
Name: __mye4473_dconst_myl0, Dimensions: [1,384,832], Datatype: Half }], Outputs: [ { Name: \
__myln_k_arg__bb1_103_myl0, Dimensions: [-1,384,49], Datatype: Half }], TacticName: , StreamId: 3, Metadata: \
[ONNX Layer: node_Conv_924][ONNX Layer: node_relu_51]__gemm_from_conv1x1
Name: __myl_FcAddCast_myl0_200, LayerType: runtime_fusion, Inputs: [ { Name: mean.1_myl0, Dimensions: [-1,1024], \
Datatype: Half }], Constants: [ { Name: __mye3554_dconst_myl0, Dimensions: [1,1000], Datatype: Half }, { Name: \
fc.weight_constantHalf_myl0, Dimensions: [1024,1000], Datatype: Half }], Outputs: [ { Name: logits, Dimensions: \
[-1,1000], Datatype: Float }], TacticName: , StreamId: 0, Metadata: [ONNX Layer: node_linear][ONNX Layer: \
graph_output_cast0]
"""


def test_the_layer_list_counts_fused_gemms_and_not_stream_markers():
    """Myelin's fused GEMMs are conv/matmul layers, its epilogue kernels (whose metadata names a Conv too) are not,
    and its stream markers are no layers at all."""
    from inception_deploy.compile.layers import logged_layers

    summary = logged_layers([(None, LAYER_LOG)])
    assert summary["conv_matmul"] == {"fp16 x fp16 -> fp16": 2, "fp16 x fp16 -> fp32": 1}, summary
    assert summary["total"] == 4 and summary["stream_markers"] == 2
    assert summary["by_input_precision"] == {"fp16": 3, "fp32": 1}, summary
    assert summary["fp32_layers"] == 0 and summary["fp32_layer_names"] == [], summary


def test_trt_command_on_a_machine_without_a_gpu(export_copy, library_checkpoints, calib_dir):
    """The README's `trt VARIANT --int8`: auto picks TensorRT-RTX here, and the summary shows what it built: the
    int8 convolutions with their epilogues in fp16, nothing in fp32 but the graph IO; with the int8 model kept in
    fp32 around its Q/DQ pairs (export --int8-high-precision fp32), the epilogues in fp32."""
    out = export_copy("googlenet")
    result = runner.invoke(app, ["trt", "v1", "--int8", "--target", "sm86,8.9", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "model.int8.rtx.engine: tensorrt-rtx" in result.stdout and "for sm86, sm89" in result.stdout
    assert "conv/matmul: 58 int8 x int8 -> fp16" in result.stdout, result.stdout
    assert "fp32 layers besides conv/matmul and graph IO: 0\n" in result.stdout, result.stdout
    engine = json.loads((out / "manifest.json").read_text())["artifacts"][-1]
    assert engine["targets"] == ["sm86", "sm89"] and engine["kind"] == "tensorrt-rtx-engine"

    weights, _, _ = library_checkpoints("googlenet")
    result = runner.invoke(app, ["export", "v1", "--weights", str(weights), "--int8", "--calib", str(calib_dir),
                                 "--int8-high-precision", "fp32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = next(a for a in json.loads((out / "manifest.json").read_text())["artifacts"] if a["precision"] == "int8")
    assert record["high_precision"] == "fp32" and record["opset"] == 18 and record["calibration"]["cache_reused"]
    result = runner.invoke(app, ["trt", "v1", "--int8", "--target", "sm86", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "conv/matmul: 58 int8 x int8 -> fp32" in result.stdout, result.stdout
    layers = json.loads((out / "manifest.json").read_text())["artifacts"][-1]["layers"]
    assert layers["fp32_layers"] > 0 and len(layers["fp32_layer_names"]) == 5, layers
    assert all(name.startswith("__myl_MulAdd") for name in layers["fp32_layer_names"]), layers  # the epilogues
    assert f"fp32 layers besides conv/matmul and graph IO: {layers['fp32_layers']}, e.g. __myl_MulAdd" in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--compiler", "tensorrt-rtx", "--target", "sm90"], "sm90 (H100/H200, Hopper) is not a TensorRT-RTX target"),
    (["--target", "sm_90"], "is not a TensorRT-RTX target"),
    (["--target", "sm99"], "unknown --target 'sm99'"),
    (["--compiler", "tensorrt-rtx", "--dla-core", "0"], "--dla-core is refused with --compiler tensorrt-rtx"),
    (["--compiler", "tensorrt-rtx", "--version-compatible"], "--version-compatible is refused"),
    (["--compiler", "tensorrt-rtx", "--timing-cache", "t.cache"], "--timing-cache is refused"),
    (["--compiler", "tensorrt-rtx", "--builder-opt-level", "3"], "--builder-opt-level is refused"),
    (["--compiler", "tensorrt", "--target", "sm86"], "--target is refused with --compiler tensorrt: enterprise"),
    (["--dla-core", "0", "--target", "sm86"], "pick one with --compiler"),
    (["--compiler", "magic"], "--compiler must be one of auto, tensorrt, tensorrt-rtx"),
    (["--fp16", "--int8"], "pass one of --fp16, --int8, --fp32"),
    (["--min-batch", "8", "--max-batch", "4"], "batch profile"),
])
def test_refused_options_exit_2_before_any_work(args, fragment, export_copy):
    out = export_copy("googlenet")  # a real export: only the refusal stands between it and a build
    manifest = (out / "manifest.json").read_text()
    result = runner.invoke(app, ["trt", "v1", *args, "--out", str(out)])
    _one_line_error(result, 2, fragment)
    assert not list(out.glob("*.engine")) and (out / "manifest.json").read_text() == manifest


def test_an_unknown_variant_is_exit_2_whatever_is_installed():
    _one_line_error(runner.invoke(app, ["trt", "v9", "--compiler", "tensorrt"]), 2, "unknown variant 'v9'")


def test_a_variant_that_is_not_the_export_in_out_is_refused(export_copy):
    out = export_copy("googlenet")
    _one_line_error(runner.invoke(app, ["trt", "v3", "--out", str(out)]), 2, "holds an export of googlenet, not "
                                                                             "inception_v3")


def _listed(out, name: str, precision: str) -> None:
    """Put out/name in the manifest, as the export would have (path, sha256)."""
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] != name] + [{
        "path": name, "kind": "onnx", "precision": precision,
        "sha256": hashlib.sha256((out / name).read_bytes()).hexdigest()}]
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_an_operator_tensorrt_lacks_fails_in_one_line_naming_the_node(export_copy):
    out = export_copy("googlenet")
    (out / "model.onnx").unlink()  # a hard link: replace it, never write through it
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["input"], ["logits"], name="frobnicate_7", domain="example.custom")], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])])
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("example.custom", 1)]),
        str(out / "model.onnx"),
    )
    _listed(out, "model.onnx", "fp32")
    line = _one_line_error(
        runner.invoke(app, ["trt", "v1", "--fp32", "--compiler", "tensorrt-rtx", "--out", str(out)]),
        1,
        "TensorRT-RTX's ONNX parser rejects model.onnx",
        "node 'frobnicate_7' (Frobnicate)",
    )
    assert "Traceback" not in line and not list(out.glob("*.engine"))


def test_an_int8_file_with_int32_biases_is_named_and_refused(export_copy, calib_dir):
    """What onnxruntime's quantizer writes by default (and this tool wrote before): int32 Conv biases. The rules name
    the node; trt refuses it, as ONNX Runtime's CPU form (int32 biases), with what to run instead."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    out = export_copy("googlenet")
    batch = image_batch(idp.get_spec("googlenet"), calib_dir)[0][:2].numpy()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": batch[i:i + 1]} for i in range(len(batch))])

        def get_next(self):
            return next(self.items, None)

    (out / "model.int8.onnx").unlink()
    quantize_static(str(out / "model.onnx"), str(out / "model.int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=["Conv", "Gemm"])
    violations = qdq_violations(onnx.load(str(out / "model.int8.onnx")))
    assert any("int32 (a quantized bias)" in v.rule for v in violations), violations[:3]
    with pytest.raises(CheckFailed, match="breaks TensorRT's Q/DQ rules at DequantizeLinear .*int32 .a quantized bias"):
        check_qdq(onnx.load(str(out / "model.int8.onnx")), "model.int8.onnx")
    _listed(out, "model.int8.onnx", "int8")
    _one_line_error(runner.invoke(app, ["trt", "v1", "--int8", "--out", str(out)]), 2,
                    "model.int8.onnx is the int8 form for ONNX Runtime's CPU provider",
                    "`inception-deploy export googlenet --int8 --calib DIR`")
    assert not list(out.glob("*.engine"))


def test_the_rules_name_per_tensor_weights_and_nonzero_zero_points(exported):
    out, _ = exported("googlenet")
    model = onnx.load(str(out / "model.int8.onnx"))
    initializers = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight_dq = producers[conv.input[1]]
    scale = initializers[weight_dq.input[1]]
    scale.CopyFrom(
        onnx.numpy_helper.from_array(np.array(onnx.numpy_helper.to_array(scale).max(), np.float32), scale.name)
    )
    activation_q = producers[producers[conv.input[0]].input[0]]
    zero_point = initializers[activation_q.input[2]]
    zero_point.CopyFrom(onnx.numpy_helper.from_array(np.array(3, np.int8), zero_point.name))
    found = [str(v) for v in qdq_violations(model)]
    assert any(f"Conv '{conv.name}'" in v and "per tensor" in v for v in found), found
    assert any(f"QuantizeLinear '{activation_q.name}'" in v and "zero point is not 0" in v for v in found), found


def test_a_changed_source_onnx_is_refused(export_copy):
    out = export_copy("googlenet")
    data = (out / "model.fp16.onnx").read_bytes()
    (out / "model.fp16.onnx").unlink()
    (out / "model.fp16.onnx").write_bytes(data + b"\0")
    _one_line_error(runner.invoke(app, ["trt", "v1", "--out", str(out)]), 2, "model.fp16.onnx changed since it was "
                                                                             "exported")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the missing-GPU path cannot be shown "
                                                      "here")
def test_running_an_rtx_engine_without_a_gpu_exits_3(export_copy):
    out = export_copy("googlenet")
    build_engine(out, BuildOptions(precision="fp16", compiler="tensorrt-rtx", opt_batch=4, max_batch=8))
    result = runner.invoke(app, ["parity", "v1", "--dir", str(out), "--backends", "tensorrt-rtx"])
    _one_line_error(result, 3, "TensorRT-RTX runs engines on a CUDA GPU and none is visible here")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: runs on the lent device")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_rtx_engine_on_this_gpu(precision, export_copy, calib_dir):
    """On an RTX target, parity passes; on anything else (H100: sm90), the runner refuses in one line, exit 3."""
    out = export_copy("googlenet")
    build_engine(out, BuildOptions(precision=precision, compiler="tensorrt-rtx", opt_batch=8, max_batch=32))
    if gpu_capability() in RTX_PORTABLE:
        report = idp.check_parity("v1", export_dir=out, backends="tensorrt-rtx", precisions=precision, images=calib_dir)
        assert report.passed, report.to_dict()
        assert (out / f"model.{precision}.rtx.engine.runtime-cache").is_file()
    else:
        with pytest.raises(BackendMissing, match="is not a TensorRT-RTX target|is not among"):
            idp.check_parity("v1", export_dir=out, backends="tensorrt-rtx", precisions=precision, images=calib_dir)


def test_ctrl_c_during_a_build_stops_it_and_keeps_earlier_artifacts(export_copy, monkeypatch):
    """TensorRT catches a KeyboardInterrupt raised in its callbacks and builds on; the interrupt must win."""
    import os
    import signal
    import threading

    out = export_copy("googlenet")
    build_engine(out, BuildOptions(precision="int8", compiler="tensorrt-rtx", opt_batch=4, max_batch=8))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def press_ctrl_c(label: str) -> None:
        if label.startswith("building"):  # 0.1 s into build_serialized_network, inside the native call
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()

    with pytest.raises(KeyboardInterrupt):
        build_engine(out, BuildOptions(precision="int8", compiler="tensorrt-rtx", opt_batch=8, max_batch=16),
                     on_step=press_ctrl_c)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # byte-identical, no temporary files

    import inception_deploy.cli.trt as engine  # the command calls build_engine by the name it imported

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "build_engine", interrupted)
    _one_line_error(runner.invoke(app, ["trt", "v1", "--int8", "--out", str(out)]), 130, "interrupted: nothing was "
                                                                                         "written")


def test_fp32_engines_are_fp32_unless_tf32_is_asked_for(export_copy):
    """TensorRT enables TF32 by default, which would make an "fp32" engine TF32; the manifest says which it is."""
    out = export_copy("googlenet")
    for extra, expected in (([], False), (["--tf32"], True)):
        result = runner.invoke(
            app,
            [
                "trt",
                "v1",
                "--fp32",
                "--compiler",
                "tensorrt-rtx",
                "--opt-batch",
                "1",
                "--max-batch",
                "2",
                *extra,
                "--out",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text())
        record = next(a for a in manifest["artifacts"] if a["path"] == "model.fp32.rtx.engine")
        assert record["tf32"] is expected


def test_a_missing_fp16_onnx_is_made_and_lands_with_its_engine(export_copy):
    """trt --fp16 without model.fp16.onnx: made in memory, verified, parsed from memory, then written in the same
    commit as the engine, which records it as its source."""
    from inception_deploy.core.artifacts import sha256_of

    out = export_copy("googlenet")
    (out / "model.fp16.onnx").unlink()
    build_engine(out, BuildOptions(precision="fp16", compiler="tensorrt-rtx", opt_batch=2, max_batch=4))
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {a["path"]: a for a in manifest["artifacts"]}
    made, engine = entries["model.fp16.onnx"], entries["model.fp16.rtx.engine"]
    assert made["sha256"] == sha256_of(out / "model.fp16.onnx") and made["parity"]["passed"]
    assert engine["source"] == {"path": "model.fp16.onnx", "sha256": made["sha256"]}
    assert engine["sha256"] == sha256_of(out / "model.fp16.rtx.engine")
