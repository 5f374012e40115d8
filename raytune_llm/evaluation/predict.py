"""`raytune-llm predict`: batch inference with Ray Data, streamed to Parquet or JSON lines.

The file is read and checked on the driver by the data step's reader (bad rows quarantined,
never dropped: they go to `OUT.quarantine.jsonl`). The good rows are cut into blocks and
mapped by a pool of `BatchPredictor` actors (`ray.data.ActorPoolStrategy`), each holding one
model (one GPU per actor when the cluster has GPUs, else one CPU). The driver consumes the
predicted batches as they stream out and appends them to the output, so memory holds a few
batches, not the predictions. At the end `written == read - quarantined` is checked.

Output columns: `id` (the input's id column, else a hash of the normalised text, as in the
data step), `text` (as read), `_source`, `_line`, `label` (only with --label-column),
`predicted_label`, `confidence` (top probability) and `prob_<label>` per class.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.quarantine import write_quarantine
from raytune_llm.errors import ConfigError
from raytune_llm.evaluation.inputs import read_scoring_input, text_settings
from raytune_llm.evaluation.model import check_model_dir, load_scorer, model_labels

__all__ = ["BatchPredictor", "Prediction", "block_rows", "output_kind", "plan_workers", "predict",
           "prediction_columns", "quarantine_path"]

QUARANTINE_SUFFIX = ".quarantine.jsonl"
ROWS_PER_PART = 100_000  # rows per Parquet file when the output is a folder
_PASS_THROUGH = (("id", pa.string()), ("input_text", pa.string()), ("_source", pa.string()), ("_line", pa.int64()))


@dataclass(frozen=True)
class Prediction:
    """What a predict run wrote, and how fast: `written == read - quarantined`."""

    output: Path
    quarantine_file: Path
    read: int
    written: int
    quarantined: int
    seconds: float
    workers: int
    device: str

    @property
    def rows_per_s(self) -> float:
        """Predicted rows per second of the Ray Data stage (actor start-up and writing included)."""
        return self.written / self.seconds if self.seconds > 0 else 0.0


def output_kind(out: str | Path) -> str:
    """`jsonl` (PATH.jsonl), `parquet` (PATH.parquet) or `folder` (Parquet parts in a folder)."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".parquet"):
        return suffix[1:]
    if suffix and not path.is_dir():
        raise ConfigError([f"--out: {out} must end in .parquet or .jsonl, or name a folder (got suffix {suffix!r})"])
    return "folder"


def quarantine_path(out: str | Path) -> Path:
    """Where the quarantined rows of a run writing `out` go: `OUT.quarantine.jsonl`."""
    return Path(str(out).rstrip("/\\") + QUARANTINE_SUFFIX)


def plan_workers(requested: int | None, cpus: float, gpus: float) -> tuple[int, bool]:
    """Actor-pool size and whether actors take a GPU: one actor per GPU, else per CPU (at most 4 by default)."""
    gpu = gpus >= 1
    capacity = int(gpus) if gpu else int(cpus)
    if requested is not None and requested < 1:
        raise ConfigError([f"--workers must be >= 1 (got {requested})"])
    if requested is not None and requested > capacity:
        kind = "GPU" if gpu else "CPU"
        raise ConfigError([(f"--workers {requested}: each actor needs 1 {kind} but the cluster has {capacity}; "
                            f"use --workers {max(capacity, 1)} or a bigger cluster")])
    if requested is not None:
        return requested, gpu
    return (max(1, capacity) if gpu else max(1, min(4, capacity - 1))), gpu


def block_rows(rows: int, batch_size: int, workers: int) -> int:
    """Rows per Ray Data block: at least 4 blocks per actor (so every actor works) and at most 16 batches
    per block (so results stream out early)."""
    return max(batch_size, min(math.ceil(rows / (4 * workers)), 16 * batch_size))


def prediction_columns(batch: pa.Table, probabilities: np.ndarray, labels: Sequence[str]) -> pa.Table:
    """The output table of one batch: pass-through columns, then the prediction (fixed schema)."""
    top = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=np.int64)
    names = [name if name != "input_text" else "text" for name, _ in _PASS_THROUGH]
    arrays: list[pa.Array] = [batch.column(name).combine_chunks().cast(kind) for name, kind in _PASS_THROUGH]
    if "label" in batch.column_names:
        names.append("label")
        arrays.append(batch.column("label").combine_chunks().cast(pa.string()))
    names += ["predicted_label", "confidence", *(f"prob_{label}" for label in labels)]
    arrays.append(pa.array([labels[i] for i in top], pa.string()))
    arrays.append(pa.array(probabilities.max(axis=1) if len(probabilities) else [], pa.float32()))
    arrays += [pa.array(probabilities[:, k], pa.float32()) for k in range(len(labels))]
    return pa.Table.from_arrays(arrays, names=names)


