"""The same metrics per slice of a metadata column, so that uneven behaviour shows.

A slice is the rows sharing one value of a column: `_source` (the file a row came from),
`agreement` (PhraseBank's annotator agreement level), `vote_share` (Label Studio), or the
built-in `length_bucket` (token count, special tokens included, before truncation). A
numeric column with more than `MAX_DISTINCT` values is cut into quartile buckets so that a
continuous score does not make one slice per row. Pure functions; no torch, no Ray.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from raytune_llm.evaluation.calibration import N_BINS, calibration_summary
from raytune_llm.evaluation.metrics import scores

__all__ = ["LENGTH_COLUMN", "LENGTH_EDGES", "MISSING", "Slicing", "default_slice_columns", "length_bucket",
           "length_slicing", "slice_metrics", "slicing"]

LENGTH_COLUMN = "length_bucket"
LENGTH_EDGES = (16, 32, 64, 128, 256, 512)
MISSING = "(missing)"
MAX_DISTINCT = 10
#: Columns sliced by default when present with more than one value (besides `length_bucket`).
DEFAULT_COLUMNS = ("_source", "agreement", "vote_share")


@dataclass(frozen=True)
class Slicing:
    """One slice key per row of `column`, and the keys in the order a report lists them."""

    column: str
    keys: list[str]
    order: list[str]


def length_bucket(tokens: int) -> str:
    """`1-16`, `17-32`, ... `257-512`, `>512`: the token-count bucket of one row."""
    lower = 1
    for edge in LENGTH_EDGES:
        if tokens <= edge:
            return f"{lower}-{edge}"
        lower = edge + 1
    return f">{LENGTH_EDGES[-1]}"


def length_slicing(token_counts: Sequence[int]) -> Slicing:
    """`length_bucket` of every row, buckets ordered short to long."""
    keys = [length_bucket(int(n)) for n in token_counts]
    every = [length_bucket(edge) for edge in LENGTH_EDGES] + [length_bucket(LENGTH_EDGES[-1] + 1)]
    return Slicing(LENGTH_COLUMN, keys, [k for k in every if k in set(keys)])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _quartile_keys(values: list[Any]) -> tuple[list[str], list[str]]:
    present = np.array([float(v) for v in values if not _missing(v)])
    edges = np.unique(np.quantile(present, [0.0, 0.25, 0.5, 0.75, 1.0]))
    names = [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(edges)]
    names[-1] = names[-1][:-1] + "]"  # the top bucket holds the maximum
    keys = []
    for value in values:
        if _missing(value):
            keys.append(MISSING)
        else:
            index = int(np.searchsorted(edges[1:-1], float(value), side="right"))
            keys.append(names[index])
    return keys, [n for n in names if n in set(keys)] + ([MISSING] if MISSING in keys else [])


def slicing(column: str, values: Sequence[Any]) -> Slicing:
    """Slice keys of a metadata column: its values as text, or quartile buckets of a numeric one."""
    values = list(values)
    present = [v for v in values if not _missing(v)]
    numeric = bool(present) and all(_is_number(v) for v in present)
    if numeric and len(set(present)) > MAX_DISTINCT:
        keys, order = _quartile_keys(values)
        return Slicing(column, keys, order)
    text = {v: (f"{v:g}" if isinstance(v, float) else str(v)) for v in set(present)}
    ranked = sorted(text, key=float) if numeric else sorted(text, key=str)
    order = [text[v] for v in ranked]
    keys = [MISSING if _missing(v) else text[v] for v in values]
    return Slicing(column, keys, order + ([MISSING] if MISSING in keys else []))


def default_slice_columns(columns: dict[str, Sequence[Any]]) -> list[str]:
    """`length_bucket`, then each of `DEFAULT_COLUMNS` that is present with more than one value."""
    chosen = [LENGTH_COLUMN]
    for name in DEFAULT_COLUMNS:
        if name in columns and len({str(v) for v in columns[name]}) > 1:
            chosen.append(name)
    return chosen


def slice_metrics(cut: Slicing, gold: np.ndarray, probabilities: np.ndarray, labels: Sequence[str],
                  n_bins: int = N_BINS) -> dict[str, dict[str, Any]]:
    """Scores and calibration (without the bin table) of every slice, in `cut.order`."""
    keys = np.asarray(cut.keys, dtype=object)
    gold = np.asarray(gold, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    out: dict[str, dict[str, Any]] = {}
    for key in cut.order:
        rows = keys == key
        result = scores(gold[rows], probabilities[rows].argmax(axis=1), labels)
        calibration = calibration_summary(probabilities[rows], gold[rows], n_bins)
        result.update({name: calibration[name] for name in ("ece", "mce", "mean_confidence", "nll", "brier")})
        out[key] = result
    return out
