"""Accuracy statistics that know no backend: top-k hits, Wilson intervals, McNemar's exact test, the drop budget.

- Wilson's score interval: the 95 % interval of a proportion that stays inside [0, 1] and is honest at 0 or n
  hits and small n (Brown, Cai & DasGupta 2001), unlike the normal approximation.
- McNemar's exact test: two classifiers on the same images differ only where one is right and the other wrong;
  under "no difference" those b + c discordant images split 50/50. Two-sided p = min(1, 2 P[X <= min(b, c)]),
  X ~ Binomial(b + c, 1/2).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per sample: is the label among the k highest logits? A tie counts against the label (no sort order decides a
    hit), and a row holding NaN or Inf is never a hit."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = min(k, logits.shape[1])
    own = logits[np.arange(len(labels)), labels]
    at_least = (logits >= own[:, None]).sum(axis=1)  # the label itself, and every logit tied with or above it
    return np.isfinite(logits).all(axis=1) & (at_least <= k)


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for hits/n, as fractions in [0, 1]; (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if hits == 0 else low), (1.0 if hits == n else high)  # exactly, where rounding would miss the bound


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b images right→wrong and c wrong→right; 1.0 when there are none."""
    n = b + c
    if n == 0:
        return 1.0
    low = min(b, c)
    if n <= 1000:  # exact, in integers
        return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(low + 1)) / 2 ** n)
    # log of C(n, i) / 2^n, summed in log space: no huge integers for a large n
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(low + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class MaxDrop:
    """How much top-1 may drop against fp32: `points` absolute percentage points, or `relative` percent of fp32's
    top-1 (MLPerf's "99 % of fp32" is --max-drop 1%)."""

    value: float
    relative: bool = False

    def allowed_points(self, reference_top1: float) -> float:
        """The allowed drop in percentage points, for a reference top-1 given as a fraction."""
        return self.value * reference_top1 if self.relative else self.value

    def describe(self) -> str:
        return f"{self.value:g} % of fp32's top-1 (relative)" if self.relative else f"{self.value:g} point(s) of top-1"

    def to_dict(self) -> dict:
        return {"value": self.value, "relative": self.relative}


DEFAULT_MAX_DROP = MaxDrop(1.0)


def parse_max_drop(text: str | float | MaxDrop | None, option: str = "--max-drop") -> MaxDrop:
    """'1.0' (absolute points of top-1) or '1%' (relative to fp32's top-1)."""
    if text is None:
        return DEFAULT_MAX_DROP
    if isinstance(text, MaxDrop):
        return text
    raw = str(text).strip()
    relative = raw.endswith("%")
    try:
        value = float(raw.removesuffix("%").strip())
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0 or (relative and value > 100):
        raise InputError(f"{option} must be a number of top-1 points (e.g. 1.0, at least 0) or a percentage of fp32's "
                         f"top-1 (e.g. 1%, 0% to 100%), got '{text}'")
    return MaxDrop(value, relative)
