"""fp32 ONNX -> INT8 ONNX with explicit Q/DQ, in the form of the runtime that executes it (forms.py).

The TensorRT form follows NVIDIA's Q/DQ placement recommendations, for a strongly typed build:
- symmetric int8 activations, per-channel symmetric int8 weights (axis 0), zero points 0;
- Q/DQ on the activation and weight inputs of every Conv and Gemm, none on their outputs, float biases
  (TensorRT's parser takes DequantizeLinear only on 8-bit and narrower inputs, so no int32 bias);
- in Inception-ResNet's residual Adds, Q/DQ on the skip input only, so that TensorRT fuses the Add into
  the convolution that computes the other input; Concat and pooling are left to TensorRT, which
  propagates scales through them.
onnxruntime.quantization does all of this but the last point: it quantizes every input of an Add, so the
Q/DQ pair on the convolution side is taken out afterwards (_skip_input_only). qdq_rules.py checks the result.
In fp16 (the default), the quantized nodes' biases move into Adds after them and the opset is 19, so that stock
ONNX Runtime computes the file right too (forms.stock_ort_problems says why).
The CPU form is onnxruntime.quantization's own, for its CPU provider: uint8 activations, Q/DQ on outputs too.
Both: calibration on images through the variant's own preprocessing, with a cache beside the artifact keyed
by the model, the inputs, the method and the form, so that a re-run with the same inputs skips calibration.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.artifacts import ONNX_FILES
from ..core.deps import lazy_import, require
from ..core.errors import CheckFailed, InputError, first_line
from ..core.logs import quiet_library
from ..models.labelled import image_set
from ..models.samples import random_batch
from ..models.spec import ModelSpec
from .forms import INT8_FORMS, Int8Form, parse_forms
from .fp16 import convert_to_fp16

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)

CALIB_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIB_SAMPLES = 64
SYNTHETIC_LABEL = "SYNTHETIC calibration (random tensors): smoke tests only, not for deployment"


@dataclass(frozen=True)
class Calibration:
    batch: np.ndarray  # (N, C, H, W) float32, preprocessed
    source: str  # the directory, or SYNTHETIC_LABEL
    files: list[str]
    skipped: list[tuple[str, str]]
    synthetic: bool
    asked: int | None = None  # --calib-samples, where the folder was to give that many

    def shortfall(self) -> str | None:
        """A warning when the folder gave fewer readable images than were asked for."""
        if self.asked is None or len(self.batch) >= self.asked:
            return None
        return (f"--calib: calibrated on {len(self.batch)} image(s) of {self.source}, fewer than the {self.asked} "
                "asked for (--calib-samples): int8 ranges from few images may not cover what the model will see")

    def fingerprint(self) -> str:
        return hashlib.sha256(self.batch.tobytes()).hexdigest()


def calibration_inputs(spec: ModelSpec, calib_dir: str | Path | None, samples: int, *, synthetic: bool,
                       seed: int = 0) -> Calibration:
    if samples < 1:
        raise InputError(f"--calib-samples must be at least 1, got {samples}")
    if synthetic:
        if calib_dir is not None:
            raise InputError("--calib-synthetic replaces --calib DIR: pass one of them")
        return Calibration(random_batch(spec, samples, seed=seed).numpy(), SYNTHETIC_LABEL, [], [], True)
    if calib_dir is None:
        raise InputError("--int8 needs calibration images: --calib DIR (or --calib-synthetic for a smoke test)")
    batch, files, skipped = image_set(spec, calib_dir, limit=samples, option="--calib")
    return Calibration(batch.numpy(), str(calib_dir), files, skipped, False, asked=samples)


@dataclass(frozen=True)
class Int8Recipe:
    """How an int8 model is made from the fp32 one: its form, its calibration method, the precision of everything
    around its Q/DQ pairs (graph IO stays float32), and (CPU form) weights in 7 bits for CPUs without VNNI."""

    form: Int8Form = INT8_FORMS["tensorrt"]
    method: str = "minmax"
    high_precision: str = "fp16"
    reduce_range: bool = False

    @classmethod
    def of(cls, form: str | Int8Form = "tensorrt", method: str = "minmax", high_precision: str | None = None,
           reduce_range: bool = False) -> "Int8Recipe":
        """A checked recipe (InputError naming the option); high_precision defaults to the form's first."""
        form = form if isinstance(form, Int8Form) else parse_forms(form)[0]
        if high_precision is None:
            high_precision = form.high_precisions[0]
        if high_precision not in form.high_precisions:
            raise InputError(f"--int8-high-precision {high_precision} does not apply to the {form.name} form: it "
                             f"computes in {' or '.join(form.high_precisions)} around its Q/DQ pairs")
        if reduce_range and form.name != "cpu":
            raise InputError("--int8-reduce-range is for the CPU form (--int8-form cpu): TensorRT uses 8-bit weights")
        return cls(form, method, high_precision, reduce_range).checked()

    def checked(self) -> "Int8Recipe":
        if self.method not in CALIB_METHODS:
            raise InputError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, not '{self.method}'")
        return self

    def with_method(self, method: str) -> "Int8Recipe":
        return replace(self, method=method).checked()

    @property
    def cache_stem(self) -> str:
        """Calibration caches are named after the artifact they serve: model.int8.calib-…, model.int8-cpu.calib-…"""
        return ONNX_FILES[self.form.precision].removesuffix(".onnx")


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol, one image at a time, reporting progress."""

    def __init__(self, batch: np.ndarray, input_name: str, progress: Callable[[int, int], None]):
        self.batch, self.input_name, self.progress, self.index = batch, input_name, progress, 0

    def get_next(self):
        if self.index >= len(self.batch):
            return None
        item = {self.input_name: self.batch[self.index:self.index + 1]}
        self.index += 1
        self.progress(self.index, len(self.batch))
        return item

    def __len__(self) -> int:
        return len(self.batch)


def quantization_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes to quantize: every Conv and Gemm, and Adds of two computed tensors (residuals)."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    names = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") or (
            node.op_type == "Add" and len(node.input) == 2 and not any(i in constants for i in node.input)
        ):
            names.append(node.name)
    return names


ORT_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}  # onnxruntime's CalibrationMethod


def _cache_problem(cache: Path, model: onnx.ModelProto, method: str) -> str | None:
    """Why a calibration cache cannot be reused (empty, not ORT's format, another model's, ranges no calibration
    run records), or None."""
    try:
        raw = cache.read_bytes()
        data = json.loads(raw) if raw.strip() else None
    except (OSError, ValueError) as err:
        return f"unreadable ({first_line(err, 80)})"
    if data is None:
        return "empty"
    if not isinstance(data, dict) or data.get("CLS") != "TensorsData" or not isinstance(data.get("data"), dict) \
            or "calibration_method" not in data or not data["data"]:
        return "not an onnxruntime calibration cache"
    recorded = data["calibration_method"].get("value") if isinstance(data["calibration_method"], dict) else None
    if recorded != f"CalibrationMethod.{ORT_METHODS[method]}":  # as onnxruntime records it in its cache
        return f"made with another calibration method ({recorded})"
    if not all(isinstance(v, dict) and {"lowest", "highest"} <= set(v) for v in data["data"].values()):
        return "not an onnxruntime calibration cache (a tensor without its range)"
    names = {v for n in model.graph.node for v in (*n.input, *n.output)} | {i.name for i in model.graph.input}
    foreign = [name for name in data["data"] if name not in names]
    if foreign:
        return f"made for another model (tensor '{foreign[0]}' is not in this one)"
    return _range_problem(data["data"])


# The largest |value| a calibrated range may reach: float16's largest finite value. The activations of a network
# that runs in fp16 (the fp16 engine of the same export) stay below it, and post-BatchNorm activations are O(1-100);
# a range beyond it (1e30) is no measurement, and its int8 scale would round every real value to 0.
RANGE_LIMIT = float(np.finfo(np.float16).max)


def _range_problem(tensors: dict) -> str | None:
    """Why the recorded ranges cannot come from a calibration run, or None. What a genuine cache holds: finite
    lowest <= highest, each within RANGE_LIMIT; a zero-width range only as [0, 0] (a tensor that is 0 on every
    calibration image, e.g. a ReLU that never fires), never on every tensor, and never at a nonzero value (no
    activation is one nonzero constant over every image and position)."""
    dead = 0
    for name, entry in tensors.items():
        values = [_numbers(entry.get(k)) for k in ("lowest", "highest")]
        if values[0] is None or values[1] is None:
            return f"not an onnxruntime calibration cache (tensor '{name}' has a range that is not numbers)"
        lowest, highest = values
        if not np.isfinite([*lowest, *highest]).all():
            return f"corrupt: tensor '{name}' has a non-finite range ({_shown(lowest)} .. {_shown(highest)})"
        if max(map(abs, (*lowest, *highest))) > RANGE_LIMIT:
            return (f"corrupt: tensor '{name}' has an absurd range ({_shown(lowest)} .. {_shown(highest)}, beyond "
                    f"±{RANGE_LIMIT:g}, float16's largest value)")
        if min(lowest) > max(highest):
            return f"corrupt: tensor '{name}' has lowest {_shown(lowest)} > highest {_shown(highest)}"
        if min(lowest) == max(highest):
            if min(lowest) != 0:
                return f"corrupt: tensor '{name}' has a zero-width range (lowest = highest = {_shown(lowest)})"
            dead += 1
    if dead == len(tensors):
        return f"corrupt: all its {dead} tensors have the zero-width range [0, 0] (no calibration run records that)"
    return None


def _numbers(value) -> list[float] | None:
    """The numbers of a cached value: onnxruntime writes {"data": [...], "dtype": ..., "CLS": "numpy.array"}."""
    if isinstance(value, dict) and value.get("CLS") == "numpy.array":
        value = value.get("data")
    flat = np.asarray(value, dtype=object).ravel().tolist() if isinstance(value, (list, int, float)) else None
    if not flat or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        return None
    return [float(v) for v in flat]


def _shown(values: list[float]) -> str:
    return f"{values[0]:.4g}" if len(values) == 1 else f"[{', '.join(f'{v:.4g}' for v in values[:3])}, …]"


def quantize_int8(model: onnx.ModelProto, calibration: Calibration, recipe: Int8Recipe, *, cache_dir: Path,
                  progress: Callable[[int, int], None] | None = None,
                  exclude: list[str] | tuple[str, ...] = ()) -> tuple[onnx.ModelProto, dict, tuple | None]:
    """The Q/DQ model in `recipe`'s form, facts for the manifest (the cache used, whether it was reused), and the
    new cache to write with the artifacts as (path, bytes) (stage_cache), or None when the cache was reused. Nothing
    is written here. `exclude`: Conv/Gemm nodes left in high precision (export --eval's fall-back)."""
    recipe = recipe.checked()
    require("onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    form, method = recipe.form, recipe.method
    model = _named(copy.deepcopy(model))
    options = form.extra_options()
    if method == "percentile":
        options["CalibPercentile"] = 99.99
    # The cache holds the ranges of the tensors these options quantize: key it by them too.
    key = hashlib.sha256(model.SerializeToString() + calibration.fingerprint().encode() + method.encode()
                         + json.dumps([options, form.activation_type, form.op_types], sort_keys=True).encode()
                         ).hexdigest()[:16]
    cache = cache_dir / f"{recipe.cache_stem}.calib-{method}-{key}.json"
    if cache.exists() and not cache.is_file():  # before calibration: it could be neither read nor replaced
        what = "a directory" if cache.is_dir() else "not a regular file"
        raise InputError(f"the calibration cache {cache} is {what}: move it away and run again")
    problem = _cache_problem(cache, model, method) if cache.exists() else None
    reused = cache.is_file() and problem is None
    excluded = set(exclude)  # left in high precision
    nodes = [name for name in quantization_nodes(model) if name not in excluded]
    # TensorRT's form names what it quantizes; the CPU form quantizes every operator onnxruntime can, but those left out
    selection = ({"nodes_to_quantize": nodes} if form.op_types is not None else
                 {"nodes_to_exclude": sorted(excluded) or None})
    reader = _Reader(calibration.batch, model.graph.input[0].name, progress or (lambda done, total: None))
    # The quantizer logs advice at WARNING, through the root logger: silence it, and only it, for the call.
    with quiet_library("onnxruntime.quantization"):
        with tempfile.TemporaryDirectory(prefix="inception-deploy-int8-") as tmp:
            output = Path(tmp) / "model.int8.onnx"
            # ORT reads and writes the cache in place: work on a copy, publish it atomically.
            working_cache = Path(tmp) / cache.name

            def quantize(reader) -> None:
                # entropy and percentile calibration print their progress on stdout: keep it out of ours
                with contextlib.redirect_stdout(io.StringIO()):
                    _quantize_static(reader)

            def _quantize_static(reader) -> None:
                quantize_static(
                    model, output, reader,
                    quant_format=QuantFormat.QDQ, activation_type=getattr(QuantType, form.activation_type),
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=recipe.reduce_range,
                    op_types_to_quantize=list(form.op_types) if form.op_types is not None else None,
                    calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]),
                    extra_options=options, calibration_cache_path=working_cache, **selection,
                )

            if reused:
                shutil.copyfile(cache, working_cache)
                try:
                    quantize(reader)
                except Exception as err:  # noqa: BLE001 - a cache onnxruntime cannot use: calibrate afresh
                    problem, reused = f"unusable by onnxruntime ({first_line(err, 80)})", False
                    working_cache.unlink(missing_ok=True)
            if not reused:
                quantize(_Reader(calibration.batch, model.graph.input[0].name, progress or (lambda done, total: None)))
            quantized = onnx.load(str(output))
            pending = None if reused else (cache, working_cache.read_bytes())
    if form.name == "tensorrt":
        quantized = in_high_precision(_skip_input_only(quantized), recipe.high_precision)
    facts = {"form": form.name,
             "calibration": {"method": method, "samples": int(len(calibration.batch)), "asked": calibration.asked,
                             "source": calibration.source, "synthetic": calibration.synthetic, "cache": cache.name,
                             "cache_reused": reused,
                             "quantized_nodes": len(nodes) if form.op_types is not None else
                             _quantized_conv_gemm(quantized)}}
    if exclude:
        facts["calibration"]["excluded_nodes"] = len(exclude)
    if problem:
        facts["calibration"]["cache_discarded"] = problem
    facts["high_precision"] = recipe.high_precision
    if form.name == "cpu":
        facts["reduce_range"] = recipe.reduce_range
    facts["opset"] = _opset(quantized)
    return quantized, facts, pending


