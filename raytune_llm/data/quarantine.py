"""Rows that cannot be used: kept aside with the reason, never dropped silently.

Every reader returns its good rows together with a list of `Quarantined` records, one per
data row (or sentence, task, instance) it could not use: where it was (file and line), which
field, why, and the raw line, truncated. The pipeline writes them to
`prepared/quarantine.jsonl` and counts them, so `read = kept + quarantined + dropped` always
balances. With `data.strict=true` any quarantined row stops the run instead, with the message
`strict_error` builds (first few rows per reason, and the total).

The quarantine travels with the table that `readers.read_records` returns, in the Arrow schema
metadata (`attach` / `detach`): whoever hands the table on (the CLI's preflight to the pipeline)
cannot lose it by accident.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from raytune_llm.errors import DataError

__all__ = [
    "QUARANTINE_FILE", "Quarantined", "attach", "clip", "describe", "detach", "kind_counts",
    "strict_error", "write_quarantine",
]

QUARANTINE_FILE = "quarantine.jsonl"
RAW_CHARS = 300  # enough to recognise a row; a whole document would bloat the file
MAX_EXAMPLES = 5  # rows shown per reason in an error; the total is always given

_QUARANTINE_KEY = b"raytune_llm.quarantine"
_STATS_KEY = b"raytune_llm.read_stats"


@dataclass(frozen=True)
class Quarantined:
    """One unusable data row: where it is, which field, why, and what it looked like.

    `kind` is a stable code for counting (`unknown_label`, `invalid_json`, ...); `reason` is the
    sentence a person reads, with the fix, the same for every row of a kind in one read;
    `detail` is what is specific to this row (the bad value, the offending token).
    """

    source: str
    line: int
    field: str
    kind: str
    reason: str
    detail: str = ""
    raw: str = ""

    @property
    def where(self) -> str:
        """`file:line`, the form editors and terminals turn into a link."""
        return f"{self.source}:{self.line}"

    def as_dict(self) -> dict[str, Any]:
        """The record as one JSON-ready object (one line of quarantine.jsonl)."""
        return asdict(self)


def clip(raw: str, limit: int = RAW_CHARS) -> str:
    """`raw` cut to `limit` characters, marked with an ellipsis when it was cut."""
    return raw if len(raw) <= limit else raw[: limit - 1] + "\u2026"


def kind_counts(records: Iterable[Quarantined]) -> dict[str, int]:
    """How many records of each kind, sorted by kind for stable reports."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record.kind] = counts.get(record.kind, 0) + 1
    return dict(sorted(counts.items()))


def describe(records: Sequence[Quarantined], limit: int = MAX_EXAMPLES) -> str:
    """Records grouped by reason: `N row(s): reason` and the first `limit` places of each."""
    by_reason: dict[str, list[Quarantined]] = {}
    for record in records:
        by_reason.setdefault(record.reason, []).append(record)
    sections = []
    for reason, group in by_reason.items():
        lines = [f"{len(group)} row(s): {reason}"]
        for record in group[:limit]:
            detail = f": {record.detail}" if record.detail else ""
            lines.append(f"  {record.where}: {record.field}{detail}")
        if len(group) > limit:
            lines.append(f"  ... and {len(group) - limit} more")
        sections.append("\n".join(lines))
    return "\n".join(sections)


def strict_error(records: Sequence[Quarantined], path: str) -> DataError:
    """The error `data.strict=true` raises when `path` had any quarantined row."""
    header = (
        f"data.strict=true and {len(records)} row(s) of {path} cannot be used; fix them, or set "
        "data.strict=false to train on the rest (they are then written to prepared/quarantine.jsonl)"
    )
    return DataError(f"{header}\n{describe(records)}")


def write_quarantine(path: Path, records: Iterable[Quarantined]) -> Path:
    """Write one JSON object per record to `path` (created even when there are none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.as_dict(), ensure_ascii=False) + "\n")
    return path


def attach(table: pa.Table, records: Sequence[Quarantined], stats: Mapping[str, int] | None = None) -> pa.Table:
    """`table` carrying `records` (and reader statistics) in its schema metadata."""
    metadata = dict(table.schema.metadata or {})
    metadata[_QUARANTINE_KEY] = json.dumps([r.as_dict() for r in records]).encode()
    metadata[_STATS_KEY] = json.dumps(dict(stats or {})).encode()
    return table.replace_schema_metadata(metadata)


def detach(table: pa.Table) -> tuple[pa.Table, list[Quarantined], dict[str, int]]:
    """The table without our metadata, the quarantine and the statistics `attach` stored."""
    metadata = dict(table.schema.metadata or {})
    records = [Quarantined(**r) for r in json.loads(metadata.pop(_QUARANTINE_KEY, b"[]"))]
    stats = json.loads(metadata.pop(_STATS_KEY, b"{}"))
    return table.replace_schema_metadata(metadata or None), records, stats
