"""Classification metrics from a confusion matrix of counts.

Workers build their local confusion matrix, the counts are summed across
ranks (an all-reduce), and F1 is computed once from the sum. Averaging
per-worker F1 scores would be wrong whenever shards differ in size or mix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_counts(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_labels: int) -> np.ndarray:
    """`counts[i, j]` = rows whose true label is i and predicted label is j."""
    counts = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return counts


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # sklearn's zero_division=0 convention: an undefined ratio counts as 0.
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def metrics_from_counts(counts: np.ndarray, labels: Sequence[str], prefix: str = "val_") -> dict[str, float]:
    """Accuracy, macro/micro/weighted F1 and per-class P/R/F1 from summed counts.

    Macro averages run over every label in `labels`, also those absent from
    this split, which matches sklearn's `f1_score(..., labels=range(n), average="macro")`.
    """
    counts = np.asarray(counts, dtype=np.float64)
    tp = np.diag(counts)
    predicted = counts.sum(axis=0)
    actual = counts.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, actual)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = counts.sum()
    out: dict[str, float] = {
        f"{prefix}accuracy": float(tp.sum() / total) if total else 0.0,
        f"{prefix}f1": float(f1.mean()),
        f"{prefix}f1_micro": float(tp.sum() / total) if total else 0.0,
        f"{prefix}f1_weighted": float((f1 * actual).sum() / actual.sum()) if actual.sum() else 0.0,
        f"{prefix}support": float(total),
    }
    for index, label in enumerate(labels):
        out[f"{prefix}precision/{label}"] = float(precision[index])
        out[f"{prefix}recall/{label}"] = float(recall[index])
        out[f"{prefix}f1/{label}"] = float(f1[index])
    return out