def _quantized_conv_gemm(model: onnx.ModelProto) -> int:
    """Conv/Gemm nodes whose weight goes through a DequantizeLinear."""
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    return sum(1 for n in model.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 1
               and producers.get(n.input[1]) == "DequantizeLinear")


def stage_cache(staging, cache: Path, data: bytes) -> list[Path]:
    """Stage a new calibration cache with the artifacts it served (artifacts.staged); return the caches it
    replaces, to remove once it is in place."""
    staging.path(cache).write_bytes(data)
    return [stale for stale in cache.parent.glob(f"{cache.name.rsplit('-', 1)[0]}-*.json") if stale != cache]


def _skip_input_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """Take the Q/DQ pair off the convolution side of each residual Add, keeping the one on its skip input.

    The convolution side is the input computed by a Conv or Gemm, possibly through a Mul by a constant (the
    residual scale); TensorRT fuses the Add into that convolution when the skip input is quantized.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}

    def through_qdq(name: str) -> str | None:
        dq = producers.get(name)
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None

    def from_conv(name: str) -> bool:
        node = producers.get(name)
        while node is not None and node.op_type in ("Mul", "Div") and any(i in constants for i in node.input):
            node = producers.get(next((i for i in node.input if i not in constants), ""))
        return node is not None and node.op_type in ("Conv", "Gemm")

    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        sources = [through_qdq(i) for i in node.input]
        branch = [k for k, source in enumerate(sources) if source is not None and from_conv(source)]
        if branch and all(sources):  # both inputs quantized, one of them computed by a convolution
            node.input[branch[0]] = sources[branch[0]]
    _drop_unused(model)
    return model


def _drop_unused(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes that no longer feed anything, and the scales and zero points only they used."""
    orphans: set[str] = set()
    while True:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node
                if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            orphans.update(n.input)
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name in orphans and i.name not in used]:
        model.graph.initializer.remove(init)


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every node needs a name for nodes_to_quantize; onnxsim may leave some unnamed."""
    seen = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    return model


# The opset of an int8 model in fp16 (--int8-high-precision fp16): float16 scales on QuantizeLinear/DequantizeLinear
# need opset 19. Not 21: onnxruntime's QDQ passes write QuantizeLinear-21 nodes that fail to load (forms.py).
HIGH_PRECISION_OPSET = 19


def in_high_precision(model: onnx.ModelProto, high_precision: str) -> onnx.ModelProto:
    """The Q/DQ model with everything outside its int8 tensors in `high_precision`, graph IO float32 either way.

    fp32: as quantize_static writes it. fp16 (ModelOpt's default): each quantized Conv/Gemm's bias moved into an Add
    after it (_bias_after), the model taken to opset 19 by onnx's version converter, then through the fp16 converter
    (export.fp16): float initializers (biases, Q/DQ scales) and float tensors become float16, Casts at the graph's
    input and output. TensorRT then runs the epilogues of the int8 convolutions (scale, bias, activation,
    re-quantization), pooling and concatenation of float tensors in fp16.
    """
    if high_precision == "fp32":
        return model
    return convert_to_fp16(_at_opset(_bias_after(model), HIGH_PRECISION_OPSET), keep_io_types=True)


def _bias_after(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each Conv/Gemm with a quantized weight computes without its bias, and an Add after it adds the bias (scaled by
    Gemm's beta, reshaped to broadcast over a Conv's channels): the same function, which TensorRT fuses back into the
    convolution's epilogue (the layer list is unchanged), and which ONNX Runtime's WeightBiasQuantization pass leaves
    alone, where it would otherwise requantize the bias in float16 and overflow (forms.stock_ort_problems)."""
    initializers = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    taken = {name for node in model.graph.node for name in (*node.input, *node.output, node.name)} | set(initializers)

    def fresh(name: str) -> str:
        candidate, k = name, 1
        while candidate in taken:
            candidate, k = f"{name}_{k}", k + 1
        taken.add(candidate)
        return candidate

    nodes, added = [], {}
    for node in model.graph.node:
        nodes.append(node)
        weight = producers.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in initializers \
                or weight is None or weight.op_type != "DequantizeLinear" or weight.input[0] not in initializers:
            continue
        beta = next((a.f for a in node.attribute if a.name == "beta"), 1.0) if node.op_type == "Gemm" else 1.0
        rank = len(initializers[weight.input[0]].dims)
        key = (node.input[2], beta, rank if node.op_type == "Conv" else 0)
        if key not in added:  # one initializer for each bias, however many nodes share it
            bias = onnx.numpy_helper.to_array(initializers[node.input[2]])
            bias = (bias * np.asarray(beta, bias.dtype)) if beta != 1.0 else bias
            if node.op_type == "Conv":
                bias = bias.reshape(-1, *([1] * (rank - 2)))
            added[key] = fresh(f"{node.input[2]}_after")
            model.graph.initializer.append(onnx.numpy_helper.from_array(bias, added[key]))
        output = node.output[0]
        node.output[0] = fresh(f"{output}_without_bias")
        del node.input[2]
        if node.op_type == "Gemm":  # beta scaled the bias, which left with it; alpha and trans* stay
            kept = [a for a in node.attribute if a.name != "beta"]
            del node.attribute[:]
            node.attribute.extend(kept)
        nodes.append(onnx.helper.make_node("Add", [node.output[0], added[key]], [output],
                                           name=fresh(f"{node.name}_bias")))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _at_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """`model` at `opset` or later, converted by onnx's version converter and checked (CheckFailed if either fails)."""
    current = _opset(model)
    if current >= opset:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, opset)
        onnx.checker.check_model(converted, full_check=True)
    except Exception as err:  # noqa: BLE001 - the converter raises RuntimeError, the checker ValidationError
        raise CheckFailed(f"onnx's version converter cannot take the int8 model from opset {current} to {opset}, "
                          f"which fp16 Q/DQ scales need ({first_line(err, 120)}): export with "
                          "--int8-high-precision fp32") from None
    log.debug("int8 model converted from opset %d to %d for its fp16 Q/DQ scales", current, opset)
    return converted
