"""Does every backend compute what the PyTorch model computes? The heart of the tool.

reference (torch fp32 on the CPU, or ORT CPU on model.onnx) vs every backend × artifact × output,
on seeded random inputs and/or real images, against the per-precision tolerance table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..core.artifacts import ENGINE_KINDS, PRECISIONS, export_command, missing_artifact
from ..core.compare import Difference, difference
from ..core.compilers import COMPILERS, require_runtime
from ..core.deps import lazy_import
from ..core.errors import CheckFailed, InputError, check_number, first_line
from ..core.manifest import read_manifest, verified_record, verify_beside
from ..core.tolerances import TOLERANCES, ElementwiseTolerance, Tolerance
from ..export.forms import check_form, form_of
from ..export.onnx import default_out_dir
from ..models.identify import identify, model_signature, onnx_signature
from ..models.labelled import image_set
from ..models.load import deployable_model, reference_weights
from ..models.registry import get_spec
from ..models.samples import random_batch
from ..runners import Backend, Runner, check_each_runs, open_runner, parse_backends, unsupported
from .localize import BlockDivergence, first_divergence, localize

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 8
CHUNK = 8  # samples per run: bounds memory on big inputs
REFERENCES = {"torch": "torch-cpu-fp32", "onnxruntime": "onnxruntime-cpu-fp32"}


@dataclass(frozen=True)
class Artifact:
    path: Path
    precision: str
    kind: str = "onnx"  # or an engine kind: "tensorrt-engine", "tensorrt-rtx-engine"


@dataclass
class ParityRow:
    backend: str
    device: str
    artifact: str  # file name, or "model" for the torch backend
    precision: str
    output: str
    diff: Difference | None
    tolerance: Tolerance | ElementwiseTolerance | None
    passed: bool | None  # None: skipped
    skipped: str | None = None
    seconds: float = 0.0
    localization: list[BlockDivergence] | None = None

    def to_dict(self) -> dict:
        d = {"backend": self.backend, "device": self.device, "artifact": self.artifact, "precision": self.precision,
             "output": self.output, "passed": self.passed, "skipped": self.skipped, "seconds": round(self.seconds, 3)}
        if self.diff is not None:
            d.update(self.diff.to_dict())
            d["tolerance"] = self.tolerance.to_dict()
        if self.localization is not None:
            first = first_divergence(self.localization)
            d["first_divergent_block"] = first.block if first else None
            d["blocks"] = [b.to_dict() for b in self.localization]
        return d


@dataclass
class ParityReport:
    variant: str
    reference: str
    untrained: bool
    inputs: dict
    rows: list[ParityRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed is not False for r in self.rows) and any(r.passed for r in self.rows)

    def to_dict(self) -> dict:
        return {"variant": self.variant, "reference": self.reference, "untrained": self.untrained,
                "inputs": self.inputs, "passed": self.passed, "warnings": self.warnings,
                "rows": [r.to_dict() for r in self.rows]}


def check_parity(
    variant: str,
    *,
    onnx_files: list[str | Path] | None = None,
    export_dir: str | Path | None = None,
    backends: str | list[str] = "onnxruntime",
    reference: str = "torch",
    precisions: str | list[str] | None = None,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    images: str | Path | None = None,
    samples: int | None = None,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    localize_failures: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> ParityReport:
    """Compare every artifact of `variant` (its export's manifest, or `onnx_files`) on every backend."""
    step = on_step or (lambda _: None)
    spec = get_spec(variant)
    chosen_backends = parse_backends(backends)
    wanted = _parse_precisions(precisions)
    atol = _check_arguments(chosen_backends, reference, atol, rtol, samples, images)

    manifest, artifacts = _artifacts(spec.name, onnx_files, export_dir)
    if wanted is not None:
        missing = [p for p in wanted if p not in {a.precision for a in artifacts if a.kind == "onnx"}
                   and not any(b.runs == "model" for b in chosen_backends)]
        if missing:
            raise InputError(f"no {'/'.join(missing)} artifact for {spec.name}: run "
                             f"`{export_command(spec.aliases[0], missing[0])}` or name one with --onnx")
        artifacts = [a for a in artifacts if a.precision in wanted]
    plan = [(backend, target, precision) for backend in chosen_backends
            for target, precision in _targets(backend, artifacts, wanted, reference)]
    _check_something_runs(plan, chosen_backends, wanted, reference)
    weights, num_classes = reference_weights(manifest, weights, num_classes)

    step(f"building the reference: {spec.name}" + ("" if weights else " (untrained)"))
    model = deployable_model(spec.name, weights=weights, num_classes=num_classes)
    for artifact in artifacts:
        if artifact.kind == "onnx":
            _check_artifact_matches(artifact, model, spec)

    x, inputs_info = _inputs(spec, images, samples, seed)
    step(f"running the reference ({REFERENCES[reference]}) on {len(x)} inputs")
    if reference == "torch":
        with open_runner(parse_backends("torch")[0], model=model) as runner:
            expected = _run_all(runner, x)
    else:
        fp32 = next((a for a in artifacts if a.precision == "fp32" and a.kind == "onnx"), None)
        if fp32 is None:
            raise InputError("--reference onnxruntime needs the fp32 model.onnx among the artifacts")
        with open_runner(parse_backends("onnxruntime")[0], artifact=fp32.path) as runner:
            expected = _run_all(runner, x)

    report = ParityReport(spec.name, REFERENCES[reference], model.untrained, inputs_info)
    _check_reference(expected["logits"], x, report)
    for backend, target, precision in plan:
        if isinstance(target, str):  # a reason to skip
            report.rows.append(ParityRow(backend.name, backend.device, "—", precision, "logits", None, None,
                                         None, skipped=target))
            continue
        report.rows += _rows(backend, target, precision, model, x, expected["logits"], atol, rtol,
                             localize_failures, step)
    return report


def _check_something_runs(plan: list, backends: list[Backend], wanted: list[str] | None, reference: str) -> None:
    """InputError before any work when no backend has anything to compare with the reference: every target skipped,
    or the only one asked for is the reference itself; or when a precision asked for by name runs on none of them."""
    check_each_runs(plan, wanted, REFERENCES[reference])
    if any(not isinstance(target, str) for _, target, _ in plan):
        return
    reasons = list(dict.fromkeys(f"{backend.name}: {target}" for backend, target, _ in plan))
    itself = (lambda b: b.runs == "model" and not b.compile) if reference == "torch" else (lambda b: b.runs == "onnx")
    if (wanted is None or "fp32" in wanted) and any(b.device == "cpu" and itself(b) for b in backends):
        other = "onnxruntime" if reference == "torch" else "torch"
        reasons.append(f"fp32 on the CPU is the reference itself: add a backend (--backends {other}) or a precision "
                       "(--precision fp16)")
    raise InputError(f"nothing to compare with the reference ({REFERENCES[reference]}): {'; '.join(reasons)}")


def _check_arguments(backends: list[Backend], reference: str, atol, rtol, samples, images) -> float | None:
    """Every argument problem before any work; the atol to use (--rtol alone: purely relative, atol 0)."""
    if reference not in REFERENCES:
        raise InputError(f"--reference must be one of {', '.join(REFERENCES)}, not '{reference}'")
    for backend in backends:
        if backend.engine in COMPILERS:
            require_runtime(COMPILERS[backend.engine])  # exit 3 before any work when the library or the GPU is missing
    for value, option in ((atol, "--atol"), (rtol, "--rtol")):
        if value is not None:
            check_number(value, option, minimum=0)
    if samples is not None and (samples < 0 or (samples == 0 and images is None)):
        raise InputError("--samples must be at least 1 (or 0 with --images)")
    return 0.0 if rtol is not None and atol is None else atol


def _rows(backend: Backend, target, precision: str, model, x, expected, atol, rtol, localize_failures: bool,
          step) -> list["ParityRow"]:
    """One backend on one artifact (or the model itself): a row per output, localized when asked and failing."""
    label = "model" if target is None else target.path.name
    step(f"{backend.name}: {label} ({precision})")
    start = time.perf_counter()
    with open_runner(backend, model=model, artifact=None if target is None else target.path,
                     precision=precision) as runner:
        outputs = _run_all(runner, x)
    tolerance = ElementwiseTolerance(atol, rtol or 0.0) if atol is not None else TOLERANCES[precision]
    rows = []
    for name, got in outputs.items():
        diff = difference(expected, got, rtol=getattr(tolerance, "rtol", 0.0), atol=getattr(tolerance, "atol", None))
        row = ParityRow(backend.name, backend.device, label, precision, name, diff, tolerance,
                        tolerance.passes(diff), seconds=time.perf_counter() - start)
        if localize_failures and not row.passed and target is not None and target.kind == "onnx":
            step(f"localizing the divergence in {label}")
            row.localization = localize(model, onnx.load(str(target.path)), x[:2].numpy(),
                                        tolerance=TOLERANCES[precision],
                                        device="cpu" if backend.device == "cpu" else backend.device,
                                        precision=precision)
        rows.append(row)
    return rows


def _check_reference(logits: np.ndarray, x: torch.Tensor, report: ParityReport) -> None:
    """A degenerate reference makes every verdict meaningless: NaN is an error, a constant output a warning."""
    if not np.isfinite(logits).all():
        kind = "NaN" if np.isnan(logits).any() else "Inf"
        raise CheckFailed(f"the reference ({report.reference}) itself outputs {kind}: the model's weights are broken "
                          "(check the checkpoint); no backend can be compared with it")
    distinct = len({hash(sample.numpy().tobytes()) for sample in x}) > 1
    scale = max(1.0, float(np.abs(logits).max()))
    if distinct and len(logits) > 1 and np.allclose(logits, logits[:1], rtol=0, atol=1e-6 * scale):
        report.warnings.append("the reference outputs the same logits for every input: the model ignores its input "
                               "(dead weights or a broken checkpoint), so a PASS here proves nothing")


def _parse_precisions(precisions) -> list[str] | None:
    if precisions is None:
        return None
    names = [
        p.strip().lower() for p in (precisions.split(",") if isinstance(precisions, str) else precisions) if p.strip()
    ]
    unknown = [p for p in names if p not in PRECISIONS]
    if unknown or not names:
        raise InputError(f"unknown precision '{', '.join(unknown) or precisions}': choose from {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(names))


def _artifacts(variant: str, onnx_files, export_dir) -> tuple[dict | None, list[Artifact]]:
    if onnx_files:
        paths = [Path(p) for p in onnx_files]
        for p in paths:
            if not p.is_file():
                raise missing_artifact(p, "pass the path of an ONNX file with --onnx")
            verify_beside(p, fix="re-run the export, or pass a copy from elsewhere")  # before reading a byte of it
        manifest = read_manifest(paths[0].parent)
        if manifest is not None and manifest.get("variant") != variant:
            manifest = None  # a manifest of another variant says nothing about this reference
        return manifest, [Artifact(p, _precision_of(p)) for p in paths]
    directory = Path(export_dir) if export_dir is not None else default_out_dir(variant)
    manifest = read_manifest(directory)
    if manifest is None:
        raise InputError(f"no export of {variant} in {directory}: run `inception-deploy export {variant}` first, "
                         "or name files with --onnx")
    if manifest.get("variant") != variant:
        raise InputError(f"{directory} holds an export of {manifest.get('variant')}, not {variant}")
    artifacts = []
    for entry in manifest.get("artifacts", []):
        if entry.get("kind") not in ("onnx", *ENGINE_KINDS.values()):
            continue
        path = directory / entry["path"]
        if not path.is_file():
            raise missing_artifact(path, "re-run the export (its manifest lists it)")
        verified_record(path, manifest, fix="re-run the export, or pass it with --onnx")
        if entry["kind"] == "onnx":
            check_form(path, entry["precision"], variant)
        artifacts.append(Artifact(path, entry["precision"], entry["kind"]))
    return manifest, artifacts


def _precision_of(path: Path) -> str:
    if path.stat().st_size == 0:
        raise InputError(f"--onnx {path} is empty (0 bytes): export it again")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise InputError(f"--onnx {path} is not a readable ONNX model ({first_line(err, 120)}): "
                         "it is corrupt or truncated; export it again") from None
    if not model.graph.node:
        raise InputError(f"--onnx {path} is not a readable ONNX model (it holds no graph): export it again")
    quantized = form_of(model)  # int8 (TensorRT's form) or int8-cpu (ONNX Runtime's CPU form)
    if quantized:
        return quantized
    if any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer):
        return "fp16"
    return "fp32"


def _check_artifact_matches(artifact: Artifact, model: torch.nn.Module, spec) -> None:
    """Refuse, in one line, an ONNX file of another variant (or head size)."""
    graph = onnx.load(str(artifact.path), load_external_data=False).graph
    signature = onnx_signature(graph)
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] if graph.input else []
    classes = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim][1:] if graph.output else []
    head = model.state_dict()[f"{spec.layout.classifier}.weight"].shape[0]
    if signature == model_signature(model) and dims[1:] == list(spec.input_size):
        if classes != [head]:
            raise InputError(f"{artifact.path} outputs {classes} classes but the reference model has {head}: "
                             "pass the checkpoint it was exported from with --weights, or --num-classes")
        return
    owner = identify(signature)
    hint = (f": it looks like {owner.name} — run `inception-deploy parity {owner.aliases[0]} --onnx {artifact.path}`"
            if owner is not None and owner.name != spec.name else "")
    raise InputError(f"{artifact.path} is not an ONNX export of this {spec.name} (its convolutions or input "
                     f"{dims[1:]} differ){hint}")


