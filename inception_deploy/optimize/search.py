"""The search: every candidate this machine can run, made, held to the accuracy budget, measured in one interleaved
bench run, and the fastest within budget chosen and written as a Triton repository.

  the fp32 export (current, or made) -> each candidate's artifact, in order of promise, while the time budget lasts
  -> accuracy on --eval (every candidate against fp32 PyTorch) -> one bench run of those within budget
  -> the choice -> the Triton repository, the manifest's record, the reports

The time budget is spent in order of promise: a step starts only when its estimate, with room kept for measuring
what is already in, fits in what is left. Estimates are in units of this variant's fp32 export on this machine (its
manifest times it), measured on this project's 2-core host; the bench's own part is its settings' arithmetic.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..accuracy.evaluate import evaluate_accuracy
from ..accuracy.report import markdown as accuracy_markdown
from ..accuracy.report import to_json as accuracy_json
from ..bench import run as bench_run
from ..bench.environment import environment
from ..bench.log import read_log
from ..bench.record import BenchRecord
from ..core.artifacts import ONNX_FILES, check_targets, engine_file, json_text, made_dirs, write_text_atomic
from ..core.errors import BackendMissing, CheckFailed, InputError, Interrupted, first_line
from ..core.manifest import record_in_manifest
from .candidates import Candidate, candidates
from .choose import Verdict, choose, closest, describe
from .make import ExportDir
from .options import OptimizeOptions
from .report import REPORT_FILES, write_reports
from .repository import served_candidate, write_repository_for
from .reproduce import SUITE_NAME, bench_command, commands, suite_text

log = logging.getLogger(__name__)

# Each step's cost in units of the variant's fp32 export on this machine. Measured on the 2-core host with the digits
# googlenet (fp32 export 6.7 s): an int8 form with --eval (three calibration methods, each measured) 18-34 s; 200
# eval images through four rows 20 s. An engine build and a torch.compile are guesses on the safe side.
COST = {"fp16": 1.0, "int8": 5.0, "engine": 10.0, "compile": 5.0, "eval_image": 0.005, "activation": 0.2}


@dataclass
class OptimizeOutcome:
    options: OptimizeOptions
    verdicts: list[Verdict]
    chosen: Verdict | None
    served: Verdict | None  # the candidate the repository serves (the chosen one, or the best Triton serves)
    environment: dict
    seconds: float
    budget: dict  # the time budget, what was spent, what was not tried
    warnings: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    commands: dict = field(default_factory=dict)  # what reproduces the search, its bench and its accuracy
    repository: dict | None = None
    kept_rows: int | None = None  # with --resume: the bench rows kept as an earlier run measured them

    def raise_for_none(self) -> None:
        """CheckFailed (exit 1) when no candidate was chosen, naming the closest and what it misses; or when --repo
        asked for a repository and no candidate that Triton serves is within budget."""
        if self.chosen is not None:
            if self.options.repo is not None and self.repository is None:
                raise CheckFailed(f"{self.chosen.candidate.name} was chosen, but no candidate that Triton serves is "
                                  f"within budget: nothing was written to --repo {self.options.repo}")
            return
        # weighed: measured, or judged on accuracy (an int8 rejected unmeasured, without --eval, was not weighed)
        if not any(v.status in ("rejected", "lost") and (v.curve or v.accuracy) for v in self.verdicts):
            if any(v.status == "not tried" for v in self.verdicts):
                raise CheckFailed(f"the --time-budget ran out before any candidate was weighed: give more than "
                                  f"{self.options.time_budget_s:g} s")
            first = next((v for v in self.verdicts if v.status == "failed"), None) or \
                next((v for v in self.verdicts if v.status == "skipped"), None)
            if first is not None:
                raise CheckFailed(f"no candidate could be weighed on this machine: every one failed or was skipped; "
                                  f"the first, {first.candidate.name}: {first.reason}")
        near = closest(self.verdicts, self.options.objective, self.options.max_latency_ms)
        what = f"; the closest, {near.candidate.name}: {near.reason}" if near else ""
        raise CheckFailed(f"no candidate is within budget on this machine{what}")


class Clock:
    def __init__(self, budget_s: float | None):
        self.start, self.budget = time.monotonic(), budget_s

    def spent(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return math.inf if self.budget is None else self.budget - self.spent()

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left()


def run(options: OptimizeOptions, *, on_step: Callable[..., None] | None = None,
        on_record: Callable[[BenchRecord], None] | None = None, command: str | None = None) -> OptimizeOutcome:
    """Search, choose, write. InputError (exit 2) for bad options before any work; BackendMissing (exit 3) for
    --device cuda without a GPU. The outcome's raise_for_none() is exit 1 when nothing was chosen."""
    options = options.check()
    options.check_paths()
    if options.device == "cuda" and not torch.cuda.is_available():
        raise BackendMissing("--device cuda: no CUDA GPU is visible here; run on the GPU you will deploy to, or "
                             "--device cpu")
    if options.report_dir is not None:
        bench_files = [f"bench/{name}" for name in ("bench.json", "bench.csv", "README.md", "bench.jsonl", SUITE_NAME)]
        check_targets([options.report_dir / name for name in (*REPORT_FILES, *bench_files)], "--report")
        if options.resume and (options.report_dir / "bench" / "bench.jsonl").is_file():
            read_log(options.report_dir / "bench" / "bench.jsonl")  # a damaged log is said now, not after the work
    step = on_step or (lambda *_args, **_kw: None)
    clock = Clock(options.time_budget_s)
    export = ExportDir(options, step)  # every check that needs the model, before any work
    verdicts = _verdicts(options)
    _check_budget(options, export, [v.candidate for v in verdicts if v.open])
    warnings: list[str] = []
    if export.weights is None:
        warnings.append(f"{options.variant} is UNTRAINED (no --weights): its speed is any weights' speed, but it has "
                        "no accuracy to keep; pass the checkpoint you will deploy")

    steps: dict[str, float] = {}
    made = export.fp32()
    for verdict in verdicts:
        if verdict.open and (verdict.candidate.backend.startswith("torch") or verdict.candidate.precision == "fp32"):
            verdict.artifact = _artifact_record(verdict.candidate, made)
    steps["fp32 export"] = made.seconds
    unit = export.base_seconds()
    start = clock.spent()
    ready = _make_artifacts(options, export, verdicts, clock, unit, step)
    steps["artifacts"], start = clock.spent() - start, clock.spent()
    reports = _accuracy(options, export, ready, step, warnings) if options.eval_dir is not None else []
    steps["accuracy"], start = clock.spent() - start, clock.spent()
    # the rows the accuracy run compared with the reference (not the reference itself, not a rejected int8 file)
    compared = [v.candidate for v in ready if v.accuracy is not None and v.accuracy.get("note") is None]
    measured = _fit_measurement(options, [v for v in ready if v.open], clock, unit)
    bench = _bench(options, export, measured, step, on_record, command, warnings) if measured else None
    steps["bench"] = clock.spent() - start
    chosen = choose(verdicts, options.objective, options.max_latency_ms)
    served = served_candidate(verdicts, chosen, options.objective, options.max_latency_ms)
    outcome = OptimizeOutcome(options, verdicts, chosen, served,
                              bench.environment if bench else environment(options.device), 0.0,
                              {}, warnings, commands=commands(options, measured, compared, command))
    if chosen is not None and not chosen.candidate.served:
        warnings.append(f"{chosen.candidate.name} won, but Triton does not serve it from this tool: "
                        + (f"the repository serves {served.candidate.name}, the best that Triton serves"
                           if served else "no candidate that Triton serves is within budget"))
    if options.repo is not None and served is not None:
        step(f"writing the Triton repository {options.repo}")
        outcome.repository = write_repository_for(options, export, served, warnings)
        outcome.written.append(options.repo / outcome.repository["name"])
    record_in_manifest(options.export_dir, "optimize", _manifest_record(options, chosen, served, outcome))
    outcome.seconds = clock.spent()
    outcome.budget = {"time_budget_s": options.time_budget_s, "spent_s": round(outcome.seconds, 1),
                      "steps_s": {k: round(v, 1) for k, v in steps.items()},
                      "estimate_unit_s": round(unit, 2), "estimate_costs": COST,
                      "not_tried": [v.candidate.name for v in verdicts if v.status == "not tried"]}
    _write(outcome, reports, bench, measured)
    return outcome


