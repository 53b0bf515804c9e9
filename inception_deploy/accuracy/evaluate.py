"""Top-1/top-5 of every artifact on labelled images, against fp32 PyTorch on the CPU on the very same images.

Every row runs the same images, decoded once through the variant's own preprocessing, through the generic runner
interface (ONNX Runtime on the CPU exactly as an engine on a GPU). Per row: top-1 and top-5 with Wilson's 95 %
interval; the paired comparison with the reference (images that flipped right→wrong and wrong→right, McNemar's exact
p, and the top-1 drop with the Agresti–Min 95 % interval for paired proportions); the throughput of the backend's
run calls alone. A row passes when its top-1 drop is within the allowed drop.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.artifacts import ENGINE_KINDS, PRECISIONS, QUANTIZED, export_command, missing_artifact
from ..core.compilers import COMPILERS, require_runtime
from ..core.errors import InputError
from ..core.manifest import read_manifest, verified_record
from ..core.stats import Z95, MaxDrop, mcnemar_exact, parse_max_drop, topk_hits, wilson
from ..export.forms import check_form
from ..export.onnx import default_out_dir
from ..models.labelled import DecodedBatches, check_classes, class_warnings, labelled_images, no_better_than_chance
from ..models.load import check_export_weights, deployable_model, reference_weights
from ..models.registry import get_spec
from ..runners import Backend, Runner, check_each_runs, open_runner, parse_backends, unsupported

log = logging.getLogger(__name__)

REFERENCE = "torch-cpu-fp32"
DEFAULT_BATCH = 32
THROUGHPUT = ("images per second of the backend's run calls only (image decoding and preprocessing excluded), over "
              "the full batches after the first (the first is the warm-up; a smaller last batch is a new shape)")
UNITS = {
    "top1": "fraction of images in [0, 1]", "top5": "fraction of images in [0, 1]",
    "top1_ci95_low": "fraction, Wilson 95 % interval", "top1_ci95_high": "fraction, Wilson 95 % interval",
    "top5_ci95_low": "fraction, Wilson 95 % interval", "top5_ci95_high": "fraction, Wilson 95 % interval",
    "drop_points": "percentage points of top-1 below the reference (negative: better than the reference)",
    "drop_ci95_low_points": "percentage points, Agresti-Min 95 % interval of the paired difference",
    "drop_ci95_high_points": "percentage points, Agresti-Min 95 % interval of the paired difference",
    "allowed_drop_points": "percentage points of top-1",
    "right_to_wrong": "images the reference gets right and this row wrong (top-1)",
    "wrong_to_right": "images the reference gets wrong and this row right (top-1)",
    "mcnemar_p": "two-sided exact McNemar p-value of the top-1 flips",
    "images_per_s": THROUGHPUT,
    "run_seconds": "seconds in the backend's run calls (the same calls as images_per_s)",
    "timed_images": "images of those run calls (the full batches after the first, where there are any)",
}

Step = Callable[..., None]  # (label, done=None, total=None), as cli.common.StepReporter takes it


@dataclass(frozen=True)
class Artifact:
    path: Path
    precision: str
    kind: str  # "onnx", or an engine kind: "tensorrt-engine", "tensorrt-rtx-engine"


@dataclass
class AccuracyRow:
    backend: str
    device: str
    artifact: str  # file name, or "model" for a torch backend
    precision: str
    reference: bool = False
    skipped: str | None = None  # why the row did not run
    images: int = 0
    top1_hits: int = 0
    top5_hits: int = 0
    right_to_wrong: int = 0
    wrong_to_right: int = 0
    allowed_drop_points: float | None = None
    run_seconds: float = 0.0
    timed_images: int = 0  # the images of run_seconds: those of the full batches after the first (see _evaluate)

    @property
    def top1(self) -> float:
        return self.top1_hits / self.images if self.images else 0.0

    @property
    def top5(self) -> float:
        return self.top5_hits / self.images if self.images else 0.0

    @property
    def top1_ci95(self) -> tuple[float, float]:
        return wilson(self.top1_hits, self.images)

    @property
    def top5_ci95(self) -> tuple[float, float]:
        return wilson(self.top5_hits, self.images)

    @property
    def drop_points(self) -> float:
        """Top-1 of the reference minus this row's, in percentage points: (right→wrong − wrong→right) / n."""
        return 100.0 * (self.right_to_wrong - self.wrong_to_right) / self.images if self.images else 0.0

    @property
    def drop_ci95_points(self) -> tuple[float, float]:
        return paired_drop_interval(self.right_to_wrong, self.wrong_to_right, self.images)

    @property
    def mcnemar_p(self) -> float:
        return mcnemar_exact(self.right_to_wrong, self.wrong_to_right)

    @property
    def images_per_s(self) -> float | None:
        return self.timed_images / self.run_seconds if self.run_seconds > 0 else None

    @property
    def passed(self) -> bool | None:
        """None for the reference and for a skipped row; else: is the top-1 drop within the allowed drop?"""
        if self.reference or self.skipped or self.allowed_drop_points is None:
            return None
        return self.drop_points <= self.allowed_drop_points + 1e-9  # the drop is a ratio of integers: no rounding

    def to_dict(self) -> dict:
        d = {"backend": self.backend, "device": self.device, "artifact": self.artifact, "precision": self.precision,
             "reference": self.reference, "skipped": self.skipped, "passed": self.passed, "images": self.images}
        if self.skipped:
            return d
        (t1_low, t1_high), (t5_low, t5_high) = self.top1_ci95, self.top5_ci95
        d.update(top1=self.top1, top1_ci95_low=t1_low, top1_ci95_high=t1_high, top1_hits=self.top1_hits,
                 top5=self.top5, top5_ci95_low=t5_low, top5_ci95_high=t5_high, top5_hits=self.top5_hits)
        if not self.reference:
            low, high = self.drop_ci95_points
            d.update(drop_points=self.drop_points, drop_ci95_low_points=low, drop_ci95_high_points=high,
                     allowed_drop_points=self.allowed_drop_points, right_to_wrong=self.right_to_wrong,
                     wrong_to_right=self.wrong_to_right, mcnemar_p=self.mcnemar_p)
        d.update(images_per_s=self.images_per_s, run_seconds=self.run_seconds, timed_images=self.timed_images)
        return d


