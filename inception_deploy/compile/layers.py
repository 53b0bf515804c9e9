"""In which precision each layer of an engine runs, as the compiler reports it, summarised for the manifest.

TensorRT-RTX prints its final layer list (one line a layer) when built with ProfilingVerbosity.DETAILED
and a verbose logger, which needs no GPU; enterprise TensorRT's engine inspector gives the same facts as
JSON, from an engine deserialized on the GPU it was built on.

Both lists hold more than layers, and Myelin (the compiler inside both) renames what it fuses:
- cross-stream event markers, LayerType 'signal' and 'wait', with no tensors: not layers, left out of every count;
- convolutions and GEMMs that Myelin fuses with their epilogue run as LayerType 'runtime_fusion', named after
  the ONNX ops they fuse: '__myl_FcAddRelu_myl0_177' (a 1x1 convolution run as a GEMM, + bias + ReLU),
  '__myl_FcAddCast_myl0_200' (the classifier, + bias + the output cast). Their 'Fc', 'Gemm', 'Conv' or 'MatMul'
  makes them conv/matmul layers, in the precision of their input and weights like any other.
With both, every Conv and Gemm of the ONNX is one conv/matmul layer (the tests check it for every variant, fp16 and
int8); the epilogue kernels whose metadata also names a Conv ('__myl_MulAddRelu…', scale, bias, ReLU, quantize) are not.

A layer's signature is 'input x weights -> output', in the precisions of its first input, its weights (the largest
constant) and its first output, with one rule for Myelin's int8 convolutions: Myelin splits each into a correlation
(LayerType 'correlation'; 'gemm' for the classifier), whose int32 accumulator is written out as float
('Int8 x Int8 -> Float'), and a fused epilogue kernel that reads it ('__myl_MulCastAddReluMulMinMaxRounCast':
dequantization scale in fp32, Cast to fp16, bias, ReLU, re-quantization). The precision the layer's output is
carried on in is the epilogue's: when a conv/matmul layer writes fp32 and every layer that reads that tensor is an
epilogue with fp16 (or bf16) tensors, its signature ends in the epilogue's half type ('int8 x int8 -> fp16'). In an
int8 model kept in fp32 (export --int8-high-precision fp32) the epilogue holds no half tensor, and the signature
stays 'int8 x int8 -> fp32'.

'fp32_layers' counts the other layers that compute in fp32: a layer (no stream marker, no conv/matmul) with an fp32
input or output tensor and no half tensor at all (inputs, constants, outputs). The layers that read the graph's
input or write its output are left out: they convert the fp32 graph IO in any engine. They are found from the
dataflow itself, as the layers reading a tensor no layer writes or writing a tensor no layer reads, so that the
count needs no names from the network and holds wherever Myelin's fusion puts the IO casts. In an int8 engine in
fp16, or an fp16 engine, it is 0; in an int8 engine kept in fp32 it counts the epilogues; in an fp32 engine, all.
Both rules see a layer's half tensors among its inputs, constants and outputs. The engine inspector's JSON gives one
'Weights' type and no other constants, so there an epilogue whose only half tensors are constants would read as
fp32 (not seen: enterprise TensorRT cannot be installed in this workplace).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DTYPES = {
    "int8": "int8",
    "fp8": "fp8",
    "int4": "int4",
    "fp4": "fp4",
    "half": "fp16",
    "fp16": "fp16",
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float": "fp32",
    "fp32": "fp32",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
}
_MARKERS = ("signal", "wait")  # Myelin's cross-stream events
_MYELIN_OPS = re.compile(r"^__myl_([A-Za-z0-9]+)")  # the fused ops, in Myelin's name for the kernel
_GEMM_OP = re.compile(r"(?:Fc|Gemm|Conv|MatMul)(?=[A-Z]|$)")
_DTYPE_WORD = re.compile(r"\b(" + "|".join(sorted(DTYPES, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_HALF = ("fp16", "bf16")
FP32_LAYER_NAMES = 5  # how many of the fp32 layers the summary names


@dataclass
class LayerInfo:
    type: str
    inputs: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)  # the largest constant (the weights) first
    outputs: list[str] = field(default_factory=list)
    name: str = ""
    input_names: list[str] = field(default_factory=list)  # the tensors' names, in the order of inputs / outputs
    output_names: list[str] = field(default_factory=list)

    @property
    def marker(self) -> bool:
        """A stream event marker ('signal', 'wait'): no computation, no tensors."""
        return self.type.lower() in _MARKERS

    @property
    def computes(self) -> bool:
        """A convolution or matrix product, on its own or fused by Myelin: the layers whose precision decides speed
        and accuracy."""
        if self.marker:
            return False
        if any(k in self.type.lower() for k in ("conv", "correlation", "gemm", "matrix", "matmul")):
            return True
        fused = _MYELIN_OPS.match(self.name)
        return bool(fused and _GEMM_OP.search(fused.group(1)))

    @property
    def half(self) -> str | None:
        """The half type (fp16, bf16) of its first half tensor, inputs, constants or outputs; None without one."""
        return next((t for t in (*self.inputs, *self.weights, *self.outputs) if t in _HALF), None)

    def signature(self, output: str | None = None) -> str:
        """'input x weights -> output' ('input -> output' without weights); `output` overrides the output's."""
        first = lambda kinds: kinds[0] if kinds else "?"  # noqa: E731
        output = output or first(self.outputs)
        if self.weights:
            return f"{first(self.inputs)} x {first(self.weights)} -> {output}"
        return f"{first(self.inputs)} -> {output}"


