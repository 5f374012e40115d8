"""Score a saved model folder on a tokenized split, with plain `transformers` (or `peft` for an adapter).

Used once per sweep, for the trial chosen by validation F1, on the test
split. It loads the checkpoint exactly as a user would (`from_pretrained` on
the folder; a LoRA adapter folder through peft on its base model), so the
reported test F1 is what the exported model delivers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raytune_llm.train.batches import pad_batch, read_split
from raytune_llm.train.metrics import confusion_counts, metrics_from_counts


def predict_split(model_dir: str, split_path: str, batch_size: int = 64, threads: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Predicted and gold label ids for every row of a tokenized split, plus the label names."""
    import torch

    from raytune_llm.evaluation.model import load_scorer

    if threads:
        torch.set_num_threads(threads)
    # A merged model loads with plain transformers, a LoRA adapter folder with peft on its base model.
    scorer = load_scorer(model_dir)
    tokenizer, model, labels = scorer.tokenizer, scorer.model, scorer.labels
    data = read_split(split_path)
    predictions = np.zeros(len(data), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            ids, mask = pad_batch(data.input_ids[start : start + batch_size], tokenizer.pad_token_id)
            logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
            predictions[start : start + len(ids)] = logits.argmax(dim=-1).numpy()
    return predictions, data.labels, labels


def score_split(model_dir: str, split_path: str, batch_size: int = 64, prefix: str = "test_") -> dict[str, Any]:
    """Accuracy, F1 (macro/micro/weighted) and per-class P/R/F1 of a model on a split.

    A token classification split gets entity-level metrics instead (`{prefix}f1`: micro F1).
    """
    data = read_split(split_path)
    if data.is_generation:
        from raytune_llm.train.generation import score_generation

        return score_generation(model_dir, data, batch_size, prefix)
    if data.is_tokens:
        from raytune_llm.train.token_eval import score_tokens

        return score_tokens(model_dir, data, batch_size, prefix)
    predictions, gold, labels = predict_split(model_dir, split_path, batch_size)
    counts = confusion_counts(gold, predictions, len(labels))
    metrics: dict[str, Any] = metrics_from_counts(counts, labels, prefix=prefix)
    metrics[f"{prefix}confusion"] = counts.tolist()
    return metrics