def _verdicts(options: OptimizeOptions) -> list[Verdict]:
    """Every candidate of the device, in order of promise; those that cannot run here skipped, and int8 without
    labelled images rejected, each saying why."""
    verdicts = []
    for candidate, why in candidates(options.device):
        verdict = Verdict(candidate)
        if why:
            verdict.decide("skipped", why)
        elif candidate.quantized and options.eval_dir is None:
            verdict.decide("rejected", "no accuracy measured: int8 is weighed only on labelled images (--eval DIR)")
        verdicts.append(verdict)
    return verdicts


def _write(outcome: OptimizeOutcome, reports: list, bench, measured: list[Verdict]) -> None:
    """The reports: the accuracy run's, the bench's suite beside its own report, then optimize's JSON and README."""
    options = outcome.options
    if reports and options.report_dir is not None:
        with made_dirs(options.report_dir):
            text = accuracy_json(reports[0]) if len(reports) == 1 else json_text(
                {"reports": [json.loads(accuracy_json(r)) for r in reports]})
            write_text_atomic(options.report_dir / "accuracy.json", text)
            write_text_atomic(options.report_dir / "accuracy.md", "\n".join(
                accuracy_markdown(r, outcome.commands.get("accuracy") if len(reports) == 1 else None)
                for r in reports))
        outcome.written += [options.report_dir / "accuracy.json", options.report_dir / "accuracy.md"]
    if bench is not None:
        outcome.written += bench.written
        outcome.kept_rows = bench.kept_rows
        if options.report_dir is not None:
            write_text_atomic(options.report_dir / "bench" / SUITE_NAME, suite_text(options, measured))
            outcome.written.append(options.report_dir / "bench" / SUITE_NAME)
    outcome.written += write_reports(outcome)


