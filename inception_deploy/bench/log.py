"""The sweep's measurement log: JSON lines appended as measurements happen, and read back to resume.

A sweep over five variants and five batch sizes on a GPU takes longer than many machines are held (a
preempted node, a job time limit, Ctrl-C). Nothing measured is lost: every round and every finished row is
appended and fsynced at once. `bench --resume` reads the log back and keeps, for each (variant, batch), the
rows that earlier runs measured under the same settings, on the same kind of machine with the same software,
from the same artifacts. What one run measured of a group is kept whole or not at all (its rows alternated
round by round there), and a run that measured some rows of a group (`--backends torch`) lends them to a later
one that measures the rest: the rows of one report may come from several runs, each saying which.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import MISSING, fields
from pathlib import Path

from ..core.artifacts import disk_error
from ..core.errors import InputError, first_line
from ..runners import BACKENDS
from .record import BenchRecord

log = logging.getLogger(__name__)

# What must be equal for figures from two runs to stand side by side: the measurement settings, and the kind
# of machine (CPU and GPU model, driver, OS) with the same software.
SAME_SETTINGS = ("device", "warmup_s", "duration_s", "rounds", "tf32", "include_transfers", "check_parity")
SAME_MACHINE = (
    "inception_deploy",
    "inception_deploy_source",  # the code itself: a fix changes what is measured, under the same version number
    "python",
    "torch",
    "cpu",
    "cpu_count",
    "torch_threads",
    "platform",
    "cuda_available",
    "gpu",
    "cuda",
    "cudnn",
    "driver",
    "compute_capability",
)
# A backend's own library must be the same too, for its rows only: a run made before onnxruntime-gpu was
# installed still lends its torch rows to one made after.
# onnxruntime and onnxruntime-gpu share their version numbers: the providers a build offers tell them apart.
SAME_LIBRARY = {"onnxruntime": ("onnxruntime", "onnxruntime_providers"), "tensorrt": ("tensorrt",),
                "tensorrt-rtx": ("tensorrt-rtx",)}
_RECORD_FIELDS = {f.name for f in fields(BenchRecord)}
_REQUIRED = {f.name for f in fields(BenchRecord) if f.default is MISSING and f.default_factory is MISSING}
_FIX = "start a new --report, or drop --resume"
STATUSES = ("ok", "skipped", "failed")
# The type of each field of a logged record (None: it may be null), as BenchRecord and the reports use it.
_RECORD_TYPES = {
    "variant": str, "backend": str, "precision": str, "batch": int, "device": str, "status": str,
    "reason": (str, None), "stats": (dict, None), "rounds": list, "memory_mib": (int, float, None),
    "memory_kind": (str, None), "parity": str, "parity_source": (str, None), "parity_detail": (dict, None),
    "settings": dict, "tf32": (bool, None), "include_transfers": bool, "warnings": list, "source": (str, None),
    "resumed_from": (str, None), "candidates": list,
}
# The figures of an ok row that its reports print and plot (timing.combine_rounds), and those it may lack.
_STATS_FIGURES = ("throughput", "throughput_spread", "p50_ms", "p90_ms", "p99_ms", "cv")
_STATS_OPTIONAL = ("gpu_p50_ms",)


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"


class MeasurementLog:
    """Append-only JSON lines, written as measurements happen, so that nothing measured is lost to a crash,
    an interrupt or a later failure. A run begins with a header line; every line carries the run's id."""

    def __init__(self, path: Path, env: dict, plan: dict, *, run: str | None = None, resumes: list[str] = ()):
        self.path = Path(path)
        self.run = run or new_run_id()
        self._cut_torn_tail()
        self._append(
            {"type": "run", "environment": env, "plan": plan, **({"resumes": list(resumes)} if resumes else {})}
        )

    def _cut_torn_tail(self) -> None:
        """A process killed while appending leaves a last line without its newline: cut it (read_log never
        uses it), or the next line would be glued to it. Only in a bench log: another file is left as it is."""
        try:
            with open(self.path, "r+b") as f:
                data = f.read()
                if data and not data.endswith(b"\n") and _is_bench_log(data.split(b"\n", 1)[0]):
                    f.truncate(data.rfind(b"\n") + 1)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise disk_error(err, self.path) from None

    def measurement(self, data: dict) -> None:
        self._append({"type": "measurement", **data})

    def record(self, record: BenchRecord) -> None:
        self._append({"type": "record", **record.to_dict()})

    def _append(self, data: dict) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"run": self.run, **data}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise disk_error(err, self.path) from None


def _is_bench_log(first_line: bytes) -> bool:
    try:
        entry = json.loads(first_line)
    except ValueError:
        return False
    return isinstance(entry, dict) and entry.get("type") == "run" and isinstance(entry.get("run"), str)


