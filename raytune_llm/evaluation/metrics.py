"""Classification scores from a confusion matrix of counts: accuracy, P/R/F1 and per class.

Everything is computed from counts (`counts[i, j]` = rows of true label i predicted as j),
so a slice, a shard or a whole dataset is scored the same way. Conventions follow
scikit-learn with `labels=range(k)` and `zero_division=0`: every model label takes part in
the macro average, also one absent from the data, and an undefined ratio counts as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from raytune_llm.train.metrics import confusion_counts

__all__ = ["AVERAGES", "confusion_counts", "scores", "scores_from_counts"]

AVERAGES = ("macro", "micro", "weighted")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _average(per_class: np.ndarray, support: np.ndarray, micro: float) -> dict[str, float]:
    """Macro (plain mean), micro (from pooled counts) and support-weighted averages."""
    total = support.sum()
    weighted = float((per_class * support).sum() / total) if total else 0.0
    return {"macro": float(per_class.mean()), "micro": micro, "weighted": weighted}


def scores_from_counts(counts: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 (macro, micro, weighted), the per-class table and the matrix.

    Returns `{"n", "accuracy", "precision": {macro, micro, weighted}, "recall": {...},
    "f1": {...}, "per_class": [{label, precision, recall, f1, support, predicted}],
    "confusion": [[...]]}`.
    """
    matrix = np.asarray(counts, dtype=np.int64)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix shape {matrix.shape} does not match {len(labels)} labels")
    c = matrix.astype(np.float64)
    tp, predicted, support = np.diag(c), c.sum(axis=0), c.sum(axis=1)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = c.sum()
    # Single-label multiclass: pooled TP / pooled predictions = pooled TP / pooled gold = accuracy.
    micro = float(tp.sum() / total) if total else 0.0
    per_class = [
        {"label": label, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
         "support": int(support[i]), "predicted": int(predicted[i])}
        for i, label in enumerate(labels)
    ]
    return {
        "n": int(total),
        "accuracy": micro,
        "precision": _average(precision, support, micro),
        "recall": _average(recall, support, micro),
        "f1": _average(f1, support, micro),
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }


def scores(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
           labels: Sequence[str]) -> dict[str, Any]:
    """`scores_from_counts` of the confusion matrix of label ids `y_true` against `y_pred`."""
    return scores_from_counts(confusion_counts(y_true, y_pred, len(labels)), labels)
