"""Read an annotated corpus (JSONL, CSV/TSV, Parquet, Financial PhraseBank) into one Arrow table.

`read_records` is the only public entry point. It is a plain function (no Ray) so that
every input problem can be tested, and explained, on a laptop. The table it returns has
exactly the columns of `OUTPUT_SCHEMA`; cleaning, de-duplication and splitting happen
later in the pipeline, so text is passed through raw.

Bad input raises a `DataError` whose message is the user interface: file and line, the
config key to change and, for row problems, the first few offending lines plus the total,
so one run shows the whole picture. Files are read whole into memory: annotated corpora
are small next to the models trained on them, and it keeps line numbers exact.

Finding the files and telling their format live in `raytune_llm.data.sources`;
`SUPPORTED_EXTENSIONS` is re-exported here.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.sources import (
    SUPPORTED_EXTENSIONS,
    SourceFile,
    check_content,
    format_of,
    resolve_files,
)
from raytune_llm.errors import DataError

__all__ = ["OUTPUT_SCHEMA", "SUPPORTED_EXTENSIONS", "read_records"]

#: The columns of every table `read_records` returns, in this order.
OUTPUT_SCHEMA = pa.schema(
    [("text", pa.string()), ("label", pa.string()), ("source_id", pa.string()),
     ("_source", pa.string()), ("_line", pa.int64())]
)

_MAX_EXAMPLES = 5  # offending lines shown per kind of problem; the total is always given

# One output row: text, label, source_id, _source, _line (the order of OUTPUT_SCHEMA).
_Row = tuple[str, str, str | None, str, int]
# What every parser returns: (1-based line, record keyed by column name).
_Records = list[tuple[int, Mapping[str, Any]]]


class _Issues(dict[str, list[str]]):
    """Bad rows as {headline: ["file:line ...", ...]}; a headline says what is wrong and the fix.

    Collected rather than raised at once, so that one error lists every kind of problem
    with its total count instead of making the user fix and rerun one line at a time.
    """

    def add(self, headline: str, where: str) -> None:
        """Record one offending row under `headline`."""
        self.setdefault(headline, []).append(where)

    def raise_if_any(self) -> None:
        """Raise one `DataError` showing the first few rows of each kind, or return if none."""
        sections = []
        for headline, places in self.items():
            lines = [f"{len(places)} {headline}:", *(f"  {where}" for where in places[:_MAX_EXAMPLES])]
            if len(places) > _MAX_EXAMPLES:
                lines.append(f"  ... and {len(places) - _MAX_EXAMPLES} more")
            sections.append("\n".join(lines))
        if sections:
            raise DataError("\n".join(sections))


def read_records(cfg: DataConfig) -> pa.Table:
    """Read every file that `cfg.path` names into one table with `OUTPUT_SCHEMA`.

    `cfg.path` may be a file, a directory (its files with a supported extension, in
    sorted order) or a glob, either local or a URI that `pyarrow.fs` understands.
    Rows with empty text are kept (the pipeline counts and drops them); every other
    problem raises a `DataError` that says where it is and what to change.
    """
    try:
        codecs.lookup(cfg.encoding)
    except LookupError:
        raise DataError(f"unknown encoding {cfg.encoding!r} in data.encoding; try utf-8 or latin-1") from None
    issues = _Issues()
    rows: list[_Row] = []
    for file in resolve_files(cfg.path):
        _read_file(file, cfg, rows, issues)
    issues.raise_if_any()
    if not rows:
        raise DataError(f"no rows in {cfg.path}: empty, or only a header or blank lines; check data.path")
    arrays = [pa.array(values, type=spec.type) for values, spec in zip(zip(*rows), OUTPUT_SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=OUTPUT_SCHEMA)


# One file -----------------------------------------------------------------------------------
def _read_file(file: SourceFile, cfg: DataConfig, rows: list[_Row], issues: _Issues) -> None:
    """Parse one file and append its valid rows to `rows`, its bad rows to `issues`."""
    fmt, told_by = format_of(file.display, cfg)
    data = file.read_bytes()
    check_content(data, fmt, file.display, told_by, cfg.encoding)
    delimiter = _delimiter(cfg, fmt) if fmt in ("csv", "tsv") else None
    if fmt == "parquet":
        columns, records = _parquet_records(data, file.display, told_by, cfg)
    else:
        text = _decode(data, cfg.encoding, file.display, issues)
        if text is None:
            return  # undecodable lines are already reported; parsing garbage adds noise
        if fmt == "jsonl":
            columns, records = _jsonl_records(text, file.display, told_by, issues)
        elif fmt == "phrasebank":
            columns, records = _phrasebank_records(text, file.display, cfg, issues)
        else:
            columns, records = _csv_records(text, file.display, delimiter or ",", issues)
    if columns:
        _check_columns(cfg, columns, file.display, delimiter)
    for line, record in records:
        _add_record(cfg, record, file.display, line, rows, issues)


def _delimiter(cfg: DataConfig, fmt: str) -> str:
    delimiter = cfg.delimiter if cfg.delimiter is not None else ("\t" if fmt == "tsv" else ",")
    # YAML users often write the two characters backslash-t; they mean a tab.
    delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
    if len(delimiter) != 1:
        raise DataError(f"data.delimiter must be one character: ',' ';' '\\t' ... (got {cfg.delimiter!r})")
    return delimiter


def _decode(data: bytes, encoding: str, display: str, issues: _Issues) -> str | None:
    """The file as text, or None after recording every line that does not decode."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        # latin-1 decodes any byte and is what most non-UTF-8 corpora turn out to be.
        is_utf8 = codecs.lookup(encoding).name != "utf-8" and _decodes(data, "utf-8")
        suggestion = "utf-8" if is_utf8 else "latin-1"
        headline = (
            f"line(s) whose bytes do not decode as {encoding} (data.encoding); "
            f"fix: set data.encoding={suggestion} or re-save the file as {encoding}"
        )
        bad = [n for n, raw in enumerate(data.split(b"\n"), start=1) if not _decodes(raw, encoding)]
        # Multi-byte encodings (UTF-16) cannot be split on b"\n"; then name the first failure.
        for line in bad or [data.count(b"\n", 0, exc.start) + 1]:
            issues.add(headline, f"{display}:{line}")
        return None
    return text.removeprefix("\ufeff")  # a BOM would otherwise glue itself to the first column name


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


