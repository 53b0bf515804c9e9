"""PyTorch -> ONNX, proven in ONNX Runtime before anything is written.

model -> torch.onnx (torch.export-based) -> onnx checker -> onnxsim -> ORT CPU parity -> model.onnx
      -> [fp16 conversion -> ORT CPU parity against the fp32 ONNX -> model.fp16.onnx] -> manifest.json
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..core.artifacts import (
    ENGINE_SUFFIXES,
    ONNX_FILES,
    QUANTIZED,
    check_output_dir,
    check_targets,
    engine_file,
    remove_quietly,
    sha256_of,
    staged,
)
from ..core.compare import difference
from ..core.deps import lazy_import, require
from ..core.errors import BackendMissing, CheckFailed, InceptionDeployError, InputError, first_line
from ..core.interrupts import honoured_interrupt, writes_complete_first
from ..core.logs import quiet_library
from ..core.manifest import (
    MANIFEST_NAME,
    artifact_record,
    listed_with,
    read_manifest,
    stage_manifest,
    verified_record,
)
from ..core.stats import MaxDrop, parse_max_drop
from ..core.tolerances import TOLERANCES
from ..core.version import __version__
from ..models.build import DEFAULT_INIT_SEED, check_num_classes, count_parameters
from ..models.labelled import LabelledImages, class_warnings, labelled_images
from ..models.load import deployable_model
from ..models.registry import get_spec
from ..models.samples import UNTRAINED_CONDITIONING, random_batch
from ..runners.onnxruntime_runner import OnnxRuntimeRunner
from .budget import AUTO, Budget, budgeted_int8, load_eval_set, shared_images
from .forms import INT8_FORMS, cpu_kernels, parse_forms, stock_ort_problems
from .fp16 import convert_to_fp16
from .qdq_rules import check_qdq, qdq_summary
from .quantize import (
    CALIB_METHODS,
    DEFAULT_CALIB_SAMPLES,
    SYNTHETIC_LABEL,
    Calibration,
    Int8Recipe,
    calibration_inputs,
    quantize_int8,
    stage_cache,
)

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18  # what TensorRT 8.6+/10 and ORT >= 1.14 all parse
MIN_OPSET = 17
DEFAULT_SAMPLES = 4
EXPORT_BATCH = 2  # traced example batch; the parity batch differs, which proves the batch is dynamic
INT8_EVAL_SAMPLES = 32
PROXY_NOTE = ("agreement with fp32 is a proxy: no accuracy was measured; pass --eval DIR (labelled images) to measure "
              "what int8 costs in top-1")

StepCallback = Callable[..., None]  # (label) or (label, done, total)


def default_out_dir(variant: str) -> Path:
    return Path("export") / get_spec(variant).name


def parse_batch(batch: str | int) -> int | None:
    """None for a dynamic batch, else the fixed batch size."""
    if isinstance(batch, str) and batch.strip().lower() == "dynamic":
        return None
    try:
        value = int(batch)
    except (TypeError, ValueError):
        raise InputError(f"--batch must be 'dynamic' or a positive integer, got '{batch}'") from None
    if value < 1:
        raise InputError(f"--batch must be 'dynamic' or a positive integer, got {value}")
    return value


def export_onnx(
    variant: str,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    opset: int = DEFAULT_OPSET,
    batch: str | int = "dynamic",
    simplify: bool = True,
    fp16: bool = False,
    fp16_io: bool = False,
    int8: bool = False,
    calib: str | Path | None = None,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    calib_method: str | None = None,
    calib_synthetic: bool = False,
    int8_form: str | None = None,
    int8_high_precision: str | None = None,
    int8_reduce_range: bool = False,
    eval_dir: str | Path | None = None,
    eval_labels: str | Path | None = None,
    eval_limit: int | None = None,
    max_drop: str | float | MaxDrop | None = None,
    fallback_limit: int | None = None,
    out_dir: str | Path | None = None,
    force: bool = False,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    on_step: StepCallback | None = None,
) -> dict:
    """Export `variant` to `out_dir/model.onnx` (+ `model.fp16.onnx`, `model.int8.onnx`, `model.int8-cpu.onnx`) and
    manifest.json.

    Every artifact is run in ONNX Runtime (CPU, default options) and compared before it is written: model.onnx
    against the PyTorch model, the others against model.onnx. fp32 and fp16 are refused when out of tolerance; int8
    is kept with its agreement figures, and a warning when they are poor. `int8_form`: tensorrt (model.int8.onnx),
    cpu (model.int8-cpu.onnx, ONNX Runtime's CPU form) or both, comma-separated (export/forms.py).
    With `eval_dir` (labelled images), int8 is held to an accuracy budget (`max_drop`, default 1 point of top-1):
    calibration methods compared, sensitive nodes left in high precision until it is met (export/budget.py); an
    int8 over budget is still written, marked so in its manifest entry ("accuracy"."within_budget" false).
    A re-export keeps the derived artifacts (fp16, int8, engines) whose source is unchanged and removes the
    others; the manifest lists them under "kept" and "removed". Exporting over another variant's export
    needs `force`. Returns the manifest (with "warnings", when there are any).
    Raises InputError for bad arguments or checkpoints, CheckFailed when a comparison fails (nothing is
    written then), BackendMissing when onnxruntime/onnxsim/onnxscript is not installed.
    """
    step = on_step or (lambda *_: None)
    spec = get_spec(variant)
    fixed_batch = parse_batch(batch)
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= max_opset:
        raise InputError(f"--opset must be between {MIN_OPSET} and {max_opset} (this onnx), got {opset}")
    check_num_classes(num_classes)
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    if fp16_io and not fp16:
        raise InputError("--fp16-io applies to the fp16 model: add --fp16")
    if (calib is not None or calib_synthetic) and not int8:
        raise InputError("--calib and --calib-synthetic calibrate the int8 model: add --int8")
    if not int8 and (int8_form is not None or int8_high_precision is not None or int8_reduce_range):
        raise InputError("--int8-form, --int8-high-precision and --int8-reduce-range shape the int8 model: add --int8")
    if (eval_dir is not None or max_drop is not None) and not int8:
        raise InputError("--eval and --max-drop hold the int8 model to an accuracy budget: add --int8")
    recipes = _recipes(int8_form or "tensorrt", int8_high_precision, int8_reduce_range) if int8 else ()
    _check_int8_opset(opset, recipes)
    plan = _int8_plan(spec, calib, calib_samples, calib_method, calib_synthetic, recipes, eval_dir, eval_labels,
                      eval_limit, max_drop, fallback_limit, weights) if int8 else None
    for module in ("onnxscript", "onnxruntime", *(("onnxsim",) if simplify else ())):
        require(module)  # fail before minutes of work, not after
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(spec.name)
    check_output_dir(out_dir, "--dir")  # before minutes of work
    _check_targets(out_dir, ["fp32", *(["fp16"] if fp16 else []), *(plan.precisions if plan else [])])
    previous = read_manifest(out_dir, lenient=force, fix="pass --force to replace it and the export it described, "
                             "or choose another --dir")
    if previous is not None and previous["variant"] != spec.name and not force:
        raise InputError(f"{out_dir} holds an export of {previous['variant']}: pass --force to replace it with "
                         f"{spec.name}, or choose another --dir")
    seconds: dict[str, float] = {}
    warnings: list[str] = []

    @contextlib.contextmanager
    def timed(name: str, label: str):
        step(label)
        start = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - start, 3)

    with honoured_interrupt():
        verified, model, pending_caches = _make_verified(
            spec, weights, num_classes, opset, fixed_batch, simplify, fp16, fp16_io, plan, out_dir, samples, seed,
            timed, step, warnings,
        )
    step(f"writing {out_dir}")
    start = time.perf_counter()
    # All of it or none of it: every file is staged under a temporary name, then all are renamed into place,
    # the manifest last; only then are the previous export's stale files removed. Ctrl-C waits for that.
    with writes_complete_first(f"the new export in {out_dir} was completed first (its files and manifest)"):
        with staged(out_dir) as staging:
            head = _manifest_head(spec, model, weights, opset, fixed_batch, simplify)
            manifest, stale = _stage_artifacts(out_dir, staging, head, verified, previous)
            for cache in pending_caches:
                stale += stage_cache(staging, *cache)
            seconds["write"] = round(time.perf_counter() - start, 3)
            manifest["export"]["seconds"] = seconds
            if warnings:
                manifest["warnings"] = warnings
            stage_manifest(staging, out_dir, manifest)
        for path in stale:
            remove_quietly(path)
    return manifest


def _check_targets(out_dir: Path, precisions: list[str]) -> None:
    """Before any work: every name this export will write is a file or free (artifacts.check_target), the
    calibration caches included, so that the commit cannot stop half-way on a directory."""
    names = [ONNX_FILES[p] for p in precisions] + [MANIFEST_NAME]
    stems = [ONNX_FILES[p].removesuffix(".onnx") for p in precisions if p in QUANTIZED]
    caches = sorted(c for stem in stems for c in out_dir.glob(f"{stem}.calib-*.json")) if out_dir.is_dir() else []
    check_targets([out_dir / name for name in names] + caches)


@dataclass(frozen=True)
class Int8Plan:
    """How the int8 models are made: one recipe a form, their calibration, and, with an eval set, the accuracy budget
    they are held to."""

    calibration: Calibration
    method: str  # a calibration method, or "auto" (with an eval set): the best of them on it
    recipes: tuple[Int8Recipe, ...]  # one a form, their method the plan's (minmax for auto: replaced per method)
    evaldata: LabelledImages | None = None  # listed, not yet decoded: its classes are checked against the head first
    max_drop: MaxDrop | None = None
    fallback_limit: int | None = None

    @property
    def precisions(self) -> list[str]:
        return [recipe.form.precision for recipe in self.recipes]


def _recipes(forms: str, high_precision: str | None, reduce_range: bool) -> tuple[Int8Recipe, ...]:
    """One recipe a form asked for; --int8-high-precision shapes the TensorRT form, --int8-reduce-range the CPU form,
    and each is refused without its form."""
    chosen = parse_forms(forms)
    for option, given, form in (("--int8-high-precision", high_precision is not None, "tensorrt"),
                                ("--int8-reduce-range", reduce_range, "cpu")):
        if given and INT8_FORMS[form] not in chosen:
            raise InputError(f"{option} applies to the {form} form: add --int8-form {form}")
    return tuple(Int8Recipe.of(form, high_precision=high_precision if form.name == "tensorrt" else None,
                               reduce_range=reduce_range and form.name == "cpu") for form in chosen)


def _check_int8_opset(opset: int, recipes: tuple[Int8Recipe, ...]) -> None:
    """The TensorRT form at --opset 21 or later would not load in a default ONNX Runtime session (forms.py)."""
    if opset >= 21 and any(recipe.form.name == "tensorrt" for recipe in recipes):
        raise InputError(f"--opset {opset}: ONNX Runtime cannot load TensorRT's int8 form at opset 21 or later (its "
                         "QDQ passes write a QuantizeLinear its own type check refuses): export with --opset 20 or "
                         f"lower (default {DEFAULT_OPSET})")


def _int8_plan(spec, calib, calib_samples, calib_method, calib_synthetic, recipes, eval_dir, eval_labels,
               eval_limit, max_drop, fallback_limit, weights) -> Int8Plan:
    """Every int8 argument checked, the calibration and eval images read: before minutes of work."""
    method = calib_method or (AUTO if eval_dir is not None else "minmax")
    if method not in (*CALIB_METHODS, AUTO):
        raise InputError(f"--calib-method must be one of {', '.join((*CALIB_METHODS, AUTO))}, not '{method}'")
    if method == AUTO and eval_dir is None:
        raise InputError("--calib-method auto keeps the method with the best top-1 on labelled images: add --eval DIR "
                         "(or choose minmax, entropy or percentile)")
    if method != AUTO:
        recipes = tuple(recipe.with_method(method) for recipe in recipes)
    if eval_dir is None and (eval_labels is not None or eval_limit is not None or fallback_limit is not None):
        raise InputError("--eval-labels, --eval-limit and --fallback-limit apply to the eval images: add --eval DIR")
    if fallback_limit is not None and fallback_limit < 0:
        raise InputError(f"--fallback-limit must be 0 (measure only) or more, got {fallback_limit}")
    if eval_dir is not None and weights is None:
        raise InputError("--eval measures top-1, and an untrained model (no --weights) has none to lose: pass the "
                         "checkpoint you will deploy with --weights")
    budget = parse_max_drop(max_drop) if eval_dir is not None or max_drop is not None else None
    if budget is not None and eval_dir is None:
        raise InputError("--max-drop is measured on labelled images: add --eval DIR")
    calibration = calibration_inputs(spec, calib, calib_samples, synthetic=calib_synthetic)
    evaldata = None
    if eval_dir is not None:
        if calibration.synthetic:
            raise InputError("--eval measures an int8 model calibrated on images: replace --calib-synthetic with "
                             "--calib DIR")
        evaldata = labelled_images(eval_dir, labels=eval_labels, limit=eval_limit, option="--eval",
                                   labels_option="--eval-labels", limit_option="--eval-limit")
    return Int8Plan(calibration, method, recipes, evaldata, budget, fallback_limit)


def _make_verified(spec, weights, num_classes, opset, fixed_batch, simplify, fp16, fp16_io, plan: Int8Plan | None,
                   out_dir, samples, seed, timed, step, warnings):
    """Every requested artifact, made and verified in memory: {precision: (proto, parity, facts)}, the model, and
    the calibration caches to publish with them."""
    with timed("build", f"building {spec.name}" + ("" if weights else " (untrained: conditioning BatchNorm)")):
        model = deployable_model(spec.name, num_classes=num_classes, weights=weights)
    evalset = None
    if plan is not None and plan.evaldata is not None:  # its labels checked against the head before the export
        classes = int(model.state_dict()[f"{spec.layout.classifier}.weight"].shape[0])
        with timed("eval_images", "reading the --eval images"):
            evalset = load_eval_set(spec, plan.evaldata, classes)
        warnings += class_warnings(plan.evaldata, classes)
    example = random_batch(spec, fixed_batch or EXPORT_BATCH, seed=seed + 2)
    check_input = random_batch(spec, fixed_batch or samples, seed=seed).numpy()
    with timed("torch_export", "exporting with torch.onnx (torch.export)"):
        proto = _torch_export(model, example, opset, dynamic=fixed_batch is None)
    with timed("check", "running the ONNX checker"):
        _check(proto)
    if simplify:
        with timed("simplify", "simplifying with onnxsim"):
            proto = _simplify(proto)
    with timed("parity", "verifying in ONNX Runtime (CPU) against torch"):
        with torch.inference_mode():
            expected = model(torch.from_numpy(check_input)).numpy()
        _check_outputs(expected, spec.name, warnings)
        fp32_parity, fp32_out = _verify(
            proto, check_input, expected, "fp32", variant=spec.name, reference="torch-cpu-fp32", seed=seed
        )
    verified = {"fp32": (proto, fp32_parity, {})}
    if fp16:
        with timed("fp16", "converting to fp16 and verifying in ONNX Runtime (CPU)"):
            proto16 = convert_to_fp16(proto, keep_io_types=not fp16_io)
            parity16, _ = _verify(proto16, check_input, fp32_out, "fp16", variant=spec.name,
                                  reference="onnxruntime-cpu-fp32", seed=seed)
            verified["fp16"] = (proto16, parity16, {"io_dtype": "float16" if fp16_io else "float32"})
    caches = []
    if plan is not None:
        budget = None
        probe = plan.calibration.batch[:INT8_EVAL_SAMPLES]
        with OnnxRuntimeRunner(proto) as runner:
            fp32_probe = runner.run({INPUT_NAME: probe})[OUTPUT_NAME]
        for recipe in plan.recipes:
            with timed(recipe.form.precision.replace("-", "_"),
                       f"quantizing to {recipe.form.precision} ({plan.method} calibration)"):
                budget, proto8, facts, made = _quantized(recipe, proto, plan, evalset, budget, out_dir, step, warnings)
                caches += made
                step(f"measuring {recipe.form.precision} agreement with fp32 in ONNX Runtime (CPU)")
                parity8, _ = _verify(proto8, probe, fp32_probe, recipe.form.precision, variant=spec.name,
                                     reference="onnxruntime-cpu-fp32", seed=seed, refuse=False)
                parity8["inputs"] = "calibration images" if not plan.calibration.synthetic else SYNTHETIC_LABEL
                if evalset is None:
                    parity8["proxy"] = PROXY_NOTE
                verified[recipe.form.precision] = (proto8, parity8, facts)
        for name, reason in plan.calibration.skipped:
            warnings.append(f"--calib: skipped {name}: {reason}")
        if plan.calibration.shortfall():
            warnings.append(plan.calibration.shortfall())
        if evalset is not None:
            warnings += [f"--eval: skipped {name}: {reason}" for name, reason in evalset.data.skipped]
            overlap = shared_images(plan.calibration, evalset)
            if overlap:
                warnings.append(f"{overlap} --eval image(s) are also --calib images: int8's measured top-1 is "
                                "optimistic; evaluate on images it was not calibrated on")
    return verified, model, caches


def _quantized(recipe: Int8Recipe, proto, plan: Int8Plan, evalset, budget, out_dir: Path, step, warnings):
    """One int8 form, made (and, with an eval set, held to its budget) and checked: the Budget (its fp32 reference
    measured once for every form), the model, its facts, and the calibration caches to publish."""
    if evalset is not None:
        budget = budget or Budget(proto, evalset, plan.max_drop, step)
        proto8, facts, caches = budgeted_int8(
            proto, plan.calibration, evalset, recipe, auto=plan.method == AUTO, max_drop=plan.max_drop,
            cache_dir=out_dir, fallback_limit=plan.fallback_limit, step=step, budget=budget)
        warnings += [w for w in facts["accuracy"].get("warnings", []) if w not in warnings]
    else:
        proto8, facts, cache = quantize_int8(
            proto, plan.calibration, recipe, cache_dir=out_dir,
            progress=lambda done, total: step("calibrating on images", done, total))
        caches = [cache] if cache is not None else []
    if facts["calibration"].get("cache_discarded"):
        warnings.append(f"the calibration cache {facts['calibration']['cache']} was "
                        f"{facts['calibration']['cache_discarded']}: discarded and rebuilt")
    what = f"the {recipe.form.precision} model"
    _check(proto8, what)
    problems = stock_ort_problems(proto8)  # before any artifact is written
    if problems:
        raise CheckFailed(f"{what} would compute wrong in a default onnxruntime session: {problems[0]}")
    if recipe.form.name == "tensorrt":
        check_qdq(proto8, what)
        facts["qdq"] = qdq_summary(proto8)
    else:
        facts["cpu_kernels"] = kernels = cpu_kernels(proto8)
        quantized = facts["calibration"]["quantized_nodes"]
        if kernels["integer"] < quantized:
            warnings.append(f"ONNX Runtime's CPU provider runs {kernels['integer']} of the {quantized} quantized "
                            f"Conv/Gemm of {what} in integer kernels, the rest in float")
        elif kernels["integer"] > quantized:  # a fall-back node between quantized tensors
            warnings.append(f"ONNX Runtime's CPU provider runs {kernels['integer'] - quantized} of the Conv/Gemm "
                            f"that {what} leaves out of int8 in integer kernels anyway: its WeightBiasQuantization "
                            "pass quantizes a float convolution between quantized tensors (per-tensor weights); the "
                            "measured figures are what it computes")
    return budget, proto8, facts, caches


def _check_outputs(expected: np.ndarray, variant: str, warnings: list[str]) -> None:
    """Name a degenerate model before ONNX Runtime is blamed for it."""
    if not np.isfinite(expected).all():
        kind = "NaN" if np.isnan(expected).any() else "Inf"
        raise CheckFailed(f"the PyTorch model itself outputs {kind} on the check inputs: its weights are broken "
                          f"(check the checkpoint); nothing was written")
    if len(expected) > 1 and np.allclose(
        expected, expected[:1], rtol=0, atol=1e-6 * max(1.0, float(np.abs(expected).max()))
    ):
        warnings.append(f"{variant} outputs the same logits for every input: it ignores its input (dead weights or "
                        "a broken checkpoint), so parity on it proves nothing")


def _torch_export(model: torch.nn.Module, example: torch.Tensor, opset: int, *, dynamic: bool) -> onnx.ModelProto:
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    narration = io.StringIO()  # the exporter narrates its passes on stdout; keep it out of ours
    try:
        # ... and logs them on its own loggers: quiet those for the call, and only those.
        with contextlib.redirect_stdout(narration), torch.no_grad(), \
                quiet_library("torch.onnx", "torch.export", "torch._dynamo", "torch.utils", "onnxscript"):
            program = torch.onnx.export(
                model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True, verbose=False,
            )
        return program.model_proto
    except Exception as err:
        message = re.sub(r"\x1b\[[0-9;]*m", "", first_line(err, 400))  # the exporter colours its messages
        raise InceptionDeployError(f"torch.onnx export failed: {message[:200]}") from None


def _check(proto: onnx.ModelProto, what: str = "the exported graph") -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise CheckFailed(f"{what} fails the ONNX checker: {first_line(err)}") from None


def _simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    onnxsim = require("onnxsim")
    try:
        simplified, ok = onnxsim.simplify(proto)
    except Exception as err:
        raise CheckFailed(f"onnxsim failed ({first_line(err)}): re-run with --no-simplify") from None
    if not ok:
        raise CheckFailed("onnxsim could not validate its simplified graph: re-run with --no-simplify")
    return simplified


def _verify(proto, x: np.ndarray, expected: np.ndarray, precision: str, *, variant: str, reference: str, seed: int,
            refuse: bool = True):
    """Run `proto` in ORT CPU on x, compare with `expected`; CheckFailed (nothing written) if out of tolerance."""
    with OnnxRuntimeRunner(proto, precision=precision) as runner:
        actual = runner.run({INPUT_NAME: x})[OUTPUT_NAME].astype(np.float32)
    diff = difference(expected, actual)
    tolerance = TOLERANCES[precision]
    passed = tolerance.passes(diff)
    if not passed and refuse:
        raise CheckFailed(
            f"ONNX Runtime does not reproduce {variant} ({precision} ONNX vs {reference}): max abs diff "
            f"{diff.max_abs:.3g}, "
            f"{diff.scaled:.3g} of the output scale (allowed {tolerance.max_scaled:g}), centred cosine "
            f"{diff.cosine_centred:.6f}; "
            "nothing was written — retry with --no-simplify, or another --opset"
        )
    parity = {"reference": reference, "backend": "onnxruntime-cpu", "samples": int(x.shape[0]), "seed": seed,
              **diff.to_dict(), "tolerance": tolerance.to_dict(), "passed": passed}
    return parity, actual




def _graph_io(value_info: onnx.ValueInfoProto) -> dict:
    tensor = value_info.type.tensor_type
    return {
        "name": value_info.name,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
        "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim],
    }


def _versions() -> dict[str, str | None]:
    versions = {"inception_deploy": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "onnx": onnx.__version__}
    for module in ("onnxscript", "onnxsim", "onnxruntime"):
        try:
            versions[module] = str(require(module).__version__)
        except BackendMissing:
            versions[module] = None  # onnxsim with --no-simplify
    return versions


def _manifest_head(spec, model, weights, opset: int, fixed_batch: int | None, simplified: bool) -> dict:
    # the absolute path: parity, bench and accuracy rebuild the model from it, from whatever folder they run in
    weights_info = None if weights is None else {"path": str(Path(weights).resolve()),
                                                 "sha256": sha256_of(Path(weights))}
    return {
        "schema": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "variant": spec.name,
        "title": spec.title,
        "weights": weights_info,
        "untrained": model.untrained,
        # how `parity` rebuilds the same untrained weights
        "untrained_init": {"init_seed": DEFAULT_INIT_SEED, **UNTRAINED_CONDITIONING} if model.untrained else None,
        "num_classes": int(model.state_dict()[f"{spec.layout.classifier}.weight"].shape[0]),
        "transform_input": bool(getattr(model, "transform_input", False)),
        "preprocessing": {**spec.to_dict()["preprocessing"], "input_size": list(spec.input_size)},
        "params": count_parameters(model),
        "opset": opset,
        "batch": "dynamic" if fixed_batch is None else fixed_batch,
        "versions": _versions(),
        "export": {"exporter": "torch.onnx (dynamo)", "simplified": simplified},
    }


def _keep_measurement(record: dict, earlier: dict | None) -> None:
    """A measurement stays with the bytes it measured until they change: an int8 file written again byte for byte
    (the same sha256) without --eval keeps the accuracy an earlier export measured of it, over-budget mark included,
    saying so."""
    if "accuracy" in record or not isinstance(earlier, dict) or earlier.get("sha256") != record["sha256"]:
        return
    if isinstance(earlier.get("accuracy"), dict):
        record["accuracy"] = {**earlier["accuracy"], "measured_by": "an earlier export of these same bytes (the same "
                                                                    "sha256): it stays with them until they change"}


def _stage_artifacts(
    out_dir: Path, staging, head: dict, verified: dict, previous: dict | None
) -> tuple[dict, list[Path]]:
    """Stage each verified artifact; return the manifest and the files to remove once it is in place.

    Of the previous export's artifacts, those derived from a source that is unchanged (the same sha256: an
    fp16 or int8 ONNX of the same model.onnx, an engine of the same ONNX) are kept; the others are removed
    and listed under "removed", with the reason. Without a usable previous manifest, any file under an
    artifact's name that this export did not write is of unknown origin: removed too."""
    records, valid = [], {}
    earlier = {e.get("path"): e for e in (previous or {}).get("artifacts", []) if isinstance(e, dict)} \
        if previous is not None and previous.get("variant") == head["variant"] else {}
    for precision, (proto, parity, facts) in verified.items():  # fp32 first: the others record it as their source
        path = out_dir / ONNX_FILES[precision]
        tmp = staging.path(path)
        onnx.save_model(proto, tmp)
        source = (
            {} if precision == "fp32" else {"source": {"path": ONNX_FILES["fp32"], "sha256": valid[ONNX_FILES["fp32"]]}}
        )
        record = artifact_record(
            out_dir, path, content=tmp, kind="onnx", precision=precision, **facts, **source, parity=parity
        )
        _keep_measurement(record, earlier.get(record["path"]))
        records.append(record)
        valid[record["path"]] = record["sha256"]
    fp32_graph = verified["fp32"][0].graph
    head["input"] = _graph_io(fp32_graph.input[0])
    head["output"] = _graph_io(fp32_graph.output[0])
    same_variant = previous is not None and previous.get("variant") == head["variant"]
    old = previous.get("artifacts", []) if previous else []
    old_sha = {e["path"]: e["sha256"] for e in old}
    kept, removed = [], []
    for entry in sorted((e for e in old if e["path"] not in valid), key=lambda e: e.get("kind") != "onnx"):
        source = entry.get("source") or {}
        source_path = source.get("path", ONNX_FILES["fp32"])  # before sources were recorded: made with model.onnx
        source_sha = source.get("sha256", old_sha.get(source_path))
        path = out_dir / entry["path"]
        if not same_variant:
            removed.append({"path": entry["path"], "why": f"an artifact of {previous.get('variant')}"})
        elif valid.get(source_path) != source_sha:
            removed.append({"path": entry["path"], "why": f"made from a {source_path} this export replaced"})
        elif not path.is_file() or sha256_of(path) != entry["sha256"]:
            removed.append({"path": entry["path"], "why": "missing or changed since it was made"})
        elif entry.get("kind") == "onnx" and entry.get("precision") in QUANTIZED and \
                (problems := stock_ort_problems(onnx.load(str(path)))):
            removed.append({"path": entry["path"], "why": "written by an earlier inception-deploy, it computes wrong "
                                                          f"in a default onnxruntime session ({problems[0]}): "
                                                          "export it again"})
        else:
            kept.append(entry)
            valid[entry["path"]] = entry["sha256"]
    if previous is None:
        for name in _artifact_names():
            if name not in valid and (out_dir / name).is_file():
                removed.append({"path": name, "why": "not listed by any manifest here: of unknown origin"})
    stale = []
    for entry in removed:
        path = out_dir / entry["path"]
        for candidate in (path, path.with_name(path.name + ".runtime-cache")):
            if candidate.is_file() and candidate.resolve().parent == out_dir.resolve():
                stale.append(candidate)
    head["artifacts"] = records + kept
    if kept:
        head["kept"] = [e["path"] for e in kept]
    if removed:
        head["removed"] = removed
    return head, stale


