"""Read an annotated corpus for classification into one Arrow table, quarantining bad rows.

`read_records` is the entry point of the classification pipeline; `read_input` is the same
read without the `data.strict` check, for callers that want the pieces. Both are plain
functions (no Ray), so every input problem can be tested, and explained, on a laptop. The
table has the columns of `OUTPUT_SCHEMA` (plus metadata columns some formats add, such as
PhraseBank's `agreement`); cleaning, de-duplication and splitting happen later in the
pipeline, so text is passed through raw.

Two kinds of problem, two behaviours:
- the whole file is unusable (missing, empty, wrong column mapping, not what its extension
  says): a `DataError` at once, naming the file and the config key to change;
- one row is unusable (malformed JSON, a bad CSV row, empty text or label, a label outside
  `data.labels`, bytes that do not decode, U+FFFD in the text): the row is quarantined with
  its file, line, field and reason, and the rest is read. `data.strict=true` turns any
  quarantined row into one `DataError` listing the first few of each reason and the total.

Formats: JSON lines / JSON arrays, CSV/TSV, Parquet and PhraseBank lines are parsed in
`parsers`; whole-dataset formats (PhraseBank with agreement levels, Label Studio exports) live
in `raytune_llm.data.formats`. Finding files and telling their format live in `sources`.
"""

from __future__ import annotations

import codecs
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from raytune_llm.config.schema import DataConfig
from raytune_llm.data import parsers
from raytune_llm.data.formats._common import FormatResult, merge_stats
from raytune_llm.data.formats.labelstudio import parse_labelstudio
from raytune_llm.data.formats.phrasebank import read_phrasebank_agreement
from raytune_llm.data.quarantine import Quarantined, attach, clip, describe, strict_error
from raytune_llm.data.sources import SUPPORTED_EXTENSIONS, SourceFile, check_content, format_of, resolve_files
from raytune_llm.data.transforms import normalize_text
from raytune_llm.errors import DataError

__all__ = ["OUTPUT_SCHEMA", "SUPPORTED_EXTENSIONS", "ReadResult", "read_input", "read_records"]

#: The columns of every table `read_records` returns, in this order (metadata columns follow).
OUTPUT_SCHEMA = pa.schema(
    [("text", pa.string()), ("label", pa.string()), ("source_id", pa.string()),
     ("_source", pa.string()), ("_line", pa.int64())]
)

#: Formats that hold token tags or instructions: read with `raytune_llm.data.tasks.read_task_table`.
TASK_FORMATS = frozenset({"conll", "spans", "instruct"})

_REPLACEMENT = "\ufffd"


#: What `read_input` returns: the same shape as every format reader's result.
ReadResult = FormatResult


@dataclass(frozen=True)
class _Candidate:
    """One row before its checks: output columns, raw text, and why its bytes were bad (if so)."""

    row: dict[str, Any]
    raw: str
    undecodable: str = ""


def read_records(cfg: DataConfig) -> pa.Table:
    """The usable rows of `cfg.path`, carrying the quarantine (see `quarantine.detach`).

    Raises a `DataError` for file-level problems, when no row is usable, and, with
    `data.strict=true`, when any row was quarantined.
    """
    result = read_input(cfg)
    if cfg.strict and result.quarantine:
        raise strict_error(result.quarantine, cfg.path)
    if result.table.num_rows == 0:
        raise DataError(f"no usable rows in {cfg.path}: all {result.read} were quarantined\n"
                        f"{describe(result.quarantine)}")
    return attach(result.table, result.quarantine, result.stats)


def read_input(cfg: DataConfig) -> ReadResult:
    """Read every file `cfg.path` names: good rows in a table, bad rows in the quarantine.

    `cfg.path` may be a file, a directory (its files with a supported extension, in sorted
    order) or a glob, local or a URI that `pyarrow.fs` understands; for
    `format: phrasebank_agreement` it is the folder holding the four `Sentences_*Agree.txt`.
    """
    try:
        codecs.lookup(cfg.encoding)
    except LookupError:
        raise DataError(f"unknown encoding {cfg.encoding!r} in data.encoding; try utf-8 or latin-1") from None
    if cfg.format in TASK_FORMATS:
        raise DataError(f"data.format={cfg.format} holds token tags or instructions, not classification "
                        "rows; read it with raytune_llm.data.tasks.read_task_table")
    candidates: list[_Candidate] = []
    quarantine: list[Quarantined] = []
    stats: dict[str, int] = {}
    if cfg.format == "phrasebank_agreement":
        found = read_phrasebank_agreement(cfg.path, cfg.encoding)
        candidates += _from_table(found.table)
        quarantine += found.quarantine
        stats.update(found.stats)
    else:
        for file in resolve_files(cfg.path):
            quarantine += _read_file(file, cfg, candidates, stats)
    if not candidates and not quarantine:
        raise DataError(f"no rows in {cfg.path}: empty, or only a header or blank lines; check data.path")
    rows = []
    for candidate in candidates:
        problem = _check(cfg, candidate)
        if problem is None:
            rows.append(candidate.row)
        else:
            quarantine.append(problem)
    # Files in reading order, lines in file order: how a person walks through the report.
    order: dict[str, int] = {}
    quarantine.sort(key=lambda q: (order.setdefault(q.source, len(order)), q.line))
    return ReadResult(_table(rows), quarantine, stats)


def _table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """`OUTPUT_SCHEMA` columns, then any metadata columns of the rows in first-seen order."""
    extra = list(dict.fromkeys(k for row in rows for k in row if k not in OUTPUT_SCHEMA.names))
    arrays = [pa.array([r.get(spec.name) for r in rows], type=spec.type) for spec in OUTPUT_SCHEMA]
    arrays += [pa.array([r.get(name) for r in rows]) for name in extra]
    return pa.Table.from_arrays(arrays, names=[*OUTPUT_SCHEMA.names, *extra])