def _check_budget(options: OptimizeOptions, export: ExportDir, runnable: list[Candidate]) -> None:
    """InputError (exit 2), before any work, for a --time-budget too small to make and measure even the cheapest
    candidate here (estimated in units of the fp32 export, as the manifest timed it or as estimated without one)."""
    if options.time_budget_s is None or not runnable:
        return
    unit = export.base_seconds()
    exporting = 0.0 if export.fp32_current() else unit  # the fp32 export comes first, whichever candidate is made

    def cost(c: Candidate) -> float:
        making = 0.0 if export.current(c) else _artifact_cost(c, unit)
        return exporting + making + _bench_cost(options, [c], unit) + _accuracy_cost(export, [c], unit)

    cheapest = min(runnable, key=cost)
    if cost(cheapest) > options.time_budget_s:
        raise InputError(f"--time-budget {options.time_budget_s:g} s cannot make and measure even one candidate here: "
                         f"the cheapest, {cheapest.name}, needs about {cost(cheapest):.0f} s; give at least "
                         f"{math.ceil(cost(cheapest))} s, or fewer --rounds, a shorter --duration-s")


def _artifact_record(candidate: Candidate, made) -> dict:
    return {"path": "PyTorch model" if candidate.backend.startswith("torch") else made.path, "reused": made.reused,
            "seconds": round(made.seconds, 1)}


def _artifact_cost(candidate: Candidate, unit: float) -> float:
    if candidate.backend.startswith("torch") or candidate.precision == "fp32" and candidate.engine is None:
        return 0.0
    onnx = COST["int8"] if candidate.quantized else COST["fp16"] if candidate.precision == "fp16" else 0.0
    return unit * (onnx + (COST["engine"] if candidate.engine else 0.0))


def _bench_cost(options: OptimizeOptions, chosen: list[Candidate], unit: float) -> float:
    """The bench run's seconds for these candidates: its windows, and each activation (a compilation for
    torch.compile)."""
    m, batches = options.measurement, len(options.batches)
    seconds = 0.0
    for c in chosen:
        settings = c.settings()
        activation = unit * (COST["compile"] if c.compiled else COST["activation"])
        seconds += m.seconds(settings, batches) + m.rounds * batches * settings * activation
    return seconds


def _accuracy_cost(export: ExportDir, chosen: list[Candidate], unit: float) -> float:
    """The accuracy run's seconds for these candidates and the reference."""
    if export.eval is None or not chosen:
        return 0.0
    return unit * COST["eval_image"] * len(export.eval) * (len(chosen) + 1)