@dataclass
class AccuracyReport:
    variant: str
    untrained: bool
    data: dict  # where the images came from and how many were evaluated
    batch: int
    max_drop: MaxDrop
    rows: list[AccuracyRow] = field(default_factory=list)
    skipped_images: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    warnings: list[str] = field(default_factory=list)
    chance: str | None = None  # set when the reference's top-1 is no better than the most common label's share

    @property
    def reference_row(self) -> AccuracyRow:
        return next(r for r in self.rows if r.reference)

    @property
    def failed(self) -> list[AccuracyRow]:
        return [r for r in self.rows if r.passed is False]

    @property
    def meaningless(self) -> str | None:
        """Why no verdict can be drawn from this comparison, if none can: the reference itself has no accuracy to
        lose (an untrained model, or a top-1 no better than always answering the most common label)."""
        if self.untrained:
            return "the reference is an untrained model (no weights in the manifest): its top-1 is chance"
        return self.chance

    @property
    def passed(self) -> bool:
        """No row beyond the allowed drop, at least one row compared with the reference, and a reference that has
        an accuracy to lose: never PASS on a comparison this tool calls meaningless."""
        return not self.meaningless and not self.failed and any(r.passed for r in self.rows)

    def to_dict(self) -> dict:
        return {"variant": self.variant, "untrained": self.untrained, "reference": REFERENCE, "data": self.data,
                "batch": self.batch, "max_drop": {**self.max_drop.to_dict(), "describe": self.max_drop.describe()},
                "passed": self.passed, "no_verdict": self.meaningless, "units": UNITS, "warnings": self.warnings,
                "skipped_images": [{"file": f, "reason": why} for f, why in self.skipped_images],
                "rows": [r.to_dict() for r in self.rows]}


