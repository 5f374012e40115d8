"""Instruction records -> token ids with the loss on the response only (real SmolLM2 tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raytune_llm.data.packing import IGNORE_INDEX
from raytune_llm.data.sft import render_conversation

MESSAGES = [{"role": "user", "content": "Classify the sentiment: profit rose 5 %."},
            {"role": "assistant", "content": "positive"}]


@pytest.fixture(scope="module")
def smol_tokenizer(smollm2_dir: Path) -> object:
    from raytune_llm.models.loading import load_tokenizer

    return load_tokenizer(str(smollm2_dir))


def _target_text(tokenizer: object, rendered: object) -> str:
    return tokenizer.decode([i for i, label in zip(rendered.input_ids, rendered.labels) if label != IGNORE_INDEX])


def test_chat_template_puts_the_loss_on_the_answer_and_its_end_token(smol_tokenizer: object) -> None:
    rendered = render_conversation(smol_tokenizer, MESSAGES, max_length=256)
    assert rendered.problem is None and not rendered.truncated
    assert _target_text(smol_tokenizer, rendered).startswith("positive<|im_end|>")
    prompt = smol_tokenizer.decode(rendered.input_ids[: rendered.labels.index(next(
        label for label in rendered.labels if label != IGNORE_INDEX))])
    assert prompt.endswith("<|im_start|>assistant\n") and "profit rose" in prompt


def test_prompt_template_for_models_without_a_chat_template(tiny_model_dir: Path) -> None:
    from raytune_llm.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))  # MiniLM's tokenizer: no chat template
    refused = render_conversation(tokenizer, MESSAGES, max_length=64)
    assert refused.problem is not None and "data.prompt_template" in refused.problem
    rendered = render_conversation(tokenizer, MESSAGES, max_length=64, template="question: {prompt} answer:")
    assert _target_text(tokenizer, rendered) == "positive"


def test_truncation_cuts_the_answer_and_a_too_long_prompt_is_reported(smol_tokenizer: object) -> None:
    full = render_conversation(smol_tokenizer, MESSAGES, max_length=256)
    answer_start = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    cut = render_conversation(smol_tokenizer, MESSAGES, max_length=answer_start + 1)
    assert cut.truncated and len(cut.input_ids) == answer_start + 1 and cut.response_tokens == 1
    too_long = render_conversation(smol_tokenizer, MESSAGES, max_length=answer_start)
    assert too_long.problem is not None and f"{answer_start} tokens" in too_long.problem
