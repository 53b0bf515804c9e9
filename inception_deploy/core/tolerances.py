"""How close two backends must be, per precision. Data, not scattered literals."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from .compare import Difference

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerance:
    max_scaled: float  # max |a - b| / max |reference|
    min_cosine: float  # of the centred values (Difference.cosine_centred): raw cosine forgives a shared offset
    min_top1: float = 0.0  # fraction of samples whose top-1 class agrees: a rule for logits only
    near_ties: bool = False  # top-1 counts a flip among near-tied reference logits as agreeing (robust agreement)

    def top1(self, diff: Difference) -> float:
        robust = diff.top1_agreement_robust
        return robust if self.near_ties and robust is not None else diff.top1_agreement

    def passes(self, diff: Difference) -> bool:
        return (
            diff.scaled <= self.max_scaled
            and diff.cosine_centred >= self.min_cosine
            and self.top1(diff) >= self.min_top1
        )

    def describe(self) -> str:
        parts = [f"≤{self.max_scaled:g} of scale"] if self.max_scaled != float("inf") else []
        parts.append(f"centred cosine ≥{self.min_cosine:g}")
        if self.min_top1:
            parts.append(f"top-1 ≥{self.min_top1:.0%}" + (" (near-ties agree)" if self.near_ties else ""))
        return ", ".join(parts)

    def to_dict(self) -> dict:
        named = {"min_cosine_centred" if k == "min_cosine" else k: v for k, v in asdict(self).items()}
        return {k: (None if v == float("inf") else v) for k, v in named.items()}  # JSON has no inf


@dataclass(frozen=True)
class ElementwiseTolerance:
    """A user's --atol/--rtol: every element must satisfy |a - b| <= atol + rtol * |reference|."""

    atol: float
    rtol: float

    def passes(self, diff: Difference) -> bool:
        return diff.needed_atol <= self.atol

    def describe(self) -> str:
        return f"atol {self.atol:g}, rtol {self.rtol:g}"

    def to_dict(self) -> dict:
        return asdict(self)


# Measured on the zoo (conditioned untrained weights, ORT CPU vs torch): fp32 reaches 1e-6..3e-5 of the
# output scale; fp16 (ORT CPU executes fp16 nodes through Casts, so this measures fp16 weights and
# activations rounded between ops) 0.004..0.04 with cosine >= 0.9999. A wrong graph differs at O(1).
# int8 is judged by agreement: centred cosine and top-1, not elementwise error. The cosine is of the centred
# values (compare.Difference.cosine_centred): on the zoo it is within 1e-5 of the raw one, but a wrong output that
# keeps a large offset every logit of a row shares would still have a raw cosine near 1. Its top-1 counts a flip
# between near-tied reference logits as agreeing (compare.NEAR_TIE_RMS): googlenet's untrained int8 had a cosine of
# 0.9993 and 19/24 exact top-1, passing or failing 80 % with the torch version. Agreement is a proxy: only
# `accuracy`, or export --eval, measures what int8 costs on labelled images.
TOLERANCES = {
    "fp32": Tolerance(max_scaled=1e-3, min_cosine=0.99999),
    "fp16": Tolerance(max_scaled=5e-2, min_cosine=0.999),
    "int8": Tolerance(max_scaled=float("inf"), min_cosine=0.98, min_top1=0.8, near_ties=True),
}
TOLERANCES["int8-cpu"] = TOLERANCES["int8"]  # both int8 forms, one rule

# Feature maps (parity --localize: each block output but the model's own) by their error and centred cosine, never
# top-1: a feature map's argmax names no class, and flips among near-tied activations at any rounding. Error
# grows with depth before the pooling averages it away: measured on googlenet, inception_v3 and inception_v4
# (untrained, conditioned; ORT CPU vs torch, 2 samples), the last blocks' maps reach 1.3e-5 of scale in fp32,
# 0.025 and a centred cosine of 0.9997 in fp16, a centred cosine of 0.947 in int8 (v4; 0.967 on v3), where the
# logits show 0.0075 and 0.997. A wrong block (a flipped convolution) is at O(1) of scale.
FEATURE_MAP_TOLERANCES = {
    "fp32": Tolerance(max_scaled=1e-3, min_cosine=0.99999),
    "fp16": Tolerance(max_scaled=0.1, min_cosine=0.999),
    "int8": Tolerance(max_scaled=float("inf"), min_cosine=0.9),
}
FEATURE_MAP_TOLERANCES["int8-cpu"] = FEATURE_MAP_TOLERANCES["int8"]