def paired_drop_interval(right_to_wrong: int, wrong_to_right: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % interval of the paired top-1 drop (reference minus row), in percentage points: Agresti & Min (2005),
    the Wald interval after adding 1/2 to each cell of the 2×2 table of the same images (honest at 0 flips and small
    n, where the plain Wald interval collapses to a point)."""
    if n <= 0:
        return -100.0, 100.0
    b, c = (right_to_wrong + 0.5) / (n + 2), (wrong_to_right + 0.5) / (n + 2)
    diff = b - c
    half = z * math.sqrt(max(0.0, b + c - diff * diff) / (n + 2))
    return 100.0 * max(-1.0, diff - half), 100.0 * min(1.0, diff + half)


def evaluate_accuracy(
    variant: str,
    *,
    data: str | Path,
    labels: str | Path | None = None,
    limit: int | None = None,
    batch: int = DEFAULT_BATCH,
    backends: str | list[str] = "onnxruntime",
    precisions: str | list[str] | None = None,
    export_dir: str | Path | None = None,
    max_drop: str | float | MaxDrop | None = None,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    on_step: Step | None = None,
    rows: list[str] | None = None,
) -> AccuracyReport:
    """Top-1/top-5 of every artifact of `variant`'s export on the labelled images `data` (an ImageFolder tree, or a
    flat folder with a CSV `labels`), against fp32 PyTorch on the CPU on the same images. `rows`: only these
    "backend:precision" pairs of backends x precisions (as a bench suite names them)."""
    step = on_step or (lambda *_args, **_kw: None)
    spec = get_spec(variant)
    chosen = parse_backends(backends)
    wanted = _parse_precisions(precisions)
    allowed = parse_max_drop(max_drop)
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    for backend in chosen:
        if backend.engine in COMPILERS:
            require_runtime(COMPILERS[backend.engine])  # exit 3 before any work when the library or the GPU is missing

    images = labelled_images(data, labels=labels, limit=limit)
    directory = Path(export_dir) if export_dir is not None else default_out_dir(spec.name)
    manifest = _manifest(directory, spec.name)
    targets = [t for t in _targets(chosen, _artifacts(manifest, directory), wanted, spec.aliases[0])
               if rows is None or f"{t[0].name}:{t[2]}" in rows]
    _check_something_runs(targets, chosen, wanted)
    weights, num_classes = reference_weights(manifest, weights, num_classes)
    check_export_weights(manifest, weights, "the drop would compare two different models",
                         "leave --weights out (the export's own checkpoint is the reference), or re-export with this "
                         "checkpoint")
    report_warnings: list[str] = []

    step(f"building the reference: {spec.name}" + ("" if weights else " (untrained)"))
    model = deployable_model(spec.name, weights=weights, num_classes=num_classes)
    head = int(model.state_dict()[f"{spec.layout.classifier}.weight"].shape[0])
    _check_head(manifest, directory, head)
    check_classes(images, head)
    report_warnings += class_warnings(images, head)

    runners = []  # each built now (cheap, nothing loaded): a missing backend or device says so before any work
    for backend, target, precision in targets:
        if isinstance(target, str):
            runners.append(None)
            continue
        if target is not None:  # the file the manifest lists, or nothing runs
            if not target.path.is_file():
                raise missing_artifact(target.path, "re-run the export (or the trt build) that made it: its manifest "
                                                    "lists it")
            verified_record(target.path, manifest, made="built" if target.kind != "onnx" else "exported",
                            fix="re-run the export (or the trt build) that made it", required=True)
            if target.kind == "onnx":
                check_form(target.path, precision, spec.aliases[0])
        runners.append(open_runner(backend, model=model, artifact=None if target is None else target.path,
                                   precision=precision))

    report = AccuracyReport(spec.name, bool(model.untrained), {}, batch, allowed, warnings=report_warnings)
    source = DecodedBatches(spec, images, batch)
    reference = AccuracyRow("torch", "cpu", "model", "fp32", reference=True)
    with open_runner(parse_backends("torch")[0], model=model) as runner:
        ref_hits = _evaluate(runner, source, reference, step, f"{REFERENCE} reference (torch on the CPU)")
    report.rows.append(reference)
    report.skipped_images = list(images.skipped)
    report.data = {**images.describe(), "evaluated": reference.images, "skipped": len(images.skipped),
                   "kept_decoded": source.keep, "head_classes": head}
    chance = None if model.untrained else no_better_than_chance(reference.top1, images)
    if chance:
        report.chance = f"the reference's {chance}; a drop against it means nothing"
        report.warnings.append(report.chance)
    if head <= 5:
        report.warnings.append(f"the head has {head} classes: top-5 is 100 % by construction")

    for (backend, target, precision), runner in zip(targets, runners):
        label = "model" if target is None else ("—" if isinstance(target, str) else target.path.name)
        row = AccuracyRow(backend.name, backend.device, label, precision)
        if runner is None:
            row.skipped = target
            report.rows.append(row)
            continue
        with runner:
            hits = _evaluate(runner, source, row, step, f"{backend.name} ({backend.device}): {label} ({precision})")
        row.right_to_wrong = int((ref_hits & ~hits).sum())
        row.wrong_to_right = int((~ref_hits & hits).sum())
        row.allowed_drop_points = allowed.allowed_points(reference.top1)
        report.rows.append(row)
        if row.passed and row.drop_ci95_points[1] > row.allowed_drop_points:
            report.warnings.append(
                f"{row.backend} {row.artifact} ({row.precision}) passes on its measured drop "
                f"({row.drop_points:+.2f} points), but its 95 % interval reaches {row.drop_ci95_points[1]:+.2f} "
                f"points, beyond the {row.allowed_drop_points:.2f} allowed: evaluate more images to be sure")
    return report


def _evaluate(runner: Runner, source: DecodedBatches, row: AccuracyRow, step: Step, label: str) -> np.ndarray:
    """Every image through `runner`: fills the row's counts and run time; returns its per-image top-1 hits.

    Throughput counts the full batches after the first: the first call allocates and tunes, and a smaller batch (the
    last one, or one with unreadable images left out) is a new shape that a GPU backend tunes for again. Where that
    leaves none, the batches after the first; where there is one batch, that one. No image runs twice."""
    top1, top5 = [], []
    done = 0
    timed = {"full": [0.0, 0], "after first": [0.0, 0], "first": [0.0, 0]}  # [seconds, images]
    step(label, 0, len(source))
    for x, y, consumed in source:
        start = time.perf_counter()
        logits = _logits(runner, x)
        seconds = time.perf_counter() - start
        kinds = ("first",) if not done else ("after first", "full") if len(x) == source.batch else ("after first",)
        for kind in kinds:
            timed[kind][0] += seconds
            timed[kind][1] += len(x)
        top1.append(topk_hits(logits, y, 1))
        top5.append(topk_hits(logits, y, 5))
        done += consumed
        step(label, done, len(source))
    row.run_seconds, row.timed_images = next(t for t in timed.values() if t[1] or t is timed["first"])
    hits1, hits5 = np.concatenate(top1), np.concatenate(top5)
    row.images, row.top1_hits, row.top5_hits = len(hits1), int(hits1.sum()), int(hits5.sum())
    return hits1


def _logits(runner: Runner, x: np.ndarray) -> np.ndarray:
    """The first output for every sample of x, in chunks of the runner's fixed batch (the last one padded)."""
    fixed = runner.inputs[0].fixed_batch
    name, output = runner.inputs[0].name, runner.outputs[0].name
    if not fixed:
        return np.asarray(runner.run({name: x})[output], dtype=np.float32)
    pieces = []
    for start in range(0, len(x), fixed):
        chunk = x[start:start + fixed]
        n = len(chunk)
        if n < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - n, axis=0)])
        pieces.append(np.asarray(runner.run({name: chunk})[output], dtype=np.float32)[:n])
    return np.concatenate(pieces)


