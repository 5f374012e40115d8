"""Pure data transforms: normalisation, ids, dedup accounting, deterministic stratified splits."""

from __future__ import annotations

import collections

import pyarrow as pa

from raytune_llm.data.transforms import assign_splits, drop_empty_and_duplicates, normalize_batch, normalize_text


def test_normalize_text_folds_width_controls_and_spaces() -> None:
    assert normalize_text("  Ｈｅｌｌｏ\u00a0\tworld\u0007\n ") == "Hello world"
    assert normalize_text(None) == ""


def test_normalize_batch_adds_stable_ids_and_keeps_given_ids() -> None:
    batch = pa.table({"text": [" a  b", "a b", "c"], "label": [" x", "x", "y"], "source_id": [None, None, "id-7"]})
    out = normalize_batch(batch)
    ids = out.column("id").to_pylist()
    assert ids[0] == ids[1], "the same normalised text must get the same id"
    assert ids[2] == "id-7"
    assert out.column("label").to_pylist() == ["x", "x", "y"]


def test_drop_counts_balance_read_rows() -> None:
    table = normalize_batch(pa.table({"text": ["a", "a", "a", "", "b"], "label": ["x", "x", "y", "x", "y"],
                                      "source_id": [None] * 5}))
    kept, dropped = drop_empty_and_duplicates(table)
    assert dropped == {"empty_text": 1, "duplicate": 1, "conflicting_duplicate": 1}
    assert kept.num_rows + sum(dropped.values()) == table.num_rows
    assert kept.column("text").to_pylist() == ["a", "b"]


def _corpus(n: int) -> tuple[list[str], list[str]]:
    ids = [f"row-{i}" for i in range(n)]
    labels = ["neg" if i % 7 == 0 else "pos" if i % 3 == 0 else "neu" for i in range(n)]
    return ids, labels


def test_splits_are_deterministic_disjoint_and_stratified() -> None:
    ids, labels = _corpus(2000)
    fractions = {"train": 0.7, "validation": 0.1, "test": 0.2}
    first = assign_splits(ids, labels, fractions, seed=42)
    shuffled = list(zip(ids, labels))[::-1]
    second = assign_splits([i for i, _ in shuffled], [lab for _, lab in shuffled], fractions, seed=42)
    assert dict(zip(ids, first)) == dict(zip([i for i, _ in shuffled], second)), "order must not matter"
    assert set(first) == {"train", "validation", "test"}
    totals = collections.Counter(labels)
    for split, share in fractions.items():
        per_label = collections.Counter(lab for lab, s in zip(labels, first) if s == split)
        for label, total in totals.items():
            assert abs(per_label[label] - share * total) <= 1, (split, label)
    other_seed = assign_splits(ids, labels, fractions, seed=7)
    assert (other_seed != first).any()
