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


@dataclass
class LayerInfo:
    type: str
    inputs: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)  # the largest constant (the weights) first
    outputs: list[str] = field(default_factory=list)
    name: str = ""

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
    def signature(self) -> str:
        first = lambda kinds: kinds[0] if kinds else "?"  # noqa: E731
        if self.weights:
            return f"{first(self.inputs)} x {first(self.weights)} -> {first(self.outputs)}"
        return f"{first(self.inputs)} -> {first(self.outputs)}"


def summarize_layers(layers: list[LayerInfo], source: str) -> dict:
    """Counts of convolution/matmul layers by precision signature ('input x weights -> output'), and of all layers
    by input precision: enough to see that INT8 convolutions really run in INT8. Stream markers are not layers."""
    markers = sum(layer.marker for layer in layers)
    layers = [layer for layer in layers if not layer.marker]
    compute: dict[str, int] = {}
    by_input: dict[str, int] = {}
    for layer in layers:
        if layer.computes:
            compute[layer.signature] = compute.get(layer.signature, 0) + 1
        key = layer.inputs[0] if layer.inputs else "none"
        by_input[key] = by_input.get(key, 0) + 1
    return {"source": source, "total": len(layers), "conv_matmul": dict(sorted(compute.items(), key=lambda kv: -kv[1])),
            "by_input_precision": dict(sorted(by_input.items(), key=lambda kv: -kv[1])), "stream_markers": markers}


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
                tensors = sorted(tensors, key=lambda t: -t[1])
            parts[section] = [dtype for dtype, _ in tensors]
        name = re.match(r"\s*Name: (.*?), LayerType:", line)
        layers.append(LayerInfo(kind.group(1).strip(), parts["Inputs"], parts["Constants"], parts["Outputs"],
                                name.group(1) if name else ""))
    return layers


def _tensor(item: str) -> tuple[str, int] | None:
    """(precision, elements) of one tensor of the list ('Dimensions: [64,4,7,7]'; a dynamic -1 counts as 1)."""
    dtype = re.search(r"Datatype: (\w+)", item)
    if dtype is None:
        return None
    dims = re.search(r"Dimensions: \[([^\]]*)\]", item)
    count = 1
    for d in re.findall(r"-?\d+", dims.group(1) if dims else ""):
        count *= max(1, abs(int(d)))
    return DTYPES.get(dtype.group(1).lower(), dtype.group(1).lower()), count


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
        layers.append(LayerInfo(str(layer.get("LayerType", "?")),
                                [_dtype_in(t.get("Format/Datatype")) for t in layer.get("Inputs", [])],
                                [_dtype_in(weights.get("Type"))] if weights else [],
                                [_dtype_in(t.get("Format/Datatype")) for t in layer.get("Outputs", [])],
                                str(layer.get("Name", ""))))
    return summarize_layers(layers, "engine inspector (JSON)")


def _dtype_in(text) -> str:
    """The data type named in an inspector string such as 'Channel major FP16 format where …'."""
    match = _DTYPE_WORD.search(str(text or ""))
    return DTYPES[match.group(1).lower()] if match else "?"