def _parse_precisions(precisions) -> list[str] | None:
    if precisions is None:
        return None
    names = [p.strip().lower() for p in (precisions.split(",") if isinstance(precisions, str) else precisions)
             if p.strip()]
    unknown = [p for p in names if p not in PRECISIONS]
    if unknown or not names:
        raise InputError(f"--precision '{', '.join(unknown) or precisions}' is unknown: choose from "
                         f"{', '.join(PRECISIONS)} (comma-separated)")
    return list(dict.fromkeys(names))


def _manifest(directory: Path, variant: str) -> dict:
    manifest = read_manifest(directory)
    if manifest is None:
        raise InputError(f"no export of {variant} in {directory}: run `inception-deploy export {variant}` first, or "
                         "point --dir at its export directory")
    if manifest.get("variant") != variant:
        raise InputError(f"{directory} holds an export of {manifest.get('variant')}, not {variant}: point --dir at "
                         f"the export of {variant}")
    return manifest


def _artifacts(manifest: dict, directory: Path) -> list[Artifact]:
    """The ONNX files and engines the manifest lists (those that run are verified against their sha256 first)."""
    return [Artifact(directory / entry["path"], entry["precision"], entry["kind"])
            for entry in manifest.get("artifacts", []) if entry.get("kind") in ("onnx", *ENGINE_KINDS.values())]


