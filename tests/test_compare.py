"""The comparator and the tolerances: backend-independent, on arrays made to show each rule."""

import numpy as np

from inception_deploy.compare import Difference, difference, top1_text
from inception_deploy.tolerances import TOLERANCES

INT8 = TOLERANCES["int8"]


def _winner_moved(logits: np.ndarray, rows: int, by: float) -> np.ndarray:
    """`logits` with another class made the winner in the first `rows` rows."""
    moved = logits.copy()
    for i in range(rows):
        runner_up = np.argsort(moved[i])[-2]
        moved[i, runner_up] = moved[i].max() + by
    return moved


def test_int8_top1_counts_where_the_reference_is_confident():
    """A trained-like reference (one class far ahead): int8 changing 5 of 20 answers fails, cosine or not."""
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, (20, 1000))
    reference[np.arange(20), rng.integers(0, 1000, 20)] += 12  # softmax top-1 ≈ 1
    int8 = _winner_moved(reference, 5, by=0.5)
    diff = difference(reference, int8)
    assert diff.rows == diff.confident_rows == 20 and diff.top1_confident == diff.top1_agreement == 0.75
    assert diff.cosine >= INT8.min_cosine and not INT8.passes(diff)
    assert top1_text(diff) == "75%"
    assert INT8.passes(difference(reference, _winner_moved(reference, 2, by=0.5)))  # 90 %


def test_a_near_tie_decided_by_rounding_is_not_a_disagreement():
    """An untrained-like reference (1000 classes, no class ahead): small noise changes many winners, yet the
    outputs agree (cosine 0.995); with no confident sample, top-1 does not judge, and the text says why."""
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 1, (24, 1000))
    int8 = reference + rng.normal(0, 0.1, reference.shape)
    diff = difference(reference, int8)
    assert diff.top1_agreement < INT8.min_top1 and diff.confident_rows == 0 and diff.top1_confident is None
    assert diff.cosine > 0.99 and INT8.passes(diff)
    assert top1_text(diff).endswith("(0 confident)")
    assert not INT8.passes(difference(reference, rng.normal(0, 1, reference.shape)))  # unrelated outputs still fail


def test_mixed_confidence_is_judged_on_the_confident_rows_and_said_so():
    rng = np.random.default_rng(2)
    reference = rng.normal(0, 1, (10, 1000))
    reference[:6, 7] += 12  # six confident rows
    int8 = _winner_moved(reference, 10, by=0.01)[:, :]  # every winner moved...
    int8[:6] = reference[:6]  # ...except on the confident rows
    diff = difference(reference, int8)
    assert diff.confident_rows == 6 and diff.top1_confident == 1.0 and diff.top1_agreement == 0.6
    assert INT8.passes(diff) and top1_text(diff) == "60% (100% of 6 confident)"


def test_a_difference_survives_json_and_older_records_read_back():
    diff = difference(np.eye(3), np.eye(3))
    assert Difference.from_dict(diff.to_dict()) == diff
    older = {k: v for k, v in diff.to_dict().items() if k not in ("rows", "confident_rows", "top1_confident")}
    assert top1_text(Difference.from_dict(older)) == "100%"
