"""Sequence packing: rows are filled correctly and attention never crosses examples."""

from __future__ import annotations

import numpy as np
import pytest

from raytune_llm.data.packing import (
    IGNORE_INDEX,
    pack_examples,
    packed_batch,
    packing_stats,
    padded_batch,
    segment_mask,
)


def test_every_example_lands_in_exactly_one_row_that_fits() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 120, size=500).tolist()
    rows = pack_examples(lengths, 128)
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(500))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    # Lower bound: the token count, and one row each for examples longer than half a row.
    bound = max(int(np.ceil(sum(lengths) / 128)), sum(n > 64 for n in lengths))
    assert len(rows) <= 1.1 * bound
    assert pack_examples(lengths, 128) == rows  # deterministic


def test_pack_refuses_an_example_longer_than_a_row() -> None:
    with pytest.raises(ValueError, match="example 1 has 9 tokens"):
        pack_examples([3, 9], 8)


def test_packed_layout_restarts_positions_and_masks_padding_labels() -> None:
    ids = [[5, 6, 7], [8, 9], [10]]
    labels = [[IGNORE_INDEX, 6, 7], [IGNORE_INDEX, 9], [10]]
    batch = packed_batch([[0, 1], [2]], ids, labels, pad_id=0, width=6)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9, 0], [10, 0, 0, 0, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1, 0], [0, 0, 1, 2, 3, 4]]
    assert batch.segments.tolist() == [[1, 1, 1, 2, 2, 0], [1, 0, 0, 0, 0, 0]]
    assert batch.labels[0, -1] == IGNORE_INDEX and (batch.labels[1, 1:] == IGNORE_INDEX).all()
    # No example's first token is a target: it would be "predicted" from the previous example.
    assert batch.labels.tolist()[0][:5] == [IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]
    assert batch.real_tokens == 6


def test_stats_report_the_real_token_share_of_both_layouts() -> None:
    lengths = [10, 2, 2, 2]
    stats = packing_stats(lengths, max_length=16, batch_rows=4)
    assert stats.padded_share == pytest.approx(16 / 40)
    assert stats.rows_packed == 1 and stats.packed_share == pytest.approx(16 / 16)


def _tiny_llama(attn: str) -> object:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_logits_equal_each_example_alone(attn: str) -> None:
    """The proof that attention stays inside an example: every token's logits in the packed row
    are those of its example run on its own. Without the segment mask they are not."""
    import torch

    model = _tiny_llama(attn)
    rng = np.random.default_rng(1)
    ids = [rng.integers(1, 64, size=n).tolist() for n in (7, 4, 9)]
    batch = packed_batch([[0, 1, 2]], ids, ids, pad_id=0, width=24)
    inputs = torch.tensor(batch.input_ids)
    positions = torch.tensor(batch.position_ids)
    segments = torch.tensor(batch.segments)
    with torch.no_grad():
        packed = model(input_ids=inputs, position_ids=positions,
                       attention_mask=segment_mask(segments, torch.float32)).logits[0]
        # Control: the same row with a plain causal mask lets later examples see earlier ones.
        leaky = model(input_ids=inputs, position_ids=positions, attention_mask=torch.ones_like(inputs)).logits[0]
        at = 0
        for example in ids:
            alone = model(input_ids=torch.tensor([example])).logits[0]
            torch.testing.assert_close(packed[at:at + len(example)], alone, atol=1e-5, rtol=1e-4)
            at += len(example)
        assert not torch.isnan(packed).any()  # padding rows have something to attend to
        second = slice(len(ids[0]), len(ids[0]) + len(ids[1]))
        assert (leaky[second] - packed[second]).abs().max() > 1e-3


def test_packed_loss_equals_padded_loss() -> None:
    """Same labelled tokens, same logits: the mean token loss does not depend on the layout."""
    import torch

    model = _tiny_llama("sdpa")
    rng = np.random.default_rng(2)
    ids = [rng.integers(1, 64, size=n).tolist() for n in (12, 3, 5, 8)]
    labels = [[IGNORE_INDEX] * 2 + row[2:] for row in ids]  # no loss on the two "prompt" tokens

    def loss(batch: object) -> float:
        with torch.no_grad():
            out = model(input_ids=torch.tensor(batch.input_ids), position_ids=torch.tensor(batch.position_ids),
                        attention_mask=segment_mask(torch.tensor(batch.segments), torch.float32),
                        labels=torch.tensor(batch.labels))
        return float(out.loss)

    rows = pack_examples([len(r) for r in ids], 16)
    assert len(rows) == 2  # 12+3 and 8+5 (or similar): packing actually happened
    assert loss(packed_batch(rows, ids, labels, pad_id=0)) == pytest.approx(
        loss(padded_batch(range(4), ids, labels, pad_id=0)), rel=1e-5)