def _make_artifacts(options, export: ExportDir, verdicts: list[Verdict], clock: Clock, unit: float,
                    step) -> list[Verdict]:
    """Each open candidate's artifact, in order of promise, while its estimate and the measurement of everything
    already in fit the time left; the others are 'not tried', saying so."""
    ready: list[Verdict] = []
    for verdict in verdicts:
        if not verdict.open:
            continue
        candidate = verdict.candidate
        after = [v.candidate for v in ready] + [candidate]
        making = 0.0 if export.current(candidate) else _artifact_cost(candidate, unit)
        need = making + _bench_cost(options, after, unit) + _accuracy_cost(export, after, unit)
        if not clock.fits(need):
            verdict.decide("not tried", f"the --time-budget had {max(clock.left(), 0):.0f} s left; making it and "
                                        f"measuring it beside the {len(ready)} more promising one(s) was estimated at "
                                        f"{need:.0f} s")
            continue
        step(f"preparing {candidate.name}")
        made = export.make(candidate)
        verdict.artifact = _artifact_record(candidate, made)
        if made.failure:
            verdict.decide("failed", f"its artifact could not be made: {made.failure}")
            continue
        problem = export.over_budget(candidate)
        if problem:  # export --eval kept its best effort, marked: never measured as if it were within budget
            measured = (export.entry(ONNX_FILES[candidate.precision]) or {}).get("accuracy") or {}
            verdict.accuracy = {"top1": measured.get("top1"), "drop_points": measured.get("drop_points"),
                                "allowed_drop_points": measured.get("allowed_drop_points"), "passed": False,
                                "images": measured.get("images"),
                                "note": "as export --eval measured it (ONNX Runtime CPU, against fp32 model.onnx)"}
            verdict.decide("rejected", f"over the accuracy budget as export --eval measured it: {problem}")
            continue
        for earlier in [v for v in ready if not export.current(v.candidate)]:  # a re-export replaced model.onnx
            earlier.decide("failed", f"its artifact was removed when the export was made again for {candidate.name} "
                                     "(a different model.onnx): run the search again")
            ready.remove(earlier)
        ready.append(verdict)
    return ready


