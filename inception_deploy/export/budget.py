"""INT8 that meets an accuracy budget: measured on labelled images, not judged by agreement.

export --int8 --calib DIR --eval DIR [--max-drop 1.0] [--calib-method auto]:
1. fp32: top-1 of model.onnx on the eval images, in ONNX Runtime on the CPU (the reference; the export proved it
   computes what the PyTorch model computes).
2. Calibration: each method asked for (auto: minmax, entropy, percentile), each with its own cache; the method with
   the best eval top-1 is kept (ties: the first in that order). Each method's figures go in the manifest.
3. Sensitivity, when the best method is over budget: every quantized Conv/Gemm ranked by the quantization noise it
   takes in, measured with onnxruntime.quantization.qdq_loss_debug on calibration images: the SQNR of its input
   activation (before vs after its Q/DQ, in the int8 model's own run) and of its weights, combined as noise powers.
   The lowest SQNR first. Each is named by its block and module (`inception4a.branch2.0`), from its weight's name.
4. Fall-back: the most sensitive nodes are taken out of INT8 (they run in the high precision, fp16 by default), the
   first 1, 2, 4, 8, … of the ranking, until the drop is within budget or the limit is reached; every step is
   measured on the eval images. The artifact kept is the first step within budget, else the best-effort step (the
   highest top-1, then the fewest nodes out), marked over budget: export exits 1, and trt, bench, triton and serve
   refuse it without --accept-over-budget.
All figures are ONNX Runtime CPU top-1 on the --eval images; an engine's own accuracy is `inception-deploy accuracy`'s.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.deps import lazy_import, require
from ..core.logs import quiet_library
from ..core.stats import MaxDrop, mcnemar_exact, topk_hits, wilson
from ..models.labelled import DecodedBatches, LabelledImages, check_classes, file_key, no_better_than_chance
from ..models.spec import ModelSpec
from ..runners.onnxruntime_runner import OnnxRuntimeRunner
from .quantize import CALIB_METHODS, Calibration, Int8Recipe, quantization_nodes, quantize_int8

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)

AUTO = "auto"
EVAL_BATCH = 32
DEFAULT_FALLBACK_LIMIT = 0.25  # at most this fraction of the quantized Conv/Gemm nodes leaves INT8
SENSITIVITY_SAMPLES = 8  # calibration images the sensitivity is measured on
RANKING_SHOWN = 20  # the most sensitive nodes listed in the manifest


def load_eval_set(spec: ModelSpec, data: LabelledImages, num_classes: int) -> DecodedBatches:
    """The eval images, each read once now (the unreadable are known; InputError if none is readable), after their
    labels are checked against the model's head (exit 2 naming how many are outside it)."""
    check_classes(data, num_classes, option="--eval")
    evalset = DecodedBatches(spec, data, EVAL_BATCH)
    readable = evalset.images  # the first pass, now: every image read once, the unreadable listed
    log.debug("eval set: %d readable images", readable)
    return evalset


def describe_eval_set(evalset: DecodedBatches) -> dict:
    return {**evalset.data.describe(), "images": evalset.images, "skipped": len(evalset.data.skipped)}


def shared_images(calibration: Calibration, evalset: DecodedBatches) -> int:
    """How many eval images are also calibration images (the same file)."""
    if calibration.synthetic:
        return 0
    source = Path(calibration.source)
    calib = {file_key(source / name) for name in calibration.files}
    return sum(1 for path in evalset.data.files if file_key(path) in calib)


def top1_hits(model, evalset: DecodedBatches, input_name: str, output_name: str) -> np.ndarray:
    """Per eval image: is the label the model's top-1? ONNX Runtime, CPU."""
    hits = []
    with OnnxRuntimeRunner(model) as runner:
        for x, y, _ in evalset:
            hits.append(topk_hits(runner.run({input_name: x})[output_name], y, 1))
    return np.concatenate(hits)


def accuracy_figures(hits: np.ndarray, reference: np.ndarray | None = None) -> dict:
    """top-1 with its 95 % Wilson interval; against a reference on the same images: the drop in points, the paired
    flips and McNemar's exact p."""
    n, k = len(hits), int(hits.sum())
    low, high = wilson(k, n)
    figures = {"top1": k / n, "top1_interval": [low, high], "images": int(n)}
    if reference is not None:
        worse, better = int((reference & ~hits).sum()), int((~reference & hits).sum())
        figures.update({"drop_points": round(100.0 * float(reference.mean() - hits.mean()), 4), "right_to_wrong": worse,
                        "wrong_to_right": better, "mcnemar_p": mcnemar_exact(worse, better)})
    return figures


def module_name(model: onnx.ModelProto, node_name: str) -> str:
    """The block and module of a Conv/Gemm, from its weight's name as torch.onnx keeps it: 'inception4a.branch2.0'
    from 'inception4a.branch2.0.conv.weight' (the zoo's Conv-BN-ReLU block names its convolution 'conv')."""
    node = next((n for n in model.graph.node if n.name == node_name), None)
    if node is None or len(node.input) < 2:
        return node_name
    name = node.input[1].removesuffix("_quantized").removesuffix(".weight").removesuffix(".conv")
    initializers = {i.name for i in model.graph.initializer}
    return name if node.input[1] in initializers and name else node_name


