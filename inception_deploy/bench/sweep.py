"""The benchmark sweep: throughput and latency across backends, measured the way trtexec measures.

For each variant and batch size, every row (backend × precision) and each of its runner's tuning candidates
is measured `rounds` times, the rows alternating round by round, so that a drifting host moves all of them
alike; a row reports the median over rounds and the spread. Each measurement activates a fresh runner (its
memory baseline taken first), times it (timing.py), audits what actually ran, and closes it before the next.
A row that cannot run here is `skipped` with the reason; a backend that fails is a `failed` row with the
reason, and the sweep goes on. With --check-parity, each row's verdict comes from the very runner that was
timed, through the same prepared path.
"""

from __future__ import annotations

import gc
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..core.artifacts import ONNX_FILES, QUANTIZED, export_command, missing_artifact, sha256_of
from ..core.compare import difference
from ..core.compilers import COMPILERS, RTX_TARGETS, gpu_capability, gpu_name, installed
from ..core.errors import BackendMissing, InceptionDeployError, first_line
from ..core.interrupts import honoured_interrupt
from ..core.manifest import IntegrityError, check_budget, entry_of, read_manifest, verify_beside
from ..core.timing import CV_WARNING, SPREAD_WARNING, LatencyStats, combine_rounds, measure
from ..core.tolerances import TOLERANCES
from ..export.forms import check_form
from ..export.onnx import add_fp16, export_onnx
from ..models.build import DEFAULT_INIT_SEED
from ..models.load import check_export_weights, deployable_model, reference_weights
from ..models.registry import get_spec
from ..models.samples import random_batch
from ..runners import Backend, open_runner, runner_class, unsupported
from .plan import BenchPlan
from .record import BenchRecord

log = logging.getLogger(__name__)

PARITY_SAMPLES = 8
PARITY_SEED = 1  # not the timing input's seed: parity sees other data than the timed batch
OVER_BUDGET_MARK = "int8 over its accuracy budget, measured with --accept-over-budget"


@dataclass
class _Candidate:
    settings: dict  # constructor keywords
    rounds: list[LatencyStats] = field(default_factory=list)
    recorded: dict = field(default_factory=dict)  # runner.settings() + audit facts
    memory: tuple[float | None, str | None] = (None, None)
    parity: tuple[str, dict | None] | None = None
    warnings: list[str] = field(default_factory=list)
    failure: str | None = None
    missing: bool = False  # failed because the backend or device is missing here


@dataclass
class _Row:
    backend: Backend
    precision: str
    artifact: Path | None
    candidates: list[_Candidate]
    skipped: str | None = None
    source: str | None = None  # BenchRecord.source
    over_budget: bool = False  # an int8 artifact over its accuracy budget, measured because it was accepted


def run_bench(plan: BenchPlan, *, on_step: Callable[..., None] | None = None,
              on_record: Callable[[BenchRecord], None] | None = None,
              on_measurement: Callable[[dict], None] | None = None,
              resumed: dict[tuple[str, int], list[list[BenchRecord]]] | None = None) -> list[BenchRecord]:
    """Run the sweep. on_record gets each row as it is finished; on_measurement each round as it is measured.

    resumed: for (variant, batch), that group's records from earlier runs, newest first (log.resumable_groups).
    What each run measured of the group is kept as it was where it still fits this plan (rows of this plan, none
    failed, each measured from the artifact or weights it would be measured from now); the rest is measured."""
    plan.check()
    sweep = _Sweep(plan, on_step, on_record, on_measurement)
    for variant in plan.variants:
        spec = get_spec(variant)
        rows = [_plan_row(plan, spec, backend, precision, sweep.step) for backend, precision in sweep.pairs]
        model_rows = [r for r in rows if r.backend.runs == "model" and not r.skipped]
        if model_rows:  # their source: the export's weights, which planning may just have made
            weights = _weights_source(plan, spec.name)
            for row in model_rows:
                row.source = weights
        for batch in plan.batches:
            sweep.group(spec, rows, batch, (resumed or {}).get((spec.name, batch), []))
        sweep.forget_model()  # one variant's model in memory at a time
    return sweep.records