def summarize_layers(layers: list[LayerInfo], source: str) -> dict:
    """Counts of convolution/matmul layers by precision signature ('input x weights -> output', the rule for
    Myelin's epilogues in the module's docstring), of all layers by input precision, and of the layers that compute
    in fp32 besides the conv/matmul and graph IO layers: enough to see that INT8 convolutions really run in INT8 and
    what runs around them. Stream markers are not layers."""
    markers = sum(layer.marker for layer in layers)
    layers = [layer for layer in layers if not layer.marker]
    readers: dict[str, list[LayerInfo]] = {}
    for layer in layers:
        for name in filter(None, layer.input_names):
            readers.setdefault(name, []).append(layer)
    written = {name for layer in layers for name in layer.output_names if name}
    graph_io = (set(readers) - written) | (written - set(readers))  # read by none, or written by none
    compute: dict[str, int] = {}
    by_input: dict[str, int] = {}
    fp32_layers = []
    for layer in layers:
        if layer.computes:
            signature = layer.signature(_epilogue_precision(layer, readers))
            compute[signature] = compute.get(signature, 0) + 1
        elif _fp32_layer(layer) and not graph_io & {*layer.input_names, *layer.output_names}:
            fp32_layers.append(layer.name or layer.type)
        key = layer.inputs[0] if layer.inputs else "none"
        by_input[key] = by_input.get(key, 0) + 1
    return {"source": source, "total": len(layers), "conv_matmul": dict(sorted(compute.items(), key=lambda kv: -kv[1])),
            "by_input_precision": dict(sorted(by_input.items(), key=lambda kv: -kv[1])),
            "fp32_layers": len(fp32_layers), "fp32_layer_names": fp32_layers[:FP32_LAYER_NAMES],
            "stream_markers": markers}


def _epilogue_precision(layer: LayerInfo, readers: dict[str, list[LayerInfo]]) -> str | None:
    """The half type of the epilogue that reads a conv/matmul layer's fp32 output, when every layer reading it is
    such an epilogue (not itself a conv/matmul, with a half tensor); else None (the layer's own output type)."""
    if not layer.outputs or layer.outputs[0] != "fp32" or not layer.output_names:
        return None
    consumers = readers.get(layer.output_names[0], [])
    if not consumers or any(c.computes or c.half is None for c in consumers):
        return None
    halves = {c.half for c in consumers}
    return halves.pop() if len(halves) == 1 else None


def _fp32_layer(layer: LayerInfo) -> bool:
    """Computes in fp32: an fp32 input or output tensor, and no half tensor anywhere."""
    return "fp32" in (*layer.inputs, *layer.outputs) and layer.half is None


