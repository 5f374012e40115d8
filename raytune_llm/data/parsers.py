"""Bytes to records: decoding and the line-level parsers (JSON lines/arrays, CSV, PhraseBank, Parquet).

Each parser returns a `Parsed`: the column names it saw, one `RawRecord` per data row (with
its line and raw text, for messages and the quarantine) and a `Quarantined` entry for every row
it could not parse at all. Problems that concern the whole file (not what its extension says,
a JSON array that breaks off) raise a `DataError` instead: no row of such a file can be trusted.

Line numbers count `\\n` only (not U+2028 and friends, which `str.splitlines` also breaks on),
so that they agree with every editor.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raytune_llm.data.quarantine import Quarantined, clip
from raytune_llm.errors import DataError

__all__ = [
    "Decoded", "Parsed", "RawRecord", "csv_records", "decode", "json_values", "jsonl_records",
    "parquet_records", "phrasebank_records",
]

INVALID_JSON = "not valid JSON (truncated?); fix: repair or remove the line"
NOT_OBJECT = "the JSON value is not an object; fix: one {...} per line"


@dataclass(frozen=True)
class Decoded:
    """A file's text; `bad_lines` did not decode and hold U+FFFD where their bytes were."""

    text: str
    bad_lines: frozenset[int] = frozenset()
    reason: str = ""  # what to tell the user about the bad lines (empty when there are none)


@dataclass(frozen=True)
class RawRecord:
    """One data row as parsed: first and last physical line, raw text, fields by column name."""

    line: int
    end: int
    raw: str
    fields: dict[str, Any]


@dataclass
class Parsed:
    """What a parser found in one file."""

    columns: list[str] = field(default_factory=list)
    records: list[RawRecord] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)


def decode(data: bytes, encoding: str, display: str) -> Decoded:
    """`data` as text; lines that do not decode get U+FFFD and are listed, not fatal.

    One stray byte should cost its row, not the file. UTF-16/32 cannot be split into lines as
    bytes, so there an undecodable file is a file-level error.
    """
    try:
        return Decoded(data.decode(encoding).removeprefix("\ufeff"))  # a BOM would glue onto a column name
    except UnicodeDecodeError as exc:
        if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
            line = data.count(b"\n", 0, exc.start) + 1
            raise DataError(f"{display}:{line}: bytes do not decode as {encoding}; check data.encoding") from None
    # latin-1 decodes any byte and is what most non-UTF-8 corpora turn out to be.
    suggestion = "utf-8" if codecs.lookup(encoding).name != "utf-8" and _decodes(data, "utf-8") else "latin-1"
    bad = frozenset(n for n, raw in enumerate(data.split(b"\n"), start=1) if not _decodes(raw, encoding))
    reason = (
        f"bytes that do not decode as {encoding} (data.encoding); "
        f"fix: set data.encoding={suggestion} or re-save the file as {encoding}"
    )
    text = data.decode(encoding, errors="replace").removeprefix("\ufeff")
    return Decoded(text, bad, reason)


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _quarantine(display: str, line: int, field_name: str, kind: str, reason: str, detail: str, raw: str) -> Quarantined:
    return Quarantined(display, line, field_name, kind, reason, detail, clip(raw))


# JSON ---------------------------------------------------------------------------------------
def json_values(decoded: Decoded, display: str, told_by: str) -> tuple[list[RawRecord], list[Quarantined]]:
    """Every top-level value of a JSON array file or a JSON-lines file, with its line.

    Values come back under the key `"value"` of `RawRecord.fields`. In JSON lines a line that
    does not parse is quarantined; a JSON array that does not parse is a file-level error,
    since nothing after the break can be located.
    """
    text = decoded.text
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _array_items(text, len(text) - len(stripped), display), []
    records: list[RawRecord] = []
    quarantine: list[Quarantined] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            value: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            if not records and not quarantine and not line.startswith("{"):
                raise DataError(
                    f"file is not what {told_by} says: {display}:{number} is not JSON; "
                    "JSON lines need one object per line, or the whole file one JSON array"
                ) from None
            undecodable = number in decoded.bad_lines
            kind, reason = ("undecodable", decoded.reason) if undecodable else ("invalid_json", INVALID_JSON)
            quarantine.append(_quarantine(display, number, "line", kind, reason,
                                          f"{exc.msg} (column {exc.colno})", line))
            continue
        records.append(RawRecord(number, number, line, {"value": value}))
    return records, quarantine