class _Sweep:
    """The state of one sweep: its records so far, the callbacks, and each variant's model and reference."""

    def __init__(self, plan: BenchPlan, on_step, on_record, on_measurement):
        self.plan, self.pairs, self.records = plan, plan.pairs(), []
        self.total = len(plan.variants) * len(self.pairs) * len(plan.batches)
        self._step, self._emit = on_step or (lambda *_: None), on_record or (lambda _: None)
        self._measured = on_measurement or (lambda _: None)
        self._models: dict[str, tuple] = {}  # variant -> (model, parity reference)

    def step(self, label: str) -> None:
        self._step(label, len(self.records), self.total)

    def add(self, record: BenchRecord) -> None:
        self.records.append(record)
        self._emit(record)

    def group(self, spec, rows: list[_Row], batch: int, copies: list[list[BenchRecord]]) -> None:
        """One (variant, batch): the rows earlier runs lend, then the rest, measured round by round."""
        start = len(self.records)
        order = {(r.backend.name, r.precision): i for i, r in enumerate(_in_report_order(rows))}
        kept = _kept_rows(copies, rows)
        if kept:
            runs = ", ".join(dict.fromkeys(r.resumed_from for r in kept.values()))
            self.step(f"{spec.name} · batch {batch}: {len(kept)} of {len(rows)} row(s) kept as run(s) {runs} "
                      "measured them (--resume)")
            by_key = {(r.backend.name, r.precision): r for r in rows}
            for key in sorted(kept, key=order.__getitem__):
                if by_key[key].over_budget and OVER_BUDGET_MARK not in kept[key].warnings:
                    kept[key].warnings.append(OVER_BUDGET_MARK)  # measured before rows said so
                self.add(kept[key])
        todo = [r for r in rows if (r.backend.name, r.precision) not in kept]
        live = [r for r in todo if not r.skipped]
        model, reference = self._model(spec, live) if live else (None, None)
        for row in todo:
            if row.skipped:
                self.add(_skipped(spec.name, row, batch))
        if live:
            fresh = [[_Candidate(c.settings) for c in r.candidates] for r in live]
            for round_index in range(self.plan.rounds):
                for row, candidates in zip(live, fresh):
                    self._round(spec, row, candidates, batch, round_index, model, reference)
            for row, candidates in zip(live, fresh):
                self.add(_record(self.plan, spec, row, candidates, batch))
        self.records[start:] = sorted(self.records[start:], key=lambda r: order[(r.backend, r.precision)])

    def _model(self, spec, live: list[_Row]):
        """The variant's PyTorch model and parity reference, made once, when a row first needs them."""
        model, reference = self._models.get(spec.name, (None, None))
        if model is None and (self.plan.check_parity or any(r.backend.runs == "model" for r in live)):
            model = _model(self.plan, spec)
        if reference is None and self.plan.check_parity:
            reference = _reference(spec, model)
        self._models[spec.name] = (model, reference)
        return model, reference

    def forget_model(self) -> None:
        self._models.clear()

    def _round(self, spec, row: _Row, candidates: list[_Candidate], batch: int, round_index: int, model,
               reference) -> None:
        for candidate in candidates:
            if candidate.failure:
                continue
            self.step(f"{spec.name} · {row.backend.name} · {row.precision} · batch {batch} · "
                      f"round {round_index + 1}/{self.plan.rounds}")
            _measure(self.plan, spec, row, candidate, batch, model, reference if round_index == 0 else None)
            _release()  # after the measurement's locals are gone: nothing carries over to the next
            stats = candidate.rounds[-1].to_dict() if candidate.rounds and not candidate.failure else None
            self._measured({"variant": spec.name, "backend": row.backend.name, "precision": row.precision,
                            "batch": batch, "round": round_index + 1, "settings": candidate.settings, "stats": stats,
                            "failure": candidate.failure, "backend_missing": candidate.missing})


def _in_report_order(rows: list["_Row"]) -> list["_Row"]:
    """A group's rows as reported: those skipped at planning first, then the measured ones, in plan order."""
    return [r for r in rows if r.skipped] + [r for r in rows if not r.skipped]


