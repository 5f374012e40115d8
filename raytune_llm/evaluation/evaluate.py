"""`raytune-llm evaluate`: score a model on a labelled dataset, in process, and report.

Read (data step reader, quarantine split off) -> normalise as in training -> class
probabilities in length-sorted batches -> overall scores, per-class table, confusion matrix,
calibration, and the same per slice -> `evaluation.json`, `evaluation.md`, two PNGs,
`predictions.parquet` (one row per scored row, for error analysis) and `quarantine.jsonl`
under the output folder. No Ray: a CPU (or one GPU) does it in one process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.quarantine import kind_counts, write_quarantine
from raytune_llm.errors import DataError
from raytune_llm.evaluation.calibration import N_BINS, calibration_summary
from raytune_llm.evaluation.inputs import (
    ScoringInput,
    TextSettings,
    read_scoring_input,
    text_settings,
    with_input_columns,
)
from raytune_llm.evaluation.metrics import scores
from raytune_llm.evaluation.model import load_scorer
from raytune_llm.evaluation.report import FILES, write_report
from raytune_llm.evaluation.slices import (
    LENGTH_COLUMN,
    Slicing,
    default_slice_columns,
    length_slicing,
    slice_metrics,
    slicing,
)

__all__ = ["Evaluation", "build_report", "evaluate", "slicings"]

#: Columns that identify or hold the text of a row; slicing by them makes no sense.
_NOT_METADATA = frozenset({"text", "input_text", "label", "id"})


@dataclass(frozen=True)
class Evaluation:
    """The report dict (as written to `evaluation.json`) and the files written."""

    report: dict[str, Any]
    paths: dict[str, Path]


def slicings(data: ScoringInput, token_counts: Sequence[int], slice_by: Sequence[str] | None) -> list[Slicing]:
    """The slicings asked for (default: `default_slice_columns`); unknown columns are a `DataError`."""
    table = data.table
    metadata = [c for c in table.column_names if c not in _NOT_METADATA]
    if slice_by is None:
        slice_by = default_slice_columns({c: table.column(c).to_pylist() for c in metadata})
    unknown = [c for c in slice_by if c != LENGTH_COLUMN and c not in metadata]
    if unknown:
        raise DataError(f"--slice-by {', '.join(unknown)}: no such column in {data.table.num_rows} scored rows; "
                        f"available: {', '.join([LENGTH_COLUMN, *metadata])}")
    return [length_slicing(token_counts) if c == LENGTH_COLUMN else slicing(c, table.column(c).to_pylist())
            for c in dict.fromkeys(slice_by)]


def build_report(gold: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], cuts: Sequence[Slicing],
                 n_bins: int = N_BINS) -> dict[str, Any]:
    """Overall scores, calibration and per-slice scores of probabilities against gold label ids."""
    return {
        "labels": list(labels),
        "metrics": scores(gold, probabilities.argmax(axis=1), labels),
        "calibration": calibration_summary(probabilities, gold, n_bins),
        "slices": {cut.column: slice_metrics(cut, gold, probabilities, labels, n_bins) for cut in cuts},
    }


def _gold_ids(data: ScoringInput, labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    # The reader quarantined every label outside `labels`, so each lookup succeeds.
    return np.array([index[label] for label in data.table.column("label").to_pylist()], dtype=np.int64)


def _write_predictions(data: ScoringInput, probabilities: np.ndarray, labels: Sequence[str],
                       token_counts: Sequence[int], cuts: Sequence[Slicing], path: Path) -> Path:
    """One row per scored row: ids, text, gold, prediction, probabilities, token count and slice keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raytune_llm.evaluation.predict import prediction_columns

    table = prediction_columns(data.table, probabilities, labels)
    table = table.append_column("num_tokens", pa.array(token_counts, pa.int64()))
    for cut in cuts:
        table = table.append_column(f"slice:{cut.column}", pa.array(cut.keys, pa.string()))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate(model_dir: str | Path, cfg: DataConfig, out_dir: str | Path, slice_by: Sequence[str] | None = None,
             batch_size: int = 64, max_length: int | None = None, device: str | None = None,
             threads: int | None = None) -> Evaluation:
    """Score the model in `model_dir` on `cfg.path` and write the report under `out_dir`.

    `threads` sets torch's CPU threads (default: torch's choice, one per core); on a busy
    machine 1 is often faster than oversubscribing the cores.
    """
    started = time.perf_counter()
    if threads:
        import torch

        torch.set_num_threads(threads)
    scorer = load_scorer(model_dir, _device(device))
    labels = scorer.labels
    settings: TextSettings = text_settings(model_dir, cfg, max_length)
    data = read_scoring_input(cfg, labels, settings, labelled=True)
    data = with_input_columns(data, cfg, [c for c in slice_by or () if c != LENGTH_COLUMN])
    texts = data.table.column("text").to_pylist()
    token_counts = scorer.token_counts(texts)
    cuts = slicings(data, token_counts, slice_by)
    scoring = time.perf_counter()
    probabilities = scorer.probabilities(texts, settings.max_length, batch_size)
    scored_s = time.perf_counter() - scoring
    report = build_report(_gold_ids(data, labels), probabilities, labels, cuts)
    if report["metrics"]["n"] + len(data.quarantine) != data.read:
        raise RuntimeError(f"row accounting broke: scored {report['metrics']['n']} + quarantined "
                           f"{len(data.quarantine)} != read {data.read}")
    report = {
        "model": str(model_dir), "adapter": scorer.adapter, "data": cfg.path, "max_length": settings.max_length,
        "rows": {"read": data.read, "scored": int(data.table.num_rows), "quarantined": len(data.quarantine)},
        "quarantine_kinds": kind_counts(data.quarantine), "pii_redacted": data.pii_redacted,
        **report,
        "timing": {"scoring_s": round(scored_s, 3), "rows_per_s": round(len(texts) / max(scored_s, 1e-9), 1),
                   "total_s": round(time.perf_counter() - started, 3), "device": scorer.device},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_quarantine(out / FILES["quarantine"], data.quarantine)
    _write_predictions(data, probabilities, labels, token_counts, cuts, out / FILES["predictions"])
    return Evaluation(report, write_report(report, out))
