"""What `optimize` is asked, as one object: the model, the labelled images, the budgets, the measurement and the
outputs, each checked before any work (InputError, exit 2)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..accuracy.evaluate import DEFAULT_BATCH
from ..core.artifacts import check_output_dir, check_output_file
from ..core.deps import require
from ..core.errors import InputError, check_number
from ..core.stats import MaxDrop, parse_max_drop
from ..export.onnx import default_out_dir
from ..models.registry import get_spec
from ..serving.triton_repo import check_model_dir

log = logging.getLogger(__name__)

OBJECTIVES = ("latency", "throughput")
DEVICES = ("cpu", "cuda")
# The batch sizes measured for --objective throughput, up to --max-batch (which is always measured too).
THROUGHPUT_BATCHES = (1, 8, 32, 128, 256)
DEFAULT_MAX_BATCH = {"cpu": 8, "cuda": 128}
DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str | float | None, option: str = "--time-budget") -> float | None:
    """'90', '90s', '10m', '1h30m' -> seconds; None stays None."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else check_number(text, option, above=0)
    raw = str(text).strip().lower().replace(" ", "")
    match = DURATION.fullmatch(raw) if raw else None
    if not match or not any(match.groups()):
        raise InputError(f"{option} '{text}' is not a duration: give seconds (90, 90s), minutes (10m) or hours (1h30m)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return check_number(hours * 3600 + minutes * 60 + seconds, option, above=0)


@dataclass(frozen=True)
class Measurement:
    """How each candidate is timed: the bench's interleaved rounds, warm-up and window."""

    rounds: int = 3
    warmup_s: float = 2.0
    duration_s: float = 5.0

    def check(self) -> "Measurement":
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise InputError(f"--rounds must be a positive integer, got {self.rounds}")
        check_number(self.warmup_s, "--warmup-s", minimum=0)
        check_number(self.duration_s, "--duration-s", above=0)
        return self

    def seconds(self, settings: int, batches: int) -> float:
        """The timed part of measuring `settings` runner settings at `batches` batch sizes: its lower bound."""
        return self.rounds * batches * settings * (self.warmup_s + self.duration_s)


@dataclass(frozen=True)
class OptimizeOptions:
    variant: str
    weights: Path | None = None
    num_classes: int | None = None
    eval_dir: Path | None = None  # labelled images: every candidate's top-1, and int8's calibration budget
    eval_labels: Path | None = None
    eval_limit: int | None = None
    calib: Path | None = None  # int8 calibration images; default: the --eval images (said in the report)
    calib_samples: int = 64
    max_drop: str | float | MaxDrop | None = None
    device: str = "cpu"
    objective: str = "latency"
    max_latency_ms: float | None = None  # throughput: the p99 a batch size may take
    batches: tuple[int, ...] | None = None  # throughput: the batch sizes measured; default THROUGHPUT_BATCHES
    max_batch: int | None = None
    time_budget_s: float | None = None
    measurement: Measurement = Measurement()
    export_dir: Path | None = None  # default export/<variant>
    repo: Path | None = None
    labels: Path | None = None  # class names for the repository, one a line
    json_out: Path | None = None
    report_dir: Path | None = None
    resume: bool = False

    def check(self) -> "OptimizeOptions":
        """Every option checked, the variant's name and the defaults resolved; paths are checked by check_paths."""
        spec = get_spec(self.variant)
        if self.objective not in OBJECTIVES:
            raise InputError(f"--objective must be latency or throughput, not '{self.objective}'")
        if self.device not in DEVICES:
            raise InputError(f"--device must be cpu or cuda, not '{self.device}'")
        if self.max_latency_ms is not None:
            if self.objective != "throughput":
                raise InputError("--max-latency-ms bounds the p99 of the batches --objective throughput measures: add "
                                 "--objective throughput (the latency objective is the batch-1 time itself)")
            check_number(self.max_latency_ms, "--max-latency-ms", above=0)
        max_batch = self.max_batch if self.max_batch is not None else DEFAULT_MAX_BATCH[self.device]
        if not isinstance(max_batch, int) or max_batch < 1:
            raise InputError(f"--max-batch must be a positive integer, got {max_batch}")
        batches = self._batches(max_batch)
        if self.eval_dir is None and any(v is not None for v in (self.eval_labels, self.eval_limit, self.calib)):
            raise InputError("--eval-labels, --eval-limit and --calib go with the labelled images: add --eval DIR")
        if self.eval_dir is None and self.max_drop is not None:
            raise InputError("--max-drop is measured on labelled images: add --eval DIR")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise InputError(f"--eval-limit must be at least 1, got {self.eval_limit}")
        if self.calib_samples < 1:
            raise InputError(f"--calib-samples must be at least 1, got {self.calib_samples}")
        max_drop = parse_max_drop(self.max_drop) if self.eval_dir is not None else None
        measurement = self.measurement.check()
        budget = parse_duration(self.time_budget_s)
        if budget is not None:
            least = measurement.seconds(1, len(batches))
            if budget < least:
                raise InputError(
                    f"--time-budget {budget:g} s cannot measure even one candidate: one takes at least "
                    f"{measurement.rounds} round(s) x {len(batches)} batch size(s) x ({measurement.warmup_s:g} s "
                    f"warm-up + {measurement.duration_s:g} s) = {least:g} s; give at least {least:g} s, or fewer "
                    "--rounds, a shorter --warmup-s / --duration-s")
        if self.resume and self.report_dir is None:
            raise InputError("--resume continues the search logged in --report DIR (its bench/bench.jsonl): name it")
        return replace(self, variant=spec.name, max_batch=max_batch, batches=batches, max_drop=max_drop,
                       measurement=measurement, time_budget_s=budget,
                       export_dir=Path(self.export_dir) if self.export_dir is not None else default_out_dir(spec.name))

    @property
    def accuracy_batch(self) -> int:
        """The accuracy run's batch: within every engine's profile (built up to --max-batch). After check()."""
        return min(DEFAULT_BATCH, self.max_batch)

    def _batches(self, max_batch: int) -> tuple[int, ...]:
        if self.objective == "latency":
            if self.batches not in (None, (1,), [1]):
                raise InputError("--batch is for --objective throughput: the latency objective measures batch 1")
            return (1,)
        given = tuple(self.batches) if self.batches else None
        if given is not None:
            if any(not isinstance(b, int) or b < 1 for b in given):
                raise InputError(f"--batch takes positive integers, got {list(given)}")
            over = [b for b in given if b > max_batch]
            if over:
                raise InputError(f"--batch {over[0]} is over --max-batch {max_batch}: raise --max-batch, or leave that "
                                 "batch out")
            return tuple(sorted(set(given)))
        return tuple(sorted({b for b in THROUGHPUT_BATCHES if b <= max_batch} | {max_batch}))

    def check_paths(self) -> None:
        """Before any work: every output writable, and the repository outside the export directory."""
        check_output_dir(self.export_dir, "--dir")
        for path, option in ((self.json_out, "--json"),):
            if path is not None:
                check_output_file(Path(path), option)
        for path, option in ((self.report_dir, "--report"), (self.repo, "--repo")):
            if path is not None:
                check_output_dir(Path(path), option)
        if self.repo is not None:
            repo, export = Path(self.repo).resolve(), Path(self.export_dir).resolve()
            if repo == export or export in repo.parents:
                raise InputError(f"--repo {self.repo} is inside the export directory {self.export_dir}: keep the "
                                 "repository Triton loads apart from the export; choose a --repo outside it")
            if repo in export.parents:
                raise InputError(f"the export directory {self.export_dir} is inside --repo {self.repo}: Triton would "
                                 "try to load it as a model; choose a --repo that does not hold it")
            if self.report_dir is not None and repo in [Path(self.report_dir).resolve(),
                                                        *Path(self.report_dir).resolve().parents]:
                raise InputError(f"--report {self.report_dir} is inside --repo {self.repo}: Triton would try to load "
                                 "it as a model; choose a --report outside the repository")
            check_model_dir(self.repo, self.variant)  # whichever runtime serves the winner
        for path, option in ((self.eval_dir, "--eval"), (self.calib, "--calib")):
            if path is not None and not Path(path).is_dir():
                raise InputError(f"{option} {path} is not a directory of images: name the folder")
        if self.repo is not None:
            require("tritonclient.grpc.model_config_pb2")  # the repository's config is built on Triton's own schema
        if self.report_dir is not None:
            require("matplotlib")  # the report's plot: a missing matplotlib is said now (exit 3), not after the search