def _kept_rows(copies: list[list[BenchRecord]], rows: list["_Row"]) -> dict[tuple[str, str], BenchRecord]:
    """The rows of a group that earlier runs can stand for: each run's copy of the group (newest first) that
    still fits is kept whole, where it adds only rows no newer copy gave. Rows measured in one run alternated
    round by round; rows from different runs did not, and each keeps the id of the run that measured it."""
    kept: dict[tuple[str, str], BenchRecord] = {}
    for copy in copies:
        fits = _still_fits(copy, rows)
        if fits and not any((r.backend, r.precision) in kept for r in fits):
            kept.update({(r.backend, r.precision): r for r in fits})
    return kept


def _plan_row(plan: BenchPlan, spec, backend: Backend, precision: str, step) -> _Row:
    """A row, with the reason it cannot run here, or its verified artifact and its runner's candidates."""
    reason = _skip_reason(plan, spec.name, backend, precision)
    if reason:
        return _Row(backend, precision, None, [], skipped=reason)
    artifact = None
    try:
        source, over = None, False  # a model row's source: its weights, known once every artifact is planned
        if backend.runs != "model":
            artifact, source, over = _artifact(plan, spec.name, backend, precision, step)
        candidates = runner_class(backend).candidates(backend, precision)
    except BackendMissing as err:
        return _Row(backend, precision, None, [], skipped=str(err))
    return _Row(backend, precision, artifact, [_Candidate(c) for c in candidates], source=source, over_budget=over)


def _skipped(variant: str, row: _Row, batch: int) -> BenchRecord:
    return BenchRecord(variant, row.backend.name, row.precision, batch, row.backend.device, "skipped", row.skipped)


def _still_fits(records: list[BenchRecord], rows: list[_Row]) -> list[BenchRecord] | None:
    """One earlier run's records of a group, in report order, when they can stand for a measurement now: rows
    of this plan, each once, none failed, each row that ran measured from the same artifact or weights over the
    same candidate settings, no row skipped then that runs now unless it was found missing while running (the
    same machine and software would find it missing again). The run may have measured fewer rows than this plan
    has: those are measured now."""
    by_row = {(r.backend, r.precision): r for r in records}
    planned = {(r.backend.name, r.precision): r for r in rows}
    if not records or len(by_row) != len(records) or not set(by_row) <= set(planned):
        return None
    for key, record in by_row.items():
        row = planned[key]
        if record.status == "failed" or (row.skipped and record.status != "skipped"):
            return None
        if record.status == "ok" and (record.source != row.source
                                      or _as_logged(record.candidates) != _as_logged(_settings_of(row))):
            return None  # another artifact, or other settings measured: measure it again
    return [by_row[key] for key in ((r.backend.name, r.precision) for r in _in_report_order(rows)) if key in by_row]


def _settings_of(row: _Row) -> list[dict]:
    return [c.settings for c in row.candidates]


def _as_logged(value):
    """A value as the measurement log holds it (JSON), so that one read back compares equal to one made now."""
    return json.loads(json.dumps(value))


def _skip_reason(plan: BenchPlan, variant: str, backend: Backend, precision: str) -> str | None:
    reason = not_here(backend, precision)
    if reason or backend.engine not in ("onnxruntime", *COMPILERS):
        return reason
    if backend.engine in COMPILERS:
        engine = plan.directory(variant) / COMPILERS[backend.engine].engine_file(precision)
        if not engine.is_file():  # missing, or something else in its place: named as such
            build = f"inception-deploy trt {variant} --{precision} --compiler {backend.engine}"
            return str(missing_artifact(engine, f"build it with `{build}`"))
    if backend.engine == "onnxruntime" and precision in QUANTIZED:
        int8 = plan.directory(variant) / ONNX_FILES[precision]
        if not int8.is_file():
            return str(missing_artifact(int8, f"make it with `{export_command(variant, precision)}`"))
    return None


