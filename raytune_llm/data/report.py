"""The data QA report `prepare` writes next to the manifest: is this data fit to train on?

`write_qa_report` turns the kept rows and the manifest into `qa_report.json` (for machines),
`qa_report.md` (for people, warnings first) and PNGs: labels per split, text length, the
agreement histogram and label shares per value of each metadata column (agreement level, source
file, ...), so a slice whose labels differ from the rest is seen before any GPU time is spent.
Counting uses integer codes and `numpy.bincount`, never a Python loop over rows (50k rows: ~40 ms
before plotting). Matplotlib runs headless (Agg); nothing here touches Ray.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raytune_llm.data.transforms import SPLITS

__all__ = ["write_qa_report"]

REPORT_JSON, REPORT_MD = "qa_report.json", "qa_report.md"
MIN_TRAIN_ROWS = 20  # fewer train rows than this for a class: the model barely sees it
MAX_IMBALANCE = 10.0  # largest class / smallest class within a split
MAX_QUARANTINE_SHARE = 0.05  # of the rows read
MAX_PLOTTED_VALUES = 20  # categorical columns with more values get no label-share plot
MAX_LISTED_VALUES = 50  # values listed per column; the rest are summed as "(other)"
HIST_BINS = 10  # numeric metadata columns with more than MAX_PLOTTED_VALUES distinct values
LENGTH_BINS = 30
AGREEMENT_COLUMNS = ("agreement", "vote_share")
MISSING, OTHER = "(missing)", "(other)"
_NOT_METADATA = frozenset({"id", "text", "label", "split", "source_id", "_line", "truncated_words", "unaligned_words"})


@dataclass(frozen=True)
class _Coded:
    """A column as integer codes into `values` (ordered), ready for cross-tabulation."""

    values: list[Any]
    codes: np.ndarray


def _code(column: pa.ChunkedArray, order: Sequence[Any] = ()) -> _Coded:
    """Codes in `order` first, then the other values sorted, then nulls (as `None`) last."""
    encoded = pc.dictionary_encode(column.combine_chunks(), null_encoding="encode")
    found = encoded.dictionary.to_pylist()
    known = set(order)
    values = [*order, *sorted(v for v in found if v is not None and v not in known)]
    values += [None] if None in found else []
    position = {v: i for i, v in enumerate(values)}
    remap = np.array([position[v] for v in found], dtype=np.int64)
    indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return _Coded(values, remap[indices] if found else indices)


def _binned(numbers: np.ndarray) -> tuple[_Coded, list[float]]:
    """Numeric values as HIST_BINS equal-width bins (NaN/null as `None`), and the bin edges."""
    finite = np.isfinite(numbers)
    edges = np.histogram_bin_edges(numbers[finite], bins=HIST_BINS) if finite.any() else np.arange(2.0)
    codes = np.clip(np.searchsorted(edges, numbers, side="right") - 1, 0, len(edges) - 2)
    names: list[Any] = [f"[{lo:.4g}, {hi:.4g})" for lo, hi in zip(edges[:-1], edges[1:])]
    names[-1] = names[-1][:-1] + "]"  # numpy's last bin includes its right edge
    if not finite.all():
        codes = np.where(finite, codes, len(names))
        names.append(None)
    return _Coded(names, codes.astype(np.int64)), [float(e) for e in edges]


def _crosstab(rows: _Coded, cols: _Coded) -> np.ndarray:
    flat = np.bincount(rows.codes * len(cols.values) + cols.codes, minlength=len(rows.values) * len(cols.values))
    return flat.reshape(len(rows.values), len(cols.values))


def _key(value: Any) -> str:
    return MISSING if value is None else str(value)


def _distribution(counts: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    total = int(counts.sum())
    return {"rows": total, "counts": {n: int(c) for n, c in zip(names, counts)},
            "shares": {n: round(int(c) / total, 4) if total else 0.0 for n, c in zip(names, counts)}}


def _imbalance(counts: np.ndarray) -> float | None:
    """Largest / smallest class among the classes present (absent ones are `missing_labels`)."""
    present = counts[counts > 0]
    return float(present.max() / present.min()) if present.size else None  # unrounded: compared to a limit


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _rows_section(kept: pa.Table, manifest: dict[str, Any]) -> dict[str, Any]:
    rows = dict(manifest.get("rows") or {})
    read, kept_rows = int(rows.get("read", kept.num_rows)), int(rows.get("kept", kept.num_rows))
    quarantined = int(rows.get("quarantined", 0))
    dropped = {k.removeprefix("dropped_"): int(v) for k, v in rows.items() if k.startswith("dropped_")}
    return {"read": read, "kept": kept_rows, "quarantined": quarantined, "dropped": dropped,
            "dropped_total": sum(dropped.values()), "kept_in_table": kept.num_rows,
            "balanced": read == kept_rows + quarantined + sum(dropped.values()),
            "quarantined_share": quarantined / read if read else 0.0}


def _length_section(kept: pa.Table, split: _Coded) -> dict[str, Any]:
    lengths = pc.fill_null(pc.utf8_length(kept.column("text")), 0).to_numpy().astype(np.float64)
    edges = np.histogram_bin_edges(lengths, bins=LENGTH_BINS) if lengths.size else np.arange(2.0)

    def stats(values: np.ndarray) -> dict[str, float]:
        if not values.size:
            return {"rows": 0}
        return {"rows": int(values.size), "mean": round(float(values.mean()), 2),
                "median": float(np.median(values)), "p95": round(float(np.percentile(values, 95)), 2),
                "min": int(values.min()), "max": int(values.max())}

    parts = {_key(s): lengths[split.codes == i] for i, s in enumerate(split.values)}
    return {"by_split": {s: stats(v) for s, v in parts.items()}, "all": stats(lengths),
            "histogram": {"edges": [float(e) for e in edges],
                          "counts": {s: np.histogram(v, edges)[0].tolist() for s, v in parts.items()}}}


def _top(names: list[str], *tables: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """The MAX_LISTED_VALUES most frequent rows of each table, the rest summed as OTHER."""
    if len(names) <= MAX_LISTED_VALUES:
        return names, list(tables)
    order = np.argsort(-tables[0].sum(axis=1), kind="stable")
    head, tail = order[:MAX_LISTED_VALUES], order[MAX_LISTED_VALUES:]
    return ([names[i] for i in head] + [OTHER],
            [np.vstack([t[head], t[tail].sum(axis=0, keepdims=True)]) for t in tables])


def _metadata_section(kept: pa.Table, name: str, split: _Coded, label: _Coded) -> dict[str, Any]:
    column = kept.column(name)
    numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
    distinct = int(pc.count_distinct(column).as_py())
    numbers = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False) if numeric else None
    kind = "numeric" if numbers is not None and distinct > MAX_PLOTTED_VALUES else "categorical"
    coded, edges = _binned(numbers) if kind == "numeric" else (_code(column), None)
    names = [_key(v) for v in coded.values]
    by_split, by_value = _crosstab(coded, split), _crosstab(coded, label)
    splits = [_key(s) for s in split.values]
    out: dict[str, Any] = {"kind": kind, "distinct": distinct, "missing": int(column.null_count)}
    listed, (by_split, by_value) = _top(names, by_split, by_value)
    out["by_split"] = {s: {"counts": {v: int(c) for v, c in zip(listed, by_split[:, j])}}
                       for j, s in enumerate(splits)}
    out["labels_by_value"] = {v: _distribution(by_value[i], label.values) for i, v in enumerate(listed)}
    if numbers is not None:
        finite = np.isfinite(numbers)
        sums = np.bincount(split.codes[finite], weights=numbers[finite], minlength=len(splits))
        seen = np.bincount(split.codes[finite], minlength=len(splits))
        for j, s in enumerate(splits):
            out["by_split"][s]["mean"] = round(float(sums[j] / seen[j]), 4) if seen[j] else None
        totals = np.bincount(coded.codes, minlength=len(coded.values))
        present = [i for i, v in enumerate(coded.values) if v is not None]
        out["histogram"] = ({"edges": edges} if edges is not None else {"values": [coded.values[i] for i in present]})
        out["histogram"]["counts"] = [int(totals[i]) for i in present]
    return out


def _metadata_columns(kept: pa.Table, wanted: Sequence[str] | None) -> list[str]:
    if wanted is None:
        return [c for c in kept.column_names if c not in _NOT_METADATA and not c.startswith("_pii_")
                and not pa.types.is_nested(kept.schema.field(c).type)]
    missing = [c for c in wanted if c not in kept.column_names]
    if missing:
        raise ValueError(f"metadata columns {missing} are not in the kept table (columns: {kept.column_names})")
    return list(wanted)


def _build(kept: pa.Table, manifest: dict[str, Any], columns: Sequence[str] | None) -> dict[str, Any]:
    """Every number of the report, as JSON-ready data (no warnings yet)."""
    label = _code(kept.column("label"), list(manifest.get("labels") or []))
    present = set(pc.unique(kept.column("split")).to_pylist())
    split = _code(kept.column("split"), [s for s in SPLITS if s in present])
    labels = [_key(v) for v in label.values]
    label = _Coded(labels, label.codes)
    table = _crosstab(split, label)
    splits = {_key(s): {**_distribution(table[i], labels), "imbalance_ratio": _imbalance(table[i]),
                        "missing_labels": [lb for lb, c in zip(labels, table[i]) if c == 0]}
              for i, s in enumerate(split.values)}
    rows = _rows_section(kept, manifest)
    quarantine = manifest.get("quarantine") or {}
    return {
        "source": manifest.get("source"), "labels": labels, "rows": rows,
        "quarantine": {"kinds": dict(quarantine.get("kinds") or {}), "file": quarantine.get("file")},
        "splits": splits, "all": {**_distribution(table.sum(axis=0), labels),
                                  "imbalance_ratio": _imbalance(table.sum(axis=0))},
        "leakage": {"removed": rows["dropped"].get("leak", 0), "by_split": dict(manifest.get("leaks_by_split") or {})},
        "pii_redacted": dict(manifest.get("pii_redacted") or {}),
        "text_chars": _length_section(kept, split),
        "metadata": {c: _metadata_section(kept, c, split, label) for c in _metadata_columns(kept, columns)},
    }


def _warn(check: str, value: Any, threshold: Any, message: str, **where: str) -> dict[str, Any]:
    return {"check": check, "value": value, "threshold": threshold, "message": message, **where}


def _warnings(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per crossed threshold; the message names the threshold."""
    rows, out = report["rows"], []
    if not rows["balanced"]:
        out.append(_warn("row_accounting", rows["read"], rows["kept"] + rows["quarantined"] + rows["dropped_total"],
                         f"read {rows['read']} != kept + quarantined + dropped; a row vanished without a trace"))
    if rows["kept_in_table"] != rows["kept"]:
        out.append(_warn("kept_mismatch", rows["kept_in_table"], rows["kept"],
                         f"the table holds {rows['kept_in_table']} rows but the manifest says {rows['kept']} kept"))
    if rows["quarantined_share"] > MAX_QUARANTINE_SHARE:
        out.append(_warn("quarantine_share", rows["quarantined_share"], MAX_QUARANTINE_SHARE,
                         f"{rows['quarantined_share']:.1%} of the rows read were quarantined "
                         f"(> {MAX_QUARANTINE_SHARE:.0%}); see quarantine.jsonl"))
    train = report["splits"].get("train", {}).get("counts", {})
    for lb in report["labels"]:
        if train.get(lb, 0) < MIN_TRAIN_ROWS:
            out.append(_warn("few_train_rows", train.get(lb, 0), MIN_TRAIN_ROWS,
                             f"label '{lb}' has {train.get(lb, 0)} train rows (< {MIN_TRAIN_ROWS})", label=lb))
    for name, part in report["splits"].items():
        for lb in part["missing_labels"] if part["rows"] else []:
            out.append(_warn("missing_class", 0, 1, f"split '{name}' has no '{lb}' rows", split=name, label=lb))
        ratio = part["imbalance_ratio"]
        if ratio is not None and ratio > MAX_IMBALANCE:
            out.append(_warn("imbalance", ratio, MAX_IMBALANCE, f"split '{name}': largest class / smallest "
                             f"class = {ratio:.2f} (> {MAX_IMBALANCE:g})", split=name))
    if report["leakage"]["removed"] > 0:
        out.append(_warn("leakage", report["leakage"]["removed"], 0, f"{report['leakage']['removed']} train rows "
                         f"near-duplicated a held-out row and were removed (> 0): {report['leakage']['by_split']}"))
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on clusters or CI
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _legend(ax: Any, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:  # an empty table draws nothing to name
        ax.legend(**kwargs)


def _plot_labels(report: dict[str, Any], path: Path) -> Path:
    """Grouped bars: rows per label, one bar per split."""
    plt, labels, splits = _pyplot(), report["labels"], list(report["splits"])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) * max(len(splits), 1) / 2 + 2), 4))
    width, x = 0.8 / max(len(splits), 1), np.arange(len(labels))
    for i, name in enumerate(splits):
        part = report["splits"][name]
        bars = ax.bar(x + (i - (len(splits) - 1) / 2) * width, [part["counts"][lb] for lb in labels], width,
                      label=f"{name} ({part['rows']} rows, ratio {_ratio(part['imbalance_ratio'])})")
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x, labels, rotation=30 if len(labels) > 5 else 0, ha="right" if len(labels) > 5 else "center")
    ax.set(ylabel="rows", title="labels by split (ratio: largest / smallest class)")
    _legend(ax, fontsize=8)
    return _save(plt, fig, path)