def read_log(path: Path) -> list[dict]:
    """The log's lines, each checked for what resuming relies on. A last line without its newline is the
    append a killed process left unfinished: it is never used, whole or not. A damaged line anywhere else is
    named."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a bench log (not UTF-8 text): {_FIX}") from None
    except OSError as err:
        raise InputError(f"cannot read {path} ({err.strerror}): {_FIX}") from None
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            problem = _problem(entry)
        except ValueError as err:
            problem = first_line(err)
        if problem:
            raise InputError(f"{path} line {number} is damaged ({problem}): the file was edited or damaged; remove "
                             f"that line, or {_FIX}")
        entries.append(entry)
    return entries


def _problem(entry) -> str | None:
    """What makes a parsed line unusable for resuming, if anything."""
    if not isinstance(entry, dict) or not isinstance(entry.get("run"), str) or not isinstance(entry.get("type"), str):
        return "not a bench log line"
    if entry["type"] == "run" and not (
        isinstance(entry.get("plan"), dict) and isinstance(entry.get("environment"), dict)
    ):
        return "a run header without its plan and environment"
    if entry["type"] == "record":
        return _record_problem(entry)
    return None


def _record_problem(entry: dict) -> str | None:
    """What a kept record would break in the reports: a field missing or of another type, an unknown status,
    an ok row without the figures its report prints."""
    missing = sorted(_REQUIRED - set(entry))
    if missing:
        return f"a record without {', '.join(missing)}"
    wrong = [key for key, kinds in _RECORD_TYPES.items() if key in entry and not _is(entry[key], kinds)]
    if isinstance(entry.get("warnings"), list) and not all(isinstance(w, str) for w in entry["warnings"]):
        wrong.append("warnings")
    if wrong:
        return f"a record with fields of the wrong type: {', '.join(wrong)}"
    if entry["status"] not in STATUSES:
        return f"a record whose status {entry['status']!r} is none of {', '.join(STATUSES)}"
    if entry["status"] == "ok":
        stats = entry.get("stats")
        if stats is None:
            return f"an ok record without its stats ({', '.join(_STATS_FIGURES)})"
        lacking = [k for k in _STATS_FIGURES if not _is(stats.get(k), (int, float))]
        lacking += [k for k in _STATS_OPTIONAL if not _is(stats.get(k), (int, float, None))]
        if lacking:
            return f"an ok record whose stats lack {', '.join(lacking)}"
        impossible = [k for k in (*_STATS_FIGURES, *_STATS_OPTIONAL)
                      if stats.get(k) is not None and not 0 <= stats[k] < float("inf")]
        if impossible:
            return f"an ok record with impossible figures: {', '.join(impossible)} (not finite, or negative)"
    if entry["status"] != "ok" and entry.get("reason") is None:
        return f"a {entry['status']} record without its reason"
    return None


def _is(value, kinds) -> bool:
    """isinstance for JSON values, where a bool is no number and None stands for null."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if value is None or isinstance(value, bool):
        return type(value) in kinds or (value is None and None in kinds)
    return any(kind is not None and isinstance(value, kind) for kind in kinds)


def resumable_groups(
    path: Path, env: dict, plan: dict
) -> tuple[dict[tuple[str, int], list[list[BenchRecord]]], list[str], int]:
    """What an earlier sweep in the log can lend this one: ((variant, batch) -> that group's records from
    each run that logged it, newest run first; the ids of those runs; how many runs were ignored).

    Runs measured under other settings, or on another kind of machine or software, are ignored; when that is
    every run, a one-line InputError names the difference from the last one. Whether a group still fits this
    plan (its rows, artifacts and weights) is bench.run_bench's to decide.
    """
    entries = read_log(path)
    headers = [e for e in entries if e["type"] == "run"]
    if not headers:
        return {}, [], 0
    usable = [h["run"] for h in headers if not _difference(h, env, plan)]
    if not usable:
        raise InputError(f"--resume: the last run in {path} {_difference(headers[-1], env, plan)}: use the same "
                         f"options and machine, or a new --report (or drop --resume)")
    order = {run: i for i, run in enumerate(usable)}
    by_header = {h["run"]: h for h in headers}
    by_group: dict[tuple[str, int], dict[str, list[BenchRecord]]] = {}
    for e in entries:
        if e["type"] == "record" and e["run"] in order and _same_library(e, by_header[e["run"]]["environment"], env):
            record = BenchRecord(**{k: v for k, v in e.items() if k in _RECORD_FIELDS})
            record.resumed_from = record.resumed_from or e["run"]  # a kept row logged again keeps its origin
            by_group.setdefault((record.variant, record.batch), {}).setdefault(e["run"], []).append(record)
    groups = {
        key: [runs[run] for run in sorted(runs, key=order.__getitem__, reverse=True)] for key, runs in by_group.items()
    }
    return groups, sorted({run for runs in by_group.values() for run in runs}), len(headers) - len(usable)


def _same_library(record: dict, earlier_env: dict, env: dict) -> bool:
    """Whether the library that ran this row is the one this machine has now (another build measures anew).
    ONNX Runtime's TensorRT provider runs on TensorRT too."""
    backend = BACKENDS.get(record["backend"])
    if backend is None:
        return True
    keys = SAME_LIBRARY.get(backend.engine, ()) + (SAME_LIBRARY["tensorrt"] if backend.device == "tensorrt" else ())
    return all(earlier_env.get(key) == env.get(key) for key in keys)


def _difference(header: dict, env: dict, plan: dict) -> str | None:
    earlier_plan, earlier_env = header["plan"], header["environment"]
    for key in SAME_SETTINGS:
        if earlier_plan.get(key) != plan.get(key):
            return f"measured with {key}={earlier_plan.get(key)!r}, this one asks {key}={plan.get(key)!r}"
    for key in SAME_MACHINE:
        if earlier_env.get(key) != env.get(key):
            if key == "inception_deploy_source":
                return (f"was measured by other code of inception-deploy (source sha256 "
                        f"{str(earlier_env.get(key))[:12]}, this one {str(env.get(key))[:12]}): its figures are not "
                        "this code's")
            return f"ran with {key} {earlier_env.get(key)!r}, this machine has {env.get(key)!r}"
    return None
