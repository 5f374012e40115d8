"""F1 from counts summed over workers equals sklearn on the pooled predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from raytune_llm.train.metrics import confusion_counts, metrics_from_counts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summed_counts_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c", "d"]
    gold = rng.integers(0, 4, 501)
    pred = np.where(rng.random(501) < 0.6, gold, rng.integers(0, 4, 501))
    pred[pred == 3] = 2  # one class never predicted: exercises the zero-division path
    shards = np.array_split(np.arange(501), 3)  # three "workers" with unequal shards
    counts = sum(confusion_counts(gold[s], pred[s], 4) for s in shards)
    ours = metrics_from_counts(counts, labels, prefix="val_")
    assert ours["val_f1"] == pytest.approx(f1_score(gold, pred, labels=range(4), average="macro", zero_division=0), abs=1e-12)
    assert ours["val_f1_micro"] == pytest.approx(f1_score(gold, pred, average="micro"), abs=1e-12)
    assert ours["val_f1_weighted"] == pytest.approx(f1_score(gold, pred, labels=range(4), average="weighted", zero_division=0), abs=1e-12)
    assert ours["val_accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    p, r, f, _ = precision_recall_fscore_support(gold, pred, labels=range(4), zero_division=0)
    for i, label in enumerate(labels):
        assert ours[f"val_precision/{label}"] == pytest.approx(p[i])
        assert ours[f"val_recall/{label}"] == pytest.approx(r[i])
        assert ours[f"val_f1/{label}"] == pytest.approx(f[i])


def test_average_of_worker_f1_would_differ() -> None:
    """Why we sum counts: averaging per-worker F1 gives a different (wrong) number here."""
    gold = np.array([0, 0, 0, 1, 1, 0])
    pred = np.array([0, 0, 1, 1, 0, 0])
    shards = [np.arange(0, 2), np.arange(2, 6)]
    per_worker = [metrics_from_counts(confusion_counts(gold[s], pred[s], 2), ["x", "y"])["val_f1"] for s in shards]
    pooled = metrics_from_counts(confusion_counts(gold, pred, 2), ["x", "y"])["val_f1"]
    assert pooled == pytest.approx(f1_score(gold, pred, average="macro"))
    assert abs(np.mean(per_worker) - pooled) > 0.05


def test_balanced_class_weights_match_sklearn() -> None:
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    from raytune_llm.train.loop import balanced_class_weights

    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(balanced_class_weights(labels, 3), expected)
    # A class missing from train keeps weight 1 instead of dividing by zero.
    assert balanced_class_weights(np.array([0, 0, 1]), 3)[2] == 1.0
