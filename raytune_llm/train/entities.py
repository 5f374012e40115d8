"""Entity-level precision, recall and F1 from counts (exact span and type), as seqeval computes them.

An entity is a run of words: `B-X` (or, in the lenient `default` mode, an `I-X` that does not
continue an `X` entity) opens it, following `I-X` words continue it. `default` matches
seqeval's default (conlleval) decoding; `strict` matches seqeval's `mode="strict",
scheme=IOB2`, where an `I-X` that does not continue an entity is not part of any.

Workers count per type: true positives (same type and same words), predicted and gold
entities; the counts are summed across ranks and the scores computed once from the sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

__all__ = ["Mode", "entities", "entity_counts", "entity_metrics"]

Mode = Literal["default", "strict"]
_TP, _PRED, _GOLD = 0, 1, 2


def entities(tags: Sequence[str], mode: Mode = "default") -> list[tuple[str, int, int]]:
    """The entities of one sentence's tags as `(type, first word, last word + 1)`."""
    found: list[tuple[str, int, int]] = []
    kind: str | None = None
    start = 0
    for index, tag in enumerate([*tags, "O"]):  # a final "O" closes the last entity
        prefix, tag_type = (tag[:1], tag[2:]) if tag != "O" else ("O", "")
        continues = prefix == "I" and tag_type == kind
        if kind is not None and not continues:
            found.append((kind, start, index))
            kind = None
        if prefix == "B" or (prefix == "I" and not continues and mode == "default"):
            kind, start = tag_type, index
    return found


def entity_counts(gold: Iterable[Sequence[str]], predicted: Iterable[Sequence[str]], types: Sequence[str],
                  mode: Mode = "default") -> np.ndarray:
    """`counts[t] = [true positives, predicted, gold]` for each entity type in `types`."""
    index = {kind: i for i, kind in enumerate(types)}
    counts = np.zeros((len(types), 3), dtype=np.int64)
    for gold_tags, pred_tags in zip(gold, predicted, strict=True):
        gold_set = set(entities(gold_tags, mode))
        pred_set = set(entities(pred_tags, mode))
        for kind, _, _ in gold_set:
            counts[index[kind], _GOLD] += 1
        for entity in pred_set:
            counts[index[entity[0]], _PRED] += 1
            counts[index[entity[0]], _TP] += entity in gold_set
    return counts


def _f1(tp: float, predicted: float, gold: float) -> tuple[float, float, float]:
    # seqeval's zero_division convention: an undefined ratio counts as 0.
    precision = tp / predicted if predicted else 0.0
    recall = tp / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)  # plain floats: metrics go to JSON and Ray reports


def entity_metrics(counts: np.ndarray, types: Sequence[str], prefix: str = "val_") -> dict[str, float]:
    """Micro P/R/F1 (`{prefix}f1` is the micro F1), macro F1, and P/R/F1/support per type."""
    counts = np.asarray(counts, dtype=np.float64)
    tp, predicted, gold = counts.sum(axis=0)
    precision, recall, f1 = _f1(tp, predicted, gold)
    out = {f"{prefix}f1": f1, f"{prefix}precision": precision, f"{prefix}recall": recall,
           f"{prefix}entities": float(gold), f"{prefix}entities_predicted": float(predicted)}
    per_type = []
    for kind, row in zip(types, counts):
        p, r, f = _f1(*row)
        out.update({f"{prefix}precision/{kind}": p, f"{prefix}recall/{kind}": r, f"{prefix}f1/{kind}": f,
                    f"{prefix}support/{kind}": float(row[_GOLD])})
        per_type.append(f)
    # seqeval's macro average runs over the types seen in gold or predictions.
    seen = [f for f, row in zip(per_type, counts) if row[_GOLD] or row[_PRED]]
    out[f"{prefix}f1_macro"] = float(np.mean(seen)) if seen else 0.0
    return out
