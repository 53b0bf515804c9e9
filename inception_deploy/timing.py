"""Timing that knows no backend: warm up by time, run for a duration, summarise as trtexec does."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

CV_WARNING = 0.05  # trtexec warns when the coefficient of variation of latency exceeds 5 %


@dataclass(frozen=True)
class LatencyStats:
    batch: int
    iterations: int
    seconds: float  # the timed window
    throughput: float  # images per second: batch * iterations / seconds
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cv: float  # standard deviation / mean of the per-iteration latency

    @property
    def unstable(self) -> bool:
        return self.cv > CV_WARNING

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(latencies_s: list[float] | np.ndarray, batch: int, window_s: float | None = None) -> LatencyStats:
    """Statistics of per-iteration latencies (seconds). Percentiles interpolate linearly (numpy's default)."""
    lat = np.asarray(latencies_s, dtype=np.float64)
    if lat.size == 0:
        raise ValueError("no timed iterations")
    window = float(window_s if window_s is not None else lat.sum())
    ms = lat * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    mean = float(ms.mean())
    return LatencyStats(
        batch=batch, iterations=int(lat.size), seconds=window, throughput=batch * lat.size / window,
        min_ms=float(ms.min()), mean_ms=mean, p50_ms=float(p50), p90_ms=float(p90), p95_ms=float(p95),
        p99_ms=float(p99), max_ms=float(ms.max()), cv=float(ms.std() / mean) if mean > 0 else 0.0,
    )


def measure(step: Callable[[], None], *, batch: int, warmup_s: float, duration_s: float,
            synchronize: Callable[[], None] = lambda: None, min_iterations: int = 5,
            clock: Callable[[], float] = time.perf_counter) -> LatencyStats:
    """Warm up for warmup_s, then time iterations for duration_s (at least min_iterations).

    Each iteration is `step()` then `synchronize()` (the device's stream or event sync on a GPU), timed
    with perf_counter around both, so asynchronous backends are measured to completion.
    """
    end = clock() + warmup_s
    while clock() < end:
        step()
        synchronize()
    latencies = []
    start = clock()
    while clock() - start < duration_s or len(latencies) < min_iterations:
        t0 = clock()
        step()
        synchronize()
        latencies.append(clock() - t0)
    return summarize(latencies, batch, clock() - start)
