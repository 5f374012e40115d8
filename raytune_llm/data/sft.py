"""Instruction records rendered into token ids with the loss on the response only.

A conversation (`messages`, from data/formats/instruct.py) becomes one example: the tokens of
the whole conversation, and labels that are IGNORE_INDEX everywhere except on the last
assistant turn (including its end-of-turn token, so the model learns to stop). Two renderers:
- the tokenizer's chat template (SmolLM2, Llama-3, ... ship one): the prompt is the
  conversation up to the last assistant turn with the generation prompt appended, and the
  template must render the full conversation as that prompt followed by the answer, which is
  checked per example rather than assumed;
- a prompt template from the config (`{prompt}` placeholder), for base models without a chat
  template: prompt tokens (with the tokenizer's own special tokens), then the response and EOS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raytune_llm.data.packing import IGNORE_INDEX

__all__ = ["Rendered", "render_conversation"]


@dataclass(frozen=True)
class Rendered:
    """One tokenized example; `problem` says why it cannot be used (then the ids are empty)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    problem: str | None = None

    @property
    def response_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _ids(encoded: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); 4.x a list.
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
    return [int(i) for i in ids]


def _chat_ids(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], list[int]] | str:
    prompt = _ids(tokenizer.apply_chat_template(list(messages[:-1]), add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(list(messages), tokenize=True))
    if full[:len(prompt)] != prompt:
        return ("the chat template renders the conversation differently from its prompt plus answer, so the "
                "response tokens cannot be told apart; set data.prompt_template instead")
    return prompt, full[len(prompt):]


def _template_ids(tokenizer: Any, template: str, prompt_text: str, response: str) -> tuple[list[int], list[int]]:
    prompt = _ids(tokenizer(template.format(prompt=prompt_text), add_special_tokens=True))
    answer = _ids(tokenizer(response, add_special_tokens=False))
    if tokenizer.eos_token_id is not None:
        answer.append(int(tokenizer.eos_token_id))
    return prompt, answer


def render_conversation(tokenizer: Any, messages: Sequence[Mapping[str, str]], max_length: int,
                        template: str | None = None) -> Rendered:
    """Token ids and response-only labels of one conversation, cut to `max_length` tokens.

    Truncation cuts the end of the answer (the prompt is what the answer depends on); an
    example whose prompt alone fills `max_length` has nothing left to learn from and comes
    back with a `problem`, for the caller to count and report.
    """
    if template is not None:
        history = "\n\n".join(m["content"] for m in messages[:-1] if m["role"] != "system")
        parts: tuple[list[int], list[int]] | str = _template_ids(tokenizer, template, history, messages[-1]["content"])
    elif getattr(tokenizer, "chat_template", None):
        parts = _chat_ids(tokenizer, messages)
    else:
        parts = "the tokenizer has no chat template; set data.prompt_template (e.g. '### Instruction:\\n{prompt}" \
                "\\n\\n### Response:\\n')"
    if isinstance(parts, str):
        return Rendered([], [], problem=parts)
    prompt, answer = parts
    if len(prompt) >= max_length:
        return Rendered([], [], truncated=True,
                        problem=f"the prompt alone has {len(prompt)} tokens, data.max_length is {max_length}")
    ids = (prompt + answer)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + answer)[:max_length]
    return Rendered(ids, labels, truncated=len(prompt) + len(answer) > max_length)
