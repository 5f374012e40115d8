"""PNG charts for `raytune-llm agreement`: who to trust, and how much the annotators agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plots(report: dict[str, Any], item_agreement: list[float], out: Path) -> dict[str, Path]:
    """`annotator_quality.png` (Dawid–Skene accuracy against labels given) and `item_agreement.png`."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    paths: dict[str, Path] = {}
    annotators = report.get("dawid_skene", {}).get("annotators", [])
    if annotators:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter([a["annotations"] for a in annotators], [a["accuracy"] for a in annotators], alpha=0.6)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set(xlabel="labels given (log scale)", ylabel="estimated accuracy (Dawid–Skene)",
               title="annotator quality (review low dots far right)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths["annotator_quality"] = out / "annotator_quality.png"
        fig.savefig(paths["annotator_quality"], dpi=110)
        plt.close(fig)
    if item_agreement:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(item_agreement, bins=[i / 10 for i in range(11)], edgecolor="black")
        ax.set(xlabel="share of an item's annotators giving its majority label", ylabel="items",
               title="per-item agreement")
        fig.tight_layout()
        paths["item_agreement"] = out / "item_agreement.png"
        fig.savefig(paths["item_agreement"], dpi=110)
        plt.close(fig)
    return paths