def _targets(backends: list[Backend], artifacts: list[Artifact], wanted: list[str] | None, alias: str):
    """(backend, artifact, precision) per row: artifact None for a torch backend's own model, a str: why skipped."""
    onnx_precisions = {a.precision for a in artifacts if a.kind == "onnx"}
    if wanted is not None and not any(b.runs == "model" for b in backends):
        missing = [p for p in wanted if p not in {a.precision for a in artifacts}]
        if missing:
            raise InputError(f"no {'/'.join(missing)} artifact in this export: run "
                             f"`{export_command(alias, missing[0])}`, or leave {missing[0]} out of --precision")
    for backend in backends:
        if backend.runs == "model":
            for precision in wanted or sorted(onnx_precisions - set(QUANTIZED), key=PRECISIONS.index) or ["fp32"]:
                if unsupported(backend, precision):
                    yield backend, unsupported(backend, precision), precision
                elif precision == "fp32" and backend.device == "cpu" and not backend.compile:
                    continue  # the reference itself, always run first
                else:
                    yield backend, None, precision
            continue
        refused = [p for p in wanted or [] if unsupported(backend, p)]
        for precision in refused:
            yield backend, unsupported(backend, precision), precision
        mine = [a for a in artifacts if a.kind == backend.runs and (wanted is None or a.precision in wanted)]
        if not mine and refused and len(refused) == len(wanted):
            continue
        if not mine:
            what = "ONNX artifact" if backend.runs == "onnx" else f"{COMPILERS[backend.engine].title} engine"
            fix = ("export one" if backend.runs == "onnx" else
                   f"build one with `inception-deploy trt {alias} --compiler {backend.engine}`")
            yield backend, f"no {what}{' of ' + '/'.join(wanted) if wanted else ''} to run: {fix}", "—"
        for artifact in mine:
            if artifact.precision not in refused:
                yield backend, unsupported(backend, artifact.precision) or artifact, artifact.precision


def _check_something_runs(targets: list, backends: list[Backend], wanted: list[str] | None) -> None:
    """InputError before any image is read when no row would be compared with the reference, or when a precision asked
    for by name runs on none of the backends."""
    check_each_runs(targets, wanted, REFERENCE)
    if any(not isinstance(target, str) for _, target, _ in targets):
        return
    reasons = list(dict.fromkeys(f"{backend.name}: {target}" for backend, target, _ in targets))
    if (wanted is None or "fp32" in wanted) and any(b.runs == "model" and b.device == "cpu" and not b.compile
                                                    for b in backends):
        reasons.append("torch fp32 on the CPU is the reference itself: add a backend (--backends onnxruntime) or a "
                       "precision (--precision fp16)")
    raise InputError(f"nothing to compare with the reference ({REFERENCE}): {'; '.join(reasons)}")


def _check_head(manifest: dict, directory: Path, head: int) -> None:
    shape = (manifest.get("output") or {}).get("shape")
    if shape and len(shape) == 2 and shape[1] != head:
        raise InputError(f"the export in {directory} outputs {shape[1]} classes but the reference model has {head}: "
                         "pass the checkpoint it was exported from with --weights (or --num-classes)")
