"""How close two backends must be, per precision. Data, not scattered literals."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .compare import Difference


@dataclass(frozen=True)
class Tolerance:
    max_scaled: float  # max |a - b| / max |reference|
    min_cosine: float

    def passes(self, diff: Difference) -> bool:
        return diff.scaled <= self.max_scaled and diff.cosine >= self.min_cosine

    def to_dict(self) -> dict:
        return asdict(self)


# fp32: untrained deep nets (BN re-estimated) are ill-conditioned: torch fp32 itself is 6e-4 (scaled)
# from torch fp64 on inception_v4, so the gate sits above that; an export that computes something
# else differs at O(1).
TOLERANCES = {
    "fp32": Tolerance(max_scaled=2e-3, min_cosine=0.99999),
}
