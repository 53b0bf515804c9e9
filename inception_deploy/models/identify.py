"""Which variant is this? One answer for checkpoints and ONNX files alike: the multiset of convolution kernel
shapes, which names, layouts and head sizes do not change, and which no two variants share."""

from __future__ import annotations

import logging
from functools import lru_cache

import torch

from ..core.deps import lazy_import
from .build import build_model
from .registry import get_spec, list_models
from .spec import ModelSpec

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)

Signature = tuple[tuple[int, ...], ...]


def model_signature(model: torch.nn.Module) -> Signature:
    return tuple(sorted(tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Conv2d)))


def checkpoint_signature(state_dict: dict[str, torch.Tensor]) -> Signature:
    """The 4-D weights of a state dict, without any variant's auxiliary heads."""
    aux = tuple(p for s in list_models() for p in s.layout.aux_prefixes)
    return tuple(sorted(tuple(v.shape) for k, v in state_dict.items()
                        if v.ndim == 4 and k.endswith("weight") and not k.startswith(aux)))


def onnx_signature(graph: onnx.GraphProto) -> Signature:
    """Kernel shapes of the graph's Conv nodes, seen through DequantizeLinear (Q/DQ) and Cast (fp16)."""
    initializers = {i.name: tuple(i.dims) for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    shapes = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        name = node.input[1]
        while (
            name not in initializers and name in producers and producers[name].op_type in ("DequantizeLinear", "Cast")
        ):
            name = producers[name].input[0]
        shapes.append(initializers.get(name, ()))
    return tuple(sorted(shapes))


@lru_cache(maxsize=None)
def _signatures() -> dict[str, Signature]:
    signatures = {}
    for spec in list_models():
        with torch.device("meta"):  # shapes only: no memory, no init cost
            signatures[spec.name] = model_signature(build_model(spec.name))
    return signatures


def identify(signature: Signature) -> ModelSpec | None:
    """The variant whose convolutions these are, or None."""
    return next((get_spec(name) for name, known in _signatures().items() if known == signature), None)