# Parsers: each returns (column names seen, records) and files bad rows in `issues` -----------
def _jsonl_records(text: str, display: str, told_by: str, issues: _Issues) -> tuple[list[str], _Records]:
    records: _Records = []
    columns: dict[str, None] = {}  # an ordered set: keys in order of first appearance
    seen_content = False
    # split("\n") rather than splitlines(): the latter also breaks on U+2028 and friends,
    # which would make our line numbers disagree with every editor.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            value: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            value = exc
        if not seen_content and not isinstance(value, dict) and not line.startswith("{"):
            hint = "; convert a JSON array with `jq -c '.[]'`" if line.startswith("[") else ""
            raise DataError(
                f"file is not what {told_by} says: {display}:{number} is not a JSON object, "
                f"and JSON lines need one object per line{hint}"
            )
        seen_content = True
        if isinstance(value, json.JSONDecodeError):
            headline = "line(s) that are not valid JSON (truncated?); fix: repair or remove them"
            issues.add(headline, f"{display}:{number}: {value.msg} (column {value.colno})")
        elif not isinstance(value, dict):
            issues.add("line(s) whose JSON is not an object; fix: one {...} per line", f"{display}:{number}")
        else:
            records.append((number, value))
            columns.update(dict.fromkeys(value))
    return list(columns), records


def _csv_records(text: str, display: str, delimiter: str, issues: _Issues) -> tuple[list[str], _Records]:
    # strict=True turns quoting mistakes (text after a closing quote, a quote left open
    # at the end of the file) into errors instead of silently merged rows.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    records: _Records = []
    start = 1  # physical line where the next record begins; quoted fields may span lines
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                pass  # blank line
            elif header is None:
                header = [name.strip() for name in fields]
            elif len(fields) != len(header):
                issues.add(
                    f"row(s) whose number of fields differs from the header (an unquoted {delimiter!r} "
                    "inside a field?); fix: quote those fields or check data.delimiter",
                    f"{display}:{start}: {len(fields)} fields, header has {len(header)}",
                )
            else:
                records.append((start, dict(zip(header, fields))))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(
            f"{display}:{start}: malformed CSV ({exc}); check the quoting around this line "
            f"and data.delimiter (now {delimiter!r})"
        ) from None
    return header or [], records


