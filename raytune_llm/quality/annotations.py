"""Long-format annotations as integer codes, and the two matrices the metrics read.

Crowd labels arrive as a long table of `(item_id, annotator_id, label)` triples: one row per
judgement, any number of annotators per item. `encode` turns those triples into integer
codes once, so every metric and aggregator works on small numpy arrays and agrees on the
order of items, annotators and labels:

- items and annotators keep the order in which they first appear (the file's order), so a
  report lists them as the user sees them;
- labels are sorted in natural order (numerically when every label is a number, else as
  text), because "lowest label" is what the `first` tie policy means and "10" must not
  sort before "2".

From the codes, `count_matrix` gives items x categories counts (what Fleiss' kappa,
Krippendorff's nominal alpha and majority vote need) and `rating_matrix` gives items x
annotators with NaN where an annotator did not label an item (what Cohen's kappa over
annotator pairs needs).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from raytune_llm.errors import DataError

__all__ = ["Annotations", "count_matrix", "encode", "natural_order", "rating_matrix"]

_MAX_EXAMPLES = 5  # duplicates named in an error; the total is always given


@dataclass(frozen=True)
class Annotations:
    """Triples coded as integers: annotator `annotator[r]` gave item `item[r]` label `label[r]`.

    `item_ids`, `annotator_ids` and `labels` map codes back to the original values.
    Each (item, annotator) pair occurs at most once (`encode` checks this).
    """

    item_ids: tuple[Hashable, ...]
    annotator_ids: tuple[Hashable, ...]
    labels: tuple[Hashable, ...]
    item: np.ndarray  # int64, one per annotation
    annotator: np.ndarray  # int64, one per annotation
    label: np.ndarray  # int64, one per annotation

    @property
    def n_items(self) -> int:
        """Number of distinct items."""
        return len(self.item_ids)

    @property
    def n_annotators(self) -> int:
        """Number of distinct annotators."""
        return len(self.annotator_ids)

    @property
    def n_labels(self) -> int:
        """Number of distinct labels (categories)."""
        return len(self.labels)

    @property
    def n_annotations(self) -> int:
        """Number of (item, annotator, label) triples."""
        return int(self.item.size)


def natural_order(labels: Iterable[Hashable]) -> list[Hashable]:
    """Distinct labels sorted numerically when all of them are numbers, else as text."""
    distinct = list(dict.fromkeys(labels))
    try:
        return sorted(distinct, key=lambda value: float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return sorted(distinct, key=str)


def encode(
    triples: Iterable[tuple[Hashable, Hashable, Hashable]], labels: Sequence[Hashable] | None = None
) -> Annotations:
    """Code `(item_id, annotator_id, label)` triples as integers.

    `labels` fixes the label order (and may include labels nobody used, so that they get
    a column of zeros); by default it is the natural order of the labels seen. Raises a
    `DataError` when a label is outside `labels` or an annotator labelled an item twice:
    every metric here assumes one judgement per annotator per item.
    """
    rows = list(triples)
    order = list(labels) if labels is not None else natural_order(label for _, _, label in rows)
    label_code = {label: code for code, label in enumerate(order)}
    unknown = sorted({str(label) for _, _, label in rows if label not in label_code})
    if unknown:
        raise DataError(f"label(s) {unknown} are not in the declared labels {[str(x) for x in order]}")
    item_code: dict[Hashable, int] = {}
    annotator_code: dict[Hashable, int] = {}
    codes = np.empty((len(rows), 3), dtype=np.int64)
    for row, (item, annotator, label) in enumerate(rows):
        codes[row] = (item_code.setdefault(item, len(item_code)),
                      annotator_code.setdefault(annotator, len(annotator_code)), label_code[label])
    _check_one_label_per_pair(codes, list(item_code), list(annotator_code))
    return Annotations(tuple(item_code), tuple(annotator_code), tuple(order),
                       codes[:, 0].copy(), codes[:, 1].copy(), codes[:, 2].copy())


def _check_one_label_per_pair(codes: np.ndarray, items: list[Hashable], annotators: list[Hashable]) -> None:
    """Raise a `DataError` naming the (item, annotator) pairs that occur more than once."""
    if codes.shape[0] == 0:
        return
    pairs, counts = np.unique(codes[:, :2], axis=0, return_counts=True)
    repeated = pairs[counts > 1]
    if repeated.size == 0:
        return
    named = [f"item {items[i]!r} / annotator {annotators[a]!r}" for i, a in repeated[:_MAX_EXAMPLES]]
    more = f" and {len(repeated) - _MAX_EXAMPLES} more" if len(repeated) > _MAX_EXAMPLES else ""
    raise DataError(
        f"{len(repeated)} (item, annotator) pair(s) labelled more than once: {'; '.join(named)}{more}; "
        "fix: keep one label per annotator per item"
    )


def count_matrix(annotations: Annotations) -> np.ndarray:
    """Items x labels matrix of how many annotators gave each item each label (int64)."""
    counts = np.zeros((annotations.n_items, annotations.n_labels), dtype=np.int64)
    np.add.at(counts, (annotations.item, annotations.label), 1)
    return counts


def rating_matrix(annotations: Annotations) -> np.ndarray:
    """Items x annotators matrix of label codes (float64), NaN where there is no rating."""
    ratings = np.full((annotations.n_items, annotations.n_annotators), np.nan)
    ratings[annotations.item, annotations.annotator] = annotations.label
    return ratings