def _from_table(table: pa.Table) -> list[_Candidate]:
    return [_Candidate(row, clip(str(row.get("text") or ""))) for row in table.to_pylist()]


# One file -----------------------------------------------------------------------------------
def _read_file(file: SourceFile, cfg: DataConfig, out: list[_Candidate], stats: dict[str, int]) -> list[Quarantined]:
    """Parse one file, append its rows to `out` and return what could not be parsed."""
    fmt, told_by = format_of(file.display, cfg)
    data = file.read_bytes()
    check_content(data, fmt, file.display, told_by, cfg.encoding)
    if fmt == "labelstudio":
        found = parse_labelstudio(parsers.decode(data, cfg.encoding, file.display), file.display,
                                  cfg.text_column, cfg.label_column, cfg.id_column)
        out += _from_table(found.table)
        # Unusable single annotations are not rows (the task may still have a majority): counted.
        more = {**found.stats, "annotations_quarantined": len(found.annotation_quarantine)}
        merge_stats(stats, {f"labelstudio_{key}": value for key, value in more.items()})
        return found.quarantine
    delimiter = _delimiter(cfg, fmt) if fmt in ("csv", "tsv") else None
    decoded = parsers.Decoded("")
    if fmt == "parquet":
        parsed = parsers.parquet_records(data, file.display, told_by, _columns(cfg))
    else:
        decoded = parsers.decode(data, cfg.encoding, file.display)
        if fmt == "jsonl":
            parsed = parsers.jsonl_records(decoded, file.display, told_by)
        elif fmt == "phrasebank":
            parsed = parsers.phrasebank_records(decoded, file.display, cfg.text_column, cfg.label_column)
        else:
            parsed = parsers.csv_records(decoded, file.display, delimiter or ",")
    if parsed.columns:
        _check_columns(cfg, parsed.columns, file.display, delimiter)
    for record in parsed.records:
        bad = any(n in decoded.bad_lines for n in range(record.line, record.end + 1))
        out.append(_Candidate(_row(cfg, record, file.display), clip(record.raw), decoded.reason if bad else ""))
    return parsed.quarantine


def _columns(cfg: DataConfig) -> list[str]:
    return [c for c in (cfg.text_column, cfg.label_column, cfg.id_column) if c is not None]


def _delimiter(cfg: DataConfig, fmt: str) -> str:
    delimiter = cfg.delimiter if cfg.delimiter is not None else ("\t" if fmt == "tsv" else ",")
    # YAML users often write the two characters backslash-t; they mean a tab.
    delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
    if len(delimiter) != 1:
        raise DataError(f"data.delimiter must be one character: ',' ';' '\\t' ... (got {cfg.delimiter!r})")
    return delimiter


def _row(cfg: DataConfig, record: parsers.RawRecord, display: str) -> dict[str, Any]:
    """The output columns of one parsed record, before any check."""
    fields = record.fields
    text = fields.get(cfg.text_column)
    source_id = fields.get(cfg.id_column) if cfg.id_column is not None else None
    # CSV cannot say null, so an empty id cell means "no id" rather than the id "".
    source_id = None if source_id is None or source_id == "" else str(source_id)
    return {"text": "" if text is None else str(text), "label": _label_text(fields.get(cfg.label_column)),
            "source_id": source_id, "_source": display, "_line": record.line}


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
    if {"data", "annotations"} <= set(present) or {"data", "completions"} <= set(present):
        lines.append("  this looks like a Label Studio export: set data.format=labelstudio")
    raise DataError("\n".join(lines))


# Row checks ---------------------------------------------------------------------------------
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


def _check(cfg: DataConfig, candidate: _Candidate) -> Quarantined | None:
    """Why this row cannot be used (as a quarantine record), or None when it can."""
    row = candidate.row
    text, label = row["text"], row["label"]

    def problem(field_name: str, kind: str, reason: str, detail: str = "") -> Quarantined:
        return Quarantined(row["_source"], row["_line"], field_name, kind, reason, detail, candidate.raw)

    damaged = _first_with_replacement(cfg, row)
    if damaged is not None:
        if candidate.undecodable:
            return problem(damaged, "undecodable", candidate.undecodable)
        return problem(damaged, "replacement_char", "contains U+FFFD replacement characters (characters "
                       "lost before the file was written); fix: restore them from the original or remove the row")
    if not normalize_text(text):
        # Same test the pipeline's normalisation applies, so no empty row gets past this point.
        return problem(cfg.text_column, "missing_text", f"empty or missing text (data.text_column="
                       f"{cfg.text_column!r}); fix: remove the row or fill in its text")
    if label is None:
        return problem(cfg.label_column, "missing_label", f"empty or missing label (data.label_column="
                       f"{cfg.label_column!r}); fix: remove the row or give it a label")
    if cfg.labels is not None and label not in cfg.labels:
        close = difflib.get_close_matches(label, cfg.labels, n=1)
        reason = (f"label outside the declared set data.labels={cfg.labels}; fix: correct or remove "
                  "the row, or add the label to data.labels")
        return problem(cfg.label_column, "unknown_label", reason,
                       repr(label) + (f" (did you mean {close[0]!r}?)" if close else ""))
    return None


def _first_with_replacement(cfg: DataConfig, row: dict[str, Any]) -> str | None:
    """The first used field (text, label, id) holding U+FFFD, by its configured column name."""
    fields: Iterable[tuple[str, Any]] = (
        (cfg.text_column, row["text"]), (cfg.label_column, row["label"]), (cfg.id_column or "id", row["source_id"]),
    )
    for name, value in fields:
        if value is not None and _REPLACEMENT in value:
            return name
    return None
