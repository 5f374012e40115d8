"""Sequence packing: several tokenized examples per training row, attention kept within each.

Instruction data is ragged (a one-line answer next to a page of text), so padding every row
to the longest in its batch wastes most of the compute. Packing fills each row of
`max_length` tokens with whole examples instead. Two things keep the examples independent:
- `position_ids` restart at 0 for every example, so each sees the positions it would alone;
- the attention mask is block-diagonal and causal (`segment_mask`): a token attends only to
  earlier tokens of its own example, never across a boundary.
An example's first token gets label -100: Hugging Face models shift labels by one, so it would
otherwise be predicted from the previous example's last token. Trailing padding forms its own
segment with labels -100, so it never reaches the loss and
never gives a softmax row with nothing to attend to (which would produce NaNs).

Nothing here imports Ray; `pack_examples` runs on plain lists and is deterministic.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy skips

__all__ = ["IGNORE_INDEX", "PackedBatch", "PackingStats", "pack_examples", "packed_batch", "packing_stats",
           "padded_batch", "segment_mask"]


@dataclass(frozen=True)
class PackingStats:
    """How full the rows are: the share of real tokens with and without packing."""

    examples: int
    rows_packed: int
    real_tokens: int
    padded_tokens: int  # row slots if every example were padded to its batch's longest
    packed_tokens: int  # row slots with packing (rows × max_length)

    @property
    def padded_share(self) -> float:
        """Real tokens / slots when each example gets its own row, padded to its batch's longest."""
        return self.real_tokens / max(self.padded_tokens, 1)

    @property
    def packed_share(self) -> float:
        """Real tokens / slots when examples are packed into rows of `max_length`."""
        return self.real_tokens / max(self.packed_tokens, 1)


def pack_examples(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Group example indices into rows of at most `max_length` tokens (best-fit decreasing).

    Longest first, each example goes to the open row with the least room that still fits it,
    which leaves few, full rows; ties resolve by index, so the result depends only on the
    lengths. An example longer than `max_length` is a bug upstream (tokenization truncates), so
    it raises rather than being cut here.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    rows: list[list[int]] = []
    # Open rows as a sorted list of (room left, row number): bisect finds the best fit in log time.
    room: list[tuple[int, int]] = []
    for index in order:
        length = int(lengths[index])
        if length > max_length:
            raise ValueError(f"example {index} has {length} tokens, more than max_length {max_length}")
        if length == 0:
            raise ValueError(f"example {index} has no tokens")
        slot = bisect.bisect_left(room, (length, -1))
        if slot == len(room):
            rows.append([index])
            left, row = max_length - length, len(rows) - 1
        else:
            left, row = room.pop(slot)
            rows[row].append(index)
            left -= length
        if left > 0:
            bisect.insort(room, (left, row))
    return rows


@dataclass(frozen=True)
class PackedBatch:
    """Model inputs for a batch of rows (numpy; the training step moves them to torch)."""

    input_ids: np.ndarray  # (rows, width)
    labels: np.ndarray  # (rows, width), IGNORE_INDEX where no loss is taken
    position_ids: np.ndarray  # (rows, width), restarting at 0 for each example
    segments: np.ndarray  # (rows, width): 1, 2, ... per example in the row; 0 for padding
    real_tokens: int


def packed_batch(rows: Sequence[Sequence[int]], input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]],
                 pad_id: int, width: int | None = None) -> PackedBatch:
    """Lay out packed rows: the examples of each row one after another, then padding.

    `rows` is (part of) what `pack_examples` returned; `input_ids[i]` / `labels[i]` are example
    i's tokens and per-token labels (IGNORE_INDEX on prompt tokens). `width` defaults to the
    longest row of this batch.
    """
    sizes = [sum(len(input_ids[i]) for i in row) for row in rows]
    width = width or max(sizes)
    shape = (len(rows), width)
    ids = np.full(shape, pad_id, dtype=np.int64)
    lab = np.full(shape, IGNORE_INDEX, dtype=np.int64)
    pos = np.zeros(shape, dtype=np.int64)
    seg = np.zeros(shape, dtype=np.int64)
    for r, row in enumerate(rows):
        at = 0
        for s, index in enumerate(row, start=1):
            n = len(input_ids[index])
            ids[r, at:at + n] = input_ids[index]
            lab[r, at:at + n] = labels[index]
            # The model shifts labels by one, so an example's first label would be predicted from
            # the previous example's last token: ignore it (alone, nothing predicts it either).
            lab[r, at] = IGNORE_INDEX
            pos[r, at:at + n] = np.arange(n)
            seg[r, at:at + n] = s
            at += n
        pos[r, at:] = np.arange(width - at)  # padding: its own segment, positions of its own
    return PackedBatch(ids, lab, pos, seg, int(sum(sizes)))


def padded_batch(examples: Sequence[int], input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]],
                 pad_id: int) -> PackedBatch:
    """The unpacked baseline: one example per row, right-padded to the longest of the batch."""
    return packed_batch([[i] for i in examples], input_ids, labels, pad_id)


def segment_mask(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A 4D additive attention mask (rows, 1, width, width): causal and within one segment only.

    Passed to a Hugging Face decoder as `attention_mask`, a 4D mask is used as given (eager and
    SDPA attention). 0 where attention is allowed, the dtype's minimum where it is not. Padding
    (segment 0) attends only to padding, so no softmax row is empty.
    """
    import torch

    width = segments.shape[-1]
    same = segments[:, :, None] == segments[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool, device=segments.device).tril()
    allowed = (same & causal)[:, None, :, :]
    zero = torch.zeros((), dtype=dtype, device=segments.device)
    blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=segments.device)
    return torch.where(allowed, zero, blocked)


def packing_stats(lengths: Sequence[int], max_length: int, batch_rows: int) -> PackingStats:
    """Real-token shares of the padded layout (batches of `batch_rows` examples in data order,
    each padded to its longest) and the packed layout (rows of `max_length`)."""
    lengths = [int(n) for n in lengths]
    padded = sum(max(lengths[i:i + batch_rows]) * len(lengths[i:i + batch_rows])
                 for i in range(0, len(lengths), batch_rows))
    rows = pack_examples(lengths, max_length)
    return PackingStats(len(lengths), len(rows), sum(lengths), padded, len(rows) * max_length)
