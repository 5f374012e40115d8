"""Batch tokenization of tagged words (a Ray Data callable class, the token twin of `tokenize.py`)."""

from __future__ import annotations

import pyarrow as pa

from raytune_llm.data.tokens import align_labels
from raytune_llm.data.transforms import normalize_text, stable_id

_INT_LIST = pa.list_(pa.int32())


class TagAndTokenize:
    """Words -> sub-token ids, per sub-token label ids (-100 off the first sub-token), word ids.

    Same constructor as `NormalizeAndTokenize`, so the pipeline runs either through one Ray
    Data pass. Words are passed to the tokenizer as they are (`is_split_into_words=True`):
    normalising them could change their character offsets in `text`. The row id hashes the
    normalised text, like classification rows, so a sentence repeated across files gets one id.
    """

    def __init__(self, model_path: str, max_length: int, labels: list[str], trust_remote_code: bool = False,
                 pii_kinds: tuple[str, ...] = ()) -> None:
        from raytune_llm.models.loading import load_tokenizer

        del pii_kinds  # the schema refuses redact_pii for token classification
        self.tokenizer = load_tokenizer(model_path, trust_remote_code)
        self.max_length = max_length
        self.tag_ids = {label: i for i, label in enumerate(labels)}

    def __call__(self, batch: pa.Table) -> pa.Table:
        words = batch.column("tokens").to_pylist()
        encoded = self.tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.max_length,
                                 padding=False)
        label_ids, word_ids, word_tags, truncated, unaligned = [], [], [], [], []
        for row, (row_words, tags) in enumerate(zip(words, batch.column("tags").to_pylist())):
            ids = encoded.word_ids(row)
            tag_ids = [self.tag_ids[tag] for tag in tags]
            label_ids.append(align_labels(ids, tag_ids))
            word_ids.append([-1 if w is None else w for w in ids])
            word_tags.append(tag_ids)
            seen = {w for w in ids if w is not None}
            last = max(seen, default=-1)
            truncated.append(len(row_words) - 1 - last)  # words after the last one that kept a sub-token
            unaligned.append(sum(1 for w in range(last + 1) if w not in seen))
        given = batch.column("source_id").to_pylist()
        row_ids = [g if g else stable_id(normalize_text(t)) for g, t in zip(given, batch.column("text").to_pylist())]
        out = batch.append_column("id", pa.array(row_ids, pa.string()))
        out = out.append_column("input_ids", pa.array(encoded["input_ids"], _INT_LIST))
        out = out.append_column("label_ids", pa.array(label_ids, _INT_LIST))
        out = out.append_column("word_ids", pa.array(word_ids, _INT_LIST))
        out = out.append_column("word_tags", pa.array(word_tags, _INT_LIST))
        out = out.append_column("num_tokens", pa.array([len(x) for x in encoded["input_ids"]], pa.int32()))
        out = out.append_column("truncated_words", pa.array(truncated, pa.int32()))
        return out.append_column("unaligned_words", pa.array(unaligned, pa.int32()))
