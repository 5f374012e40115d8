"""Generative models: classification by generation, and exact match / token F1 of free answers.

A decoder LLM classifies by answering with a label word: each text is wrapped in an
instruction that lists the labels (`classification_messages`, the same wording training uses,
see data/sft.py), the model generates greedily, and the answer is parsed back to a label
(`parse_label`). An answer that names no label counts as wrong for its gold class and as no
prediction for any class; the number of such answers is reported, never hidden.

Instruction data (prompt/response records) is scored by exact match and token-level F1 of the
generated answer against the reference, after SQuAD-style normalisation (lower case, no
punctuation or articles, single spaces).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raytune_llm.evaluation.metrics import scores_from_counts

__all__ = ["DEFAULT_INSTRUCTION", "answer_scores", "classification_messages", "exact_match", "generate",
           "label_scores", "label_scores_from_counts", "load_generator", "normalize_answer", "parse_label", "token_f1"]

DEFAULT_INSTRUCTION = "Classify the text as one of: {labels}. Answer with the label only."


def classification_messages(text: str, labels: Sequence[str], instruction: str | None = None,
                            answer: str | None = None) -> list[dict[str, str]]:
    """The conversation that asks for `text`'s label (and, for training, answers it)."""
    prompt = (instruction or DEFAULT_INSTRUCTION).format(labels=", ".join(labels))
    messages = [{"role": "user", "content": f"{prompt}\n\nText: {text}"}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def parse_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer names: the one it starts with, else the only one it mentions, else None.

    Case-insensitive and on word boundaries, so "Positive." and "The sentiment is positive" both
    parse, "neutral or positive" does not (two labels), and "positively" does not match.
    """
    text = answer.strip().lower()
    found = [label for label in labels if re.search(rf"(?<!\w){re.escape(label.lower())}(?!\w)", text)]
    starts = [label for label in found if text.startswith(label.lower())]
    if starts:
        return max(starts, key=len)  # "very positive" over "positive" when both are labels
    return found[0] if len(found) == 1 else None


def label_scores(gold: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]) -> dict[str, Any]:
    """Classification scores of parsed answers; None (no label named) is wrong and predicts no class.

    Same as scikit-learn's `precision_recall_fscore_support(..., labels=labels)` with the unparsed
    answers given as a value outside `labels`.
    """
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    counts = np.zeros((k + 1, k + 1), dtype=np.int64)
    for g, p in zip(gold, predicted):
        counts[index[g], k if p is None else index[p]] += 1
    return label_scores_from_counts(counts, labels)


def label_scores_from_counts(counts: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """`label_scores` from counts: rows gold label ids, columns predicted ids, column k = unparsed.

    Counts can be summed over workers first, which is how training scores its validation split.
    """
    k = len(labels)
    counts = np.asarray(counts, dtype=np.int64)
    square = counts[:k, :k].copy()
    out = scores_from_counts(square, labels)
    # Unparsed answers lower recall (and accuracy) of their gold class; no class's precision changes.
    support = counts[:k, :].sum(axis=1).astype(np.float64)
    tp = np.diag(square).astype(np.float64)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.array([row["precision"] for row in out["per_class"]])
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    total = support.sum()
    accuracy = float(tp.sum() / total) if total else 0.0
    for i, row in enumerate(out["per_class"]):
        row.update(recall=float(recall[i]), f1=float(f1[i]), support=int(support[i]))
    weighted = lambda v: float((v * support).sum() / total) if total else 0.0  # noqa: E731
    out.update(
        n=int(total), accuracy=accuracy, unparsed=int(counts[:k, k].sum()),
        precision={**out["precision"], "weighted": weighted(precision)},
        recall={"macro": float(recall.mean()), "micro": accuracy, "weighted": weighted(recall)},
        f1={"macro": float(f1.mean()), "micro": _micro_f1(tp.sum(), square.sum(), total), "weighted": weighted(f1)},
    )
    return out


def _micro_f1(tp: float, predicted: float, gold: float) -> float:
    precision = tp / predicted if predicted else 0.0
    recall = tp / gold if gold else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, punctuation and articles removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall over the normalised answers (bag of tokens)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean exact match and token F1 over answer pairs."""
    n = len(references)
    return {"n": n, "exact_match": float(np.mean([exact_match(p, r) for p, r in zip(predictions, references)])) if n
            else 0.0, "token_f1": float(np.mean([token_f1(p, r) for p, r in zip(predictions, references)])) if n
            else 0.0}


def load_generator(model_dir: str, device: str = "cpu") -> tuple[Any, Any]:
    """A causal LM (merged folder, or a LoRA adapter over its base) and its tokenizer, left-padded."""
    from pathlib import Path

    from raytune_llm.evaluation.model import tokenizer_source
    from raytune_llm.models.loading import load_tokenizer

    folder = Path(model_dir)
    if (folder / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(folder))
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(folder))
    tokenizer = load_tokenizer(tokenizer_source(folder))
    tokenizer.padding_side = "left"  # generation continues from the last prompt token of every row
    return model.to(device).eval(), tokenizer


def generate(model: Any, tokenizer: Any, conversations: Sequence[Sequence[Mapping[str, str]]],
             max_new_tokens: int, batch_size: int = 16, max_length: int = 512) -> list[str]:
    """Greedy answers to each conversation (rendered with the chat template), in input order.

    Prompts are sorted by length for batching (less padding) and the answers put back in order.
    """
    import torch

    prompts = [tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False)
               for c in conversations]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        encoded = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, encoded["input_ids"].shape[1]:]
        for i, text in zip(chunk, tokenizer.batch_decode(new, skip_special_tokens=True)):
            answers[i] = text.strip()
    return answers
