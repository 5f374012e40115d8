"""CoNLL-style token files: one `token<TAB>tag` (or space-separated columns) per line, a blank
line between sentences, `-DOCSTART-` lines skipped.

Tags are BIO: `O`, `B-TYPE`, `I-TYPE`. Two conventions exist. In IOB2 every entity opens with
`B-`, so `I-X` after `O` (or after another type) is an error. In IOB1 (CoNLL-2003) an entity
opens with `I-` and `B-` only separates two adjacent entities of one type; it is converted to
IOB2 here so that every table this module returns is IOB2. A sentence with an unknown tag
shape (`PER`, `B-corp,B-group`), a line without the configured columns, or an invalid IOB2
sequence is quarantined whole, with the line of the first problem: half a sentence would
teach wrong boundaries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import pyarrow as pa

from raytune_llm.data.formats._common import FormatResult, load_files, merge_stats, table_of
from raytune_llm.data.parsers import Decoded
from raytune_llm.data.quarantine import Quarantined, clip

__all__ = ["EXTENSIONS", "SCHEMA", "TagScheme", "iob1_to_iob2", "iob2_problem", "looks_like_iob1",
           "parse_conll", "read_conll"]

TagScheme = Literal["iob2", "iob1", "auto"]

SCHEMA = pa.schema([("tokens", pa.list_(pa.string())), ("tags", pa.list_(pa.string())),
                    ("_source", pa.string()), ("_line", pa.int64())])
#: Files of a directory that are read as CoNLL.
EXTENSIONS = (".conll", ".bio", ".iob", ".tsv", ".txt")

_TAG = re.compile(r"O|[BI]-[^\s,;|]+")  # one type per tag: "B-corp,B-group" is two tags glued together
_SHAPE_REASON = "tag is not O, B-TYPE or I-TYPE; fix the tag (one tag per token)"
_SEQUENCE_REASON = ("I-TYPE does not continue an entity of that TYPE, which IOB2 forbids; fix the tag, "
                    "or set data.tag_scheme=iob1 if the file is IOB1")

# A sentence as read: (line number, raw line) per token line.
_Block = list[tuple[int, str]]


def read_conll(path: str, token_index: int = 0, tag_index: int = -1, scheme: TagScheme = "iob2",
               delimiter: str | None = None, encoding: str = "utf-8") -> FormatResult:
    """Sentences of every CoNLL file `path` names, as `tokens` and IOB2 `tags` lists."""
    tables: list[pa.Table] = []
    quarantine: list[Quarantined] = []
    stats: dict[str, int] = {}
    for file, decoded in load_files(path, "conll", encoding, EXTENSIONS):
        found = parse_conll(decoded, file.display, token_index, tag_index, scheme, delimiter)
        tables.append(found.table)
        quarantine += found.quarantine
        merge_stats(stats, found.stats)
    return FormatResult(pa.concat_tables(tables), quarantine, stats)


def parse_conll(decoded: Decoded, display: str, token_index: int = 0, tag_index: int = -1,
                scheme: TagScheme = "iob2", delimiter: str | None = None) -> FormatResult:
    """One CoNLL file's sentences; `scheme="auto"` decides IOB1 or IOB2 for the whole file."""
    blocks, docstarts = _blocks(decoded.text)
    parsed: list[tuple[_Block, list[str], list[str]]] = []
    quarantine: list[Quarantined] = []

    def reject(block: _Block, line: int, field: str, kind: str, reason: str, detail: str) -> None:
        raw = "\n".join(text for _, text in block)
        quarantine.append(Quarantined(display, block[0][0], field, kind, reason, f"line {line}: {detail}", clip(raw)))

    for block in blocks:
        tokens, tags, problem = _columns(block, token_index, tag_index, delimiter)
        if problem is None:
            parsed.append((block, tokens, tags))
        elif problem[1] == "invalid_tag":
            reject(block, problem[0], "tag", "invalid_tag", _SHAPE_REASON, problem[2])
        else:
            reason = (f"line lacks column {token_index} or {tag_index} (data.token_index, data.tag_index); "
                      "fix the line, data.delimiter or the indices")
            reject(block, problem[0], "line", "bad_line", reason, problem[2])
    is_iob1 = scheme == "iob1" or (scheme == "auto" and looks_like_iob1([tags for _, _, tags in parsed]))
    rows: list[dict[str, Any]] = []
    for block, tokens, tags in parsed:
        tags = iob1_to_iob2(tags) if is_iob1 else tags
        sequence = iob2_problem(tags)
        if sequence is not None:
            index, detail = sequence
            reject(block, block[index][0], "tag", "invalid_sequence", _SEQUENCE_REASON, detail)
            continue
        rows.append({"tokens": tokens, "tags": tags, "_source": display, "_line": block[0][0]})
    stats = {"sentences": len(blocks), "tokens": sum(len(b) for b in blocks), "docstart_lines": docstarts,
             "iob1_files": int(is_iob1)}
    return FormatResult(table_of(rows, SCHEMA), quarantine, stats)


