"""The cleaning steps of `prepare` beyond exact duplicates: PII, near-duplicates, leakage.

Each step takes and returns an Arrow table plus counts, so the pipeline can keep its
row accounting balanced (`read = kept + quarantined + dropped_*`) and write what it
removed where a person can look at it. The algorithms live in `near_dup` and `pii`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.transforms import normalize_batch

CONFLICTS_FILE = "annotation_conflicts.jsonl"
_PII_PREFIX = "_pii_"


def pii_kinds(cfg: DataConfig) -> tuple[str, ...]:
    """The PII kinds `data.redact_pii` asks for (none when it is false)."""
    from raytune_llm.data.pii import KINDS

    if cfg.redact_pii is True:
        return KINDS
    return tuple(cfg.redact_pii) if cfg.redact_pii else ()


def redact_and_normalize(batch: pa.Table, kinds: tuple[str, ...]) -> pa.Table:
    """Ray Data batch transform: redact PII first (so the row id hashes the redacted text), then normalise.

    Hits per kind travel as `_pii_<kind>` columns, summed on the driver by `pop_pii_counts`.
    """
    if kinds:
        from raytune_llm.data.pii import redact_text

        texts, counts = [], {k: [] for k in kinds}
        for text in batch.column("text").to_pylist():
            redacted, hits = redact_text(text or "", kinds)
            texts.append(redacted if text is not None else None)
            for kind in kinds:
                counts[kind].append(hits.get(kind, 0))
        batch = batch.set_column(batch.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))
        for kind in kinds:
            batch = batch.append_column(_PII_PREFIX + kind, pa.array(counts[kind], pa.int64()))
    return normalize_batch(batch)


def pop_pii_counts(table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Remove the `_pii_*` columns and return their totals."""
    import pyarrow.compute as pc

    counts: dict[str, int] = {}
    for name in [c for c in table.column_names if c.startswith(_PII_PREFIX)]:
        counts[name.removeprefix(_PII_PREFIX)] = int(pc.sum(table.column(name)).as_py() or 0)
        table = table.drop_columns([name])
    return table, counts


def drop_near_duplicates(table: pa.Table, cfg: DataConfig, root: Path) -> tuple[pa.Table, dict[str, int]]:
    """Keep one row per near-duplicate group; write label conflicts to `annotation_conflicts.jsonl`."""
    from raytune_llm.data.near_dup import dedupe_plan

    conflicts_file = root / CONFLICTS_FILE
    if cfg.near_dup_threshold is None or table.num_rows < 2:
        conflicts_file.write_text("")
        return table, {"near_duplicate": 0, "near_duplicate_conflict": 0}
    plan = dedupe_plan(table.column("id").to_pylist(), table.column("text").to_pylist(),
                       table.column("label").to_pylist(), cfg.near_dup_threshold,
                       conflict_policy=cfg.conflict_policy)
    conflicts_file.write_text("".join(json.dumps(asdict(group)) + "\n" for group in plan.conflicts))
    return table.take(pa.array(plan.keep, pa.int64())), {"near_duplicate": len(plan.near_duplicate),
                                                         "near_duplicate_conflict": len(plan.conflict)}


def drop_leaks(table: pa.Table, cfg: DataConfig) -> tuple[pa.Table, int, dict[str, int]]:
    """Remove train rows that near-duplicate a validation or test row (held-out rows stay)."""
    import pyarrow.compute as pc

    from raytune_llm.data.near_dup import remove_leaks

    if not cfg.leakage_check or cfg.near_dup_threshold is None:
        return table, 0, {}
    splits = table.column("split")
    train = table.filter(pc.equal(splits, "train"))
    heldout = {name: table.filter(pc.equal(splits, name)).column("text").to_pylist()
               for name in ("validation", "test")}
    result = remove_leaks(train.column("text").to_pylist(), heldout, cfg.near_dup_threshold)
    if not result.removed:
        return table, 0, {}
    keep = train.take(pa.array(result.keep, pa.int64()))
    rest = table.filter(pc.not_equal(splits, "train"))
    return pa.concat_tables([keep, rest]), len(result.removed), result.by_split