class Budget:
    """One int8 export against its budget: the eval set, the reference's hits, what every step measured."""

    def __init__(self, fp32: onnx.ModelProto, evalset: DecodedBatches, max_drop: MaxDrop, step: Callable[..., None]):
        self.fp32, self.evalset, self.max_drop, self.step = fp32, evalset, max_drop, step
        self.io = (fp32.graph.input[0].name, fp32.graph.output[0].name)
        step("measuring fp32 top-1 on the --eval images (ONNX Runtime, CPU)")
        self.reference = top1_hits(fp32, evalset, *self.io)
        chance = no_better_than_chance(float(self.reference.mean()), evalset.data)
        self.warnings = [f"the fp32 model's {chance}; an int8 budget against it means little"] if chance else []
        self.allowed = max_drop.allowed_points(float(self.reference.mean()))

    def measure(self, model: onnx.ModelProto) -> tuple[dict, np.ndarray]:
        hits = top1_hits(model, self.evalset, *self.io)
        figures = accuracy_figures(hits, self.reference)
        drop = 100.0 * float(self.reference.mean() - hits.mean())  # unrounded: the verdict is not the display's
        figures["within_budget"] = bool(drop <= self.allowed + 1e-9)
        return figures, hits


def budgeted_int8(fp32: onnx.ModelProto, calibration: Calibration, evalset: DecodedBatches, recipe: Int8Recipe, *,
                  auto: bool, max_drop: MaxDrop, cache_dir: Path, fallback_limit: int | None = None,
                  step: Callable[..., None] = lambda *_: None,
                  budget: "Budget | None" = None) -> tuple[onnx.ModelProto, dict, list[tuple]]:
    """The int8 model in `recipe`'s form that meets `max_drop` on `evalset`, or the best effort, marked over budget;
    its manifest facts (with "accuracy"); the calibration caches to write. auto: every calibration method is tried,
    else the recipe's. `budget`: the fp32 reference already measured on the eval set (for another form), else
    measured here."""
    what = recipe.form.precision
    methods = list(CALIB_METHODS) if auto else [recipe.method]
    budget = budget or Budget(fp32, evalset, max_drop, step)
    candidates, caches = {}, []
    for name in methods:
        step(f"quantizing to {what} ({name} calibration)")
        proto8, facts, cache = quantize_int8(fp32, calibration, recipe.with_method(name), cache_dir=cache_dir,
                                             progress=lambda done, total: step(f"calibrating ({name})", done, total))
        caches += [cache] if cache is not None else []
        step(f"measuring {what} ({name}) top-1 on the --eval images")
        figures, _ = budget.measure(proto8)
        candidates[name] = (proto8, facts, figures)
    chosen = max(methods, key=lambda name: (candidates[name][2]["top1"], -methods.index(name)))
    proto8, facts, figures = candidates[chosen]
    accuracy = {
        "measured_by": "top-1 on the --eval images, ONNX Runtime CPU",
        "eval": describe_eval_set(evalset),
        "reference": {"artifact": "model.onnx (fp32)", **accuracy_figures(budget.reference)},
        "max_drop": max_drop.to_dict(),
        "allowed_drop_points": round(budget.allowed, 4),
        "methods": {name: {k: v for k, v in candidates[name][2].items()} for name in methods},
        "chosen_method": chosen,
        "selected_on": "the method and any fall-back step were chosen by top-1 on these same --eval images, so the "
                       "kept figures are slightly optimistic: confirm on other labelled images with "
                       "`inception-deploy accuracy`",
    }
    if not figures["within_budget"] and fallback_limit != 0:  # 0: measure only
        proto8, facts, figures, fallback = _fall_back(fp32, calibration, budget, recipe.with_method(chosen), cache_dir,
                                                      proto8, facts, figures, fallback_limit, step)
        accuracy["fallback"] = fallback
    accuracy.update({k: figures[k] for k in ("top1", "top1_interval", "drop_points", "right_to_wrong",
                                              "wrong_to_right", "mcnemar_p", "images")})
    accuracy["within_budget"] = figures["within_budget"]
    if budget.warnings:
        accuracy["warnings"] = budget.warnings
    facts["accuracy"] = accuracy
    return proto8, facts, caches


