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
    cosine: float  # cosine similarity of the flattened arrays
    top1_agreement: float  # fraction of rows whose argmax agrees
    top5_overlap: float  # mean fraction of each row's top-5 classes that both share
    rtol: float  # the rtol that needed_atol is computed at
    needed_atol: float  # the smallest atol with |actual - reference| <= atol + rtol * |reference| everywhere

    def to_dict(self) -> dict:
        return asdict(self)


def difference(reference: np.ndarray, actual: np.ndarray, *, rtol: float = 0.0) -> Difference:
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape:
        raise ValueError(f"shapes differ: reference {ref.shape} vs actual {act.shape}")
    err = np.abs(act - ref)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    significant = np.abs(ref) >= 0.01 * scale
    max_rel = float((err[significant] / np.abs(ref[significant])).max()) if significant.any() and scale > 0 else 0.0
    norms = np.linalg.norm(ref) * np.linalg.norm(act)
    cosine = float(np.dot(ref.ravel(), act.ravel()) / norms) if norms > 0 else float(np.array_equal(ref, act))
    rows = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref.reshape(1, -1)
    act_rows = act.reshape(rows.shape)
    top1 = float(np.mean(rows.argmax(1) == act_rows.argmax(1)))
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
        cosine=cosine,
        top1_agreement=top1,
        top5_overlap=top5,
        rtol=rtol,
        needed_atol=float(np.clip(err - rtol * np.abs(ref), 0, None).max()) if err.size else 0.0,
    )
