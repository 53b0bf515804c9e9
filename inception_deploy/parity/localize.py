"""Where do two backends part ways? Every block's output, in PyTorch and in the ONNX graph, compared in order.

Like Polygraphy's `--onnx-outputs mark all`, but reported in the block names of the PyTorch model. ONNX
tensors are matched to blocks by value: the graph's intermediate tensors of the block's output shape,
the closest one taken, so the match survives onnxsim's rewrites (BatchNorm folding, renamed nodes).

A feature map is judged by its error and centred cosine (tolerances.FEATURE_MAP_TOLERANCES): top-1 agreement
is a rule for class scores, and a feature map's argmax flips between near-tied activations at any rounding.
The block that computes the model's output (its logits) keeps the output's rule.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..core.compare import difference
from ..core.deps import lazy_import
from ..core.tolerances import FEATURE_MAP_TOLERANCES, Tolerance
from ..runners.onnxruntime_runner import OnnxRuntimeRunner

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockDivergence:
    block: str  # e.g. "Mixed_6b (InceptionC)"
    shape: list[int]
    onnx_tensor: str | None  # the closest ONNX tensor of that shape
    scaled: float  # its max |Δ| relative to the block output's scale
    cosine_centred: float  # each sample's mean removed first (compare.Difference.cosine_centred)
    within: bool
    judged_as: str = "feature map"  # or "output": the block whose output is the model's, judged by the full rule

    def to_dict(self) -> dict:
        return asdict(self)


def named_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's blocks in execution order: its top-level children, looking inside Sequentials, with weights."""
    blocks = []
    for name, child in model.named_children():
        members = child.named_children() if isinstance(child, nn.Sequential) else [(None, child)]
        for sub, module in members:
            if any(True for _ in module.parameters()):
                blocks.append((name if sub is None else f"{name}.{sub}", module))
    return blocks


def localize(model: nn.Module, onnx_model: onnx.ModelProto, x: np.ndarray, *, tolerance, device: str = "cpu",
             precision: str = "fp32") -> list[BlockDivergence]:
    """Compare every block's output; the first entry with within=False is where the graph leaves tolerance."""
    captured: dict[str, np.ndarray] = {}
    blocks = named_blocks(model)
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach().float().clone().numpy())
        )
        for name, module in blocks
    ]
    try:
        with torch.inference_mode():
            final = model(torch.from_numpy(x)).detach().float().numpy()
    finally:
        for h in hooks:
            h.remove()

    exposed = _expose_all_tensors(onnx_model)
    with OnnxRuntimeRunner(exposed, device=device, precision=precision) as runner:
        tensors = runner.run({runner.inputs[0].name: x})
    by_shape: dict[tuple, list[tuple[str, np.ndarray]]] = {}
    for name, value in tensors.items():
        by_shape.setdefault(tuple(value.shape), []).append((name, value.astype(np.float32)))

    report = []
    for name, module in blocks:
        expected = captured[name]
        best = None
        for tensor_name, value in by_shape.get(tuple(expected.shape), []):
            diff = difference(expected, value)
            if best is None or diff.scaled < best[1].scaled:
                best = (tensor_name, diff)
        label = f"{name} ({type(module).__name__})"
        output = expected.shape == final.shape and np.array_equal(expected, final)
        judged_as = "output" if output else "feature map"
        if best is None:
            report.append(BlockDivergence(label, list(expected.shape), None, float("inf"), 0.0, False, judged_as))
        else:
            tensor_name, diff = best
            report.append(BlockDivergence(label, list(expected.shape), tensor_name, diff.scaled, diff.cosine_centred,
                                          rule(tolerance, precision, output=output).passes(diff), judged_as))
    return report


def rule(tolerance, precision: str, *, output: bool) -> Tolerance:
    """The model's output by the output's `tolerance`; any other tensor by the rule for feature maps."""
    return tolerance if output else FEATURE_MAP_TOLERANCES[precision]


def first_divergence(report: list[BlockDivergence]) -> BlockDivergence | None:
    return next((b for b in report if not b.within), None)


def _expose_all_tensors(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the graph whose outputs include every intermediate float tensor (shape-inferred)."""
    inferred = onnx.shape_inference.infer_shapes(copy.deepcopy(model))
    graph = inferred.graph
    existing = {o.name for o in graph.output}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    for info in graph.value_info:
        if info.name not in existing and info.type.tensor_type.elem_type in floats:
            graph.output.append(info)
            existing.add(info.name)
    return inferred
