"""Confident learning (Northcutt, Jiang & Chuang, JAIR 2021) over out-of-sample probabilities.

Pure numpy, no Ray. With `pred_probs[n, j]` the out-of-sample probability of class j for row n
and `labels[n]` the given label:

- the per-class threshold t_j is the mean of `pred_probs[:, j]` over the rows labelled j (the
  model's average self-confidence on class j);
- row n is *confidently* class j when `pred_probs[n, j] >= t_j`; when several classes pass,
  the one with the highest probability wins (the paper's tie rule); a row no class passes is
  counted nowhere;
- the confident joint C[i][j] counts rows labelled i that are confidently j, and a row is a
  label issue when it sits off the diagonal (given i, confidently j != i): cleanlab's
  `filter_by="confident_learning"`.

As in cleanlab, a row whose given label is still the model's top prediction is never flagged:
a threshold alone should not overrule the model's own argmax.
Flags are ranked by self-confidence (the given label's probability, lowest first), cleanlab's
default ranking; the normalised margin (given-label probability minus the best other class)
is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raytune_llm.errors import DataError

__all__ = ["LabelIssues", "confident_thresholds", "find_label_issues"]

# Probabilities that equal a threshold up to float noise count as reaching it (cleanlab uses the same).
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class LabelIssues:
    """Everything the audit reports, as arrays over the audited rows."""

    thresholds: np.ndarray  # (k,) t_j; inf for a class no row is labelled with
    suggested: np.ndarray  # (n,) confidently-assigned class, -1 where no class reaches its threshold
    flagged: np.ndarray  # (n,) bool: off the confident joint's diagonal and given label not the argmax
    ranked: np.ndarray  # indices of flagged rows, most likely wrong first
    self_confidence: np.ndarray  # (n,) probability of the given label
    margin: np.ndarray  # (n,) given-label probability minus the best other class's
    confident_joint: np.ndarray  # (k, k) C[given][confident], uncalibrated


def _check(labels: np.ndarray, pred_probs: np.ndarray) -> None:
    if pred_probs.ndim != 2 or pred_probs.shape[0] != labels.shape[0]:
        raise DataError(f"pred_probs must be (rows, classes) with one row per label (got {pred_probs.shape} "
                        f"for {labels.shape[0]} labels)")
    if labels.size and (labels.min() < 0 or labels.max() >= pred_probs.shape[1]):
        raise DataError(f"labels must be class ids in [0, {pred_probs.shape[1]}) (got {labels.min()}..{labels.max()})")


def confident_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """t_j = mean predicted probability of class j over rows labelled j (inf when none is)."""
    labels = np.asarray(labels, dtype=np.int64)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    _check(labels, pred_probs)
    out = np.full(pred_probs.shape[1], np.inf)
    for j in range(pred_probs.shape[1]):
        members = labels == j
        if members.any():
            out[j] = float(pred_probs[members, j].mean())
    return out


def find_label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> LabelIssues:
    """Confident-learning label issues of rows with given `labels` and out-of-sample `pred_probs`."""
    labels = np.asarray(labels, dtype=np.int64)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    thresholds = confident_thresholds(labels, pred_probs)
    rows = np.arange(len(labels))
    confident = pred_probs >= thresholds - _TOLERANCE
    # Among the classes that reach their threshold, the most probable one (paper, eq. 1).
    suggested = np.where(confident, pred_probs, -np.inf).argmax(axis=1)
    suggested = np.where(confident.any(axis=1), suggested, -1)
    k = pred_probs.shape[1]
    joint = np.zeros((k, k), dtype=np.int64)
    counted = suggested >= 0
    np.add.at(joint, (labels[counted], suggested[counted]), 1)
    self_confidence = pred_probs[rows, labels]
    others = pred_probs.copy()
    others[rows, labels] = -np.inf
    margin = self_confidence - others.max(axis=1)
    given_is_top = margin >= -_TOLERANCE  # ties go to the given label, as in cleanlab
    flagged = counted & (suggested != labels) & ~given_is_top
    flagged_rows = rows[flagged]
    ranked = flagged_rows[np.lexsort((flagged_rows, self_confidence[flagged_rows]))]
    return LabelIssues(thresholds, suggested, flagged, ranked, self_confidence, margin, joint)
