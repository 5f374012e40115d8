"""Seeded, stratified k-fold assignment of the training rows, and the per-fold splits on disk.

Each fold trains on the other folds' rows with the ordinary training loop, which reads a
`train` and a `validation` split folder; so a fold is written as prepared splits: the rows
outside the fold as `train`, and as `validation` the run's own validation split (labels the
fold model never scores out of sample) or, without one, the held-out fold itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raytune_llm.data.pipeline import PreparedData
from raytune_llm.errors import ConfigError

__all__ = ["FoldSplits", "assign_folds", "write_folds"]


def _rank(row_id: str, seed: int) -> int:
    # Salted apart from the train/validation/test hash so that folds are independent of splits.
    digest = hashlib.blake2b(f"audit-fold:{seed}:{row_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign_folds(ids: list[str], labels: list[int], k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) per row: within each label, rows ordered by a seeded hash of their
    id are dealt round-robin, so every fold holds each label's share to within one row and
    the assignment depends only on the (id, label) pairs and the seed, never on row order."""
    if k < 2:
        raise ConfigError([f"--folds must be >= 2 (got {k})"])
    if len(ids) < k:
        raise ConfigError([f"--folds {k} needs at least {k} training rows (got {len(ids)})"])
    folds = np.empty(len(ids), dtype=np.int64)
    by_label: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(int(label), []).append(index)
    offset = 0  # carry the deal on across labels so small classes do not all start at fold 0
    for label in sorted(by_label):
        members = sorted(by_label[label], key=lambda i: (_rank(ids[i], seed), ids[i]))
        for position, index in enumerate(members):
            folds[index] = (offset + position) % k
        offset += len(members)
    return folds


@dataclass(frozen=True)
class FoldSplits:
    """One fold: the prepared splits its model trains on, and the held-out rows it scores."""

    fold: int
    prepared: PreparedData
    held_out: str  # Parquet folder of the rows this fold's model predicts


def write_folds(prepared: PreparedData, train: pa.Table, folds: np.ndarray, root: Path) -> list[FoldSplits]:
    """Write fold k's `train` (rows not in k) and `held_out` (rows in k) under `root/fold_k`."""
    out = []
    fold_column = pa.array(folds)
    for k in range(int(folds.max()) + 1):
        base = root / f"fold_{k}"
        inside = pc.equal(fold_column, k)
        for name, part in (("train", train.filter(pc.invert(inside))), ("held_out", train.filter(inside))):
            (base / name).mkdir(parents=True, exist_ok=True)
            pq.write_table(part, base / name / "part-00000.parquet")
        validation = prepared.splits.get("validation", str(base / "held_out"))
        splits = {"train": str(base / "train"), "validation": validation}
        rows = {"train": int(len(folds) - int(np.sum(folds == k)))}
        manifest = {**prepared.manifest, "split_rows": {**prepared.manifest["split_rows"], **rows}}
        out.append(FoldSplits(k, replace(prepared, root=base, splits=splits, manifest=manifest), str(base / "held_out")))
    return out