def not_here(backend: Backend, precision: str) -> str | None:
    """Why `backend` cannot measure `precision` on this machine, whatever the artifacts: the precision, the device,
    the compiler, or a timing that would not measure what its label says. None where it can."""
    if unsupported(backend, precision):
        return unsupported(backend, precision)
    if backend.device != "cpu" and not torch.cuda.is_available():
        return "no CUDA GPU here"
    if backend.engine == "onnxruntime" and backend.device != "cpu":
        import onnxruntime

        provider = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[backend.device]
        if provider not in onnxruntime.get_available_providers():
            return (f"this onnxruntime has no {provider} (providers: {', '.join(onnxruntime.get_available_providers())}"
                    "): install onnxruntime-gpu")
    if backend.name == "onnxruntime" and precision == "fp16":
        return "ONNX Runtime's CPU provider runs fp16 through inserted Casts: a timing would measure the Casts"
    if backend.engine == "onnxruntime" and backend.device == "cuda" and precision == "int8":
        return ("ONNX Runtime's CUDA provider has no int8 convolution: it runs each DequantizeLinear as its own kernel "
                "and convolves in the scales' float type (fp16 for the default int8 file), so a timing would not be "
                "int8 (use tensorrt)")
    if backend.engine == "tensorrt-rtx" and (here := gpu_capability()) not in RTX_TARGETS:
        return (f"{gpu_name()} ({here}) is not a TensorRT-RTX target ({', '.join(RTX_TARGETS)}): its engines cannot "
                "run here; use tensorrt")
    if backend.engine in COMPILERS and not installed(COMPILERS[backend.engine]):
        return f"{COMPILERS[backend.engine].title} is not installed ({COMPILERS[backend.engine].install})"
    return None


def _artifact(plan: BenchPlan, variant: str, backend: Backend, precision: str, step) -> tuple[Path, str, bool]:
    """The verified artifact a row runs, its source (name and sha256), and whether it is over its accuracy budget
    (accepted); its runner verifies it again on loading."""
    directory = plan.directory(variant)
    if backend.engine in COMPILERS:
        path = directory / COMPILERS[backend.engine].engine_file(precision)
        fix = "rebuild it with `inception-deploy trt`"
        return path, *_source(plan, path, verify_beside(path, made="built", fix=fix))
    path = directory / ONNX_FILES[precision]
    if (path.exists() or path.is_symlink()) and not path.is_file():  # a directory in its place: never export over it
        raise missing_artifact(path, f"re-export it with `inception-deploy export {variant}`")
    if not path.is_file() and precision == "fp16" and (directory / ONNX_FILES["fp32"]).is_file():
        step(f"{variant}: no {path}, making it from {ONNX_FILES['fp32']} first")
        add_fp16(directory)  # from the export that is there (its weights), not a new untrained one
    elif not path.is_file() and precision in ("fp32", "fp16"):
        step(f"{variant}: no {path}, exporting it (untrained weights) first")
        export_onnx(variant, fp16=precision == "fp16", out_dir=directory)
    record = verify_beside(path, fix=f"re-export it with `inception-deploy export {variant}`")
    check_form(path, precision, variant)
    return path, *_source(plan, path, record)


def _source(plan: BenchPlan, path: Path, record: dict | None) -> tuple[str, bool]:
    """What a row measures (the file and its sha256), and whether it is over its accuracy budget: refused (exit 2),
    or accepted with --accept-over-budget, with a warning here and on its rows."""
    accepted = check_budget(read_manifest(path.parent), record, plan.accept_over_budget)
    if accepted:
        log.warning(accepted)
    return f"{path.name} sha256:{(record or {}).get('sha256') or sha256_of(path)}", bool(accepted)


def _weights_source(plan: BenchPlan, variant: str) -> str:
    """Which weights the PyTorch rows run (those the export was made from): the record a resumed row must match."""
    manifest = read_manifest(plan.directory(variant)) or {}
    if manifest.get("weights"):
        return f"PyTorch model, weights {Path(manifest['weights']['path']).name} sha256:{manifest['weights']['sha256']}"
    seed = (manifest.get("untrained_init") or {}).get("init_seed", DEFAULT_INIT_SEED)
    head = f", {manifest['num_classes']} classes" if manifest.get("num_classes") else ""
    return f"PyTorch model, untrained init (seed {seed}){head}"