def _fall_back(fp32, calibration, budget: Budget, recipe: Int8Recipe, cache_dir: Path, proto8, facts, figures,
               limit: int | None, step):
    """Take the most sensitive nodes out of INT8, 1, 2, 4, … of them, until within budget or the limit."""
    step("ranking the quantized nodes by sensitivity (qdq_loss_debug SQNR)")
    ranking = sensitivity_ranking(fp32, calibration, recipe, cache_dir=cache_dir)
    quantized = len(ranking)
    limit = max(1, int(quantized * DEFAULT_FALLBACK_LIMIT)) if limit is None else limit
    steps = [{"excluded": 0, **_step_figures(figures)}]
    best = (figures["top1"], 0, proto8, facts, figures)
    count = 1
    while True:
        count = min(count, limit, quantized)
        excluded = [entry["node"] for entry in ranking[:count]]
        step(f"fall-back: {count} node(s) out of int8, measuring top-1")
        candidate, candidate_facts, _ = quantize_int8(fp32, calibration, recipe, cache_dir=cache_dir, exclude=excluded)
        measured, _ = budget.measure(candidate)
        steps.append({"excluded": count, "modules": [entry["module"] for entry in ranking[:count]],
                      **_step_figures(measured)})
        if measured["top1"] > best[0]:
            best = (measured["top1"], count, candidate, candidate_facts, measured)
        if measured["within_budget"]:
            best = (measured["top1"], count, candidate, candidate_facts, measured)
            break
        if count >= limit or count >= quantized:
            break
        count *= 2
    _, kept, proto8, facts, figures = best
    fallback = {
        "ranking_by": "SQNR (dB) of each node's quantized input activation and weights, combined; lowest first",
        "ranking": ranking[:RANKING_SHOWN],
        "limit": limit,
        "steps": steps,
        "excluded_nodes": [{"node": entry["node"], "module": entry["module"]} for entry in ranking[:kept]],
        "kept_step": kept,
    }
    return proto8, facts, figures, fallback


def _step_figures(figures: dict) -> dict:
    return {k: figures[k] for k in ("top1", "top1_interval", "drop_points", "within_budget")}


def sensitivity_ranking(fp32: onnx.ModelProto, calibration: Calibration, recipe: Int8Recipe, *,
                        cache_dir: Path) -> list[dict]:
    """Every quantized Conv/Gemm with the SQNR of the noise its quantization adds (input activation and weights),
    the lowest (most sensitive) first. Measured on the int8 model in `recipe`'s form with fp32 around its Q/DQ pairs,
    which onnxruntime's debugging tools read, on the first SENSITIVITY_SAMPLES calibration images."""
    require("onnxruntime")
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        compute_weight_error,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    qdq, _, _ = quantize_int8(fp32, calibration, replace(recipe, high_precision="fp32"), cache_dir=cache_dir)
    samples = calibration.batch[:SENSITIVITY_SAMPLES]
    input_name = fp32.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="inception-deploy-sensitivity-") as tmp, \
            quiet_library("onnxruntime.quantization"):
        paths = {name: Path(tmp) / f"{name}.onnx" for name in ("fp32", "qdq", "fp32_aug", "qdq_aug")}
        onnx.save_model(fp32, paths["fp32"])
        onnx.save_model(qdq, paths["qdq"])
        feeds = [{input_name: samples[i:i + 1]} for i in range(len(samples))]  # one image a run, as calibration
        collected = {}
        for name in ("fp32", "qdq"):
            modify_model_output_intermediate_tensors(paths[name], paths[f"{name}_aug"])
            collected[name] = collect_activations(str(paths[f"{name}_aug"]), feeds)
        matching = create_activation_matching(collected["qdq"], collected["fp32"])
        activation_error = compute_activation_error(matching)
        weight_error = compute_weight_error(create_weight_matching(str(paths["fp32"]), str(paths["qdq"])))
    ranking = []
    producers = {out: node for node in qdq.graph.node for out in node.output}
    for name in quantization_nodes(fp32):
        node = next(n for n in fp32.graph.node if n.name == name)
        if node.op_type not in ("Conv", "Gemm"):
            continue
        noise = []
        qnode = next((n for n in qdq.graph.node if n.name == name), None)
        activation = _quantized_input(qnode, producers) if qnode is not None else None
        if activation in activation_error:
            noise.append(activation_error[activation]["qdq_err"])
        if node.input[1] in weight_error:
            noise.append(weight_error[node.input[1]])
        sqnr = _combined_sqnr(noise)
        ranking.append({"node": name, "module": module_name(fp32, name),
                        "sqnr_db": round(sqnr, 2) if math.isfinite(sqnr) else None,  # None: no noise found (JSON)
                        "activation_sqnr_db": _rounded(activation_error.get(activation, {}).get("qdq_err")),
                        "weight_sqnr_db": _rounded(weight_error.get(node.input[1]))})
    ranking.sort(key=lambda entry: entry["sqnr_db"] if entry["sqnr_db"] is not None else float("inf"))
    return ranking


def _rounded(value) -> float | None:
    return round(float(value), 2) if value is not None and math.isfinite(value) else None


def _quantized_input(node, producers: dict) -> str | None:
    """The float tensor whose Q/DQ feeds this node's activation input."""
    dq = producers.get(node.input[0])
    q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def _combined_sqnr(values: list[float]) -> float:
    """SQNRs (dB) of independent noises on one node, combined as noise powers; inf when there is no noise."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("inf")
    return -10.0 * math.log10(sum(10 ** (-v / 10.0) for v in finite))

