"""Inter-annotator agreement for nominal labels: Cohen, Fleiss, Krippendorff, per item.

All of these compare observed agreement with the agreement expected by chance,
`(observed - expected) / (1 - expected)`; they differ in who is compared with whom and
where "chance" comes from:

- **Cohen's kappa**: two annotators on the items both labelled; chance from each one's
  own label distribution.
- **Fleiss' kappa**: every item rated the same number of times (by any raters); chance
  from the pooled label distribution. With varying counts the textbook formula does not
  apply, so `fleiss_kappa` raises rather than return a number that means something else.
- **Krippendorff's alpha (nominal)**: any number of ratings per item, missing ratings
  allowed; items with fewer than two ratings cannot be paired and are left out.
- **Mean pairwise Cohen's kappa**: the average over annotator pairs that share at least
  `min_shared` items; a crowd rarely has one pair who labelled everything.

Undefined values (every rating the same label, so chance agreement is already perfect)
come back as NaN, as scikit-learn does, rather than as a misleading 0 or 1.
Inputs are the matrices from `raytune_llm.quality.annotations`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PairwiseKappa",
    "cohen_kappa",
    "fleiss_kappa",
    "item_agreement",
    "krippendorff_alpha",
    "pairwise_cohen_kappa",
]


def _chance_corrected(observed: float, expected: float) -> float:
    """`(observed - expected) / (1 - expected)`, NaN when chance agreement is already 1."""
    if np.isclose(expected, 1.0, rtol=0.0, atol=1e-12):
        return float("nan")
    return float((observed - expected) / (1.0 - expected))


def _kappa_from_codes(a: np.ndarray, b: np.ndarray, n_labels: int) -> float:
    """Cohen's kappa of two equal-length integer code arrays."""
    confusion = np.bincount(a * n_labels + b, minlength=n_labels * n_labels).reshape(n_labels, n_labels)
    total = confusion.sum()
    observed = np.trace(confusion) / total
    expected = float(confusion.sum(axis=1) @ confusion.sum(axis=0)) / total**2
    return _chance_corrected(observed, expected)


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """Cohen's kappa between two annotators' labels for the same items, in the same order.

    NaN when it is undefined (both gave one and the same label to everything).
    """
    if len(first) != len(second):
        raise ValueError(f"cohen_kappa needs two label lists of equal length (got {len(first)} and {len(second)})")
    if not first:
        raise ValueError("cohen_kappa needs at least one item labelled by both annotators")
    code: dict[Hashable, int] = {}
    a = np.array([code.setdefault(label, len(code)) for label in first], dtype=np.int64)
    b = np.array([code.setdefault(label, len(code)) for label in second], dtype=np.int64)
    return _kappa_from_codes(a, b, len(code))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of an items x categories count matrix with a fixed number of ratings per item.

    Raises `ValueError` when items have different numbers of ratings (use
    `krippendorff_alpha`, which handles that) or fewer than two.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError("fleiss_kappa needs a non-empty items x categories count matrix")
    per_item = counts.sum(axis=1)
    if not np.all(per_item == per_item[0]):
        raise ValueError(
            "Fleiss' kappa needs the same number of ratings on every item; here it varies from "
            f"{per_item.min():g} to {per_item.max():g}. Use krippendorff_alpha (it handles missing and "
            "varying ratings) or keep only items with the same number of ratings"
        )
    n = per_item[0]
    if n < 2:
        raise ValueError(f"Fleiss' kappa needs at least 2 ratings per item (got {n:g})")
    observed = float(np.mean(((counts**2).sum(axis=1) - n) / (n * (n - 1))))
    shares = counts.sum(axis=0) / counts.sum()
    return _chance_corrected(observed, float(shares @ shares))


def krippendorff_alpha(counts: np.ndarray) -> float:
    """Krippendorff's alpha for nominal labels from an items x categories count matrix.

    Each item contributes its ratings whatever their number, so missing ratings and a
    varying set of annotators per item are fine; items with fewer than two ratings have
    no pair to compare and are left out, as Krippendorff prescribes. NaN when fewer than
    two pairable ratings remain or all of them carry one label.
    """
    counts = np.asarray(counts, dtype=np.float64)
    per_item = counts.sum(axis=1)
    pairable = counts[per_item >= 2]
    m = per_item[per_item >= 2]
    total = pairable.sum()
    if total < 2:
        return float("nan")
    # Coincidence matrix diagonal: within-item pairs that agree, each item weighted 1/(m - 1).
    observed = float(((pairable * (pairable - 1)).sum(axis=1) / (m - 1)).sum() / total)
    marginals = pairable.sum(axis=0)
    expected = float((marginals * (marginals - 1)).sum() / (total * (total - 1)))
    return _chance_corrected(observed, expected)


def item_agreement(counts: np.ndarray) -> np.ndarray:
    """Per item, the share of its annotators who gave its majority label (NaN for unrated items).

    An item with a single rating scores 1.0: there is nobody to disagree. Filters that
    care should also require a minimum number of ratings.
    """
    counts = np.asarray(counts, dtype=np.float64)
    per_item = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(per_item > 0, counts.max(axis=1, initial=0.0) / per_item, np.nan)


@dataclass(frozen=True)
class PairwiseKappa:
    """Cohen's kappa for every annotator pair that shared at least `min_shared` items.

    `pairs` holds `(annotator_a, annotator_b, shared_items, kappa)` with annotator codes;
    `mean` averages the defined (non-NaN) kappas with equal weight per pair, NaN if none.
    """

    mean: float
    min_shared: int
    pairs: list[tuple[int, int, int, float]]

    @property
    def n_pairs(self) -> int:
        """Pairs that shared enough items, including those whose kappa is undefined."""
        return len(self.pairs)

    @property
    def n_undefined(self) -> int:
        """Pairs whose kappa is NaN (both used one label only), left out of the mean."""
        return sum(1 for *_, kappa in self.pairs if math.isnan(kappa))


def pairwise_cohen_kappa(ratings: np.ndarray, min_shared: int = 10) -> PairwiseKappa:
    """Cohen's kappa of every annotator pair with at least `min_shared` items in common.

    `ratings` is an items x annotators matrix of label codes with NaN for missing ratings
    (`rating_matrix`). Pairs with few shared items give noisy kappas that would dominate
    the mean in a crowd where most pairs barely overlap, hence the threshold.
    """
    if min_shared < 1:
        raise ValueError(f"min_shared must be at least 1 (got {min_shared})")
    present = ~np.isnan(ratings)
    codes = np.where(present, ratings, 0).astype(np.int64)
    n_labels = int(codes.max()) + 1 if codes.size else 1
    # Shared-item counts of all pairs at once; only pairs over the threshold are visited.
    shared = present.T.astype(np.int64) @ present.astype(np.int64)
    first, second = np.nonzero(np.triu(shared >= min_shared, k=1))
    pairs = []
    for a, b in zip(first.tolist(), second.tolist()):
        both = present[:, a] & present[:, b]
        kappa = _kappa_from_codes(codes[both, a], codes[both, b], n_labels)
        pairs.append((a, b, int(shared[a, b]), kappa))
    defined = [kappa for *_, kappa in pairs if not math.isnan(kappa)]
    mean = float(np.mean(defined)) if defined else float("nan")
    return PairwiseKappa(mean=mean, min_shared=min_shared, pairs=pairs)
