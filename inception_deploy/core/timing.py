"""Timing that knows no backend: a first call, a warm-up, a timed window; statistics as trtexec computes them.

One measurement: the first call is timed alone (compilation, cuDNN's algorithm search and CUDA-graph capture
happen there), then at least MIN_WARMUP_ITERATIONS and `warmup_s` of warm-up counted from the end of the
first call, then the timed window. Each timed iteration is `step()` then `synchronize()`, timed on the host
around both (so asynchronous work is measured to completion); with a device timer, the device's own compute
time of the same iteration is recorded beside it. Throughput is inferences over host wall time (trtexec).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol

import numpy as np

log = logging.getLogger(__name__)

CV_WARNING = 0.05  # trtexec warns when the coefficient of variation of latency exceeds 5 %
SPREAD_WARNING = 0.10  # throughput moving more than this between rounds marks a noisy host
MIN_WARMUP_ITERATIONS = 3


class DeviceTimer(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def elapsed_ms(self) -> float: ...  # valid once the device work between start and stop has finished


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
    first_call_ms: float | None = None  # the untimed first call: compilation, autotuning, graph capture
    warmup_iterations: int | None = None
    gpu_mean_ms: float | None = None  # device compute time per iteration (CUDA events), when there is a device
    gpu_p50_ms: float | None = None
    gpu_p99_ms: float | None = None

    @property
    def unstable(self) -> bool:
        return self.cv > CV_WARNING

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(latencies_s: list[float] | np.ndarray, batch: int, window_s: float | None = None, *,
              device_ms: list[float] | None = None, first_call_s: float | None = None,
              warmup_iterations: int | None = None) -> LatencyStats:
    """Statistics of per-iteration latencies (seconds). Percentiles interpolate linearly (numpy's default)."""
    lat = np.asarray(latencies_s, dtype=np.float64)
    if lat.size == 0:
        raise ValueError("no timed iterations")
    window = float(window_s if window_s is not None else lat.sum())
    ms = lat * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    mean = float(ms.mean())
    gpu = {}
    if device_ms:
        g = np.asarray(device_ms, dtype=np.float64)
        gpu = {
            "gpu_mean_ms": float(g.mean()),
            "gpu_p50_ms": float(np.percentile(g, 50)),
            "gpu_p99_ms": float(np.percentile(g, 99)),
        }
    return LatencyStats(
        batch=batch, iterations=int(lat.size), seconds=window, throughput=batch * lat.size / window,
        min_ms=float(ms.min()), mean_ms=mean, p50_ms=float(p50), p90_ms=float(p90), p95_ms=float(p95),
        p99_ms=float(p99), max_ms=float(ms.max()), cv=float(ms.std() / mean) if mean > 0 else 0.0,
        first_call_ms=None if first_call_s is None else first_call_s * 1e3, warmup_iterations=warmup_iterations, **gpu,
    )


def measure(step: Callable[[], None], *, batch: int, warmup_s: float, duration_s: float,
            synchronize: Callable[[], None] = lambda: None, device_timer: DeviceTimer | None = None,
            min_iterations: int = 5, clock: Callable[[], float] = time.perf_counter) -> LatencyStats:
    """Time `step` as the module docstring says: first call, warm-up, then `duration_s` (at least
    `min_iterations`)."""
    t0 = clock()
    step()
    synchronize()
    first_call = clock() - t0

    warmup_start, warmup_iterations = clock(), 0
    while warmup_iterations < MIN_WARMUP_ITERATIONS or clock() - warmup_start < warmup_s:
        step()
        synchronize()
        warmup_iterations += 1

    latencies, device_ms = [], []
    start = clock()
    while clock() - start < duration_s or len(latencies) < min_iterations:
        t0 = clock()
        if device_timer is not None:
            device_timer.start()
        step()
        if device_timer is not None:
            device_timer.stop()
        synchronize()
        latencies.append(clock() - t0)
        if device_timer is not None:
            device_ms.append(device_timer.elapsed_ms())
    return summarize(latencies, batch, clock() - start, device_ms=device_ms, first_call_s=first_call,
                     warmup_iterations=warmup_iterations)


def combine_rounds(rounds: list[LatencyStats]) -> dict:
    """One row from interleaved rounds: the median of every figure over the rounds, and the spread of
    throughput between them ((max - min) / median), which says how far the host drifted."""
    if not rounds:
        raise ValueError("no rounds")
    fields = rounds[0].to_dict()
    row: dict = {}
    for key, value in fields.items():
        values = [getattr(r, key) for r in rounds]
        if key in ("batch",):
            row[key] = value
        elif key in ("iterations", "warmup_iterations"):
            row[key] = sum(v for v in values if v is not None) if value is not None else None
        elif key == "seconds":
            row[key] = sum(values)
        elif value is None or any(v is None for v in values):
            row[key] = None
        else:
            row[key] = statistics.median(values)
    throughputs = [r.throughput for r in rounds]
    row["rounds"] = len(rounds)
    row["throughput_spread"] = (max(throughputs) - min(throughputs)) / statistics.median(throughputs)
    return row