class BatchPredictor:
    """Ray Data callable class: loads the model once per actor, predicts a `pyarrow` batch per call."""

    def __init__(self, model_dir: str, max_length: int, batch_size: int, device: str, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)  # one CPU per actor: threads would only fight over it
        self.scorer = load_scorer(model_dir, device)
        self.max_length = max_length
        self.batch_size = batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        probabilities = self.scorer.probabilities(texts, self.max_length, self.batch_size)
        return prediction_columns(batch, probabilities, self.scorer.labels)


class _Sink:
    """Appends predicted batches to one JSON lines file, one Parquet file, or Parquet parts in a folder."""

    def __init__(self, out: Path, kind: str) -> None:
        self.out, self.kind, self.rows = out, kind, 0
        self._writer: Any = None
        self._jsonl: TextIO | None = None
        self._part_rows = 0
        self._parts = 0
        if kind == "folder":
            out.mkdir(parents=True, exist_ok=True)
            for old in out.glob("part-*.parquet"):  # a rerun replaces its own output, as for a file
                old.unlink()
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            if kind == "jsonl":
                self._jsonl = out.open("w", encoding="utf-8")

    def write(self, batch: pa.Table) -> None:
        """Append one batch."""
        self.rows += batch.num_rows
        if self._jsonl is not None:
            self._jsonl.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in batch.to_pylist())
            return
        import pyarrow.parquet as pq

        if self.kind == "folder" and self._writer is not None and self._part_rows >= ROWS_PER_PART:
            self._writer.close()
            self._writer = None
        if self._writer is None:
            target = self.out if self.kind == "parquet" else self.out / f"part-{self._parts:05d}.parquet"
            self._writer = pq.ParquetWriter(str(target), batch.schema)
            self._parts, self._part_rows = self._parts + 1, 0
        self._writer.write_table(batch)
        self._part_rows += batch.num_rows

    def close(self) -> None:
        """Flush and close the open file."""
        if self._jsonl is not None:
            self._jsonl.close()
        if self._writer is not None:
            self._writer.close()


def _connect(address: str | None) -> dict[str, float]:
    """Connect to `address`/RAY_ADDRESS, or start a local Ray; returns the cluster's resources."""
    import logging

    import ray
    import ray.data

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        ray.init(address=address) if address else ray.init()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our summary line says what happened
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return {name: float(value) for name, value in ray.cluster_resources().items()}


def _predicted_batches(table: pa.Table, model_dir: Path, max_length: int, batch_size: int, workers: int,
                       gpu: bool) -> Iterable[pa.Table]:
    """The Ray Data pipeline: blocks of rows -> actor pool of predictors -> batches, in input order."""
    import ray.data

    columns = [c for c in ("text", "input_text", "id", "_source", "_line", "label") if c in table.column_names]
    table = table.select(columns)
    step = block_rows(table.num_rows, batch_size, workers)
    source = ray.data.from_arrow([table.slice(start, step) for start in range(0, table.num_rows, step)])
    source.context.execution_options.preserve_order = True  # output rows in input order
    ds = source.map_batches(
        BatchPredictor, batch_size=batch_size, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1, num_gpus=1 if gpu else 0,
        fn_constructor_kwargs={"model_dir": str(model_dir), "max_length": max_length, "batch_size": batch_size,
                               "device": "cuda" if gpu else "cpu"},
    )
    return ds.iter_batches(batch_size=None, batch_format="pyarrow")


def predict(model_dir: str | Path, cfg: DataConfig, out: str | Path, batch_size: int = 64, workers: int | None = None,
            address: str | None = None, labelled: bool = False, max_length: int | None = None) -> Prediction:
    """Predict every usable row of `cfg.path` with the model in `model_dir`; see the module docstring."""
    folder = check_model_dir(model_dir)
    if batch_size < 1:
        raise ConfigError([f"--batch-size must be >= 1 (got {batch_size})"])
    out_path, kind = Path(out), output_kind(out)
    labels = model_labels(folder)
    settings = text_settings(folder, cfg, max_length)
    data = read_scoring_input(cfg, labels, settings, labelled)
    quarantine_file = write_quarantine(quarantine_path(out_path), data.quarantine)
    resources = _connect(address)
    size, gpu = plan_workers(workers, resources.get("CPU", 0.0), resources.get("GPU", 0.0))
    started = time.perf_counter()
    sink = _Sink(out_path, kind)
    try:
        for batch in _predicted_batches(data.table, folder, settings.max_length, batch_size, size, gpu):
            sink.write(batch)
    finally:
        sink.close()
    seconds = time.perf_counter() - started
    expected = data.read - len(data.quarantine)
    if sink.rows != expected:
        raise RuntimeError(f"row accounting broke: wrote {sink.rows} predictions but read {data.read} rows "
                           f"- {len(data.quarantine)} quarantined = {expected}")
    return Prediction(out_path, quarantine_file, data.read, sink.rows, len(data.quarantine), seconds, size,
                      "GPU" if gpu else "CPU")
