"""What the format readers share: their result type, file loading and table building."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from raytune_llm.data.parsers import Decoded, decode
from raytune_llm.data.quarantine import Quarantined
from raytune_llm.data.sources import SourceFile, check_content, resolve_files

__all__ = ["SPAN_TYPE", "FormatResult", "load_files", "merge_stats", "table_of"]

#: One character span: `text[start:end]` is an entity of type `label`.
SPAN_TYPE = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("label", pa.string())])


@dataclass(frozen=True)
class FormatResult:
    """Usable records as a table, the quarantined ones, and counts worth reporting.

    Every data unit a reader sees (row, sentence, task, instance) ends up either in `table`
    or in `quarantine`, so `read == table.num_rows + len(quarantine)`.
    """

    table: pa.Table
    quarantine: list[Quarantined]
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def read(self) -> int:
        """Data units seen."""
        return int(self.table.num_rows) + len(self.quarantine)


def load_files(path: str, fmt: str, encoding: str, extensions: Collection[str]) -> list[tuple[SourceFile, Decoded]]:
    """Every file `path` names (a directory: those ending in `extensions`), checked and decoded."""
    loaded = []
    for file in resolve_files(path, extensions):
        data = file.read_bytes()
        check_content(data, fmt, file.display, f"data.format={fmt}", encoding)
        loaded.append((file, decode(data, encoding, file.display)))
    return loaded


def table_of(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """`rows` as a table with exactly `schema` (also when there are no rows)."""
    return pa.Table.from_pylist(list(rows), schema=schema)


def merge_stats(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """`total` with the counts of `more` added in place; returned for chaining."""
    for key, value in more.items():
        total[key] = total.get(key, 0) + value
    return total