def _inputs(spec, images, samples, seed) -> tuple[torch.Tensor, dict]:
    parts, info = [], {"seed": seed, "random": 0, "images": [], "skipped_images": []}
    if images is not None:
        batch, used, skipped = image_set(spec, images)
        parts.append(batch)
        info.update(images=used, skipped_images=[{"file": f, "reason": r} for f, r in skipped], image_dir=str(images))
    n_random = samples if samples is not None else (0 if images is not None else DEFAULT_SAMPLES)
    if n_random:
        parts.append(random_batch(spec, n_random, seed=seed))
        info["random"] = n_random
    x = torch.cat(parts)
    info["total"] = int(x.shape[0])
    return x, info


def _targets(backend: Backend, artifacts: list[Artifact], wanted, reference: str):
    """(artifact or None for the torch model, precision) pairs this backend checks; a str target is a skip reason."""
    if backend.runs == "model":
        for precision in wanted or ["fp32", "fp16"]:
            if unsupported(backend, precision):
                yield unsupported(backend, precision), precision
            elif precision == "fp32" and backend.device == "cpu" and not backend.compile and reference == "torch":
                continue  # the reference itself (torch-compile's fp32 is a row: compiled code is not the reference)
            else:
                yield None, precision
        return
    refused = [p for p in wanted or [] if unsupported(backend, p)]
    for precision in refused:
        yield unsupported(backend, precision), precision
    mine = [a for a in artifacts if a.kind == backend.runs and a.precision not in refused]
    if not mine and refused and len(refused) == len(wanted):
        return
    if not mine:
        yield ("no ONNX artifact to run: export one" if backend.runs == "onnx" else
               f"no {COMPILERS[backend.engine].title} engine to run: build one with "
               f"`inception-deploy trt --compiler {backend.engine}`"), "—"
    for artifact in mine:
        if reference == "onnxruntime" and backend.device == "cpu" and artifact.precision == "fp32":
            continue  # the reference itself
        yield unsupported(backend, artifact.precision) or artifact, artifact.precision


def _run_all(runner: Runner, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Run x through the runner in chunks that respect a fixed batch size (padding the last chunk)."""
    fixed = runner.inputs[0].fixed_batch
    size = fixed or CHUNK
    name = runner.inputs[0].name
    pieces: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), size):
        chunk = x[start:start + size]
        n = len(chunk)
        if fixed and n < fixed:
            chunk = torch.cat([chunk, chunk[-1:].expand(fixed - n, *chunk.shape[1:])])
        for out_name, value in runner.run({name: chunk.numpy()}).items():
            pieces.setdefault(out_name, []).append(np.asarray(value, dtype=np.float32)[:n])
    return {k: np.concatenate(v) for k, v in pieces.items()}
