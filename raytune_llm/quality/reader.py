"""Read a long-format annotation table (one row per judgement) into checked triples.

`read_long_annotations` accepts TSV, CSV, JSON lines and Parquet (chosen by extension),
with the item, annotator and label columns named by the caller and an optional gold
column. Every row is accounted for: it becomes a triple, or it is skipped with a reason
(an empty label, or an exact repeat of an earlier row), or it stops the read with a
`DataError` that names the file, the line, the column and the fix. Problems are collected
and reported together, the first few lines of each kind plus a total, so one run shows
the whole picture. Files are read whole: annotation tables are small.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raytune_llm.errors import DataError

__all__ = ["FORMATS", "LongAnnotations", "read_long_annotations"]

#: File extension -> format.
FORMATS: Mapping[str, str] = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl",
                              ".parquet": "parquet"}

_MAX_EXAMPLES = 5
_Records = list[tuple[int, Mapping[str, Any]]]  # (1-based line, or row for Parquet; record)


@dataclass(frozen=True)
class LongAnnotations:
    """Triples read from one file, with the accounting of every data row.

    `lines[r]` is the source line (Parquet: row number) of `triples[r]` (empty for
    triples built in memory: `LongAnnotations("<memory>", triples)`); `skipped` maps a
    reason ("empty_label", "duplicate_annotation") to the lines skipped for it; `gold`
    maps item id to its gold label (empty without a gold column, or for items whose gold
    cells are all empty). `n_rows == len(triples) + sum of skipped lines`.
    """

    source: str
    triples: list[tuple[str, str, str]]
    lines: list[int] = field(default_factory=list)
    gold: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, list[int]] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        """Data rows read: used plus skipped."""
        return len(self.triples) + sum(len(lines) for lines in self.skipped.values())


class _Issues(dict[str, list[str]]):
    """Bad rows as {headline: [place, ...]}, raised together as one `DataError`."""

    def add(self, headline: str, where: str) -> None:
        """Record one offending row under `headline` (what is wrong and the fix)."""
        self.setdefault(headline, []).append(where)

    def raise_if_any(self) -> None:
        """Raise one `DataError` with the first few rows of each kind and their total, if any."""
        sections = []
        for headline, places in self.items():
            shown = [f"  {place}" for place in places[:_MAX_EXAMPLES]]
            more = [f"  ... and {len(places) - _MAX_EXAMPLES} more"] if len(places) > _MAX_EXAMPLES else []
            sections.append("\n".join([f"{len(places)} {headline}:", *shown, *more]))
        if sections:
            raise DataError("\n".join(sections))


def read_long_annotations(
    path: str | Path,
    item_column: str,
    annotator_column: str,
    label_column: str,
    gold_column: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> LongAnnotations:
    """Read a long-format annotation file into `(item_id, annotator_id, label)` triples.

    The format follows the extension (see `FORMATS`); `delimiter` overrides the CSV/TSV
    separator ("\\t" and "tab" mean a tab). Empty labels and exact repeats of a row are
    skipped and counted; a missing column, an empty item or annotator id, one annotator
    giving one item two different labels, or conflicting gold labels raise a `DataError`.
    """
    source = str(path)
    fmt = FORMATS.get(Path(source).suffix.lower())
    if fmt is None:
        raise DataError(f"{source}: unknown file type; use one of {', '.join(FORMATS)}")
    if not Path(source).is_file():
        raise DataError(f"{source}: no such file; check the path")
    issues = _Issues()
    columns, records = _records(Path(source), fmt, delimiter, encoding, issues)
    wanted = {"--item-column": item_column, "--annotator-column": annotator_column, "--label-column": label_column}
    if gold_column is not None:
        wanted["--gold-column"] = gold_column
    if records or columns:
        _check_columns(source, columns, wanted)
    result = _collect(source, records, item_column, annotator_column, label_column, gold_column, issues)
    issues.raise_if_any()
    if not result.triples:
        raise DataError(f"{source}: no usable annotations (empty file, only a header, or every label empty)")
    return result


def _records(path: Path, fmt: str, delimiter: str | None, encoding: str, issues: _Issues) -> tuple[list[str], _Records]:
    """Column names seen and the parsed records of one file."""
    if fmt == "parquet":
        return _parquet_records(path)
    data = path.read_bytes()
    try:
        text = data.decode(encoding).removeprefix("\ufeff")  # a BOM would glue itself to the first column
    except (UnicodeDecodeError, LookupError) as exc:
        line = data.count(b"\n", 0, exc.start) + 1 if isinstance(exc, UnicodeDecodeError) else 0
        raise DataError(f"{path}:{line}: bytes do not decode as {encoding!r}; pass encoding='latin-1' "
                        f"(--encoding latin-1) or re-save the file as UTF-8") from None
    if fmt == "jsonl":
        return _jsonl_records(text, str(path), issues)
    separator = delimiter if delimiter is not None else ("\t" if fmt == "tsv" else ",")
    separator = {"\\t": "\t", "tab": "\t"}.get(separator, separator)
    if len(separator) != 1:
        raise DataError(f"the delimiter must be one character (got {delimiter!r})")
    return _csv_records(text, str(path), separator, issues)


def _csv_records(text: str, source: str, delimiter: str, issues: _Issues) -> tuple[list[str], _Records]:
    # strict=True turns quoting mistakes into errors instead of silently merged rows.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    records: _Records = []
    start = 1  # physical line where the next record begins; quoted fields may span lines
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                pass  # a blank line holds no judgement
            elif header is None:
                header = [name.strip() for name in fields]
            elif len(fields) != len(header):
                issues.add(f"row(s) whose number of fields differs from the header; fix: quote fields that "
                           f"contain {delimiter!r} or pass the right delimiter",
                           f"{source}:{start}: {len(fields)} fields, header has {len(header)}")
            else:
                records.append((start, dict(zip(header, fields))))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{source}:{start}: malformed CSV ({exc}); check the quoting around this line") from None
    return header or [], records


def _jsonl_records(text: str, source: str, issues: _Issues) -> tuple[list[str], _Records]:
    records: _Records = []
    columns: dict[str, None] = {}  # ordered set of keys
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            issues.add("line(s) that are not valid JSON; fix: repair or remove them", f"{source}:{number}: {exc.msg}")
            continue
        if not isinstance(value, dict):
            issues.add("line(s) whose JSON is not an object; fix: one {...} per line", f"{source}:{number}")
            continue
        records.append((number, value))
        columns.update(dict.fromkeys(value))
    return list(columns), records


def _parquet_records(path: Path) -> tuple[list[str], _Records]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    return list(table.column_names), [(row + 1, record) for row, record in enumerate(table.to_pylist())]


def _check_columns(source: str, present: Sequence[str], wanted: Mapping[str, str]) -> None:
    """Raise if a named column is absent, listing what is there and the flag to change."""
    problems = []
    for flag, name in wanted.items():
        if name not in present:
            close = difflib.get_close_matches(name, present, n=1)
            fix = f"did you mean {close[0]!r}? pass {flag} {close[0]}" if close else f"pass {flag} with one below"
            problems.append(f"{source}: missing column {name!r} ({flag}); {fix}")
    if problems:
        raise DataError("\n".join([*problems, f"  columns in {source}: {', '.join(map(repr, present))}"]))


def _cell(value: Any) -> str | None:
    """A cell as text, None when missing or blank; 1.0 reads as "1" (integers next to a NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _collect(
    source: str, records: _Records, item_column: str, annotator_column: str, label_column: str,
    gold_column: str | None, issues: _Issues,
) -> LongAnnotations:
    """Turn records into triples, skipping and counting what cannot be used, filing errors in `issues`."""
    triples: list[tuple[str, str, str]] = []
    lines: list[int] = []
    skipped: dict[str, list[int]] = {}
    first: dict[tuple[str, str], tuple[str, int]] = {}  # (item, annotator) -> (label, line)
    gold: dict[str, tuple[str, int]] = {}  # item -> (gold label, line)
    for line, record in records:
        where = f"{source}:{line}"
        item, annotator = _cell(record.get(item_column)), _cell(record.get(annotator_column))
        if item is None or annotator is None:
            column = item_column if item is None else annotator_column
            issues.add(f"row(s) with an empty id in column {column!r}; fix: fill it in or remove the row", where)
            continue
        if gold_column is not None:
            _note_gold(gold, item, _cell(record.get(gold_column)), line, where, gold_column, issues)
        label = _cell(record.get(label_column))
        earlier = first.get((item, annotator))
        if label is None:
            skipped.setdefault("empty_label", []).append(line)
        elif earlier is None:
            first[(item, annotator)] = (label, line)
            triples.append((item, annotator, label))
            lines.append(line)
        elif earlier[0] == label:
            skipped.setdefault("duplicate_annotation", []).append(line)  # the same judgement exported twice
        else:
            issues.add("row(s) where one annotator gave one item a second, different label; "
                       "fix: keep one label per annotator per item",
                       f"{where}: item {item!r}, annotator {annotator!r}: {label!r} here, "
                       f"{earlier[0]!r} on line {earlier[1]}")
    used_items = {item for item, _, _ in triples}
    return LongAnnotations(source=source, triples=triples, lines=lines, skipped=skipped,
                           gold={item: value for item, (value, _) in gold.items() if item in used_items})


def _note_gold(
    gold: dict[str, tuple[str, int]], item: str, value: str | None, line: int, where: str, column: str,
    issues: _Issues,
) -> None:
    """Remember an item's gold label; two different gold labels for one item are an error."""
    if value is None:
        return  # gold may be given on one row of the item only
    earlier = gold.setdefault(item, (value, line))
    if earlier[0] != value:
        issues.add(f"row(s) giving an item a different gold label (column {column!r}) than an earlier row; "
                   "fix: one gold label per item",
                   f"{where}: item {item!r}: {value!r} here, {earlier[0]!r} on line {earlier[1]}")
