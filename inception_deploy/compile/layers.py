"""In which precision each layer of an engine runs, as the compiler reports it, summarised for the manifest.

TensorRT-RTX prints its final layer list (one line a layer) when built with ProfilingVerbosity.DETAILED
and a verbose logger, which needs no GPU; enterprise TensorRT's engine inspector gives the same facts as
JSON, from an engine deserialized on the GPU it was built on.
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
_DTYPE_WORD = re.compile(r"\b(" + "|".join(sorted(DTYPES, key=len, reverse=True)) + r")\b", re.IGNORECASE)


@dataclass
class LayerInfo:
    type: str
    inputs: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @property
    def computes(self) -> bool:
        """A convolution or matrix product: the layers whose precision decides speed and accuracy."""
        return any(k in self.type.lower() for k in ("conv", "correlation", "gemm", "matrix", "matmul"))

    @property
    def signature(self) -> str:
        first = lambda kinds: kinds[0] if kinds else "?"  # noqa: E731
        if self.weights:
            return f"{first(self.inputs)} x {first(self.weights)} -> {first(self.outputs)}"
        return f"{first(self.inputs)} -> {first(self.outputs)}"


def summarize_layers(layers: list[LayerInfo], source: str) -> dict:
    """Counts of convolution/matmul layers by precision signature ('input x weights -> output'), and of all layers
    by input precision: enough to see that INT8 convolutions really run in INT8."""
    compute: dict[str, int] = {}
    by_input: dict[str, int] = {}
    for layer in layers:
        if layer.computes:
            compute[layer.signature] = compute.get(layer.signature, 0) + 1
        key = layer.inputs[0] if layer.inputs else "none"
        by_input[key] = by_input.get(key, 0) + 1
    return {"source": source, "total": len(layers), "conv_matmul": dict(sorted(compute.items(), key=lambda kv: -kv[1])),
            "by_input_precision": dict(sorted(by_input.items(), key=lambda kv: -kv[1]))}


def parse_layer_log(text: str) -> list[LayerInfo]:
    """The layers of a 'Layers:' message: 'Name: …, LayerType: …, Inputs: [ … ], Constants: [ … ], Outputs: [ … ]'."""
    layers = []
    for line in text.splitlines():
        kind = re.search(r"LayerType: ([^,]+),", line)
        if not kind:
            continue
        parts = {}
        for section in ("Inputs", "Constants", "Outputs"):
            match = re.search(section + r": \[(.*?)\](?:, (?:Constants|Outputs|TacticName)|$)", line)
            parts[section] = (
                [DTYPES.get(d.lower(), d.lower()) for d in re.findall(r"Datatype: (\w+)", match.group(1))]
                if match
                else []
            )
        layers.append(LayerInfo(kind.group(1).strip(), parts["Inputs"], parts["Constants"], parts["Outputs"]))
    return layers


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
                                [_dtype_in(t.get("Format/Datatype")) for t in layer.get("Outputs", [])]))
    return summarize_layers(layers, "engine inspector (JSON)")


def _dtype_in(text) -> str:
    """The data type named in an inspector string such as 'Channel major FP16 format where …'."""
    match = _DTYPE_WORD.search(str(text or ""))
    return DTYPES[match.group(1).lower()] if match else "?"
