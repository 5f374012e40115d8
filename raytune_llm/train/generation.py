"""The generation task on a Ray Train worker: packed SFT steps and evaluation by generating.

Training: each micro-batch holds the same examples it would without packing (so the global
batch and the equivalence of worker layouts are unchanged); the examples are packed into rows
of `data.max_length` (`data.packing`, on by default), which removes most padding, and
`train.causal.causal_lm_forward` keeps attention inside each example.

Evaluation: every validation row's prompt is continued greedily; for classification data the
answer is parsed to a label and confusion counts are summed over workers (val_f1 = macro-F1 of
parsed labels, unparsed answers counted wrong), for instruction data exact match and token F1
are summed (val_f1 = mean token F1). The teacher-forced validation loss is reported too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from raytune_llm.data.packing import IGNORE_INDEX, pack_examples, packed_batch, padded_batch
from raytune_llm.evaluation.generation import exact_match, parse_label, token_f1
from raytune_llm.train.batches import TokenizedSplit, eval_batches
from raytune_llm.train.causal import causal_lm_forward
from raytune_llm.train.collectives import reduce_over_workers

__all__ = ["evaluate_generation", "generation_batch", "mask_dtype", "score_generation"]


def generation_batch(data: TokenizedSplit, index: np.ndarray, pad_id: int, max_length: int, packing: bool) -> Any:
    """The micro-batch of rows `index`, packed into rows of `max_length` or padded one per row."""
    assert data.token_labels is not None
    ids = [data.input_ids[i] for i in index]
    labels = [data.token_labels[i] for i in index]
    if not packing:
        return padded_batch(range(len(ids)), ids, labels, pad_id)
    return packed_batch(pack_examples([len(x) for x in ids], max_length), ids, labels, pad_id)


def mask_dtype(torch: Any, engine: Any) -> Any:
    # The additive mask must match the activations' dtype (bf16/fp16 under DeepSpeed mixed precision).
    try:
        return next(engine.module.parameters()).dtype
    except (AttributeError, StopIteration):
        return torch.float32


def _greedy(torch: Any, module: Any, prompts: Sequence[Sequence[int]], pad_id: int, max_new_tokens: int,
            device: Any) -> list[list[int]]:
    """Greedy continuations of left-padded prompts (the model's own generate loop)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(list(prompt))
        mask[i, width - len(prompt):] = 1
    out = module.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                          do_sample=False, pad_token_id=pad_id)
    return out[:, width:].tolist()


def evaluate_generation(torch: Any, engine: Any, data: TokenizedSplit, labels: list[str], tokenizer: Any,
                        max_new_tokens: int, batch_size: int, rank: int, world: int, pad_id: int,
                        ) -> dict[str, float]:
    """Validation metrics of generated answers, summed over all workers (see the module docstring)."""
    assert data.token_labels is not None and data.prompt_lengths is not None and data.references is not None
    module = engine.module
    engine.eval()
    classify = bool(labels)
    k = len(labels)
    counts = np.zeros((k + 1, k + 1), dtype=np.int64) if classify else np.zeros((1, 1), dtype=np.int64)
    sums = np.zeros(3)  # exact match, token F1, answers
    loss_sum = tokens = 0.0
    with torch.no_grad():
        for index, real in eval_batches(len(data), rank=rank, world=world, batch=batch_size):
            batch = padded_batch(index, data.input_ids, data.token_labels, pad_id)
            out, _ = causal_lm_forward(torch, engine, batch, engine.device, mask_dtype(torch, engine))
            answered = int((batch.labels[:, 1:] != IGNORE_INDEX).sum())  # targets after the model's shift
            prompts = [data.input_ids[i][:data.prompt_lengths[i]] for i in index]
            answers = tokenizer.batch_decode(_greedy(torch, module, prompts, pad_id, max_new_tokens, engine.device),
                                             skip_special_tokens=True)
            if not real:
                continue  # filler batch: computed so every rank runs the same collectives, then ignored
            loss_sum += float(out.loss) * answered
            tokens += answered
            for row, answer in zip(index, answers):
                reference = data.references[row]
                sums += (exact_match(answer, reference), token_f1(answer, reference), 1)
                if classify:
                    parsed = parse_label(answer, labels)
                    counts[int(data.labels[row]), k if parsed is None else labels.index(parsed)] += 1
    total = reduce_over_workers(torch, np.concatenate([counts.ravel(), sums, [loss_sum, tokens]]), engine.device)
    counts = total[:counts.size].reshape(counts.shape)
    em, f1, n, loss, answered_tokens = total[counts.size:]
    metrics = {"val_exact_match": em / max(n, 1), "val_token_f1": f1 / max(n, 1),
               "val_loss": loss / max(answered_tokens, 1), "val_support": float(n)}
    if classify:
        from raytune_llm.evaluation.generation import label_scores_from_counts

        scored = label_scores_from_counts(counts, labels)
        metrics.update({"val_f1": scored["f1"]["macro"], "val_accuracy": scored["accuracy"],
                        "val_unparsed": float(scored["unparsed"])})
        metrics.update({f"val_f1/{c['label']}": c["f1"] for c in scored["per_class"]})
    else:
        metrics.update({"val_f1": metrics["val_token_f1"], "val_accuracy": metrics["val_exact_match"]})
    return metrics



def score_generation(model_dir: str, data: TokenizedSplit, batch_size: int, prefix: str = "test_",
                     max_new_tokens: int | None = None) -> dict[str, Any]:
    """Score a saved causal LM (merged folder or LoRA adapter) on a generation split, in one process.

    Same prompts and greedy decoding as validation; labels come from the checkpoint's metadata
    (empty for instruction data, which gets exact match and token F1 only).
    """
    import torch

    from raytune_llm.evaluation.generation import answer_scores, label_scores, load_generator
    from raytune_llm.evaluation.model import model_metadata

    assert data.prompt_lengths is not None and data.references is not None
    labels = [str(x) for x in model_metadata(model_dir).get("labels") or []]
    model, tokenizer = load_generator(model_dir)
    budget = max_new_tokens or (8 if labels else 64)
    order = sorted(range(len(data)), key=lambda i: data.prompt_lengths[i])  # less padding per batch
    by_row: dict[int, str] = {}
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            prompts = [data.input_ids[i][:data.prompt_lengths[i]] for i in chunk]
            out = _greedy(torch, model, prompts, int(tokenizer.pad_token_id), budget, model.device)
            by_row.update(zip(chunk, tokenizer.batch_decode(out, skip_special_tokens=True)))
    answers = [by_row[i] for i in range(len(data))]
    scores = answer_scores(answers, data.references)
    metrics: dict[str, Any] = {f"{prefix}exact_match": scores["exact_match"], f"{prefix}token_f1": scores["token_f1"],
                               f"{prefix}support": float(len(data))}
    if labels:
        scored = label_scores([labels[int(g)] for g in data.labels], [parse_label(a, labels) for a in answers], labels)
        metrics.update({f"{prefix}f1": scored["f1"]["macro"], f"{prefix}accuracy": scored["accuracy"],
                        f"{prefix}unparsed": float(scored["unparsed"]), f"{prefix}confusion": scored["confusion"]})
        metrics.update({f"{prefix}f1/{c['label']}": c["f1"] for c in scored["per_class"]})
    else:
        metrics.update({f"{prefix}f1": scores["token_f1"], f"{prefix}accuracy": scores["exact_match"]})
    return metrics
