"""The static rules an INT8 Q/DQ ONNX must keep for TensorRT's explicit quantization, checked on the file.

TensorRT's ONNX parser takes DequantizeLinear only on 8-bit (and narrower) inputs with zero point 0, and
fuses a Conv/Gemm with its Q/DQ inputs only when both its activation and its weight are quantized, the
weight per output channel. A file that breaks a rule is refused here, naming the node, before the
artifact is kept (export) or compiled (trt), instead of failing later in the parser or building slowly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..core.deps import lazy_import
from ..core.errors import CheckFailed

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)

MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear
QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Violation:
    node: str
    rule: str

    def __str__(self) -> str:
        return f"{self.node}: {self.rule}"


def qdq_violations(model: onnx.ModelProto) -> list[Violation]:
    """Every place where `model` breaks TensorRT's Q/DQ rules; empty when it keeps them all."""
    graph = model.graph
    found: list[Violation] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        found.append(Violation("model", f"opset {opset} < {MIN_OPSET}: per-channel Q/DQ needs opset 13 or later"))
    initializers = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in (n for n in graph.node if n.op_type in QDQ):
        found += [Violation(_label(node), rule) for rule in _qdq_node_problems(node, initializers, producers)]
    for node in (n for n in graph.node if n.op_type in ("Conv", "Gemm")):
        problems = _compute_node_problems(node, initializers, producers, consumers)
        found += [Violation(_label(node), rule) for rule in problems]
    return found


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name or node.output[0]}'"


def _qdq_node_problems(node: onnx.NodeProto, initializers: dict, producers: dict) -> list[str]:
    """A Q or DQ node: a constant zero point of 0, and (DQ) an int8 input."""
    problems = []
    if len(node.input) > 2 and node.input[2]:
        zero_point = initializers.get(node.input[2])
        if zero_point is None:
            problems.append("its zero point is computed, not a constant 0")
        elif np.any(onnx.numpy_helper.to_array(zero_point) != 0):
            problems.append("zero point is not 0 (TensorRT takes symmetric quantization only)")
    if node.op_type == "DequantizeLinear":
        dtype = _quantized_dtype(node.input[0], initializers, producers)
        if dtype != onnx.TensorProto.INT8:
            name = onnx.helper.tensor_dtype_to_np_dtype(dtype).name if dtype else "an unknown type"
            what = " (a quantized bias)" if dtype == onnx.TensorProto.INT32 else ""
            problems.append(f"dequantizes {name}{what}, not int8: TensorRT's parser takes only 8-bit and narrower "
                            "inputs")
    return problems


def _compute_node_problems(node: onnx.NodeProto, initializers: dict, producers: dict, consumers: dict) -> list[str]:
    """A Conv or Gemm: Q/DQ on its activation and (per channel) its weight, a float bias, an unquantized output. A node
    whose weight has no Q/DQ is left in high precision on purpose (export --eval's fall-back): TensorRT runs it in the
    precision of its tensors, dequantizing an activation it shares with quantized nodes (qdq_summary counts them)."""
    problems = []
    activation, weight = (producers.get(name) for name in node.input[:2])
    if weight is None or weight.op_type != "DequantizeLinear":
        return problems
    if activation is None or activation.op_type != "DequantizeLinear":
        problems.append("its activation input has no Q/DQ")
    problem = _per_channel_problem(node, weight, initializers)
    if problem:
        problems.append(problem)
    if len(node.input) > 2 and node.input[2]:
        bias = producers.get(node.input[2])
        if bias is not None and bias.op_type == "DequantizeLinear":
            problems.append("its bias is quantized: keep biases float")
    if any(c.op_type == "QuantizeLinear" for c in consumers.get(_biased_output(node, initializers, consumers), [])):
        problems.append("its output is quantized: leave Conv/Gemm outputs to TensorRT's fusion")
    return problems


def _biased_output(node: onnx.NodeProto, initializers: dict, consumers: dict) -> str:
    """The tensor a Conv/Gemm's result is carried on: its own output, or, where its bias is added after it (the
    TensorRT form in fp16, quantize._bias_after), that Add's."""
    readers = consumers.get(node.output[0], [])
    if len(readers) == 1 and readers[0].op_type == "Add" and any(i in initializers for i in readers[0].input):
        return readers[0].output[0]
    return node.output[0]


def check_qdq(model: onnx.ModelProto, what: str, fix: str | None = None) -> None:
    """CheckFailed (exit 1) naming the first offending node, when `model` breaks a rule."""
    found = qdq_violations(model)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise CheckFailed(f"{what} breaks TensorRT's Q/DQ rules at {found[0]}{more}" + (f": {fix}" if fix else ""))


def qdq_summary(model: onnx.ModelProto) -> dict:
    """What was quantized, for the manifest: counts of Q/DQ-fed Conv/Gemm and residual Adds."""
    producers = {out: node for node in model.graph.node for out in node.output}

    def dq_inputs(node) -> int:
        return sum(1 for i in node.input if producers.get(i) is not None and producers[i].op_type == "DequantizeLinear")

    nodes = model.graph.node
    return {
        "rules": "tensorrt-explicit-quantization",
        "conv": sum(1 for n in nodes if n.op_type == "Conv" and dq_inputs(n) >= 2),
        "gemm": sum(1 for n in nodes if n.op_type == "Gemm" and dq_inputs(n) >= 2),
        "residual_add_skip_inputs": sum(1 for n in nodes if n.op_type == "Add" and dq_inputs(n) == 1),
        # left in high precision (no Q/DQ on the weight): export --eval's fall-back
        "high_precision_conv_gemm": sum(1 for n in nodes if n.op_type in ("Conv", "Gemm")
                                        and not _weight_quantized(n, producers)),
    }


def _weight_quantized(node, producers: dict) -> bool:
    weight = producers.get(node.input[1]) if len(node.input) > 1 else None
    return weight is not None and weight.op_type == "DequantizeLinear"


def _quantized_dtype(name: str, initializers: dict, producers: dict) -> int | None:
    """The element type a DequantizeLinear reads: its initializer's, or what the QuantizeLinear writes."""
    if name in initializers:
        return initializers[name].data_type
    quantize = producers.get(name)
    if quantize is None or quantize.op_type != "QuantizeLinear":
        return None
    if len(quantize.input) > 2 and quantize.input[2] in initializers:
        return initializers[quantize.input[2]].data_type
    attributes = {a.name: a for a in quantize.attribute}
    if "output_dtype" in attributes and attributes["output_dtype"].i:
        return attributes["output_dtype"].i
    return onnx.TensorProto.UINT8  # the ONNX default without a zero point


def _per_channel_problem(node: onnx.NodeProto, dequantize: onnx.NodeProto, initializers: dict) -> str | None:
    weight = initializers.get(dequantize.input[0])
    scale = initializers.get(dequantize.input[1])
    if weight is None or scale is None:
        return "its weight is not a quantized constant"
    attributes = {a.name: a.i for a in node.attribute}
    # The output-channel axis: 0 for Conv and for Gemm with transB=1 ([N, K]); 1 for Gemm's [K, N].
    channel_axis = 1 if node.op_type == "Gemm" and not attributes.get("transB", 0) else 0
    axis = next((a.i for a in dequantize.attribute if a.name == "axis"), 1)
    channels = weight.dims[channel_axis]
    if len(scale.dims) != 1 or scale.dims[0] != channels:
        return f"its weight is quantized per tensor, not per output channel ({channels} scales on axis {channel_axis})"
    if axis % len(weight.dims) != channel_axis:
        return f"its weight is quantized along axis {axis}, not the output-channel axis {channel_axis}"
    return None
