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
    """One split held in memory: token ids per row and integer labels.

    Token classification splits also carry per sub-token label ids (-100 where the loss
    ignores them), each sub-token's word index (-1 for special tokens) and each word's tag
    id, so predictions can be mapped back to words; `labels` is then unused (all -1).
    """

    input_ids: list[list[int]]
    labels: np.ndarray
    ids: list[str]
    token_labels: list[list[int]] | None = None
    word_ids: list[list[int]] | None = None
    word_tags: list[list[int]] | None = None
    # generation: where each prompt ends (generation starts there) and the reference answer;
    # `token_labels` then hold the response-only loss labels and `labels` the class id (-1: none).
    prompt_lengths: list[int] | None = None
    references: list[str] | None = None

    @property
    def is_tokens(self) -> bool:
        """Whether this is a token classification split (one label per word)."""
        return self.token_labels is not None and self.prompt_lengths is None

    @property
    def is_generation(self) -> bool:
        """Whether this is a generation split (causal LM, loss on the answers)."""
        return self.prompt_lengths is not None

    def targets(self, index: np.ndarray, width: int) -> np.ndarray:
        """The `labels` argument of the model for rows `index` padded to `width` tokens."""
        if self.token_labels is None:
            return self.labels[index]
        out = np.full((len(index), width), -100, dtype=np.int64)  # -100: ignored by the loss
        for i, row in enumerate(index):
            out[i, : len(self.token_labels[row])] = self.token_labels[row]
        return out

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per row, for length-grouped batching."""
        return np.fromiter((len(r) for r in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)


def read_split(path: str) -> TokenizedSplit:
    """Read a tokenized split written by the prepare step (a Parquet dir or file)."""
    names = pq.ParquetDataset(path).schema.names
    if "prompt_length" in names:  # generation
        table = pq.read_table(path, columns=["id", "input_ids", "token_labels", "prompt_length", "reference",
                                             "label_id"]).sort_by("id")
        return TokenizedSplit(
            input_ids=table.column("input_ids").to_pylist(), labels=table.column("label_id").to_numpy().astype(np.int64),
            ids=table.column("id").to_pylist(), token_labels=table.column("token_labels").to_pylist(),
            prompt_lengths=table.column("prompt_length").to_pylist(), references=table.column("reference").to_pylist(),
        )
    if "label_ids" in names:  # token classification
        table = pq.read_table(path, columns=["id", "input_ids", "label_ids", "word_ids", "word_tags"]).sort_by("id")
        return TokenizedSplit(
            input_ids=table.column("input_ids").to_pylist(), labels=np.full(table.num_rows, -1, dtype=np.int64),
            ids=table.column("id").to_pylist(), token_labels=table.column("label_ids").to_pylist(),
            word_ids=table.column("word_ids").to_pylist(), word_tags=table.column("word_tags").to_pylist(),
        )
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


def _global_batches(order: np.ndarray, global_batch: int, lengths: np.ndarray | None,
                    rng: np.random.Generator, group: int) -> list[np.ndarray]:
    """Cut a permutation into global batches, grouping rows of similar length when asked.

    With `lengths`, each run of `group` global batches is sorted by length
    before cutting, and the batch order is shuffled again, so padding shrinks
    while every epoch still sees a random order. Grouping happens at the
    global-batch level, so the rows of each optimizer step stay independent
    of how the batch is split over workers.
    """
    usable = (len(order) // global_batch) * global_batch
    order = order[:usable]
    if lengths is None:
        return [order[i : i + global_batch] for i in range(0, usable, global_batch)]
    batches: list[np.ndarray] = []
    span = global_batch * group
    for start in range(0, usable, span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + global_batch] for i in range(0, len(chunk), global_batch))
    return [batches[i] for i in rng.permutation(len(batches))]


def train_micro_batches(
    num_rows: int, epoch: int, seed: int, *, rank: int, world: int, micro: int, accum: int,
    lengths: np.ndarray | None = None, group: int = 32,
) -> Iterator[np.ndarray]:
    """Row indices of this worker's micro-batches for one epoch, in order."""
    rng = np.random.default_rng([seed, epoch])
    global_batch = micro * accum * world
    for batch in _global_batches(rng.permutation(num_rows), global_batch, lengths, rng, group):
        for micro_step in range(accum):
            start = micro_step * world * micro + rank * micro
            yield batch[start : start + micro]


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
