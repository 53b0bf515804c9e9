"""Backend-independent comparison of two output arrays."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Difference:
    max_abs: float  # max |actual - reference|
    mean_abs: float
    p99_abs: float
    max_rel: float  # max |actual - reference| / |reference|, over elements with |reference| >= 1% of the scale
    scaled: float  # max_abs / scale: the error relative to the output's own magnitude
    scale: float  # max |reference|
    cosine: float  # cosine similarity of the flattened arrays: inflated by any offset every element of a row shares
    cosine_centred: float  # the same after subtracting each row's mean from both: the one the verdicts use
    top1_agreement: float  # fraction of rows whose argmax agrees
    top5_overlap: float  # mean fraction of each row's top-5 classes that both share
    rtol: float  # the rtol that needed_atol is computed at
    needed_atol: float  # the smallest atol with |actual - reference| <= atol + rtol * |reference| everywhere
    samples: int = 0  # rows (samples) compared: every figure above is over these
    atol: float | None = None  # the atol that needed_rtol is computed at (None: not asked for)
    needed_rtol: float | None = None  # the smallest rtol that passes at that atol; inf: none does (|reference| is 0
    # where the error exceeds atol)
    top1_agreement_robust: float | None = None  # rows whose argmax agrees, or picks a class near-tied in the reference
    # With an elementwise tolerance (rtol > 0 or an atol): the element furthest beyond |a - b| <= atol + rtol * |ref|
    # (sample, output index, reference, actual, error, bound), so that a failure names the element and its bound
    worst: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.atol is None:  # not asked for: no figures to show
            del d["atol"], d["needed_rtol"]
        if self.worst is None:
            del d["worst"]
        return d


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.dot(a.ravel(), b.ravel()) / norms) if norms > 0 else float(np.array_equal(a, b))


def _needed_rtol(err: np.ndarray, ref: np.ndarray, atol: float) -> float:
    over = err > atol
    if not over.any():
        return 0.0
    if (ref[over] == 0).any():
        return float("inf")
    return float(((err[over] - atol) / np.abs(ref[over])).max())


def difference(
    reference: np.ndarray, actual: np.ndarray, *, rtol: float = 0.0, atol: float | None = None
) -> Difference:
    """Every figure of how `actual` differs from `reference`; rows are samples (the first axis).

    Cosine on raw values is near 1 whenever every element of a row shares a large offset (logits often do), however
    the values differ around it: cosine_centred removes each row's mean from both first, and is the one to judge by."""
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape:
        raise ValueError(f"shapes differ: reference {ref.shape} vs actual {act.shape}")
    err = np.abs(act - ref)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    significant = np.abs(ref) >= 0.01 * scale
    max_rel = float((err[significant] / np.abs(ref[significant])).max()) if significant.any() and scale > 0 else 0.0
    rows = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref.reshape(1, -1)
    act_rows = act.reshape(rows.shape)
    # a one-output head has nothing to centre (each row is its own mean): its raw cosine is the honest figure
    centred = (_cosine(rows - rows.mean(1, keepdims=True), act_rows - act_rows.mean(1, keepdims=True))
               if rows.shape[1] > 1 else _cosine(ref, act))
    top1 = float(np.mean(rows.argmax(1) == act_rows.argmax(1)))
    robust = _robust_top1(rows, act_rows)
    k = min(5, rows.shape[1])
    top_ref, top_act = np.argsort(-rows, axis=1)[:, :k], np.argsort(-act_rows, axis=1)[:, :k]
    top5 = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_act)]))
    return Difference(
        max_abs=float(err.max()) if err.size else 0.0,
        mean_abs=float(err.mean()) if err.size else 0.0,
        p99_abs=float(np.percentile(err, 99)) if err.size else 0.0,
        max_rel=max_rel,
        scaled=float(err.max() / scale) if scale > 0 else float(err.max(initial=0.0)),
        scale=scale,
        cosine=_cosine(ref, act),
        cosine_centred=centred,
        top1_agreement=top1,
        top5_overlap=top5,
        rtol=rtol,
        needed_atol=float(np.clip(err - rtol * np.abs(ref), 0, None).max()) if err.size else 0.0,
        samples=int(rows.shape[0]),
        atol=atol,
        needed_rtol=None if atol is None else _needed_rtol(err, ref, atol),
        top1_agreement_robust=robust,
        worst=_worst(ref, act, err, rtol, atol) if (rtol > 0 or atol is not None) and err.size else None,
    )


def _worst(ref: np.ndarray, act: np.ndarray, err: np.ndarray, rtol: float, atol: float | None) -> dict:
    bound = (atol or 0.0) + rtol * np.abs(ref)
    i = int(np.argmax(err - bound))
    index = [int(k) for k in np.unravel_index(i, ref.shape)]
    return {"sample": index[0], "index": index[1:] if len(index) > 2 else (index[1] if len(index) == 2 else None),
            "reference": float(ref.flat[i]), "actual": float(act.flat[i]), "error": float(err.flat[i]),
            "bound": float(bound.flat[i]), "atol": atol or 0.0, "rtol": rtol}


# A flip between classes whose reference logits are closer than this many times the row's own RMS error is a near
# tie: rounding of that size can reorder them, so it says nothing about the backend. Twice the RMS: two independent
# errors of RMS size, one on each logit, move their difference by up to about that much.
NEAR_TIE_RMS = 2.0


def _robust_top1(ref: np.ndarray, act: np.ndarray) -> float:
    """The fraction of rows whose top-1 agrees, counting as agreeing a row whose actual top-1 is near-tied with the
    reference's top-1 in the reference itself (within NEAR_TIE_RMS times the row's RMS error). Untrained or
    untrained-like logits are often near-tied, and int8 flips them at a cosine of 0.999; a real disagreement, a class
    the reference ranks clearly lower, still counts."""
    if ref.size == 0:
        return 1.0
    picked = act.argmax(1)
    margin = ref.max(1) - ref[np.arange(len(ref)), picked]
    noise = np.sqrt(np.mean((act - ref) ** 2, axis=1))
    return float(np.mean(margin <= NEAR_TIE_RMS * noise))
