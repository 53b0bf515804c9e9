"""Backend-independent comparison of two output arrays (rows of logits, one per sample)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

CONFIDENT = 0.5  # softmax probability of the reference's top-1 class


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
    rows: int = 0  # samples compared
    # Top-1 agreement where the reference is confident (softmax top-1 >= CONFIDENT): where it is not, its own
    # top two classes are near-tied and int8's rounding decides between them (an untrained net is never
    # confident). None when no row is.
    confident_rows: int = 0
    top1_confident: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Difference":
        """From to_dict()'s output, e.g. an artifact's parity in a manifest (older ones lack the newer fields)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


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
    agrees = rows.argmax(1) == act_rows.argmax(1)
    top1 = float(np.mean(agrees))
    shifted = rows - rows.max(1, keepdims=True)
    confident = (1.0 / np.exp(shifted).sum(1)) >= CONFIDENT  # the top-1 softmax probability, computed stably
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
        rows=int(rows.shape[0]),
        confident_rows=int(confident.sum()),
        top1_confident=float(np.mean(agrees[confident])) if confident.any() else None,
    )


def top1_text(d: Difference) -> str:
    """Top-1 agreement for people: overall, and where the reference is confident when that is not every row."""
    if d.confident_rows == d.rows:
        return f"{d.top1_agreement:.0%}"
    if not d.confident_rows:
        return f"{d.top1_agreement:.0%} (0 confident)"
    return f"{d.top1_agreement:.0%} ({d.top1_confident:.0%} of {d.confident_rows} confident)"
