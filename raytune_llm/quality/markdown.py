"""The human-readable side of a quality report: `agreement.md` next to `agreement.json`.

Everything shown comes from the report dict, so the two files can never disagree.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_markdown"]


def _fmt(value: float | None, digits: int = 4) -> str:
    """A number for a table; undefined values (None) print as an em dash rather than 'None'."""
    return "—" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _overview(report: dict[str, Any]) -> list[str]:
    rows, per_item = report["rows"], report["annotations_per_item"]
    skipped = ", ".join(f"{n} {reason}" for reason, n in rows["skipped"].items()) or "none"
    return _table(["", ""], [
        ["rows read", f"{rows['read']} (used {rows['used']}; skipped: {skipped})"],
        ["items / annotators", f"{report['n_items']} / {report['n_annotators']}"],
        ["annotations per item", f"{per_item['min']}–{per_item['max']} (mean {per_item['mean']:.2f})"],
        ["labels", ", ".join(report["labels"])],
    ])


def _agreement(report: dict[str, Any]) -> list[str]:
    agreement = report["agreement"]
    pairwise = agreement["pairwise_cohen_kappa"]
    note = agreement["fleiss_kappa_note"]
    fleiss = _fmt(agreement["fleiss_kappa"]) if note is None else note
    return ["## Agreement", "", *_table(["metric", "value"], [
        ["Fleiss' kappa", fleiss],
        ["Krippendorff's alpha (nominal)", _fmt(agreement["krippendorff_alpha_nominal"])],
        [f"mean pairwise Cohen's kappa ({pairwise['pairs']} pairs with ≥ {pairwise['min_shared_items']} "
         "shared items)", _fmt(pairwise["mean"])],
        ["mean per-item agreement (share agreeing with the majority)", _fmt(agreement["mean_item_agreement"])],
    ])]


def _aggregation(report: dict[str, Any]) -> list[str]:
    labels, majority, ds, final = report["labels"], report["majority_vote"], report["dawid_skene"], report["aggregated"]
    tie = majority["tie"] + (f", seed {majority['seed']}" if majority["seed"] is not None else "")
    rows = [[f"majority vote (tie: {tie})", *(str(majority["label_counts"][x]) for x in labels),
             f"{majority['ties']} ties, {majority['dropped_ties']} dropped"],
            ["Dawid–Skene", *(str(ds["label_counts"][x]) for x in labels),
             f"{ds['iterations']} iterations, {'converged' if ds['converged'] else 'NOT converged'}"],
            [f"**final ({final['method']})**", *(str(final["label_counts"][x]) for x in labels),
             f"kept {final['kept']} of {final['items']}"]]
    removed = ", ".join(f"{n} {reason}" for reason, n in final["removed"].items()) or "none"
    threshold = "" if final["min_agreement"] is None else f" (min agreement {final['min_agreement']})"
    return ["## Aggregated labels", "", *_table(["", *labels, "notes"], rows), "",
            f"Removed{threshold}: {removed}."]


def _gold(report: dict[str, Any]) -> list[str]:
    gold = report["gold"]
    if gold is None:
        return []
    rows = [[name, _fmt(gold[key]["accuracy"]), str(gold[key]["scored"])]
            for name, key in [("majority vote", "majority_vote"), ("Dawid–Skene", "dawid_skene"),
                              (f"final ({report['aggregated']['method']})", "aggregated")]]
    return ["## Accuracy against gold", "", f"{gold['items_with_gold']} items have a gold label.", "",
            *_table(["labels", "accuracy", "items scored"], rows)]


def _annotators(report: dict[str, Any], top: int) -> list[str]:
    annotators = report["dawid_skene"]["annotators"][:top]
    rows = [[a["annotator"], str(a["annotations"]), _fmt(a["accuracy"], 3)] for a in annotators]
    return [f"## The {len(rows)} busiest annotators (Dawid–Skene accuracy estimate)", "",
            *_table(["annotator", "annotations", "estimated accuracy"], rows)]


def render_markdown(report: dict[str, Any], top_annotators: int = 10) -> str:
    """A Markdown summary of a `quality_report` dict."""
    sections = [[f"# Annotation quality: `{report['source']}`", "", *_overview(report)], _agreement(report),
                _aggregation(report), _gold(report), _annotators(report, top_annotators)]
    return "\n\n".join("\n".join(section) for section in sections if section) + "\n"
