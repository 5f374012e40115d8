"""Validation and test scoring of token classification: sub-token predictions -> words -> entities.

Each row's prediction for a word is the model's label at the word's first sub-token; words cut
by truncation are predicted `O`, so their gold entities count as missed. Entities are decoded
from the word tags (seqeval's default decoding, see `entities.py`) and counted per type; the
training loop sums the counts over workers with one all-reduce.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from raytune_llm.data.tokens import entity_types, word_predictions
from raytune_llm.train.batches import TokenizedSplit, eval_batches, pad_batch
from raytune_llm.train.entities import entity_counts, entity_metrics
from raytune_llm.train.collectives import reduce_over_workers


class TokenTally:
    """Entity counts per type, word-tag hits and words, summed over the batches given to `add`."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self.types = entity_types(labels)
        self.outside = self.labels.index("O") if "O" in self.labels else 0
        self.counts = np.zeros((len(self.types), 3), dtype=np.int64)
        self.correct_words = 0
        self.words = 0

    def add(self, data: TokenizedSplit, index: np.ndarray, predictions: np.ndarray) -> list[list[str]]:
        """Count rows `index` given per sub-token predicted ids (batch × width); returns word tags."""
        assert data.word_ids is not None and data.word_tags is not None
        gold, predicted = [], []
        for i, row in enumerate(index):
            words = data.word_tags[row]
            pred = word_predictions(predictions[i, : len(data.word_ids[row])], data.word_ids[row], len(words),
                                    self.outside)
            self.correct_words += sum(p == g for p, g in zip(pred, words))
            self.words += len(words)
            gold.append([self.labels[t] for t in words])
            predicted.append([self.labels[t] for t in pred])
        self.counts += entity_counts(gold, predicted, self.types)
        return predicted

    def as_vector(self) -> np.ndarray:
        """Everything summed across workers, as one float64 vector (for an all-reduce)."""
        return np.concatenate([self.counts.ravel(), [self.correct_words, self.words]]).astype(np.float64)

    def metrics(self, summed: np.ndarray, prefix: str) -> dict[str, float]:
        """Entity metrics (micro `{prefix}f1`), word accuracy and support from a summed `as_vector`."""
        counts = summed[: self.counts.size].reshape(self.counts.shape)
        correct, words = summed[self.counts.size:]
        out = entity_metrics(counts, self.types, prefix)
        out[f"{prefix}accuracy"] = float(correct / words) if words else 0.0
        out[f"{prefix}support"] = out[f"{prefix}entities"]
        return out


def evaluate_tokens(torch: Any, engine: Any, data: TokenizedSplit, labels: list[str], batch_size: int,
                    ctx: dict[str, Any]) -> dict[str, float]:
    """Validation entity metrics from counts summed over all workers; val_loss per labelled sub-token."""
    engine.eval()
    tally = TokenTally(labels)
    loss_sum = labelled = 0.0
    with torch.no_grad():
        for index, real in eval_batches(len(data), rank=ctx["rank"], world=ctx["world"], batch=batch_size):
            ids, mask = pad_batch([data.input_ids[i] for i in index], ctx["pad_id"])
            targets = data.targets(index, ids.shape[1])
            input_ids, attention, gold = (torch.from_numpy(a).to(engine.device) for a in (ids, mask, targets))
            out = engine(input_ids=input_ids, attention_mask=attention, labels=gold)
            if real:
                tally.add(data, index, out.logits.argmax(dim=-1).cpu().numpy())
                count = float((targets != -100).sum())
                loss_sum += float(out.loss) * count
                labelled += count
    values = reduce_over_workers(torch, np.append(tally.as_vector(), [loss_sum, labelled]), engine.device)
    metrics = tally.metrics(values[:-2], prefix="val_")
    metrics["val_loss"] = float(values[-2] / max(values[-1], 1.0))
    return metrics


def load_tagger(folder: str, device: str = "cpu") -> tuple[Any, Any, list[str], str]:
    """A saved tagger for inference: model, tokenizer, labels, and where the tokenizer files are.

    A `save_pretrained` folder loads with plain `transformers`; a LoRA adapter folder with peft's
    `AutoPeftModelForTokenClassification` on its base model (labels from `raytune_llm.json`).
    """
    from raytune_llm.evaluation.model import check_model_dir, is_adapter, model_labels, tokenizer_source
    from raytune_llm.models.loading import load_tokenizer

    path = check_model_dir(folder)
    labels = model_labels(path)
    label_args = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {label: i for i, label in enumerate(labels)}}
    if is_adapter(path):
        from peft import AutoPeftModelForTokenClassification

        model = AutoPeftModelForTokenClassification.from_pretrained(str(path), **label_args)
    else:
        from transformers import AutoModelForTokenClassification

        model = AutoModelForTokenClassification.from_pretrained(str(path), **label_args)
    source = tokenizer_source(path)
    return model.to(device).eval(), load_tokenizer(source), labels, source


def score_tokens(model_dir: str, data: TokenizedSplit, batch_size: int = 64, prefix: str = "test_") -> dict[str, Any]:
    """Entity metrics of a saved tagger (or LoRA adapter) on a token split, counted on one process."""
    import torch

    model, tokenizer, labels, _ = load_tagger(model_dir)
    tally = TokenTally(labels)
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            index = np.arange(start, min(start + batch_size, len(data)))
            ids, mask = pad_batch([data.input_ids[i] for i in index], tokenizer.pad_token_id)
            logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
            tally.add(data, index, logits.argmax(dim=-1).numpy())
    metrics: dict[str, Any] = tally.metrics(tally.as_vector(), prefix)
    metrics[f"{prefix}entity_counts"] = {kind: dict(zip(("tp", "predicted", "gold"), map(int, row)))
                                         for kind, row in zip(tally.types, tally.counts)}
    return metrics
