"""Character-span annotations: JSON lines reader, checks, and conversion to and from BIO tags.

A record is `{"text": ..., "spans": [...]}` (or `"entities"`), each span either
`[start, end, label]` or `{"start": .., "end": .., "label": ..}`, with `text[start:end]` the
entity (end exclusive, Python and Label Studio style). A record whose spans fall outside the
text or overlap is quarantined whole: dropping one span would teach the model that the entity
is not one.

BIO conversion works on whitespace tokens: `spans_to_bio` tags each token a span covers
(B- on the first, I- after it) and refuses a span boundary that falls inside a token;
`bio_to_spans` joins tokens with single spaces and returns the spans of the IOB2 entities.
For whitespace-free tokens (CoNLL files) the two are inverses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Any

import pyarrow as pa

from raytune_llm.data.formats._common import SPAN_TYPE, FormatResult, load_files, table_of
from raytune_llm.data.parsers import json_values
from raytune_llm.data.quarantine import Quarantined, clip

__all__ = [
    "BIO_SCHEMA", "SCHEMA", "Span", "SpanError", "bio_to_spans", "check_spans", "parse_span", "read_spans",
    "bio_records", "spans_to_bio", "to_bio_table",
]

Span = tuple[int, int, str]

SCHEMA = pa.schema([("text", pa.string()), ("spans", pa.list_(SPAN_TYPE)), ("source_id", pa.string()),
                    ("_source", pa.string()), ("_line", pa.int64())])
BIO_SCHEMA = pa.schema([("tokens", pa.list_(pa.string())), ("tags", pa.list_(pa.string())),
                        ("_source", pa.string()), ("_line", pa.int64())])

_TOKEN = re.compile(r"\S+")
_REASON = "span annotations cannot be used as they are; fix the record"


class SpanError(ValueError):
    """Spans and tokens that do not line up (a boundary inside a token, a space inside a token)."""


def parse_span(item: Any) -> Span | None:
    """`[start, end, label]` or `{start, end, label}` as a tuple; None when it is neither."""
    if isinstance(item, dict):
        item = [item.get("start"), item.get("end"), item.get("label")]
    if not isinstance(item, (list, tuple)) or len(item) != 3:
        return None
    start, end, label = item
    if isinstance(start, bool) or not isinstance(start, int) or isinstance(end, bool) or not isinstance(end, int):
        return None
    if not isinstance(label, str) or not label.strip():
        return None
    return start, end, label


def check_spans(text: str, spans: Sequence[Span]) -> tuple[str, str] | None:
    """(kind, message) of what is wrong with `spans` over `text`, or None when nothing is.

    Kinds: `span_out_of_bounds` (outside the text, or empty) and `span_overlap`.
    """
    for start, end, label in spans:
        if not 0 <= start < end <= len(text):
            return "span_out_of_bounds", f"span [{start}, {end}) {label!r} is outside the text (length {len(text)}) or empty"
    ordered = sorted(spans)
    for (s1, e1, l1), (s2, e2, l2) in pairwise(ordered):
        if s2 < e1:
            return "span_overlap", f"spans [{s1}, {e1}) {l1!r} and [{s2}, {e2}) {l2!r} overlap"
    return None


def spans_to_bio(text: str, spans: Sequence[Span]) -> tuple[list[str], list[str]]:
    """Whitespace tokens of `text` and their IOB2 tags; `SpanError` if a span cuts a token."""
    matches = list(_TOKEN.finditer(text))
    tags = ["O"] * len(matches)
    for start, end, label in sorted(spans):
        inside = []
        for index, match in enumerate(matches):
            if match.start() >= start and match.end() <= end:
                inside.append(index)
            elif match.start() < end and match.end() > start:
                raise SpanError(f"span [{start}, {end}) {label!r} cuts the token {match.group()!r}")
        if not inside:
            raise SpanError(f"span [{start}, {end}) {label!r} covers no token")
        tags[inside[0]] = f"B-{label}"
        for index in inside[1:]:
            tags[index] = f"I-{label}"
    return [m.group() for m in matches], tags


def bio_to_spans(tokens: Sequence[str], tags: Sequence[str]) -> tuple[str, list[Span]]:
    """Tokens joined by single spaces, and the character spans of their IOB2 entities."""
    spans: list[Span] = []
    offset = 0
    open_span: list[Any] | None = None  # [start, end, label] of the entity being read
    for token, tag in zip(tokens, tags, strict=True):
        if not token or _TOKEN.fullmatch(token) is None:
            raise SpanError(f"token {token!r} is empty or holds whitespace; it cannot survive a round trip")
        end = offset + len(token)
        if tag.startswith("I-") and open_span is not None and open_span[2] == tag[2:]:
            open_span[1] = end
        else:
            if open_span is not None:
                spans.append((open_span[0], open_span[1], open_span[2]))
            open_span = [offset, end, tag[2:]] if tag != "O" else None
        offset = end + 1
    if open_span is not None:
        spans.append((open_span[0], open_span[1], open_span[2]))
    return " ".join(tokens), spans


def read_spans(path: str, text_field: str = "text", encoding: str = "utf-8") -> FormatResult:
    """Records with text and character spans from JSON lines (or a JSON array) files."""
    rows: list[dict[str, Any]] = []
    quarantine: list[Quarantined] = []
    for file, decoded in load_files(path, "spans", encoding, (".jsonl", ".json")):
        items, problems = json_values(decoded, file.display, "data.format=spans")
        quarantine += problems
        for item in items:
            row = _row(item.fields["value"], text_field, file.display, item.line)
            if isinstance(row, tuple):
                field_name, kind, detail = row
                quarantine.append(Quarantined(file.display, item.line, field_name, kind, _REASON, detail, clip(item.raw)))
            else:
                rows.append(row)
    return FormatResult(table_of(rows, SCHEMA), quarantine, {"records": len(rows) + len(quarantine)})


def _row(record: Any, text_field: str, display: str, line: int) -> dict[str, Any] | tuple[str, str, str]:
    """The output row of one record, or (field, kind, detail) of what is wrong with it."""
    if not isinstance(record, dict):
        return "line", "not_object", type(record).__name__
    text = record.get(text_field)
    if not isinstance(text, str) or not text.strip():
        return text_field, "missing_text", f"no text in {text_field!r}"
    key = "spans" if "spans" in record else "entities"
    items = record.get(key)
    if not isinstance(items, list):
        return key, "missing_spans", "no 'spans' or 'entities' list (use [] for a text without entities)"
    spans = [parse_span(item) for item in items]
    if any(span is None for span in spans):
        bad = next(item for item, span in zip(items, spans) if span is None)
        return key, "bad_span", f"{bad!r} is not [start, end, label] with integer offsets"
    valid = [span for span in spans if span is not None]
    problem = check_spans(text, valid)
    if problem is not None:
        return key, *problem
    source_id = record.get("id")
    return {"text": text, "spans": [{"start": s, "end": e, "label": label} for s, e, label in sorted(valid)],
            "source_id": None if source_id is None else str(source_id), "_source": display, "_line": line}


def bio_records(table: pa.Table) -> Iterator[tuple[dict[str, Any], list[str], list[str]] | Quarantined]:
    """Each span record with its tokens and IOB2 tags, or its quarantine entry when a span cuts a token."""
    for record in table.to_pylist():
        spans = [(s["start"], s["end"], s["label"]) for s in record["spans"]]
        try:
            tokens, tags = spans_to_bio(record["text"], spans)
        except SpanError as exc:
            yield Quarantined(record["_source"], record["_line"], "spans", "span_not_on_tokens",
                              "span boundary inside a word: BIO tags need whole words; move the boundary to a space",
                              str(exc), clip(record["text"]))
            continue
        yield record, tokens, tags


def to_bio_table(table: pa.Table) -> FormatResult:
    """A span table (`SCHEMA`) as tokens and IOB2 tags; records whose spans cut a token are quarantined."""
    rows: list[dict[str, Any]] = []
    quarantine: list[Quarantined] = []
    for item in bio_records(table):
        if isinstance(item, Quarantined):
            quarantine.append(item)
            continue
        record, tokens, tags = item
        rows.append({"tokens": tokens, "tags": tags, "_source": record["_source"], "_line": record["_line"]})
    return FormatResult(table_of(rows, BIO_SCHEMA), quarantine)
