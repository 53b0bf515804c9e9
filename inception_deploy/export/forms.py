"""The INT8 ONNX forms, each made for the runtime that executes it, as data; which form a file is; what stock
ONNX Runtime needs of a Q/DQ file to compute it right.

- `tensorrt` (precision `int8`, model.int8.onnx): TensorRT's explicit quantization (qdq_rules.py). Symmetric int8
  activations, per-channel symmetric int8 weights, zero points 0, Q/DQ on the inputs of Conv/Gemm (and on the skip
  input of residual Adds) only, float biases, everything between the Q/DQ pairs in fp16 (or fp32). TensorRT fuses
  each Q/DQ'd convolution with its epilogue. ONNX Runtime computes it right too (parity checks it there, with its
  default options), but slowly on a CPU: with no Q/DQ on a convolution's output, its CPU provider cannot fuse the
  convolution into an integer kernel, and it runs the fp16 parts through Casts.
- `cpu` (precision `int8-cpu`, model.int8-cpu.onnx): ONNX Runtime's own form for CPUs, as onnxruntime.quantization
  recommends for x86 (with VNNI; --int8-reduce-range without it): QDQ, uint8 asymmetric activations, per-channel
  int8 weights, int32 biases, Q/DQ on the inputs and outputs of every operator it quantizes, with its defaults
  otherwise. ONNX Runtime's CPU provider fuses DQ -> Conv -> Q
  into QLinearConv (Gemm into QGemm, Concat, pooling, Add and Mul into their QLinear kernels): integer arithmetic
  end to end (cpu_kernels counts it). TensorRT's parser refuses it (uint8 activations, int32 biases).
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..core.artifacts import export_command
from ..core.deps import lazy_import, require
from ..core.errors import CheckFailed, InputError, first_line

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Form:
    name: str  # export --int8-form
    precision: str  # the artifact's precision: model.<precision>.onnx, --precision everywhere
    made_for: str
    activation_type: str  # onnxruntime.quantization.QuantType's member
    options: tuple[tuple[str, object], ...]  # quantize_static's extra_options
    op_types: tuple[str, ...] | None  # quantize_static's op_types_to_quantize (None: every operator it quantizes)
    high_precisions: tuple[str, ...]  # what may compute between the Q/DQ pairs (--int8-high-precision), default first

    def extra_options(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in self.options}


INT8_FORMS = {
    form.name: form
    for form in (
        Int8Form("tensorrt", "int8", "TensorRT and TensorRT-RTX (explicit quantization)", "QInt8",
                 (("ActivationSymmetric", True), ("WeightSymmetric", True), ("QuantizeBias", False),
                  ("OpTypesToExcludeOutputQuantization", ("Conv", "Gemm", "Add"))),
                 ("Conv", "Gemm", "Add"), ("fp16", "fp32")),
        # onnxruntime.quantization's guidance for x86 CPUs (uint8 activations, int8 weights); ARM runs it too
        Int8Form("cpu", "int8-cpu", "ONNX Runtime's CPU provider (integer kernels)", "QUInt8",
                 (), None, ("fp32",)),
    )
}
FORM_OF_PRECISION = {form.precision: form for form in INT8_FORMS.values()}


def parse_forms(text: str | list[str] | tuple[str, ...]) -> tuple[Int8Form, ...]:
    """`--int8-form tensorrt`, `cpu`, or both (comma-separated), as forms; InputError naming an unknown one."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in INT8_FORMS]
    if unknown or not names:
        raise InputError(f"--int8-form must be {', '.join(INT8_FORMS)} or both (comma-separated), not "
                         f"'{', '.join(unknown) or text}'")
    return tuple(INT8_FORMS[n] for n in dict.fromkeys(names))


def form_of(model: onnx.ModelProto) -> str | None:
    """The precision of a Q/DQ model's form: 'int8-cpu' when it holds what only ONNX Runtime's CPU form has (uint8
    quantized tensors, int32 biases), 'int8' for the others; None for a model with no Q/DQ. A zero point may be an
    initializer or a Constant node; a QuantizeLinear without one writes uint8 (before opset 21's output_dtype)."""
    graph = model.graph
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        return None
    types = {i.name: i.data_type for i in graph.initializer}
    types.update({n.output[0]: a.t.data_type for n in graph.node if n.op_type == "Constant"
                  for a in n.attribute if a.name == "value"})
    cpu_only = (onnx.TensorProto.UINT8, onnx.TensorProto.INT32)
    for node in qdq:
        zero_point = node.input[2] if len(node.input) > 2 else ""
        attributes = {a.name: a.i for a in node.attribute}
        if node.op_type == "QuantizeLinear" and not zero_point:
            written = attributes.get("output_dtype") or onnx.TensorProto.UINT8
        else:
            written = types.get(zero_point)
        if written in cpu_only or (node.op_type == "DequantizeLinear" and types.get(node.input[0]) in cpu_only):
            return "int8-cpu"
    return "int8"