def _array_items(text: str, start: int, display: str) -> list[RawRecord]:
    """The items of the JSON array that opens at `start`, each with the line it starts on."""
    decoder = json.JSONDecoder()
    items: list[RawRecord] = []
    position, line, counted = start + 1, 1, 0
    while True:
        position = _skip_space(text, position)
        if position < len(text) and text[position] == "]":
            break
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise DataError(f"{display}:{exc.lineno}: the JSON array breaks off here ({exc.msg}, "
                            f"column {exc.colno}); repair the file (a truncated download?)") from None
        line += text.count("\n", counted, position)
        counted = position
        items.append(RawRecord(line, line + text.count("\n", position, end), text[position:end], {"value": value}))
        position = _skip_space(text, end)
        if position < len(text) and text[position] == ",":
            position += 1
        elif position >= len(text) or text[position] != "]":
            lineno = text.count("\n", 0, position) + 1
            raise DataError(f"{display}:{lineno}: the JSON array breaks off here (expected ',' or ']'); "
                            "repair the file (a truncated download?)")
    return items


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def jsonl_records(decoded: Decoded, display: str, told_by: str) -> Parsed:
    """JSON objects, one per line or as one array; anything else on a line is quarantined."""
    values, quarantine = json_values(decoded, display, told_by)
    parsed = Parsed(quarantine=quarantine)
    columns: dict[str, None] = {}  # an ordered set: keys in order of first appearance
    for item in values:
        value = item.fields["value"]
        if isinstance(value, dict):
            parsed.records.append(RawRecord(item.line, item.end, item.raw, value))
            columns.update(dict.fromkeys(value))
        else:
            parsed.quarantine.append(_quarantine(display, item.line, "line", "not_object", NOT_OBJECT,
                                                 type(value).__name__, item.raw))
    parsed.columns = list(columns)
    return parsed


# CSV, PhraseBank, Parquet -------------------------------------------------------------------
def csv_records(decoded: Decoded, display: str, delimiter: str) -> Parsed:
    """Rows of a delimited file with a header; rows that do not fit the header are quarantined."""
    # strict=True turns quoting mistakes (text after a closing quote, a quote left open at the
    # end of the file) into errors instead of silently merged rows; the reader resumes after one.
    reader = csv.reader(io.StringIO(decoded.text, newline=""), delimiter=delimiter, strict=True)
    lines = decoded.text.split("\n")
    parsed = Parsed()
    start = 1  # physical line where the next record begins; quoted fields may span lines
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            reason = f"malformed CSV quoting; fix: check the quotes on this line and data.delimiter (now {delimiter!r})"
            raw = "\n".join(lines[start - 1:reader.line_num])
            parsed.quarantine.append(_quarantine(display, start, "row", "bad_csv_row", reason, str(exc), raw))
            start = reader.line_num + 1
            continue
        raw = "\n".join(lines[start - 1:reader.line_num])
        _csv_row(parsed, fields, display, delimiter, start, reader.line_num, raw)
        start = reader.line_num + 1
    return parsed


def _csv_row(parsed: Parsed, fields: list[str], display: str, delimiter: str, start: int, end: int, raw: str) -> None:
    """File one CSV row as the header, a record, or a quarantined row."""
    if not any(f.strip() for f in fields):
        return  # blank line
    if not parsed.columns:
        parsed.columns = [name.strip() for name in fields]
    elif len(fields) != len(parsed.columns):
        reason = (f"number of fields differs from the header (an unquoted {delimiter!r} inside a field?); "
                  "fix: quote the field or check data.delimiter")
        detail = f"{len(fields)} fields, header has {len(parsed.columns)}"
        parsed.quarantine.append(_quarantine(display, start, "row", "bad_csv_row", reason, detail, raw))
    else:
        parsed.records.append(RawRecord(start, end, raw, dict(zip(parsed.columns, fields))))


def phrasebank_records(decoded: Decoded, display: str, text_column: str, label_column: str) -> Parsed:
    """Financial PhraseBank `sentence@label` lines, split on the last '@'."""
    parsed = Parsed(columns=[text_column, label_column])
    for number, raw in enumerate(decoded.text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        # The LAST '@' separates the label: sentences themselves may contain '@'.
        sentence, at, label = line.rpartition("@")
        if at:
            parsed.records.append(RawRecord(number, number, line, {text_column: sentence, label_column: label}))
        else:
            reason = "no '@' before the label (phrasebank lines are `sentence@label`); fix the line or set data.format"
            parsed.quarantine.append(_quarantine(display, number, "line", "no_separator", reason, "", line))
    return parsed


def parquet_records(data: bytes, display: str, told_by: str, wanted: Collection[str]) -> Parsed:
    """Rows of a Parquet file (only the `wanted` columns are decoded); line = row number."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        columns = list(parquet.schema_arrow.names)
        # Only the columns we use are decoded; wide Parquet files can carry much more.
        table = parquet.read(columns=[c for c in wanted if c in columns])
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"file is not what {told_by} says: {display} is bad Parquet ({exc})") from None
    records = [RawRecord(i + 1, i + 1, json.dumps(row, default=str), row) for i, row in enumerate(table.to_pylist())]
    return Parsed(columns, records)
