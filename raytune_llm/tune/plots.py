"""PNG plots of a sweep: what a person looks at to trust (or distrust) the winner.

Three pictures, each written only when the sweep has what it needs:
- the tuned metric against the learning rate, one line per batch size;
- every trial's learning curve, early-stopped trials dashed, so ASHA's cuts are visible;
- parallel coordinates over all searched dimensions, coloured by the best metric.
Matplotlib runs headless (Agg); nothing here touches Ray.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

LR, BATCH = "train.learning_rate", "train.batch_size"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on clusters or CI
    import matplotlib.pyplot as plt

    return plt


def _scored(records: list[Any]) -> list[Any]:
    return [r for r in records if r.best_metric is not None]


def metric_vs_lr(records: list[Any], metric: str, path: Path) -> Path | None:
    """Best metric of each trial against its learning rate, one series per batch size."""
    scored = [r for r in _scored(records) if LR in r.params]
    if not scored:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for batch in sorted({r.params.get(BATCH) for r in scored}, key=lambda b: (b is None, b)):
        series = sorted((r.params[LR], r.best_metric) for r in scored if r.params.get(BATCH) == batch)
        ax.plot([x for x, _ in series], [y for _, y in series], marker="o",
                label=f"batch size {batch}" if batch is not None else "all trials")
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel=f"best {metric}", title=f"{metric} against learning rate")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves(records: list[Any], metric: str, path: Path) -> Path | None:
    """The tuned metric per epoch for every trial; early-stopped trials dashed."""
    curves = [r for r in records if r.curve]
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in curves:
        stopped = r.status != "completed"
        epochs = getattr(r, "curve_epochs", None) or list(range(1, len(r.curve) + 1))
        ax.plot(epochs, r.curve, marker="." if stopped else "o",
                linestyle="--" if stopped else "-", alpha=0.8,
                label=f"{r.trial_id} ({r.status})")
    ax.set(xlabel="epoch", ylabel=metric, title="learning curves (dashed: stopped early or failed)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _axis_value(value: Any, is_log: bool) -> float:
    number = float(value)
    return math.log10(number) if is_log and number > 0 else number


def parallel_coordinates(records: list[Any], metric: str, path: Path) -> Path | None:
    """Every searched dimension as a vertical axis (scaled to 0..1), one line per trial."""
    scored = _scored(records)
    dims = sorted({k for r in scored for k, v in r.params.items() if isinstance(v, (int, float))})
    if len(scored) < 2 or not dims:
        return None
    plt = _pyplot()
    columns = [*dims, f"best {metric}"]
    rows = [[r.params.get(d, math.nan) for d in dims] + [r.best_metric] for r in scored]
    logs = [("learning_rate" in c or "weight_decay" in c) for c in columns]
    values = [[_axis_value(v, logs[i]) for i, v in enumerate(row)] for row in rows]
    low = [min(col) for col in zip(*values)]
    high = [max(col) for col in zip(*values)]
    scaled = [[(v - lo) / (hi - lo) if hi > lo else 0.5 for v, lo, hi in zip(row, low, high)] for row in values]
    colour = plt.get_cmap("viridis")
    span = (high[-1] - low[-1]) or 1.0
    fig, ax = plt.subplots(figsize=(1.8 * len(columns) + 2, 4))
    for row, raw in zip(scaled, values):
        ax.plot(range(len(columns)), row, color=colour((raw[-1] - low[-1]) / span), alpha=0.8)
    ax.set_xticks(range(len(columns)), [c + (" (log)" if lg else "") for c, lg in zip(columns, logs)],
                  fontsize=8)
    ax.set_yticks([])
    ax.set_title("searched dimensions (each axis scaled to its own range; colour: best metric)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(records: list[Any], metric: str, folder: Path) -> dict[str, Path]:
    """Write whichever plots the sweep supports into `folder`; return them by name."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "metric_vs_lr": metric_vs_lr(records, metric, folder / "metric_vs_lr.png"),
        "learning_curves": learning_curves(records, metric, folder / "learning_curves.png"),
        "parallel_coordinates": parallel_coordinates(records, metric, folder / "parallel_coordinates.png"),
    }
    return {name: p for name, p in made.items() if p is not None}