def _plot_lengths(report: dict[str, Any], path: Path) -> Path:
    """Text length in characters: each split's share of rows per length bin."""
    plt, hist = _pyplot(), report["text_chars"]["histogram"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, counts in hist["counts"].items():
        total = sum(counts) or 1
        median = report["text_chars"]["by_split"][name].get("median")
        ax.stairs([c / total for c in counts], hist["edges"], label=f"{name} (median {median})")
    ax.set(xlabel="characters", ylabel="share of the split's rows", title="text length by split")
    _legend(ax, fontsize=8)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def _plot_agreement(report: dict[str, Any], columns: list[str], path: Path) -> Path:
    """One histogram per agreement-like column, bars stacked by split."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(columns), figsize=(5.5 * len(columns), 4), squeeze=False)
    for ax, name in zip(axes[0], columns):
        meta = report["metadata"][name]
        values = [v for v in next(iter(meta["by_split"].values()), {"counts": {}})["counts"] if v != MISSING]
        bottom = np.zeros(len(values))
        for split, part in meta["by_split"].items():
            heights = np.array([part["counts"][v] for v in values], dtype=float)
            ax.bar(range(len(values)), heights, bottom=bottom, label=split)
            bottom += heights
        ax.set_xticks(range(len(values)), values, rotation=30 if len(values) > 6 else 0)
        ax.set(xlabel=name, ylabel="rows", title=f"{name} histogram")
        _legend(ax, fontsize=8)
    return _save(plt, fig, path)


def _plot_value_labels(report: dict[str, Any], column: str, path: Path) -> Path:
    """Stacked horizontal bars: the label shares within each value of `column`."""
    plt, by_value = _pyplot(), report["metadata"][column]["labels_by_value"]
    values = list(by_value)
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.45 * len(values)))
    left = np.zeros(len(values))
    for lb in report["labels"]:
        shares = np.array([by_value[v]["shares"][lb] for v in values])
        ax.barh(range(len(values)), shares, left=left, label=lb)
        for y, (start, share) in enumerate(zip(left, shares)):
            if share >= 0.08:  # narrower segments have no room for a number
                ax.text(start + share / 2, y, f"{share:.0%}", ha="center", va="center", fontsize=7)
        left += shares
    ax.set_yticks(range(len(values)), [f"{v} (n={by_value[v]['rows']})" for v in values], fontsize=8)
    ax.invert_yaxis()  # first value on top, as in the Markdown table
    ax.set(xlim=(0, 1), xlabel="label share", title=f"labels by {column}")
    _legend(ax, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(plt, fig, path)


def _write_plots(report: dict[str, Any], root: Path) -> dict[str, Path]:
    made = {"labels_by_split": _plot_labels(report, root / "qa_labels_by_split.png"),
            "text_length": _plot_lengths(report, root / "qa_text_length.png")}
    agreement = [c for c in AGREEMENT_COLUMNS if c in report["metadata"]]
    if agreement:
        made["agreement"] = _plot_agreement(report, agreement, root / "qa_agreement.png")
    for name, meta in report["metadata"].items():
        if meta["kind"] == "categorical" and len(meta["labels_by_value"]) <= MAX_PLOTTED_VALUES:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
            made[f"{name}_labels"] = _plot_value_labels(report, name, root / f"qa_{slug}_labels.png")
    return made


def _table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = [header, *rows]
    text = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in lines]
    return [text[0], "|" + "---|" * len(header), *text[1:], ""]


def _image(images: dict[str, Path], key: str, alt: str) -> list[str]:
    return [f"![{alt}]({images[key].name})", ""] if key in images else []


def _split_lines(report: dict[str, Any], images: dict[str, Path]) -> list[str]:
    splits = report["splits"]
    rows = [[lb, *(f"{p['counts'][lb]} ({p['shares'][lb]:.1%})" for p in splits.values()),
             report["all"]["counts"][lb]] for lb in report["labels"]]
    rows.append(["**imbalance ratio**", *(_ratio(p["imbalance_ratio"]) for p in splits.values()),
                 _ratio(report["all"]["imbalance_ratio"])])
    rows.append(["**rows**", *(p["rows"] for p in splits.values()), report["all"]["rows"]])
    length = [[s, *(st.get(k, "") for k in ("rows", "mean", "median", "p95", "max"))]
              for s, st in report["text_chars"]["by_split"].items()]
    return ["## Labels by split", "", *_image(images, "labels_by_split", "labels by split"),
            *_table(["label", *splits, "all"], rows), "## Text length (characters)", "",
            *_image(images, "text_length", "text length"),
            *_table(["split", "rows", "mean", "median", "p95", "max"], length)]


def _metadata_lines(report: dict[str, Any], images: dict[str, Path]) -> list[str]:
    lines: list[str] = []
    first_agreement = next((c for c in AGREEMENT_COLUMNS if c in report["metadata"]), None)
    for name, meta in report["metadata"].items():
        lines += [f"## Metadata: `{name}` ({meta['kind']}, {meta['distinct']} distinct, {meta['missing']} missing)", ""]
        lines += _image(images, "agreement", "agreement histogram") if name == first_agreement else []
        lines += _image(images, f"{name}_labels", f"labels by {name}")
        splits = list(meta["by_split"])
        rows = [[v, *(meta["by_split"][s]["counts"][v] for s in splits),
                 *(f"{d['shares'][lb]:.1%}" for lb in report["labels"])] for v, d in meta["labels_by_value"].items()]
        if "histogram" in meta:
            rows.append(["**mean**", *(meta["by_split"][s]["mean"] for s in splits), *([""] * len(report["labels"]))])
        lines += _table([name, *(f"{s} rows" for s in splits), *(f"{lb} share" for lb in report["labels"])], rows)
    return lines


def _markdown(report: dict[str, Any], images: dict[str, Path]) -> str:
    rows, warnings, limits = report["rows"], report["warnings"], report["thresholds"]
    verdict = ("**Fit to train: no check crossed its threshold.**" if not warnings
               else f"**Review before training: {len(warnings)} warning(s).**")
    lines = ["# Data QA report", "", f"Source: `{report['source']}`", "", verdict, ""]
    lines += [f"- **{w['check']}**: {w['message']}" for w in warnings] + ([""] if warnings else [])
    lines += [f"Thresholds: a class with < {limits['min_train_rows']} train rows; imbalance ratio > "
              f"{limits['max_imbalance']:g}; > {limits['max_quarantine_share']:.0%} of rows quarantined; a split "
              "missing a class; any train row removed for leakage.", "",
              f"## Rows (read = kept + quarantined + dropped: {'' if rows['balanced'] else 'NOT '}balanced)", ""]
    accounting = [["read", rows["read"]], ["kept", rows["kept"]], ["quarantined", rows["quarantined"]],
                  *([f"dropped: {k}", v] for k, v in rows["dropped"].items())]
    lines += _table(["rows", "count"], accounting)
    if report["quarantine"]["kinds"]:
        lines += ["Quarantined by kind:", "", *_table(["kind", "rows"], report["quarantine"]["kinds"].items())]
    if report["pii_redacted"]:
        lines += [f"PII redacted: {report['pii_redacted']}", ""]
    return "\n".join(lines + _split_lines(report, images) + _metadata_lines(report, images))


def write_qa_report(
    root: Path, kept: pa.Table, manifest: dict[str, Any], metadata_columns: Sequence[str] | None = None
) -> dict[str, Path]:
    """Write `qa_report.json`, `qa_report.md` and the `qa_*.png` plots into `root`; return them by name.

    `kept` holds the final rows (`id`, `text`, `label`, `split` and any metadata columns);
    `manifest` is the one `prepare` writes (`rows`, `quarantine`, `labels`, `leaks_by_split`, ...).
    `metadata_columns=None` takes every column besides id, text, label, split, source_id and
    _line (e.g. `_source`, `agreement`, `votes`, `vote_share`); a named column that is not in
    `kept` is an error.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    report = _build(kept, manifest, metadata_columns)
    warnings = _warnings(report)
    limits = {"min_train_rows": MIN_TRAIN_ROWS, "max_imbalance": MAX_IMBALANCE,
              "max_quarantine_share": MAX_QUARANTINE_SHARE}
    report = {"verdict": "review" if warnings else "ok", "warnings": warnings, "thresholds": limits, **report}
    images = _write_plots(report, root)
    (root / REPORT_JSON).write_text(json.dumps(report, indent=2, allow_nan=False, ensure_ascii=False))
    (root / REPORT_MD).write_text(_markdown(report, images) + "\n")
    return {"json": root / REPORT_JSON, "markdown": root / REPORT_MD, **images}
