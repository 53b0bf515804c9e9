"""fp32 ONNX -> fp16 ONNX: weights and compute in float16, graph IO float32 unless asked otherwise."""

from __future__ import annotations

import copy
import logging

from ..core.deps import lazy_import, require
from ..core.errors import CheckFailed, first_line

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)


def convert_to_fp16(model: onnx.ModelProto, *, keep_io_types: bool = True) -> onnx.ModelProto:
    """The fp16 graph a strongly typed TensorRT build consumes.

    Uses ONNX Runtime's converter (onnxruntime.transformers.float16), which rewrites initializers and
    tensor types and, with keep_io_types, puts Casts at the graph's inputs and outputs.
    """
    require("onnxruntime")
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = OnnxModel(convert_float_to_float16(copy.deepcopy(model), keep_io_types=keep_io_types))
    # The converter appends the IO Casts after the nodes that use them: ORT and TensorRT take that, the ONNX
    # checker and Polygraphy's lint do not ("Nodes in a graph must be topologically sorted").
    converted.topological_sort()
    try:
        onnx.checker.check_model(converted.model, full_check=True)
    except onnx.checker.ValidationError as err:
        raise CheckFailed(f"the fp16 graph fails the ONNX checker: {first_line(err)}") from None
    return converted.model
