"""One row of a benchmark: what was measured, how, and what came of it. Plain data, no backend."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__name__)


@dataclass
class BenchRecord:
    variant: str
    backend: str
    precision: str
    batch: int
    device: str
    status: str  # "ok", "skipped" or "failed"
    reason: str | None = None
    stats: dict | None = None  # the median over rounds (timing.combine_rounds), with rounds and throughput_spread
    rounds: list[dict] = field(default_factory=list)  # each round's timing.LatencyStats
    memory_mib: float | None = None
    memory_kind: str | None = None  # what memory_mib measures
    parity: str = "unchecked"  # "pass", "fail", "reference" (the PyTorch model itself) or "unchecked"
    parity_source: str | None = None  # where the verdict comes from
    parity_detail: dict | None = None  # the comparison (compare.Difference) when checked here
    settings: dict = field(default_factory=dict)  # what the runner ran with, and what its audit found
    candidates: list[dict] = field(default_factory=list)  # the settings measured; the fastest is `settings`
    tf32: bool | None = None  # None where TF32 does not apply (CPU, fp16, int8)
    include_transfers: bool = False
    warnings: list[str] = field(default_factory=list)
    source: str | None = None  # what was measured: the artifact and its sha256, or the PyTorch model's weights
    resumed_from: str | None = None  # the earlier run (in the measurement log) that measured it, under --resume

    def to_dict(self) -> dict:
        return asdict(self)
