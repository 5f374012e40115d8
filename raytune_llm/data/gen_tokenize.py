"""The generation task's row transform (a Ray Data callable class): conversations -> token ids.

Rows come either from instruction data (`messages`, last turn the assistant's answer) or from
classification data (`text`, `label`), which becomes a conversation asking for the label with
the label word as the answer (`evaluation.generation.classification_messages`, the same
wording evaluation uses). Each conversation is rendered by `data.sft.render_conversation`:
token ids, per-token labels (-100 except on the answer), the prompt length (generation starts
there at evaluation) and the reference answer. A row that cannot be rendered (its prompt
fills data.max_length, or no template) keeps empty ids and its `render_problem`, for the
prepare step to count and report.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from raytune_llm.data.transforms import normalize_text, stable_id

__all__ = ["GENERATION_COLUMNS", "RenderConversations"]

GENERATION_COLUMNS = ("input_ids", "token_labels", "prompt_length", "num_tokens", "reference", "label_id",
                      "render_problem")


class RenderConversations:
    """Loads the tokenizer once per actor; `__call__` renders a batch (see the module docstring)."""

    def __init__(self, model_path: str, max_length: int, labels: list[str], trust_remote_code: bool = False,
                 template: str | None = None, instruction: str | None = None) -> None:
        from raytune_llm.models.loading import load_tokenizer

        self.tokenizer = load_tokenizer(model_path, trust_remote_code)
        self.max_length = max_length
        self.labels = labels
        self.label_ids = {label: i for i, label in enumerate(labels)}
        self.template = template
        self.instruction = instruction

    def _conversation(self, row: dict[str, Any]) -> list[dict[str, str]]:
        from raytune_llm.evaluation.generation import classification_messages

        if row.get("messages"):
            return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        return classification_messages(row["text"], self.labels, self.instruction, answer=row["label"])

    def __call__(self, batch: pa.Table) -> pa.Table:
        from raytune_llm.data.sft import render_conversation

        rows = batch.to_pylist()
        columns: dict[str, list[Any]] = {name: [] for name in ("text", "id", *GENERATION_COLUMNS)}
        for row in rows:
            if not row.get("messages"):
                row["text"] = normalize_text(row["text"])
                row["label"] = str(row["label"]).strip()
            conversation = self._conversation(row)
            rendered = render_conversation(self.tokenizer, conversation, self.max_length, self.template)
            given = row.get("source_id")
            columns["text"].append(row["text"])
            columns["id"].append(str(given) if given not in (None, "") else stable_id(row["text"]))
            columns["input_ids"].append(rendered.input_ids)
            columns["token_labels"].append(rendered.labels)
            start = next((i for i, t in enumerate(rendered.labels) if t != -100), len(rendered.labels))
            columns["prompt_length"].append(start)
            columns["num_tokens"].append(len(rendered.input_ids))
            columns["reference"].append(conversation[-1]["content"])
            columns["label_id"].append(self.label_ids.get(row.get("label") or "", -1))
            columns["render_problem"].append(rendered.problem)
        out = batch.drop_columns([c for c in ("text", "id") if c in batch.column_names])
        types = {"input_ids": pa.list_(pa.int32()), "token_labels": pa.list_(pa.int32()), "prompt_length": pa.int32(),
                 "num_tokens": pa.int32(), "label_id": pa.int32(), "render_problem": pa.string(),
                 "reference": pa.string(), "text": pa.string(), "id": pa.string()}
        for name, values in columns.items():
            out = out.append_column(name, pa.array(values, types[name]))
        return out
