"""Is a 0.9 confidence right 90% of the time? Expected calibration error and the reliability plot.

Confidence is the top-class probability and a row is correct when the top class is the gold
label (Guo et al., 2017). Confidences fall into `n_bins` equal-width bins over [0, 1],
right-closed, `(i/n, (i+1)/n]` (a confidence of exactly 0 joins the first bin), and

    ECE = sum over bins of (rows in bin / rows) * |accuracy in bin - mean confidence in bin|.

Also here: the worst bin's gap (MCE), negative log-likelihood and the multiclass Brier score,
which reward calibrated probabilities for every class, not only the top one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["N_BINS", "bin_index", "brier_score", "calibration_summary", "expected_calibration_error",
           "negative_log_likelihood", "plot_reliability", "pyplot", "reliability_bins"]

N_BINS = 15
_EPS = 1e-15  # probabilities are clipped here before the log, as scikit-learn's log_loss does


def bin_index(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """The bin of each confidence: i such that i/n < c <= (i+1)/n (0 for c == 0)."""
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.searchsorted(inner_edges, np.asarray(confidence, dtype=np.float64), side="left")


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """One entry per bin: edges, rows, accuracy and mean confidence (None for an empty bin)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    index = bin_index(confidence, n_bins)
    out = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        out.append({
            "lower": b / n_bins, "upper": (b + 1) / n_bins, "count": count,
            "accuracy": float(correct[members].mean()) if count else None,
            "confidence": float(confidence[members].mean()) if count else None,
        })
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE over `n_bins` equal-width bins (0.0 for no rows)."""
    bins = reliability_bins(confidence, correct, n_bins)
    total = sum(b["count"] for b in bins)
    if not total:
        return 0.0
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def negative_log_likelihood(probabilities: np.ndarray, gold: np.ndarray) -> float:
    """Mean -log p(gold label), probabilities clipped to [1e-15, 1]."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not len(probabilities):
        return 0.0
    picked = probabilities[np.arange(len(probabilities)), np.asarray(gold, dtype=np.int64)]
    return float(-np.log(np.clip(picked, _EPS, 1.0)).mean())


def brier_score(probabilities: np.ndarray, gold: np.ndarray) -> float:
    """Mean over rows of the squared distance between the probability vector and the one-hot gold."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not len(probabilities):
        return 0.0
    onehot = np.zeros_like(probabilities)
    onehot[np.arange(len(probabilities)), np.asarray(gold, dtype=np.int64)] = 1.0
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


def calibration_summary(probabilities: np.ndarray, gold: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """ECE, MCE, NLL, Brier and the reliability bins of class probabilities against gold ids."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.int64)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    correct = probabilities.argmax(axis=1) == gold if len(probabilities) else np.zeros(0, dtype=bool)
    bins = reliability_bins(confidence, correct, n_bins)
    gaps = [abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]]
    return {
        "n_bins": n_bins,
        "ece": expected_calibration_error(confidence, correct, n_bins),
        "mce": float(max(gaps)) if gaps else 0.0,
        "mean_confidence": float(confidence.mean()) if len(confidence) else 0.0,
        "nll": negative_log_likelihood(probabilities, gold),
        "brier": brier_score(probabilities, gold),
        "bins": bins,
    }


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend (no display on clusters or CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reliability(summary: dict[str, Any], path: Path, title: str = "Reliability") -> Path:
    """Accuracy per confidence bin against the diagonal, with the bins' row counts below."""
    plt = pyplot()
    bins = [b for b in summary["bins"] if b["count"]]
    width = 1.0 / summary["n_bins"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    top.bar([b["lower"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
            edgecolor="black", alpha=0.8, label="accuracy in bin")
    top.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="C3",
             label="mean confidence")
    top.set(ylim=(0, 1), ylabel="accuracy", title=f"{title} (ECE {summary['ece']:.3f}, {summary['n_bins']} bins)")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar([b["lower"] for b in bins], [b["count"] for b in bins], width=width, align="edge",
               edgecolor="black", color="C2")
    bottom.set(xlim=(0, 1), xlabel="confidence (top-class probability)", ylabel="rows")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
