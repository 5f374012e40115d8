"""Financial PhraseBank with each sentence's annotator agreement level.

The corpus ships as four nested files: `Sentences_50Agree.txt` holds every sentence whose
majority label had more than 50 % agreement, and `66Agree`, `75Agree` and `AllAgree` the
subsets with stronger agreement. A sentence's level is the strongest file it appears in.

Two traps make matching across files harder than string equality: 50Agree is UTF-8 while the
others are latin-1, and in 50Agree some non-ASCII characters were replaced by U+FFFD before
it was written. Sentences are therefore matched on `match_key`, which drops every non-ASCII
character; the text is taken from the strongest file, where it is intact. A 50Agree sentence
with U+FFFD and no intact copy elsewhere, a sentence of a stronger file that is not in 50Agree,
and a sentence whose label differs between files are quarantined and counted.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

import pyarrow as pa

from raytune_llm.data.formats._common import FormatResult, table_of
from raytune_llm.data.parsers import Decoded, RawRecord, decode, phrasebank_records
from raytune_llm.data.quarantine import Quarantined, clip
from raytune_llm.data.sources import SourceFile, check_content, resolve_files
from raytune_llm.errors import DataError

__all__ = ["LEVELS", "SCHEMA", "match_key", "read_phrasebank_agreement"]

#: File stem -> agreement level in percent, weakest first (each file is a subset of the one before).
LEVELS: dict[str, int] = {"50Agree": 50, "66Agree": 66, "75Agree": 75, "AllAgree": 100}

SCHEMA = pa.schema([("text", pa.string()), ("label", pa.string()), ("source_id", pa.string()),
                    ("_source", pa.string()), ("_line", pa.int64()), ("agreement", pa.int64())])

_NON_ASCII = re.compile(r"[^\x00-\x7f]")


@dataclass(frozen=True)
class _Sentence:
    level: int
    text: str
    label: str
    source: str
    line: int


def match_key(sentence: str) -> str:
    """The sentence without non-ASCII characters (U+FFFD included), whitespace collapsed."""
    return " ".join(_NON_ASCII.sub("", sentence).split())


def read_phrasebank_agreement(folder: str, encoding: str = "latin-1") -> FormatResult:
    """One row per 50Agree sentence with its label and agreement level (50, 66, 75 or 100).

    `folder` (local or a pyarrow URI) must hold the four `Sentences_*Agree.txt` files. A file
    that is valid UTF-8 is read as UTF-8, any other as `encoding` (latin-1 when that is UTF-8
    too, since the PhraseBank's non-UTF-8 files are latin-1).
    """
    fallback = encoding if codecs.lookup(encoding).name != "utf-8" else "latin-1"
    by_level: dict[int, list[_Sentence]] = {}
    quarantine: list[Quarantined] = []
    for stem, level in LEVELS.items():
        sentences, problems = _read_level(_level_file(folder, stem), level, fallback)
        by_level[level] = sentences
        quarantine += problems
    rows, matched = _assign_levels(by_level, quarantine)
    stats = {f"phrasebank_{stem}_lines": len(by_level[level]) for stem, level in LEVELS.items()}
    stats.update(matched)
    for level in LEVELS.values():
        stats[f"phrasebank_agreement_{level}"] = sum(1 for r in rows if r["agreement"] == level)
    return FormatResult(table_of(rows, SCHEMA), quarantine, stats)


def _level_file(folder: str, stem: str) -> SourceFile:
    name = f"Sentences_{stem}.txt"
    path = folder.rstrip("/") + "/" + name
    try:
        return resolve_files(path)[0]
    except DataError:
        raise DataError(f"data.format=phrasebank_agreement needs {name} in {folder}; set data.path to the "
                        "folder holding Sentences_50Agree.txt, 66Agree, 75Agree and AllAgree") from None


def _read_level(file: SourceFile, level: int, fallback: str) -> tuple[list[_Sentence], list[Quarantined]]:
    data = file.read_bytes()
    check_content(data, "phrasebank", file.display, "data.format=phrasebank_agreement", "utf-8")
    try:
        decoded = Decoded(data.decode("utf-8").removeprefix("\ufeff"))
    except UnicodeDecodeError:
        decoded = decode(data, fallback, file.display)
    parsed = phrasebank_records(decoded, file.display, "text", "label")
    return [_sentence(level, file.display, r) for r in parsed.records], parsed.quarantine


def _sentence(level: int, source: str, record: RawRecord) -> _Sentence:
    return _Sentence(level, record.fields["text"], record.fields["label"].strip(), source, record.line)


def _assign_levels(
    by_level: dict[int, list[_Sentence]], quarantine: list[Quarantined]
) -> tuple[list[dict[str, object]], dict[str, int]]:
    """Rows for the 50Agree sentences; quarantines what cannot be matched or restored."""
    strongest: dict[str, _Sentence] = {}
    for level in sorted(by_level)[1:]:  # ascending, so the strongest file wins
        for sentence in by_level[level]:
            strongest[match_key(sentence.text)] = sentence
    base_keys = {match_key(s.text) for s in by_level[50]}
    counts = {"phrasebank_unmatched": 0, "phrasebank_restored_text": 0, "phrasebank_label_conflicts": 0}
    for level in sorted(by_level)[1:]:
        for sentence in by_level[level]:
            if match_key(sentence.text) not in base_keys:
                counts["phrasebank_unmatched"] += 1
                quarantine.append(_problem(sentence, "unmatched", "sentence of a stronger-agreement file "
                                           "that is not in Sentences_50Agree.txt (matched ignoring non-ASCII)"))
    rows: list[dict[str, object]] = []
    for sentence in by_level[50]:
        best = strongest.get(match_key(sentence.text))
        text = sentence.text
        if best is not None and best.label != sentence.label:
            counts["phrasebank_label_conflicts"] += 1
            quarantine.append(_problem(sentence, "label_conflict", "label differs from the one in "
                                       f"{best.source}:{best.line} ({best.label!r})"))
            continue
        if "\ufffd" in text:
            if best is None:
                quarantine.append(_problem(sentence, "replacement_char", "contains U+FFFD replacement characters "
                                           "and no stronger-agreement file holds the intact sentence"))
                continue
            text = best.text  # the latin-1 files kept the characters that 50Agree lost
            counts["phrasebank_restored_text"] += 1
        rows.append({"text": text, "label": sentence.label, "source_id": None, "_source": sentence.source,
                     "_line": sentence.line, "agreement": best.level if best is not None else 50})
    return rows, counts


def _problem(sentence: _Sentence, kind: str, reason: str) -> Quarantined:
    return Quarantined(sentence.source, sentence.line, "text", kind, reason, "", clip(sentence.text))