def _phrasebank_records(
    text: str, display: str, cfg: DataConfig, issues: _Issues
) -> tuple[list[str], _Records]:
    records: _Records = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        # The LAST '@' separates the label: sentences themselves may contain '@'.
        sentence, at, label = line.rpartition("@")
        if at:
            records.append((number, {cfg.text_column: sentence, cfg.label_column: label}))
        else:
            headline = "line(s) with no '@' before the label (phrasebank is `sentence@label`)"
            issues.add(f"{headline}; fix those lines or set data.format", f"{display}:{number}")
    return [cfg.text_column, cfg.label_column], records


def _parquet_records(
    data: bytes, display: str, told_by: str, cfg: DataConfig
) -> tuple[list[str], _Records]:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        columns = list(parquet.schema_arrow.names)
        wanted = [c for c in (cfg.text_column, cfg.label_column, cfg.id_column) if c in columns]
        # Only the columns we use are decoded; wide Parquet files can carry much more.
        table = parquet.read(columns=wanted)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"file is not what {told_by} says: {display} is bad Parquet ({exc})") from None
    return columns, [(index + 1, record) for index, record in enumerate(table.to_pylist())]


# Records ------------------------------------------------------------------------------------
def _check_columns(cfg: DataConfig, present: Sequence[str], display: str, delimiter: str | None) -> None:
    """Raise if a configured column is absent, naming what is there and what to set."""
    wanted = [("data.text_column", cfg.text_column), ("data.label_column", cfg.label_column)]
    if cfg.id_column is not None:
        wanted.append(("data.id_column", cfg.id_column))
    problems = []
    for key, name in wanted:
        if name not in present:
            close = difflib.get_close_matches(name, present, n=1)
            fix = f"did you mean {close[0]!r}? set {key}={close[0]}" if close else f"set {key} to one below"
            problems.append(f"{display}: missing column {name!r} ({key}); {fix}")
    if not problems:
        return
    lines = [*problems, f"  columns in {display}: {', '.join(map(repr, present))}"]
    others = [d for d in ",;\t|" if delimiter is not None and d != delimiter and d in present[0]]
    if len(present) == 1 and others:  # one giant column: the file uses another delimiter
        lines.append(f"  the header looks split by {others[0]!r}: set data.delimiter={others[0]!r}")
    raise DataError("\n".join(lines))


def _label_text(value: Any) -> str | None:
    """The label as a string, or None when it is missing or blank."""
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:  # NaN: how pandas writes a missing value into a float column
            return None
        if value.is_integer():
            value = int(value)  # 1.0 -> "1": integer labels come back as floats next to a NaN
    label = str(value).strip()  # surrounding spaces would make " pos" a class of its own
    return label or None


def _add_record(
    cfg: DataConfig, record: Mapping[str, Any], display: str, line: int, rows: list[_Row], issues: _Issues
) -> None:
    """Validate one parsed record and append it to `rows`, or file it under `issues`."""
    where = f"{display}:{line}"
    label = _label_text(record.get(cfg.label_column))
    if label is None:
        issues.add(
            f"row(s) with an empty or missing label (field data.label_column={cfg.label_column!r}); "
            "fix: remove these rows or give them a label",
            where,
        )
    elif cfg.labels is not None and label not in cfg.labels:
        headline = (
            f"row(s) with a label outside the declared set data.labels={cfg.labels}; "
            "fix: correct or remove these rows, or add the label to data.labels"
        )
        close = difflib.get_close_matches(label, cfg.labels, n=1)
        issues.add(headline, f"{where}: {label!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    else:
        text = record.get(cfg.text_column)
        source_id = record.get(cfg.id_column) if cfg.id_column is not None else None
        # CSV cannot say null, so an empty id cell means "no id" rather than the id "".
        source_id = None if source_id is None or source_id == "" else str(source_id)
        rows.append(("" if text is None else str(text), label, source_id, display, line))
