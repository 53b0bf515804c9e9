"""The choice, from figures alone (no backend): each candidate's verdict, the best within budget on the objective,
ties to the simpler runtime, and why each of the others lost."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from .candidates import Candidate

log = logging.getLogger(__name__)

MIN_TIE = 0.01  # figures closer than this (relative) are a tie even on a quiet host
STATUSES = ("chosen", "lost", "rejected", "failed", "skipped", "not tried")


@dataclass
class Verdict:
    """One candidate: what became of it, and every figure measured of it."""

    candidate: Candidate
    status: str | None = None  # one of STATUSES once decided; None while it is still in the running
    reason: str | None = None
    artifact: dict | None = None  # the file it runs, and whether it was reused or made (seconds)
    accuracy: dict | None = None  # its row of the accuracy report (top-1, interval, drop, allowed, passed)
    parity: str | None = None  # the bench's verdict on the timed runner: pass, fail, reference
    parity_detail: dict | None = None
    curve: list[dict] = field(default_factory=list)  # per batch: throughput, p50/p99 ms, spread between rounds
    settings: dict | None = None  # what the fastest runner setting was

    @property
    def open(self) -> bool:
        return self.status is None

    def decide(self, status: str, reason: str | None = None) -> None:
        self.status, self.reason = status, reason

    def figure(self, objective: str, max_latency_ms: float | None = None) -> dict | None:
        """The point on the objective: batch-1 median latency, or the best throughput at a batch whose p99 is within
        max_latency_ms. None when nothing qualifies."""
        if objective == "latency":
            return next((p for p in self.curve if p["batch"] == 1), None)
        within = [p for p in self.curve if max_latency_ms is None or p["p99_ms"] <= max_latency_ms]
        return max(within, key=lambda p: p["throughput"]) if within else None

    def to_dict(self, objective: str, max_latency_ms: float | None) -> dict:
        best = self.figure("throughput", max_latency_ms)  # the best measured, whatever the objective (the table's)
        return {**self.candidate.to_dict(), "status": self.status, "reason": self.reason, "artifact": self.artifact,
                "accuracy": self.accuracy, "within_accuracy_budget": (self.accuracy or {}).get("passed"),
                "parity": self.parity, "parity_detail": self.parity_detail,
                "latency_p50_ms": _at(self.curve, 1, "p50_ms"), "latency_p99_ms": _at(self.curve, 1, "p99_ms"),
                "throughput": best["throughput"] if best else None,
                "throughput_batch": best["batch"] if best else None,
                "curve": self.curve, "settings": self.settings}


def _at(curve: list[dict], batch: int, key: str):
    return next((p[key] for p in curve if p["batch"] == batch), None)


def better(objective: str, a: float, b: float) -> bool:
    return a < b if objective == "latency" else a > b


def value(point: dict, objective: str) -> float:
    return point["p50_ms"] if objective == "latency" else point["throughput"]


def describe(point: dict, objective: str) -> str:
    if objective == "latency":
        return f"{point['p50_ms']:.2f} ms median (p99 {point['p99_ms']:.2f} ms) at batch 1"
    return f"{point['throughput']:,.1f} images/s at batch {point['batch']} (p99 {point['p99_ms']:.2f} ms)"


def choose(verdicts: list[Verdict], objective: str, max_latency_ms: float | None = None) -> Verdict | None:
    """Decide every candidate still open: the best on the objective wins (a tie, within the larger of the two rows'
    between-round spread, goes to the simpler runtime), the others lose, saying by how much; one with no point on the
    objective (every batch over --max-latency-ms) is rejected. None when no candidate is left."""
    measured = []
    for v in verdicts:
        if not v.open:
            continue
        point = v.figure(objective, max_latency_ms)
        if point is None:
            best_p99 = min(v.curve, key=lambda p: p["p99_ms"]) if v.curve else None
            v.decide("rejected", "not measured" if best_p99 is None else
                     f"p99 over --max-latency-ms {max_latency_ms:g} at every batch (the lowest: "
                     f"{best_p99['p99_ms']:.2f} ms at batch {best_p99['batch']})")
            continue
        measured.append((v, point))
    if not measured:
        return None
    best_v, best_p = measured[0]
    for v, p in measured[1:]:
        if better(objective, value(p, objective), value(best_p, objective)):
            best_v, best_p = v, p
    tied = [(v, p) for v, p in measured if _tie(p, best_p, objective)]
    winner, point = min(tied, key=lambda vp: vp[0].candidate.simplicity)
    simpler = winner is not best_v
    winner.decide("chosen", ("within the noise of " + best_v.candidate.name + f" ({describe(best_p, objective)}), "
                             "and the simpler runtime") if simpler else describe(point, objective))
    for v, p in measured:
        if v is winner:
            continue
        if v is best_v:
            v.decide("lost", f"the fastest ({describe(p, objective)}), but {winner.candidate.name} is within its "
                             "noise: a tie, and the simpler runtime was chosen")
        elif any(v is t for t, _ in tied):  # within the noise of the fastest, as the winner is: the simpler won
            v.decide("lost", f"a tie with {winner.candidate.name} within the noise of the fastest, "
                             f"{best_v.candidate.name} ({describe(p, objective)}); the simpler runtime was chosen")
        elif better(objective, value(p, objective), value(point, objective)):
            v.decide("lost", f"faster than {winner.candidate.name} ({describe(p, objective)}), but beyond the noise "
                             f"of the fastest, {best_v.candidate.name}, which the simpler {winner.candidate.name} ties")
        elif _tie(p, point, objective):  # ties do not chain: only a tie with the fastest counts
            x, y = value(p, objective), value(best_p, objective)
            ratio = f"{x / y:.2f}x the time" if objective == "latency" else f"{x / y:.0%} of the throughput"
            v.decide("lost", f"within the noise of {winner.candidate.name} but not of the fastest, "
                             f"{best_v.candidate.name} ({describe(p, objective)}, {ratio} of the fastest)")
        else:
            v.decide("lost", _slower(p, point, objective, winner.candidate.name))
    return winner


def _tie(a: dict, b: dict, objective: str) -> bool:
    margin = max(a.get("spread") or 0.0, b.get("spread") or 0.0, MIN_TIE)
    x, y = value(a, objective), value(b, objective)
    return abs(x - y) <= margin * min(x, y)


def _slower(p: dict, winner: dict, objective: str, name: str) -> str:
    x, y = value(p, objective), value(winner, objective)
    if objective == "latency":
        return f"slower: {describe(p, objective)}, {x / y:.2f}x the time of {name}"
    return f"slower: {describe(p, objective)}, {x / y:.0%} of {name}'s throughput"


def closest(verdicts: list[Verdict], objective: str, max_latency_ms: float | None = None) -> Verdict | None:
    """With no winner: the rejected candidate that misses its limit by the least, as a ratio of the limit (its top-1
    drop to the drop allowed, or its lowest p99 to --max-latency-ms); those rejected for another reason come last."""
    def miss(v: Verdict) -> float:
        acc = v.accuracy or {}
        if acc.get("passed") is False and acc.get("allowed_drop_points") is not None:
            return (acc["drop_points"] + 1e-9) / max(acc["allowed_drop_points"], 1e-9)
        if max_latency_ms is not None and v.curve:
            return min(p["p99_ms"] for p in v.curve) / max_latency_ms
        return math.inf

    rejected = [v for v in verdicts if v.status == "rejected"]
    return min(rejected, key=miss) if rejected else None
