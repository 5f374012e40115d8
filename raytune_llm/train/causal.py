"""The causal-LM (instruction tuning) forward pass on packed or padded batches.

One function, used by training and by the packing benchmark, so the benchmark measures the
step that trains. A batch from `data.packing.packed_batch` carries its own position ids and
segments; the block-diagonal mask built from the segments keeps every example's attention
inside the example, and the labels are IGNORE_INDEX outside response tokens, so padding and
prompts never reach the loss. Hugging Face shifts the labels by one inside the model.
"""

from __future__ import annotations

from typing import Any

from raytune_llm.data.packing import PackedBatch, segment_mask

__all__ = ["causal_lm_forward"]


def causal_lm_forward(torch: Any, model: Any, batch: PackedBatch, device: Any, dtype: Any = None) -> tuple[Any, int]:
    """The model's output (with `.loss`, the mean over response tokens) and the batch's real tokens.

    `dtype` is the dtype of the attention mask (the model's compute dtype; fp32 by default):
    a mask of another precision than the activations is rejected by SDPA.
    """
    segments = torch.as_tensor(batch.segments, device=device)
    out = model(
        input_ids=torch.as_tensor(batch.input_ids, device=device),
        position_ids=torch.as_tensor(batch.position_ids, device=device),
        attention_mask=segment_mask(segments, dtype or torch.float32),
        labels=torch.as_tensor(batch.labels, device=device),
    )
    return out, batch.real_tokens