def parse_layer_log(text: str) -> list[LayerInfo]:
    """The layers of a 'Layers:' message: 'Name: …, LayerType: …, Inputs: [ … ], Constants: [ … ], Outputs: [ … ]',
    each tensor '{ Name: …, Dimensions: [64,4,7,7], …, Datatype: Int8, … }'."""
    layers = []
    for line in text.splitlines():
        kind = re.search(r"LayerType: ([^,]+),", line)
        if not kind:
            continue
        parts = {}
        for section in ("Inputs", "Constants", "Outputs"):
            match = re.search(section + r": \[(.*?)\](?:, (?:Constants|Outputs|TacticName)|$)", line)
            tensors = [_tensor(item) for item in re.findall(r"\{([^{}]*)\}", match.group(1))] if match else []
            tensors = [t for t in tensors if t is not None]
            if section == "Constants":  # the weights are the largest constant; scales and biases are small
                tensors = sorted(tensors, key=lambda t: -t[2])
            parts[section] = tensors
        name = re.match(r"\s*Name: (.*?), LayerType:", line)
        layers.append(LayerInfo(kind.group(1).strip(), [t[1] for t in parts["Inputs"]],
                                [t[1] for t in parts["Constants"]], [t[1] for t in parts["Outputs"]],
                                name.group(1) if name else "", [t[0] for t in parts["Inputs"]],
                                [t[0] for t in parts["Outputs"]]))
    return layers


def _tensor(item: str) -> tuple[str, str, int] | None:
    """(name, precision, elements) of one tensor of the list ('Name: input, Dimensions: [64,4,7,7], …'; a dynamic
    -1 counts as 1; '' for a tensor without a name)."""
    dtype = re.search(r"Datatype: (\w+)", item)
    if dtype is None:
        return None
    name = re.search(r"(?:^|,)\s*Name: ([^,]*)", item)
    dims = re.search(r"Dimensions: \[([^\]]*)\]", item)
    count = 1
    for d in re.findall(r"-?\d+", dims.group(1) if dims else ""):
        count *= max(1, abs(int(d)))
    return name.group(1).strip() if name else "", DTYPES.get(dtype.group(1).lower(), dtype.group(1).lower()), count


def logged_layers(messages: list[tuple[object, str]]) -> dict | None:
    """From the builder's log messages (severity, text): TensorRT-RTX, built with DETAILED verbosity."""
    text = next((m for _, m in reversed(messages) if m.lstrip().startswith("Layers:")), None)
    if text is None:
        return None
    return summarize_layers(parse_layer_log(text), "builder layer list (ProfilingVerbosity.DETAILED)")


def inspected_layers(trt, data: bytes, logger, version_compatible: bool) -> dict | None:
    """From the engine inspector (JSON), on the GPU the engine was built on: enterprise TensorRT."""
    runtime = trt.Runtime(logger)
    runtime.engine_host_code_allowed = version_compatible  # such an engine carries its lean runtime
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        return None
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    layers = []
    for layer in info.get("Layers", []):
        if not isinstance(layer, dict):
            continue
        weights = layer.get("Weights") if isinstance(layer.get("Weights"), dict) else None
        inputs, outputs = _tensors(layer.get("Inputs")), _tensors(layer.get("Outputs"))
        layers.append(LayerInfo(str(layer.get("LayerType", "?")),
                                [_dtype_in(t.get("Format/Datatype")) for t in inputs],
                                [_dtype_in(weights.get("Type"))] if weights else [],
                                [_dtype_in(t.get("Format/Datatype")) for t in outputs],
                                str(layer.get("Name", "")),
                                [str(t.get("Name", "")) for t in inputs], [str(t.get("Name", "")) for t in outputs]))
    return summarize_layers(layers, "engine inspector (JSON)")


def _tensors(items) -> list[dict]:
    """An inspector layer's 'Inputs' or 'Outputs': the tensors given as objects ('Name', 'Format/Datatype', …)."""
    return [t for t in items if isinstance(t, dict)] if isinstance(items, list) else []


def _dtype_in(text) -> str:
    """The data type named in an inspector string such as 'Channel major FP16 format where …'."""
    match = _DTYPE_WORD.search(str(text or ""))
    return DTYPES[match.group(1).lower()] if match else "?"
