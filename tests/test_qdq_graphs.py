"""The INT8 forms' graph mechanisms on small hand-made graphs: the bias moved after a quantized node computes the same
(shared biases, Gemm's beta, 1-D convolutions), which form a file is, and what stock ONNX Runtime cannot run."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inception_deploy.core.errors import InputError
from inception_deploy.export.forms import check_form, form_of, stock_ort_problems
from inception_deploy.export.fp16 import convert_to_fp16
from inception_deploy.export.quantize import _bias_after

RNG = np.random.default_rng(0)


def _dequantized(name: str, values: np.ndarray, scale: float, zero_type=np.int8):
    q = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
    inits = [numpy_helper.from_array(q, f"{name}_q"), numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
             numpy_helper.from_array(np.array(0, zero_type), f"{name}_z")]
    return inits, helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name])


def _toy(opset: int = 17) -> onnx.ModelProto:
    """Two 1-D convolutions with Q/DQ weights sharing one bias; a Gemm (transB, alpha 0.7, beta 0.5) with its own."""
    inits = [numpy_helper.from_array(RNG.normal(size=8).astype(np.float32), "b"),
             numpy_helper.from_array(RNG.normal(size=5).astype(np.float32), "bg")]
    nodes = []
    for name, shape in (("w1", (8, 3, 3)), ("w2", (8, 3, 3)), ("wg", (5, 8))):
        made, node = _dequantized(name, RNG.normal(size=shape).astype(np.float32), 0.02)
        inits += made
        nodes.append(node)
    inits += [numpy_helper.from_array(np.array(0.05, np.float32), "a_s"), numpy_helper.from_array(np.array(0, np.int8),
                                                                                                 "a_z")]

    def activation(name: str) -> list[onnx.NodeProto]:  # a Q/DQ pair on a computed tensor
        return [helper.make_node("QuantizeLinear", [name, "a_s", "a_z"], [f"{name}_q"]),
                helper.make_node("DequantizeLinear", [f"{name}_q", "a_s", "a_z"], [f"{name}_dq"])]

    nodes += [*activation("x"),
              helper.make_node("Conv", ["x_dq", "w1", "b"], ["y1"], name="c1"),
              helper.make_node("Conv", ["x_dq", "w2", "b"], ["y2"], name="c2"),
              helper.make_node("GlobalAveragePool", ["y1"], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["p"]), *activation("p"),
              helper.make_node("Gemm", ["p_dq", "wg", "bg"], ["g"], name="gemm", transB=1, alpha=0.7, beta=0.5)]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("y1", [2, 8, 8]),
                                                                                    ("y2", [2, 8, 8]), ("g", [2, 5]))]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 10])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options).run(None, {"x": x})


def test_a_bias_moved_after_its_node_computes_the_same():
    model = _toy()
    x = RNG.normal(size=(2, 3, 10)).astype(np.float32)
    before = _run(model, x)
    moved = _bias_after(onnx.ModelProto.FromString(model.SerializeToString()))
    onnx.checker.check_model(moved, full_check=True)
    for expected, got in zip(before, _run(moved, x)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert [n.name for n in moved.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2] == []
    assert sorted(i.name for i in moved.graph.initializer if i.name.endswith("_after")) == ["b_after", "bg_after"]
    assert list(next(i for i in moved.graph.initializer if i.name == "b_after").dims) == [8, 1]  # over a 1-D map
    gemm = next(n for n in moved.graph.node if n.op_type == "Gemm")
    assert {a.name for a in gemm.attribute} == {"transB", "alpha"}  # beta went with the bias it scaled


def test_stock_onnx_runtime_problems_are_named_and_the_moved_bias_has_none():
    half = convert_to_fp16(_toy(19), keep_io_types=True)
    problems = stock_ort_problems(half)
    assert len(problems) == 3 and all("WeightBiasQuantization" in p for p in problems), problems
    assert stock_ort_problems(convert_to_fp16(_bias_after(_toy(19)), keep_io_types=True)) == []
    assert stock_ort_problems(_toy(19)) == []  # float32 scales: the pass computes the int32 bias right
    at_21 = _toy(21)
    assert any("opset 21" in p for p in stock_ort_problems(at_21))  # its int8 QuantizeLinear


def test_which_form_a_file_is(tmp_path):
    assert form_of(_toy()) == "int8"
    uint8 = _toy()
    uint8.graph.node.append(helper.make_node("QuantizeLinear", ["y1", "w1_s"], ["y1_q"]))  # no zero point: uint8
    assert form_of(uint8) == "int8-cpu"
    constant = _toy()
    constant.graph.node.extend([
        helper.make_node("Constant", [], ["zp"], value=numpy_helper.from_array(np.array(128, np.uint8))),
        helper.make_node("QuantizeLinear", ["y1", "w1_s", "zp"], ["y1_q"])])
    assert form_of(constant) == "int8-cpu"
    plain = _toy()
    kept = [n for n in plain.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    del plain.graph.node[:]
    plain.graph.node.extend(kept)
    assert form_of(plain) is None
    path = tmp_path / "model.int8-cpu.onnx"
    onnx.save(_toy(), path)
    with pytest.raises(InputError, match="is the int8 form for TensorRT and TensorRT-RTX .* --int8-form cpu"):
        check_form(path, "int8-cpu", "googlenet")
    check_form(path, "int8", "googlenet")
    check_form(path, "fp32", "googlenet")  # not an int8 precision: nothing to check
