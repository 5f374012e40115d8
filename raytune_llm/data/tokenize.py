"""Batch tokenization with the model's fast tokenizer (a Ray Data callable class)."""

from __future__ import annotations

import pyarrow as pa


class BatchTokenizer:
    """Turns a batch of normalised rows into token ids and integer labels.

    A class so that Ray Data loads the tokenizer once per actor, not once per batch.
    """

    def __init__(self, model_path: str, max_length: int, labels: list[str], trust_remote_code: bool = False) -> None:
        from raytune_llm.models.loading import load_tokenizer

        self.tokenizer = load_tokenizer(model_path, trust_remote_code)
        self.max_length = max_length
        self.label_ids = {label: i for i, label in enumerate(labels)}

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False)
        input_ids = encoded["input_ids"]
        label_ids = [self.label_ids[label] for label in batch.column("label").to_pylist()]
        out = batch.append_column("input_ids", pa.array(input_ids, pa.list_(pa.int32())))
        out = out.append_column("label_id", pa.array(label_ids, pa.int32()))
        return out.append_column("num_tokens", pa.array([len(x) for x in input_ids], pa.int32()))


class NormalizeAndTokenize(BatchTokenizer):
    """One Ray Data pass for the whole row transform: redact PII, normalise, add the id, tokenize.

    Doing it in one pass costs one round of task start-up and data movement instead of
    two; rows that cleaning drops later (duplicates) are tokenized for nothing, which is
    cheaper than a second pass on any corpus whose duplicates are a small share.
    """

    def __init__(self, model_path: str, max_length: int, labels: list[str], trust_remote_code: bool = False,
                 pii_kinds: tuple[str, ...] = ()) -> None:
        super().__init__(model_path, max_length, labels, trust_remote_code)
        self.pii_kinds = pii_kinds

    def __call__(self, batch: pa.Table) -> pa.Table:
        from raytune_llm.data.cleaning import redact_and_normalize

        return super().__call__(redact_and_normalize(batch, self.pii_kinds))
