"""Deterministic batching of tokenized rows for one worker.

Each epoch draws one global permutation from (seed, epoch). Global step s
covers permuted rows [s·G, (s+1)·G) where G is the global batch; inside it,
micro-step a of worker r takes the slice starting at a·W·b + r·b. Any split of
G into workers × micro-batch × accumulation therefore sees the same rows per
optimizer step, which the equivalence tests rely on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class TokenizedSplit:
    """One split held in memory: token ids per row and integer labels."""

    input_ids: list[list[int]]
    labels: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.input_ids)


def read_split(path: str) -> TokenizedSplit:
    """Read a tokenized split written by the prepare step (a Parquet dir or file)."""
    table: pa.Table = pq.read_table(path, columns=["id", "input_ids", "label_id"])
    # Sort by id so the row order does not depend on how Ray Data ordered the shards.
    table = table.sort_by("id")
    return TokenizedSplit(
        input_ids=table.column("input_ids").to_pylist(),
        labels=table.column("label_id").to_numpy().astype(np.int64),
        ids=table.column("id").to_pylist(),
    )


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest row of this batch (dynamic padding); returns ids and mask."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def train_micro_batches(
    num_rows: int, epoch: int, seed: int, *, rank: int, world: int, micro: int, accum: int
) -> Iterator[np.ndarray]:
    """Row indices of this worker's micro-batches for one epoch, in order."""
    order = np.random.default_rng([seed, epoch]).permutation(num_rows)
    global_batch = micro * accum * world
    for step in range(num_rows // global_batch):
        base = step * global_batch
        for micro_step in range(accum):
            start = base + micro_step * world * micro + rank * micro
            yield order[start : start + micro]


def eval_batches(num_rows: int, *, rank: int, world: int, batch: int) -> Iterator[tuple[np.ndarray, bool]]:
    """This worker's evaluation batches, with a flag for real (True) or filler (False) batches.

    Every rank yields the same number of batches because ZeRO-3 gathers
    parameters collectively in each forward: a rank that stopped early would
    leave the others waiting forever. Filler batches are computed and ignored.
    """
    mine = np.arange(rank, num_rows, world)
    per_rank = -(-num_rows // world)
    count = max(1, -(-per_rank // batch))
    for b in range(count):
        chunk = mine[b * batch : (b + 1) * batch]
        if len(chunk):
            yield chunk, True
        else:
            yield np.zeros(1, dtype=np.int64), False
