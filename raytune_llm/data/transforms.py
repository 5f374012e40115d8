"""Pure transforms over column batches: normalisation, stable ids, dedup, splits.

Nothing here imports Ray. The functions take and return `pyarrow.Table`s (or
plain arrays) so they can be unit-tested directly and wired into Ray Data's
`map_batches(batch_format="pyarrow")` by `pipeline.py`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# C0/C1 control characters except tab/newline (which become plain spaces below).
_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b\ufeff]")
_SPACE = re.compile(r"\s+")

SPLITS: tuple[str, ...] = ("train", "validation", "test")


def normalize_text(text: str | None) -> str:
    """NFKC-normalise, strip control characters and collapse whitespace.

    NFKC folds compatibility forms (full-width letters, ligatures, non-breaking
    spaces) so that the same sentence exported by two tools hashes the same.
    """
    if text is None:
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub("", text)
    return _SPACE.sub(" ", text).strip()


def stable_id(text: str, label_free: bool = True) -> str:
    """A row id that survives re-reads, re-orderings and re-sharding: a hash of the text.

    The label is deliberately left out so that the same text annotated twice
    with different labels gets the same id and lands in the same split.
    """
    del label_free  # documented choice, kept for readability at call sites
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def normalize_batch(batch: pa.Table) -> pa.Table:
    """Ray Data batch transform: normalised `text`, stripped `label` and an `id` column.

    `id` is the user's `source_id` where given, else `stable_id(text)`.
    """
    texts = [normalize_text(t) for t in batch.column("text").to_pylist()]
    labels = [str(x).strip() for x in batch.column("label").to_pylist()]
    given = batch.column("source_id").to_pylist() if "source_id" in batch.column_names else [None] * len(texts)
    ids = [str(g) if g not in (None, "") else stable_id(t) for g, t in zip(given, texts)]
    out = batch.set_column(batch.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))
    out = out.set_column(out.schema.get_field_index("label"), "label", pa.array(labels, pa.string()))
    return out.append_column("id", pa.array(ids, pa.string()))


def drop_empty_and_duplicates(table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Drop rows with empty text and repeated ids (first occurrence kept).

    Returns the kept rows and the counts of what was dropped and why, so the
    caller can report `read = kept + quarantined + dropped` (see `row_accounting`).
    A repeat whose label differs from the first occurrence is counted apart as an
    annotation conflict. Empty text is normally quarantined by the reader already
    (same `normalize_text` test); the count here covers tables built by other means.
    """
    non_empty = pc.greater(pc.utf8_length(table.column("text")), 0)
    kept = table.filter(non_empty)
    first_label: dict[str, str] = {}
    mask: list[bool] = []
    duplicates = conflicts = 0
    for row_id, label in zip(kept.column("id").to_pylist(), kept.column("label").to_pylist()):
        if row_id not in first_label:
            first_label[row_id] = label
            mask.append(True)
            continue
        mask.append(False)
        if first_label[row_id] == label:
            duplicates += 1
        else:
            conflicts += 1
    deduped = kept.filter(pa.array(mask, pa.bool_()))
    return deduped, {
        "empty_text": table.num_rows - kept.num_rows,
        "duplicate": duplicates,
        "conflicting_duplicate": conflicts,
    }


def row_accounting(read: int, kept: int, quarantined: int, dropped: Mapping[str, int]) -> dict[str, int]:
    """The `rows` of a manifest: `read = kept + quarantined + dropped_*`, checked.

    `read` counts every data row the reader saw; each one is kept, quarantined (unusable, with
    its reason in quarantine.jsonl) or dropped by cleaning (a duplicate id). A mismatch means a
    row vanished without a trace, which is a bug, so it raises instead of reporting it.
    """
    rows = {"read": read, "kept": kept, "quarantined": quarantined, **{f"dropped_{k}": v for k, v in dropped.items()}}
    if read != kept + quarantined + sum(dropped.values()):
        raise ValueError(f"row accounting does not balance: {rows}")
    return rows


def _hash_rank(row_id: str, seed: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{row_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign_splits(
    ids: Iterable[str], labels: Iterable[str], fractions: Mapping[str, float], seed: int
) -> np.ndarray:
    """Stratified, deterministic split assignment.

    Within each label, rows are ordered by a seeded hash of their id and cut at
    the cumulative fractions. The result depends only on the set of (id, label)
    pairs and the seed, never on file order or sharding, and each split's label
    mix matches the whole corpus to within one row per label.
    """
    ids = list(ids)
    labels = list(labels)
    out = np.empty(len(ids), dtype=object)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    for members in by_label.values():
        members.sort(key=lambda i: _hash_rank(ids[i], seed))
        bounds = np.round(np.cumsum([fractions[s] for s in names]) * len(members)).astype(int)
        start = 0
        for name, stop in zip(names, bounds):
            for index in members[start:stop]:
                out[index] = name
            start = stop
        for index in members[start:]:  # rounding remainder goes to the last split
            out[index] = names[-1]
    return out


def label_counts(labels: Iterable[str]) -> dict[str, int]:
    """Counts per label, sorted by label for stable reports."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))
