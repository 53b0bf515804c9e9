"""A whole benchmark, as `inception-deploy bench` runs it and a Python caller can: the plan from a suite and
overrides, output paths checked before any work, the measurement logs, --resume, the sweep, the reports, and
the failed rows named at the end."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core.artifacts import check_output_dir, check_output_file, check_targets
from ..core.errors import CheckFailed, InputError
from ..models.registry import resolve_name
from .environment import environment
from .log import MeasurementLog, new_run_id, resumable_groups
from .plan import BenchPlan, load_suite
from .record import BenchRecord
from .report import write_reports
from .sweep import run_bench

log = logging.getLogger(__name__)

DEFAULTS = {"backends": ["torch", "onnxruntime"], "precisions": ["fp32"], "batches": [1, 8]}


def make_plan(suite: str | None = None, *, variants: list[str] | None = None, **overrides) -> BenchPlan:
    """A suite (or the defaults) with the options given; None leaves the suite's value."""
    base = load_suite(suite) if suite else BenchPlan(variants=[], **DEFAULTS)
    given = {k: v for k, v in overrides.items() if v is not None}
    if variants:
        given["variants"] = [resolve_name(v) for v in variants]
    try:
        return dataclasses.replace(base, **given).check()
    except TypeError as err:
        raise InputError(f"bench: {err}") from None


@dataclass
class BenchOutcome:
    records: list[BenchRecord]
    environment: dict
    written: list[Path] = field(default_factory=list)  # the reports
    logs: list[Path] = field(default_factory=list)  # the measurement logs appended to
    kept_rows: int | None = None  # with resume: the rows kept as earlier runs measured them

    @property
    def failed(self) -> list[BenchRecord]:
        return [r for r in self.records if r.status == "failed"]

    def raise_for_failures(self) -> None:
        """CheckFailed (exit 1) naming the first failed row, if any failed."""
        if self.failed:
            first = self.failed[0]
            raise CheckFailed(f"{len(self.failed)} combination(s) failed: first {first.variant} {first.backend} "
                              f"{first.precision} b{first.batch}: {first.reason}")


def log_paths(json_out: Path | None, report_dir: Path | None) -> list[Path]:
    """One log per file: --json DIR/bench.json with --report DIR names the same one twice."""
    paths: list[Path] = []
    for path in ([report_dir / "bench.jsonl"] if report_dir else []) + (
        [json_out.with_suffix(".jsonl")] if json_out else []
    ):
        if all(path.resolve() != other.resolve() for other in paths):
            paths.append(path)
    return paths


def run(
    plan: BenchPlan,
    *,
    json_out: Path | None = None,
    csv_out: Path | None = None,
    report_dir: Path | None = None,
    resume: bool = False,
    command: str | None = None,
    on_step: Callable[..., None] | None = None,
    on_record: Callable[[BenchRecord], None] | None = None,
    on_start: Callable[[dict, list[Path]], None] | None = None,
) -> BenchOutcome:
    """Measure `plan` and write its reports. on_start gets the environment and the logs before the first row;
    on_record each row as it is finished. The logs are appended to as rows are measured, so an interrupted run
    loses nothing: run it again with resume=True."""
    plan.check()
    json_out, csv_out, report_dir = (Path(p) if p is not None else None for p in (json_out, csv_out, report_dir))
    for path, option in ((json_out, "--json"), (csv_out, "--csv")):
        if path is not None:
            check_output_file(path, option)  # before the sweep, not after it
    if report_dir is not None:
        check_output_dir(report_dir, "--report")
    paths = log_paths(json_out, report_dir)
    reports = [report_dir / name for name in ("bench.json", "bench.csv", "README.md")] if report_dir else []
    check_targets([*paths, *reports], "--report" if report_dir else "--json")  # a FIFO or a directory there
    env = environment(plan.device)
    plan_dict = {**plan.to_dict(), "command": command}
    resumed, resumes, previous = _resumable(paths, env, plan_dict) if resume else ({}, [], None)
    logs = _open_logs(paths, env, plan_dict, previous, resumes)
    if on_start:
        on_start(env, [m.path for m in logs])

    def record(r: BenchRecord) -> None:
        if not r.resumed_from:  # a kept record is in the log already
            for m in logs:
                m.record(r)
        if on_record:
            on_record(r)

    def measurement(data: dict) -> None:
        for m in logs:
            m.measurement(data)

    records = run_bench(plan, on_step=on_step, on_record=record, on_measurement=measurement, resumed=resumed)
    written = write_reports(records, env, plan_dict, json_path=json_out, csv_path=csv_out, report_dir=report_dir)
    outcome = BenchOutcome(records, env, written, [m.path for m in logs])
    if resume:
        kept = [r for r in records if r.resumed_from]
        outcome.kept_rows = len(kept)
        log.debug("--resume: kept %d row(s) as earlier runs measured them; measured %d now", len(kept),
                  len(records) - len(kept))
    return outcome


def _resumable(paths: list[Path], env: dict, plan_dict: dict):
    if not paths:
        raise InputError("--resume continues the sweep logged in --report DIR (its bench.jsonl) or beside --json FILE: "
                         "name the one to continue")
    previous = next((p for p in paths if p.is_file()), None)
    if previous is None:
        log.info("nothing to resume in %s: measuring every group", paths[0])
        return {}, [], None
    resumed, resumes, ignored = resumable_groups(previous, env, plan_dict)
    log.info("resuming from %s: %d group(s) logged by %d earlier run(s)%s; each is kept if it still fits, else "
             "measured again", previous, len(resumed), len(resumes),
             f" ({ignored} run(s) with other settings or on another machine ignored)" if ignored else "")
    return resumed, resumes, previous


def _open_logs(paths: list[Path], env: dict, plan_dict: dict, previous: Path | None, resumes: list[str]):
    logs, run_id = [], new_run_id()
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            logs.append(MeasurementLog(path, env, plan_dict, run=run_id, resumes=resumes if path == previous else ()))
        except OSError as e:
            raise InputError(f"cannot write {path} ({e.strerror}): choose another --json/--report path") from None
    return logs