def _accuracy(options, export: ExportDir, ready: list[Verdict], step, warnings: list[str]) -> list:
    """Every ready candidate's top-1 on the --eval images against fp32 PyTorch on the CPU, in one accuracy run (where
    that run fails, one run a candidate, so that the failure is that candidate's); those over --max-drop are rejected.
    Returns the accuracy reports."""
    compared = [v for v in ready if not (v.candidate.backend == "torch" and v.candidate.precision == "fp32")]
    if not compared:
        return []

    def evaluate(verdicts: list[Verdict]):
        return evaluate_accuracy(
            options.variant, data=options.eval_dir, labels=options.eval_labels, limit=options.eval_limit,
            batch=options.accuracy_batch, backends=list(dict.fromkeys(v.candidate.backend for v in verdicts)),
            precisions=list(dict.fromkeys(v.candidate.precision for v in verdicts)), export_dir=options.export_dir,
            max_drop=options.max_drop, weights=export.weights, num_classes=options.num_classes, on_step=step,
            rows=[v.candidate.row for v in verdicts])

    try:
        reports = [(compared, evaluate(compared))]
    except (InputError, Interrupted, KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - a runner's own error: find whose, one candidate at a time
        log.info("the accuracy run failed (%s): measuring each candidate on its own", first_line(err))
        reports = []
        for verdict in compared:
            try:
                reports.append(([verdict], evaluate([verdict])))
            except (InputError, Interrupted, KeyboardInterrupt, SystemExit):
                raise
            except BackendMissing as missing:
                verdict.decide("skipped", str(missing))
            except Exception as one:  # noqa: BLE001
                verdict.decide("failed", f"its accuracy run failed: {type(one).__name__}: {first_line(one)}")
    for verdicts, report in reports:
        warnings += [w for w in report.warnings if w not in warnings]
        for verdict in verdicts:
            _judge(verdict, report)
    reference = reports[0][1].reference_row if reports else None
    for verdict in ready:
        if reference is not None and verdict.candidate.backend == "torch" and verdict.candidate.precision == "fp32":
            verdict.accuracy = {**_figures(reference.to_dict()), "passed": True,
                                "note": "the reference itself (fp32 PyTorch on the CPU)"}
    if options.calib is None and any(v.candidate.quantized for v in ready):
        warnings.append("int8 was calibrated on the --eval images themselves: its measured top-1 is optimistic; pass "
                        "--calib DIR (images not in --eval)")
    return [report for _, report in reports]


def _judge(verdict: Verdict, report) -> None:
    c = verdict.candidate
    row = next((r for r in report.rows if r.backend == c.backend and r.precision == c.precision
                and not r.reference and not r.skipped), None)
    if row is None:
        skipped = next((r.skipped for r in report.rows if r.backend == c.backend and r.precision == c.precision), None)
        verdict.decide("failed", f"the accuracy run did not run it: {skipped or 'no row'}")
        return
    verdict.accuracy = _figures(row.to_dict())
    if report.meaningless:
        verdict.accuracy["passed"] = None
        if c.quantized:
            verdict.decide("rejected", f"no accuracy verdict: {report.meaningless}")
    elif row.passed is False:
        low, high = row.drop_ci95_points
        verdict.decide("rejected", f"over the accuracy budget: {row.drop_points:+.2f} points of top-1 against fp32 "
                                   f"PyTorch, {row.allowed_drop_points:.2f} allowed (95 % interval of the drop "
                                   f"{low:+.2f}..{high:+.2f})")


def _figures(row: dict) -> dict:
    keep = ("top1", "top1_ci95_low", "top1_ci95_high", "drop_points", "drop_ci95_low_points", "drop_ci95_high_points",
            "allowed_drop_points", "right_to_wrong", "wrong_to_right", "mcnemar_p", "images", "passed")
    return {k: row[k] for k in keep if k in row}


def _fit_measurement(options, ready: list[Verdict], clock: Clock, unit: float) -> list[Verdict]:
    """The candidates the bench run measures: all that are ready, less the least promising while the run would not
    fit in the time left."""
    measured = list(ready)
    while measured and not clock.fits(_bench_cost(options, [v.candidate for v in measured], unit)):
        dropped = measured.pop()
        dropped.decide("not tried", f"made, but the --time-budget had {max(clock.left(), 0):.0f} s left: not enough "
                                    "to measure it beside the more promising ones")
    return measured


def _bench(options, export: ExportDir, measured: list[Verdict], step, on_record, command,
           warnings: list[str]):
    """One bench run of every candidate measured: interleaved rounds, each row's verdict from the runner timed."""
    plan = bench_run.make_plan(
        variants=[options.variant], backends=list(dict.fromkeys(v.candidate.backend for v in measured)),
        precisions=list(dict.fromkeys(v.candidate.precision for v in measured)),
        rows=[v.candidate.row for v in measured], batches=list(options.batches), device=options.device,
        rounds=options.measurement.rounds, warmup_s=options.measurement.warmup_s,
        duration_s=options.measurement.duration_s, check_parity=True, export_dir=options.export_dir,
        export_root=options.export_dir.parent, weights=export.weights)
    report_dir = options.report_dir / "bench" if options.report_dir is not None else None
    outcome = bench_run.run(plan, report_dir=report_dir, resume=options.resume, command=bench_command(options,
                                                                                                       measured),
                            on_step=step, on_record=on_record)
    for verdict in measured:
        c = verdict.candidate
        rows = sorted((r for r in outcome.records if r.backend == c.backend and r.precision == c.precision),
                      key=lambda r: r.batch)
        ok = [r for r in rows if r.status == "ok"]
        verdict.curve = [{"batch": r.batch, "throughput": r.stats["throughput"], "p50_ms": r.stats["p50_ms"],
                          "p99_ms": r.stats["p99_ms"], "spread": r.stats["throughput_spread"]} for r in ok]
        missing = [r for r in rows if r.status != "ok"]
        if not ok:
            first = missing[0] if missing else None
            verdict.decide("skipped" if first is not None and first.status == "skipped" else "failed",
                           first.reason if first is not None else "the bench run measured no row of it")
            continue
        verdict.settings = ok[0].settings
        verdict.parity, verdict.parity_detail = ok[0].parity, ok[0].parity_detail
        if missing:
            warnings.append(f"{c.name} did not run at batch {', '.join(str(r.batch) for r in missing)} "
                            f"({missing[0].reason}): weighed on the batches that ran")
        bad = next((r for r in ok if r.parity == "fail"), None)
        if options.objective == "latency" and 1 not in [r.batch for r in ok]:
            verdict.decide("failed", f"it did not run at batch 1: {missing[0].reason}")
        elif bad is not None and not (c.quantized and verdict.accuracy):
            d = bad.parity_detail or {}
            verdict.decide("rejected", f"outside parity's {d.get('tolerance', c.precision)} tolerance against fp32 "
                                       f"PyTorch at batch {bad.batch} (max abs {d.get('max_abs', float('nan')):.3g})")
    return outcome


def _manifest_record(options: OptimizeOptions, chosen: Verdict | None, served: Verdict | None, outcome) -> dict:
    """What the variant's manifest keeps of the search: the choice (None when nothing was within budget), how it was
    judged, where and when."""
    record = {"chosen": None, "objective": options.objective, "device": options.device,
              "served": served.candidate.to_dict() if served else None,
              "machine": {k: outcome.environment.get(k) for k in ("cpu", "cpu_count", "gpu", "compute_capability")},
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": outcome.commands.get("optimize")}
    if chosen is not None:
        c = chosen.candidate
        artifact = None if c.backend.startswith("torch") else (
            engine_file(c.precision, c.engine) if c.engine else ONNX_FILES[c.precision])
        record.update(chosen={**c.to_dict(), "artifact": artifact}, accuracy=chosen.accuracy,
                      figure=describe(chosen.figure(options.objective, options.max_latency_ms), options.objective))
    return record
