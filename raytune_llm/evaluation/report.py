"""Write an evaluation: `evaluation.json` (everything), `evaluation.md` (tables, PNGs linked), PNGs.

The JSON is the report dict `evaluate.build_report` returns, as is; the Markdown is a view of
it. Nothing here computes a metric.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raytune_llm.evaluation.calibration import plot_reliability, pyplot

__all__ = ["FILES", "confusion_markdown", "markdown_report", "plot_confusion", "write_report"]

FILES = {"json": "evaluation.json", "markdown": "evaluation.md", "confusion_png": "confusion_matrix.png",
         "reliability_png": "reliability.png", "predictions": "predictions.parquet",
         "quarantine": "quarantine.jsonl"}


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def confusion_markdown(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> list[str]:
    """Rows are gold labels, columns predicted labels, with row totals."""
    head = ["gold \\ predicted", *labels, "total"]
    rows = [[label, *row, sum(row)] for label, row in zip(labels, matrix)]
    return _table(head, rows)


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    """Heat map of counts, each cell annotated with its count and its share of the gold row."""
    plt = pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    shares = np.divide(counts, counts.sum(axis=1, keepdims=True), out=np.zeros_like(counts),
                       where=counts.sum(axis=1, keepdims=True) > 0)
    size = 2.0 + 0.8 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(labels)):
        for j in range(len(labels)):
            colour = "white" if shares[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(counts[i, j])}\n{shares[i, j]:.0%}", ha="center", va="center", color=colour,
                    fontsize="small")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="gold", title="Confusion matrix (share of gold row)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _overall(report: dict[str, Any]) -> list[str]:
    m = report["metrics"]
    lines = ["## Overall", "", f"Accuracy **{m['accuracy']:.4f}** on {m['n']} rows.", ""]
    rows = [[name, *(_f(m[name][avg]) for avg in ("macro", "micro", "weighted"))]
            for name in ("precision", "recall", "f1")]
    lines += _table(["metric", "macro", "micro", "weighted"], rows)
    lines += ["", "## Per class", ""]
    lines += _table(["label", "precision", "recall", "F1", "support", "predicted"],
                    [[c["label"], _f(c["precision"]), _f(c["recall"]), _f(c["f1"]), c["support"], c["predicted"]]
                     for c in m["per_class"]])
    lines += ["", "## Confusion matrix", "", *confusion_markdown(m["confusion"], report["labels"]), "",
              f"![confusion matrix]({FILES['confusion_png']})", ""]
    return lines


def _calibration(report: dict[str, Any]) -> list[str]:
    c = report["calibration"]
    lines = ["## Calibration", "",
             (f"Expected calibration error **{c['ece']:.4f}** ({c['n_bins']} equal-width bins of the top-class "
              f"probability); worst bin {c['mce']:.4f}; mean confidence {c['mean_confidence']:.4f} against accuracy "
              f"{report['metrics']['accuracy']:.4f}; NLL {c['nll']:.4f}; Brier {c['brier']:.4f}."), ""]
    bins = [[f"({b['lower']:.3f}, {b['upper']:.3f}]", b["count"], _f(b["confidence"]), _f(b["accuracy"])]
            for b in c["bins"] if b["count"]]
    lines += _table(["confidence bin", "rows", "mean confidence", "accuracy"], bins)
    return [*lines, "", f"![reliability diagram]({FILES['reliability_png']})", ""]


def _slices(report: dict[str, Any]) -> list[str]:
    if not report["slices"]:
        return []
    overall = report["metrics"]["f1"]["macro"]
    labels = report["labels"]
    lines = ["## Slices", "", ("The same metrics on each slice; Δ is the slice's macro-F1 minus the overall "
                               f"{overall:.4f}. Small slices are noisy: read Δ next to the row count."), ""]
    head = ["slice", "rows", "accuracy", "macro-P", "macro-R", "macro-F1", "Δ macro-F1", "weighted-F1", "ECE",
            *(f"F1 {label}" for label in labels)]
    for column, groups in report["slices"].items():
        rows = [[key, m["n"], _f(m["accuracy"]), _f(m["precision"]["macro"]), _f(m["recall"]["macro"]),
                 _f(m["f1"]["macro"]), f"{m['f1']['macro'] - overall:+.4f}", _f(m["f1"]["weighted"]), _f(m["ece"]),
                 *(_f(c["f1"]) for c in m["per_class"])] for key, m in groups.items()]
        lines += [f"### By `{column}`", "", *_table(head, rows), ""]
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    """The human-readable evaluation: overall scores, per class, confusion, calibration, slices."""
    rows = report["rows"]
    kinds = ", ".join(f"{k} {v}" for k, v in report["quarantine_kinds"].items())
    lines = [f"# Evaluation of `{report['model']}`", "",
             (f"Data `{report['data']}`{' (LoRA adapter)' if report['adapter'] else ''}; labels "
              f"{', '.join(report['labels'])}; text truncated at {report['max_length']} tokens."), "",
             f"Rows: read {rows['read']} = scored {rows['scored']} + quarantined {rows['quarantined']}"
             + (f" ({kinds}; see `{FILES['quarantine']}`)" if rows["quarantined"] else "")
             + f". Every scored row with its prediction and probabilities: `{FILES['predictions']}`.", ""]
    lines += _overall(report) + _calibration(report) + _slices(report)
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write the PNGs, `evaluation.json` and `evaluation.md` under `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / filename for name, filename in FILES.items()}
    plot_confusion(report["metrics"]["confusion"], report["labels"], paths["confusion_png"])
    plot_reliability(report["calibration"], paths["reliability_png"])
    report["files"] = {name: path.name for name, path in paths.items()}
    # allow_nan=False: every metric is defined (0 by convention); a NaN would be a bug, not JSON.
    paths["json"].write_text(json.dumps(report, indent=2, allow_nan=False, ensure_ascii=False) + "\n")
    paths["markdown"].write_text(markdown_report(report), encoding="utf-8")
    return paths
