"""One annotation-quality analysis: agreement, aggregation and, with gold labels, accuracy.

`analyse` runs every metric once over a `LongAnnotations`; `quality_report` turns the
result into a plain, JSON-able dict (NaN becomes None, numpy scalars become Python ones)
and `item_rows` gives the aggregated label of every item. Both aggregators always run:
the report compares majority vote with Dawid-Skene whatever `method` picks for the
final labels.

The minimum-agreement filter removes items from the final labels only. Agreement
metrics describe all annotations, and Dawid-Skene is fitted on all of them too: the
removed items still tell us how reliable each annotator is.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from raytune_llm.errors import DataError
from raytune_llm.quality import agreement as agr
from raytune_llm.quality.aggregate import (
    NO_LABEL,
    AgreementFilter,
    DawidSkene,
    MajorityVote,
    TiePolicy,
    dawid_skene,
    filter_by_agreement,
    majority_vote,
)
from raytune_llm.quality.annotations import Annotations, count_matrix, encode, rating_matrix
from raytune_llm.quality.reader import LongAnnotations

__all__ = ["METHODS", "Analysis", "Method", "analyse", "item_rows", "quality_report", "report_of"]

Method = Literal["majority", "dawid_skene"]
METHODS: tuple[str, ...] = get_args(Method)


@dataclass(frozen=True)
class Analysis:
    """Everything `analyse` computed; `final` holds each item's label code or `NO_LABEL`."""

    data: LongAnnotations
    annotations: Annotations
    counts: np.ndarray
    majority: MajorityVote
    dawid_skene: DawidSkene
    filter: AgreementFilter | None
    pairwise: agr.PairwiseKappa
    method: str
    seed: int
    final: np.ndarray
    status: list[str]  # per item: "kept", "tie_dropped", or the filter's reason