def _blocks(text: str) -> tuple[list[_Block], int]:
    """Non-blank line runs (sentences), and how many `-DOCSTART-` lines were skipped."""
    blocks: list[_Block] = []
    current: _Block = []
    docstarts = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        is_docstart = line.startswith("-DOCSTART-")
        docstarts += is_docstart
        if not line.strip() or is_docstart:  # WNUT-17 writes sentence breaks as a lone tab
            if current:
                blocks.append(current)
            current = []
        else:
            current.append((number, line))
    if current:
        blocks.append(current)
    return blocks, docstarts


def _columns(block: _Block, token_index: int, tag_index: int,
             delimiter: str | None) -> tuple[list[str], list[str], tuple[int, str, str] | None]:
    """Tokens and tags of a sentence, and (line, kind, detail) of its first bad line, if any."""
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in block:
        if delimiter is not None:
            fields = line.split(delimiter)
        else:
            fields = line.split("\t") if "\t" in line else line.split()
        # Resolve negative indices first: on a one-column line, 0 and -1 are the same column.
        where = [i + len(fields) if i < 0 else i for i in (token_index, tag_index)]
        if where[0] == where[1] or not all(0 <= i < len(fields) for i in where):
            return tokens, tags, (number, "bad_line", f"{len(fields)} column(s) in {line!r}")
        token, tag = fields[where[0]], fields[where[1]].strip()
        if _TAG.fullmatch(tag) is None:
            return tokens, tags, (number, "invalid_tag", repr(tag))
        tokens.append(token)
        tags.append(tag)
    return tokens, tags, None


def _continues(previous: str, tag: str) -> bool:
    """Whether `tag` (an I- tag) continues the entity `previous` belongs to."""
    return previous != "O" and previous[2:] == tag[2:]


def iob2_problem(tags: Sequence[str]) -> tuple[int, str] | None:
    """(index, message) of the first I-TYPE that does not continue a TYPE entity, or None."""
    previous = "O"
    for index, tag in enumerate(tags):
        if tag.startswith("I-") and not _continues(previous, tag):
            return index, f"{tag} after {previous}"
        previous = tag
    return None


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 tags as IOB2: an I-TYPE that opens an entity becomes B-TYPE."""
    out: list[str] = []
    previous = "O"
    for tag in tags:
        out.append("B-" + tag[2:] if tag.startswith("I-") and not _continues(previous, tag) else tag)
        previous = tag
    return out


def looks_like_iob1(sentences: Sequence[Sequence[Any]]) -> bool:
    """IOB1 when some entity opens with I- and none opens with B- after O or another type.

    In IOB1, B- only ever follows a tag of its own type; in IOB2 every entity opens with B-.
    """
    opens_with_i = opens_with_b = False
    for tags in sentences:
        previous = "O"
        for tag in tags:
            if tag != "O" and not _continues(previous, tag):
                opens_with_i |= tag.startswith("I-")
                opens_with_b |= tag.startswith("B-")
            previous = tag
    return opens_with_i and not opens_with_b