def _model(plan: BenchPlan, spec):
    """The PyTorch model the export was made from (its checkpoint, or the seeded untrained init)."""
    manifest = read_manifest(plan.directory(spec.name))
    check_export_weights(manifest, plan.weights, "the rows would time two different models", "re-export from it")
    weights, num_classes = reference_weights(manifest, plan.weights, None)
    return deployable_model(spec.name, weights=weights, num_classes=num_classes or (manifest or {}).get("num_classes"))


def _reference(spec, model) -> tuple[np.ndarray, np.ndarray]:
    """Parity inputs and what PyTorch fp32 on the CPU computes for them."""
    x = random_batch(spec, PARITY_SAMPLES, seed=PARITY_SEED)
    with torch.inference_mode():
        return x.numpy(), model.eval()(x).float().numpy()


def _measure(plan: BenchPlan, spec, row: _Row, candidate: _Candidate, batch: int, model, reference) -> None:
    """One round of one candidate: activate, time, audit, (check parity), record memory, close."""
    x = random_batch(spec, batch, seed=0).numpy()
    tf32 = (
        {"tf32": plan.tf32}
        if row.precision == "fp32" and row.backend.device == "cuda" and row.backend.engine in ("torch", "onnxruntime")
        else {}
    )
    try:
        runner = open_runner(row.backend, model=model, artifact=row.artifact, precision=row.precision,
                             **candidate.settings, **tf32)
        # Ctrl-C ends the sweep even when a library turns it into its own error (Inductor's workers do).
        with honoured_interrupt(), runner:
            feed = {runner.inputs[0].name: x}
            if plan.include_transfers:
                stats = measure(
                    lambda: runner.run(feed), batch=batch, warmup_s=plan.warmup_s, duration_s=plan.duration_s
                )
            else:
                prepared = runner.prepare(feed)
                stats = measure(lambda: runner.run_prepared(prepared), batch=batch, warmup_s=plan.warmup_s,
                                duration_s=plan.duration_s, synchronize=runner.synchronize,
                                device_timer=runner.device_timer())
            facts = runner.audit()
            candidate.warnings = facts.pop("warnings", [])
            candidate.recorded = {**runner.settings(), **facts}
            memory = runner.memory()
            if candidate.memory[0] is None or (memory[0] is not None and memory[0] > candidate.memory[0]):
                candidate.memory = memory  # the largest over rounds
            if reference is not None:  # TF32 as the runner ran it: asked for, or built into an engine
                candidate.parity = _parity(runner, reference, batch, row.precision, plan.include_transfers,
                                           tf32=row.precision == "fp32" and bool(candidate.recorded.get("tf32")))
        candidate.rounds.append(stats)
    except BackendMissing as err:  # the backend or its device is missing here (a skip, unless it ran before)
        candidate.failure, candidate.missing = str(err), not candidate.rounds
    except (KeyboardInterrupt, SystemExit, IntegrityError):
        raise  # a tampered artifact ends the sweep: never a row from it
    except Exception as err:  # noqa: BLE001 - ORT's Fail/EPFail, CUDA OOM, a capture failure: a failed row, go on
        candidate.failure = (
            first_line(err) if isinstance(err, InceptionDeployError) else f"{type(err).__name__}: {first_line(err)}"
        )


def _parity(runner, reference, batch: int, precision: str, transfers: bool, *, tf32: bool) -> tuple[str, dict]:
    """The timed runner's outputs on the parity inputs, at the timed batch size and through the timed path.

    The samples are repeated to fill whole batches; only the first output of each distinct sample is compared."""
    x, expected = reference
    n = len(x)
    chunks = max(1, math.ceil(n / batch))
    tiled = np.resize(x, (chunks * batch, *x.shape[1:]))  # the samples, then repeats of them up to whole batches
    name = runner.inputs[0].name
    outputs = []
    for start in range(0, len(tiled), batch):
        feed = {name: tiled[start:start + batch]}
        result = runner.run(feed) if transfers else runner.fetch(runner.prepare(feed))
        outputs.append(np.asarray(next(iter(result.values())), dtype=np.float32))
    got = np.concatenate(outputs)[:n]  # the repeats only filled the batches: counting them would weigh some twice
    # TF32 keeps fp16's 10 mantissa bits: such a row is judged by the fp16 tolerance, and says so.
    judged = "fp16" if tf32 else precision
    diff = difference(expected, got)
    verdict = "pass" if TOLERANCES[judged].passes(diff) else "fail"
    return verdict, {**diff.to_dict(), "tolerance": judged, "repeats_not_compared": len(tiled) - n}  # + "samples"


