"""The sweep's measurement log: JSON lines appended as measurements happen, and read back to resume.

A sweep over five variants and five batch sizes on a GPU takes longer than many machines are held (a
preempted node, a job time limit, Ctrl-C). Nothing measured is lost: every round and every finished row is
appended and fsynced at once. `bench --resume` reads the log back and keeps each (variant, batch) group that
one earlier run finished without a failed row, measured under the same settings, on the same machine and
software, from the same artifacts; every other group is measured again, whole, so that the rows compared in
one group always alternated round by round in one run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import fields
from pathlib import Path

from .artifacts import disk_error
from .bench import BenchRecord
from .errors import InputError

# What must be equal for figures from two runs to stand side by side.
SAME_SETTINGS = ("device", "warmup_s", "duration_s", "rounds", "tf32", "include_transfers", "check_parity")
SAME_MACHINE = ("inception_deploy", "python", "torch", "onnxruntime", "tensorrt", "tensorrt-rtx", "cpu", "cpu_count",
                "torch_threads", "cuda_available", "gpu", "cuda", "cudnn", "driver", "compute_capability")
_RECORD_FIELDS = {f.name for f in fields(BenchRecord)}


class MeasurementLog:
    """Append-only JSON lines, written as measurements happen, so that nothing measured is lost to a crash,
    an interrupt or a later failure. A run begins with a header line; every line carries the run's id."""

    def __init__(self, path: Path, env: dict, plan: dict, *, resumes: list[str] = ()):
        self.path = Path(path)
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self._cut_torn_tail()
        self._append({"type": "run", "environment": env, "plan": plan, **({"resumes": list(resumes)} if resumes else {})})

    def _cut_torn_tail(self) -> None:
        """A process killed while appending leaves a last line without its newline: cut it, or the next line
        would be glued to it. Nothing whole is lost: every complete line ends with a newline."""
        try:
            with open(self.path, "r+b") as f:
                data = f.read()
                if data and not data.endswith(b"\n"):
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


def read_log(path: Path) -> list[dict]:
    """The log's lines. A last line cut short (the process was killed while appending it) is dropped; a
    damaged line anywhere else is named."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a bench log (not UTF-8 text): start a new --report, or drop --resume") from None
    except OSError as err:
        raise InputError(f"cannot read {path} ({err.strerror}): start a new --report, or drop --resume") from None
    lines = text.splitlines()
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or "run" not in entry or "type" not in entry:
                raise ValueError("not a bench log line")
        except ValueError as err:
            if number == len(lines) and not text.endswith("\n"):
                break  # the append a kill interrupted: everything before it is whole
            raise InputError(f"{path} line {number} is damaged ({str(err).splitlines()[0]}): start a new --report, "
                             "or drop --resume") from None
        entries.append(entry)
    return entries


def resumable_groups(path: Path, env: dict, plan: dict) -> tuple[dict[tuple[str, int], list[BenchRecord]], list[str]]:
    """((variant, batch) -> the records of that group from the log, run ids they come from).

    The log's last run must have measured under this plan's settings, on this machine and software (else a
    one-line InputError names the difference); earlier runs that did not are ignored. Groups are returned
    whole as one run left them; whether they still fit (rows, artifacts) is bench.run_bench's to decide.
    """
    entries = read_log(path)
    headers = [e for e in entries if e["type"] == "run"]
    if not headers:
        return {}, []
    difference = _difference(headers[-1], env, plan)
    if difference:
        raise InputError(f"--resume: the last run in {path} {difference}: use the same options and machine, "
                         "or a new --report (or drop --resume)")
    runs = {h["run"] for h in headers if not _difference(h, env, plan)}
    groups: dict[tuple[str, int], dict[str, list[BenchRecord]]] = {}
    for e in entries:
        if e["type"] == "record" and e["run"] in runs:
            record = BenchRecord(**{k: v for k, v in e.items() if k in _RECORD_FIELDS})
            record.resumed_from = e["run"]
            groups.setdefault((record.variant, record.batch), {}).setdefault(e["run"], []).append(record)
    # A group measured by several runs (an interrupted one, then a resumed one): the latest run's is whole.
    latest = {key: by_run[max(by_run, key=lambda run: [h["run"] for h in headers].index(run))]
              for key, by_run in groups.items()}
    return latest, sorted({r.resumed_from for records in latest.values() for r in records})


def _difference(header: dict, env: dict, plan: dict) -> str | None:
    earlier_plan, earlier_env = header.get("plan") or {}, header.get("environment") or {}
    for key in SAME_SETTINGS:
        if earlier_plan.get(key) != plan.get(key):
            return f"measured with {key}={earlier_plan.get(key)!r}, this one asks {key}={plan.get(key)!r}"
    for key in SAME_MACHINE:
        if earlier_env.get(key) != env.get(key):
            return f"ran with {key} {earlier_env.get(key)!r}, this machine has {env.get(key)!r}"
    return None