def analyse(
    data: LongAnnotations,
    method: Method = "dawid_skene",
    tie: TiePolicy = "random",
    seed: int = 0,
    min_agreement: float | None = None,
    min_shared: int = 10,
    labels: Sequence[Hashable] | None = None,
) -> Analysis:
    """Run agreement metrics, both aggregators and the optional minimum-agreement filter."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not data.triples:
        raise DataError(f"{data.source}: no annotations to analyse")
    annotations = encode(data.triples, labels)
    counts = count_matrix(annotations)
    majority = majority_vote(counts, tie=tie, seed=seed)
    ds = dawid_skene(annotations)
    final = (majority.labels if method == "majority" else ds.labels).copy()
    status = ["tie_dropped" if code == NO_LABEL else "kept" for code in final.tolist()]
    kept_filter = filter_by_agreement(counts, min_agreement) if min_agreement is not None else None
    if kept_filter is not None:
        for reason, indices in kept_filter.removed.items():
            for item in indices.tolist():
                final[item], status[item] = NO_LABEL, reason
    return Analysis(data=data, annotations=annotations, counts=counts, majority=majority, dawid_skene=ds,
                    filter=kept_filter, pairwise=agr.pairwise_cohen_kappa(rating_matrix(annotations), min_shared),
                    method=method, seed=seed, final=final, status=status)


def quality_report(
    data: LongAnnotations,
    method: Method = "dawid_skene",
    tie: TiePolicy = "random",
    seed: int = 0,
    min_agreement: float | None = None,
    min_shared: int = 10,
    labels: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """The JSON-able quality report of `data`; the arguments are those of `analyse`.

    Keys: source, rows (read/used/skipped), n_items, n_annotators, n_annotations, labels,
    annotations_per_item, agreement (Fleiss, Krippendorff, pairwise Cohen, mean item
    agreement), majority_vote, dawid_skene (per-annotator accuracy), aggregated (final
    label counts, kept/removed) and gold (accuracies, or None without gold labels).
    """
    return report_of(analyse(data, method, tie, seed, min_agreement, min_shared, labels))


def report_of(analysis: Analysis) -> dict[str, Any]:
    """The JSON-able report of an `Analysis` (see the module docstring)."""
    ann = analysis.annotations
    per_item = analysis.counts.sum(axis=1)
    return {
        "source": analysis.data.source,
        "rows": {"read": analysis.data.n_rows, "used": ann.n_annotations,
                 "skipped": {reason: len(lines) for reason, lines in analysis.data.skipped.items()}},
        "n_items": ann.n_items,
        "n_annotators": ann.n_annotators,
        "n_annotations": ann.n_annotations,
        "labels": [str(label) for label in ann.labels],
        "annotations_per_item": {"min": int(per_item.min()), "max": int(per_item.max()),
                                 "mean": float(per_item.mean()), "histogram": _histogram(per_item)},
        "agreement": _agreement_section(analysis),
        "majority_vote": _majority_section(analysis),
        "dawid_skene": _dawid_skene_section(analysis),
        "aggregated": _aggregated_section(analysis),
        "gold": _gold_section(analysis) if analysis.data.gold else None,
    }


def item_rows(analysis: Analysis) -> list[dict[str, Any]]:
    """One row per item: id, final label (None if removed), status, agreement, ratings, confidence.

    Confidence is the Dawid-Skene posterior of the chosen label, or the vote share of
    the majority label for `method="majority"`.
    """
    shares = agr.item_agreement(analysis.counts)
    rows = []
    for item, item_id in enumerate(analysis.annotations.item_ids):
        code = int(analysis.final[item])
        if code == NO_LABEL:
            confidence = None
        elif analysis.method == "dawid_skene":
            confidence = float(analysis.dawid_skene.posteriors[item, code])
        else:
            confidence = float(analysis.counts[item, code] / analysis.counts[item].sum())
        label = None if code == NO_LABEL else str(analysis.annotations.labels[code])
        rows.append({"item_id": str(item_id), "label": label,
                     "status": analysis.status[item], "agreement": float(shares[item]),
                     "n_ratings": int(analysis.counts[item].sum()), "confidence": confidence})
    return rows


# Sections -----------------------------------------------------------------------------------
def _number(value: float) -> float | None:
    """A float for JSON: NaN (undefined) becomes None, which JSON can express."""
    value = float(value)
    return None if math.isnan(value) else value


def _histogram(per_item: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(per_item, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def _label_counts(annotations: Annotations, codes: np.ndarray) -> dict[str, int]:
    """How many items got each label (labels in label order, zeros included)."""
    tally = np.bincount(codes[codes != NO_LABEL], minlength=annotations.n_labels)
    return {str(label): int(n) for label, n in zip(annotations.labels, tally)}


def _agreement_section(analysis: Analysis) -> dict[str, Any]:
    per_item = analysis.counts.sum(axis=1)
    fleiss: float | None = None
    note = None
    if per_item.min() != per_item.max():
        note = (f"not computed: ratings per item vary ({int(per_item.min())}-{int(per_item.max())}); "
                "Fleiss' kappa needs a fixed number, see krippendorff_alpha")
    elif per_item.min() < 2:
        note = "not computed: fewer than 2 ratings per item"
    else:
        fleiss = _number(agr.fleiss_kappa(analysis.counts))
    pairwise = analysis.pairwise
    return {
        "fleiss_kappa": fleiss,
        "fleiss_kappa_note": note,
        "krippendorff_alpha_nominal": _number(agr.krippendorff_alpha(analysis.counts)),
        "pairwise_cohen_kappa": {"mean": _number(pairwise.mean), "pairs": pairwise.n_pairs,
                                 "undefined_pairs": pairwise.n_undefined, "min_shared_items": pairwise.min_shared},
        "mean_item_agreement": _number(np.nanmean(agr.item_agreement(analysis.counts))),
    }


def _majority_section(analysis: Analysis) -> dict[str, Any]:
    majority = analysis.majority
    return {"tie": majority.tie, "seed": analysis.seed if majority.tie == "random" else None,
            "ties": majority.n_ties, "dropped_ties": majority.n_dropped,
            "label_counts": _label_counts(analysis.annotations, majority.labels)}


def _dawid_skene_section(analysis: Analysis) -> dict[str, Any]:
    ds, ann = analysis.dawid_skene, analysis.annotations
    annotators = [
        {"annotator": str(ann.annotator_ids[j]), "annotations": int(ds.annotator_counts[j]),
         "accuracy": float(ds.annotator_accuracy[j])}
        for j in np.argsort(-ds.annotator_counts, kind="stable").tolist()
    ]
    return {"iterations": ds.iterations, "converged": ds.converged, "log_likelihood": _number(ds.log_likelihood),
            "class_priors": {str(label): float(p) for label, p in zip(ann.labels, ds.priors)},
            "label_counts": _label_counts(ann, ds.labels), "annotators": annotators}


def _aggregated_section(analysis: Analysis) -> dict[str, Any]:
    # Counted from the per-item status, so an item is removed for one reason only and
    # kept + removed adds up to the number of items.
    removed = Counter(status for status in analysis.status if status != "kept")
    return {"method": analysis.method,
            "min_agreement": analysis.filter.min_agreement if analysis.filter is not None else None,
            "items": analysis.annotations.n_items, "kept": int((analysis.final != NO_LABEL).sum()),
            "removed": dict(sorted(removed.items())),
            "label_counts": _label_counts(analysis.annotations, analysis.final)}


def _accuracy(analysis: Analysis, codes: np.ndarray) -> dict[str, Any]:
    """Accuracy of label codes against gold over items that have both; how many were scored."""
    ann, gold = analysis.annotations, analysis.data.gold
    pairs = [(str(ann.labels[code]), gold[str(item_id)])
             for item_id, code in zip(ann.item_ids, codes.tolist())
             if code != NO_LABEL and str(item_id) in gold]
    correct = sum(predicted == truth for predicted, truth in pairs)
    return {"accuracy": correct / len(pairs) if pairs else None, "scored": len(pairs)}


def _gold_section(analysis: Analysis) -> dict[str, Any]:
    return {"items_with_gold": len(analysis.data.gold),
            "majority_vote": _accuracy(analysis, analysis.majority.labels),
            "dawid_skene": _accuracy(analysis, analysis.dawid_skene.labels),
            "aggregated": _accuracy(analysis, analysis.final)}