def _artifact_names() -> list[str]:
    engines = [engine_file(p, c) for p in ONNX_FILES if p != "int8-cpu" for c in ENGINE_SUFFIXES]
    return [*ONNX_FILES.values(), *engines, *(f"{e}.runtime-cache" for e in engines)]


def verified_fp16(export_dir: Path, manifest: dict | None, *, fp16_io: bool = False, samples: int = DEFAULT_SAMPLES,
                  seed: int = 0) -> tuple[onnx.ModelProto, dict]:
    """model.fp16.onnx made in memory from an existing export's model.onnx and verified against it in ONNX Runtime;
    nothing is written. Returns the model and the facts of its manifest entry (stage_fp16 writes both)."""
    source = export_dir / ONNX_FILES["fp32"]
    if manifest is None or not source.is_file():
        raise InputError(f"no model.onnx with a manifest in {export_dir}: run `inception-deploy export` first")
    listed = verified_record(source, manifest, fix=f"re-export it with `inception-deploy export {manifest['variant']}`",
                             required=True)
    spec = get_spec(manifest["variant"])
    proto = onnx.load(str(source))
    fixed = manifest.get("batch")
    x = random_batch(spec, fixed if isinstance(fixed, int) else samples, seed=seed).numpy()
    with OnnxRuntimeRunner(proto) as runner:
        expected = runner.run({INPUT_NAME: x})[OUTPUT_NAME]
    proto16 = convert_to_fp16(proto, keep_io_types=not fp16_io)
    parity, _ = _verify(proto16, x, expected, "fp16", variant=spec.name, reference="onnxruntime-cpu-fp32", seed=seed)
    return proto16, {"io_dtype": "float16" if fp16_io else "float32",
                     "source": {"path": source.name, "sha256": listed["sha256"]}, "parity": parity}


def stage_fp16(staging, export_dir: Path, proto16: onnx.ModelProto, facts: dict) -> dict:
    """Stage model.fp16.onnx (artifacts.staged); return its manifest entry."""
    path = export_dir / ONNX_FILES["fp16"]
    tmp = staging.path(path)
    onnx.save_model(proto16, tmp)
    return artifact_record(export_dir, path, content=tmp, kind="onnx", precision="fp16", **facts)


def add_fp16(export_dir: str | Path, *, fp16_io: bool = False, samples: int = DEFAULT_SAMPLES, seed: int = 0) -> dict:
    """Make model.fp16.onnx from an existing export's model.onnx, verified against it, and list it."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    path = export_dir / ONNX_FILES["fp16"]
    check_targets([path, export_dir / MANIFEST_NAME])
    proto16, facts = verified_fp16(export_dir, manifest, fp16_io=fp16_io, samples=samples, seed=seed)
    with (
        writes_complete_first(f"{path.name} was completed first, and listed in the manifest"),
        staged(export_dir) as staging,
    ):
        record = stage_fp16(staging, export_dir, proto16, facts)
        stage_manifest(staging, export_dir, listed_with(manifest, record))
    return manifest