def check_form(path: Path, precision: str, variant: str | None, *, stock_ort: bool = True) -> None:
    """InputError (exit 2) when the int8 file at `path`, used as `precision`, is the other form, or (stock_ort) one
    that a default onnxruntime session computes wrong: a file an earlier version of this tool wrote."""
    if precision not in FORM_OF_PRECISION:
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX: the runtime that loads it names the problem
        return
    found = form_of(model)
    make = f"`{export_command(variant or 'VARIANT', precision)}`"
    if found is not None and found != precision:
        wanted, got = FORM_OF_PRECISION[precision], FORM_OF_PRECISION[found]
        raise InputError(f"{path} is the int8 form for {got.made_for} ({found}), not the one for {wanted.made_for} "
                         f"({precision}): export that form with {make}")
    problems = stock_ort_problems(model) if stock_ort else []
    if problems:
        raise InputError(f"{path} computes wrong in a default onnxruntime session, as written by an earlier "
                         f"inception-deploy ({problems[0]}): export it again with {make}")


def stock_ort_problems(model: onnx.ModelProto) -> list[str]:
    """What makes a Q/DQ file compute wrong, or not load, in a default onnxruntime.InferenceSession (seen with
    onnxruntime 1.31 and 1.32; each checked on every int8 file before it is written, and before one is used):
    - a Conv/Gemm with Q/DQ inputs whose scales are float16 and a bias of its own: ORT's WeightBiasQuantization pass
      (basic level, every provider) requantizes that bias to int32 as bias / (input scale x weight scale), computed
      in the scales' type; in float16 the quotient overflows 65504 (googlenet: 46 of 57 convolutions, up to 3.4e5)
      and the biases become garbage (centred cosine 0.82, top-1 agreement 0 of 8). The TensorRT form therefore adds
      each quantized node's bias after it, in an Add that TensorRT fuses back into the convolution.
    - int8 (signed) QuantizeLinear at opset 21 or later: ORT's QDQ propagation writes QuantizeLinear-21 nodes with
      output_dtype=INT8, which its S8-to-U8 pass (extended level, CPU) then gives a uint8 zero point, and the session
      fails to load (inception_resnet_v2, float16 and float32 scales alike: "output_dtype INT8 does not match
      y_zero_point type UINT8"). Opset 19, the first with float16 scales, has no output_dtype.
    """
    graph = model.graph
    types = {i.name: i.data_type for i in graph.initializer}
    half_dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and len(n.input) > 1
               and types.get(n.input[1]) == onnx.TensorProto.FLOAT16}
    producers = {out for node in graph.node for out in node.output}
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= 21 and any(n.op_type == "QuantizeLinear" and len(n.input) > 2 and
                           types.get(n.input[2]) == onnx.TensorProto.INT8 for n in graph.node):
        problems.append(f"int8 QuantizeLinear at opset {opset}: ONNX Runtime's QDQ propagation and S8-to-U8 passes "
                        "write a QuantizeLinear that fails to load; use opset 19 or 20")
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] and \
                node.input[0] in half_dq and node.input[1] in half_dq and node.input[2] not in producers:
            problems.append(f"{node.op_type} '{node.name}' has float16 Q/DQ inputs and a bias of its own: ONNX "
                            "Runtime's WeightBiasQuantization requantizes it in float16, which overflows")
    return problems


def cpu_kernels(model: onnx.ModelProto) -> dict:
    """How ONNX Runtime's CPU provider runs the convolutions and GEMMs of `model`: its optimised graph (extended
    level, where the QDQ fusions run; a default session goes further, to ORT_ENABLE_ALL's layout passes) counted.
    `integer` is how many of the file's Conv/Gemm became integer kernels (QLinearConv, QGemm, ConvInteger,
    MatMulInteger), `of` how many there are."""
    ort = require("onnxruntime")
    before = Counter(n.op_type for n in model.graph.node)
    with tempfile.TemporaryDirectory(prefix="inception-deploy-ort-graph-") as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            after = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
        except Exception as err:  # noqa: BLE001 - ORT's own exception types are not RuntimeError
            raise CheckFailed(f"ONNX Runtime's CPU provider cannot load the int8-cpu model: {first_line(err)}") \
                from None
    integer = {op: after[op] for op in ("QLinearConv", "QGemm", "ConvInteger", "MatMulInteger") if after[op]}
    return {"by": "onnxruntime CPU provider, optimised graph (extended level)", "of": before["Conv"] + before["Gemm"],
            "integer": sum(integer.values()), "kernels": integer,
            "float": after["Conv"] + after["Gemm"] + after["FusedConv"] + after["FusedGemm"]}
