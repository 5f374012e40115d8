"""Token classification (named entities) data: words and IOB2 tags, their order, and sub-word alignment.

Plain functions, no Ray. `read_token_input` turns a `conll` or `spans` file into the table the
prepare step works on: one row per sentence with its words (`tokens`), IOB2 `tags`, the
character offset of each word in `text` (`word_starts`), and a coarse `label` (the entity
types the sentence holds, e.g. `location+person`, or `O`) that the shared cleaning and splitting
steps use to tell conflicting duplicates apart and to stratify the hashed split.

Alignment follows the usual recipe: the first sub-token of each word carries the word's tag id,
every other sub-token and the special tokens carry -100 (ignored by the loss). Words that lose
their first sub-token to truncation are counted (never dropped silently) and are scored as
predicted `O`, so their entities count as missed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from raytune_llm.data.formats._common import FormatResult, table_of
from raytune_llm.data.formats.spans import bio_records
from raytune_llm.data.quarantine import Quarantined
from raytune_llm.errors import DataError

__all__ = [
    "IGNORE", "TOKEN_SCHEMA", "align_labels", "entity_types", "read_token_input", "tag_order", "token_stats",
    "word_predictions", "word_spans",
]

#: The label id the loss ignores (PyTorch's cross-entropy default `ignore_index`).
IGNORE = -100

TOKEN_SCHEMA = pa.schema([
    ("text", pa.string()), ("label", pa.string()), ("tokens", pa.list_(pa.string())),
    ("tags", pa.list_(pa.string())), ("word_starts", pa.list_(pa.int32())), ("source_id", pa.string()),
    ("_source", pa.string()), ("_line", pa.int64()),
])

_WORD = re.compile(r"\S+")


def _coarse_label(tags: Sequence[str]) -> str:
    types = sorted({tag[2:] for tag in tags if tag != "O"})
    return "+".join(types) if types else "O"


def _conll_rows(table: pa.Table) -> list[dict[str, Any]]:
    rows = []
    for record in table.to_pylist():
        tokens: list[str] = record["tokens"]
        starts, offset = [], 0
        for token in tokens:  # text is the words joined by single spaces
            starts.append(offset)
            offset += len(token) + 1
        rows.append({"text": " ".join(tokens), "label": _coarse_label(record["tags"]), "tokens": tokens,
                     "tags": record["tags"], "word_starts": starts, "source_id": None,
                     "_source": record["_source"], "_line": record["_line"]})
    return rows


def _span_rows(table: pa.Table) -> tuple[list[dict[str, Any]], list[Quarantined]]:
    """Span records as words (whitespace tokens of the original text, offsets kept) and tags."""
    rows: list[dict[str, Any]] = []
    quarantine: list[Quarantined] = []
    for item in bio_records(table):
        if isinstance(item, Quarantined):
            quarantine.append(item)
            continue
        record, tokens, tags = item
        starts = [m.start() for m in _WORD.finditer(record["text"])]
        rows.append({"text": record["text"], "label": _coarse_label(tags), "tokens": tokens, "tags": tags,
                     "word_starts": starts, "source_id": record["source_id"], "_source": record["_source"],
                     "_line": record["_line"]})
    return rows, quarantine


def read_token_input(found: FormatResult, fmt: str) -> FormatResult:
    """A `read_task_table` result of format `conll` or `spans` as `TOKEN_SCHEMA` rows."""
    if fmt == "conll":
        return FormatResult(table_of(_conll_rows(found.table), TOKEN_SCHEMA), list(found.quarantine), found.stats)
    rows, more = _span_rows(found.table)
    return FormatResult(table_of(rows, TOKEN_SCHEMA), [*found.quarantine, *more], found.stats)


def entity_types(labels: Iterable[str]) -> list[str]:
    """The entity types of a tag set, sorted (`B-person`, `I-person` -> `person`)."""
    return sorted({label[2:] for label in labels if label != "O"})


def tag_order(found: Iterable[str], declared: Sequence[str] | None, source: str) -> list[str]:
    """The tag list the model predicts: `O`, then `B-X`, `I-X` per type in sorted order.

    Every type found gets both its B- and I- tag, so the model can open and continue any
    entity. With `data.labels` declared, that order is used and a tag outside it is an error.
    """
    tags = set(found)
    if declared is not None:
        missing = sorted(tags - set(declared))
        if missing:
            raise DataError(f"{source}: tags {missing} are not in data.labels {list(declared)}; add them to "
                            "data.labels or remove data.labels to use the tags found")
        return list(declared)
    types = entity_types(tags)
    if not types:
        raise DataError(f"{source}: no entity tags (only 'O'); token classification needs B-TYPE/I-TYPE tags")
    return ["O", *[f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")]]


def align_labels(word_ids: Sequence[int | None], word_tags: Sequence[int]) -> list[int]:
    """Per sub-token label ids: the word's tag on its first sub-token, `IGNORE` elsewhere."""
    out, previous = [], None
    for word in word_ids:
        out.append(IGNORE if word is None or word == previous else word_tags[word])
        previous = word
    return out


def word_predictions(token_predictions: Sequence[int], word_ids: Sequence[int], num_words: int,
                     outside: int = 0) -> list[int]:
    """Per word label ids from per sub-token predictions: each word takes its first sub-token's.

    `word_ids` uses -1 (or None) for special tokens. Words with no sub-token (cut by truncation)
    get `outside`, the id of `O`.
    """
    out = [outside] * num_words
    previous = None
    for prediction, word in zip(token_predictions, word_ids):
        if word is not None and word >= 0 and word != previous:
            out[word] = int(prediction)
        previous = word
    return out


def word_spans(text: str, tokens: Sequence[str], word_starts: Sequence[int], tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Character spans `(start, end, type)` in `text` of the entities that word tags mark."""
    from raytune_llm.train.entities import entities

    return [(word_starts[first], word_starts[last - 1] + len(tokens[last - 1]), kind)
            for kind, first, last in entities(tags)]


def token_stats(kept: pa.Table, labels: Sequence[str]) -> dict[str, Any]:
    """Manifest entries of a token table: entities per type and split, and what truncation cut."""
    from raytune_llm.train.entities import entities

    per_split: dict[str, dict[str, int]] = {}
    for split, tags in zip(kept.column("split").to_pylist(), kept.column("tags").to_pylist()):
        counts = per_split.setdefault(split, dict.fromkeys(entity_types(labels), 0))
        for kind, _, _ in entities(tags):
            counts[kind] += 1
    truncated = kept.column("truncated_words").to_pylist()
    unaligned = kept.column("unaligned_words").to_pylist()
    return {
        "task": "token_classification",
        "split_entities": per_split,
        "words": int(sum(len(t) for t in kept.column("tokens").to_pylist())),
        "truncation": {"rows_truncated": sum(1 for n in truncated if n), "words_truncated": int(sum(truncated)),
                       # words the tokenizer turned into no sub-token at all (e.g. a lone control character)
                       "words_without_subtokens": int(sum(unaligned))},
    }