def _record(plan: BenchPlan, spec, row: _Row, candidates: list[_Candidate], batch: int) -> BenchRecord:
    base = dict(variant=spec.name, backend=row.backend.name, precision=row.precision, batch=batch,
                device=row.backend.device, include_transfers=plan.include_transfers, source=row.source,
                candidates=_as_logged([c.settings for c in candidates]))
    done = [c for c in candidates if c.rounds and not c.failure]
    if not done:
        if candidates and all(c.missing for c in candidates):
            row.skipped = candidates[0].failure  # and for the batches still to come
            return BenchRecord(**base, status="skipped", reason=row.skipped)
        reason = next((c.failure for c in candidates if c.failure), "no measurement")
        return BenchRecord(**base, status="failed", reason=reason)
    best = max(done, key=lambda c: combine_rounds(c.rounds)["throughput"])
    stats = combine_rounds(best.rounds)
    warnings = list(best.warnings)
    if stats["cv"] > CV_WARNING:
        warnings.append(f"unstable: latency CV {stats['cv']:.1%} > {CV_WARNING:.0%}")
    if stats["rounds"] > 1 and stats["throughput_spread"] > SPREAD_WARNING:
        warnings.append(f"noisy host: throughput moved {stats['throughput_spread']:.0%} between rounds")
    if row.over_budget:
        warnings.append(OVER_BUDGET_MARK)
    failed = [c for c in candidates if c.failure]
    if failed:
        warnings.append(f"{len(failed)} other setting(s) failed: {failed[0].failure}")
    tf32 = best.recorded.get("tf32") if row.precision == "fp32" and row.backend.device != "cpu" else None
    record = BenchRecord(**base, status="ok", stats=stats, rounds=[r.to_dict() for r in best.rounds],
                         memory_mib=best.memory[0], memory_kind=best.memory[1], settings=best.recorded, tf32=tf32,
                         warnings=warnings)
    if best.parity is not None:
        record.parity, record.parity_detail = best.parity
        detail = best.parity[1]
        padded = f" (padded with {detail['repeats_not_compared']} repeats, not compared)" \
            if detail["repeats_not_compared"] else ""
        record.parity_source = (f"checked here: this runner, {detail['samples']} distinct random inputs at batch "
                                f"{batch}{padded}, vs torch fp32 on the CPU ({detail['tolerance']} tolerance)")
    else:
        record.parity, record.parity_source = _manifest_parity(plan, spec.name, row)
    return record


def _manifest_parity(plan: BenchPlan, variant: str, row: _Row) -> tuple[str, str | None]:
    """The export-time verdict, only where it was reached on this same backend and device."""
    if row.backend.name == "torch" and row.precision == "fp32":
        return "reference", "the PyTorch model itself (torch fp32 on the CPU)"
    if row.artifact is None or row.backend.name != "onnxruntime":
        return "unchecked", None  # run with --check-parity for a verdict from this backend
    manifest = read_manifest(row.artifact.parent) or {}
    entry = entry_of(manifest, row.artifact.name)
    parity = (entry or {}).get("parity") or {}
    if parity.get("backend") != "onnxruntime-cpu" or parity.get("passed") is None:
        return "unchecked", None
    return (
        "pass" if parity["passed"] else "fail"
    ), f"the export's check on onnxruntime-cpu (vs {parity.get('reference')})"


def _release() -> None:
    """Nothing of one measurement carries over to the next: host garbage and the device caches go."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
