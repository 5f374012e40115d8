"""Deterministic batching and the DeepSpeed config derived from the schema."""

from __future__ import annotations

import numpy as np
import pytest

from raytune_llm.config.schema import TrainConfig
from raytune_llm.train.batches import eval_batches, train_micro_batches
from raytune_llm.train.deepspeed_config import build_deepspeed_config, optimizer_steps


LENGTHS = np.random.default_rng(3).integers(5, 60, 103)


def _steps(world: int, micro: int, accum: int, n: int = 103, grouped: bool = False) -> list[set[int]]:
    """Rows seen per optimizer step, pooled over workers and accumulation."""
    lengths = LENGTHS[:n] if grouped else None
    per_rank = [list(train_micro_batches(n, 1, 42, rank=r, world=world, micro=micro, accum=accum, lengths=lengths, group=4))
                for r in range(world)]
    steps = []
    for step in range(len(per_rank[0]) // accum):
        rows: set[int] = set()
        for r in range(world):
            for batch in per_rank[r][step * accum : (step + 1) * accum]:
                assert len(batch) == micro
                rows.update(batch.tolist())
        steps.append(rows)
    return steps


def test_same_global_batch_same_rows_per_step() -> None:
    one = _steps(world=1, micro=8, accum=1)
    assert one == _steps(world=2, micro=4, accum=1)
    assert one == _steps(world=1, micro=4, accum=2)
    assert one == _steps(world=2, micro=2, accum=2)
    assert len(one) == 103 // 8 and all(len(s) == 8 for s in one)


def test_length_grouping_keeps_equivalence_and_cuts_padding() -> None:
    grouped = _steps(world=1, micro=8, accum=1, grouped=True)
    assert grouped == _steps(world=2, micro=4, accum=1, grouped=True)
    assert grouped == _steps(world=2, micro=2, accum=2, grouped=True)
    assert len(set().union(*grouped)) == len(grouped) * 8, "no row twice in an epoch"

    def padded(steps: list[set[int]]) -> int:
        return sum(int(LENGTHS[list(s)].max()) * len(s) for s in steps)

    assert padded(grouped) < 0.85 * padded(_steps(world=1, micro=8, accum=1))


def test_eval_batches_cover_each_row_once_with_equal_batch_counts() -> None:
    for n, world in [(10, 3), (1, 2), (64, 2)]:
        per_rank = [list(eval_batches(n, rank=r, world=world, batch=4)) for r in range(world)]
        assert len({len(b) for b in per_rank}) == 1, "ranks must run the same number of forwards (ZeRO-3)"
        seen = np.concatenate([idx for batches in per_rank for idx, real in batches if real])
        assert sorted(seen.tolist()) == list(range(n))


def test_deepspeed_config_from_schema() -> None:
    train = TrainConfig(num_workers=2, batch_size=4, gradient_accumulation_steps=3, zero_stage=3,
                        precision="bf16", learning_rate=1e-4, warmup_ratio=0.25, epochs=2, max_grad_norm=0.5)
    steps = optimizer_steps(100, train)
    config = build_deepspeed_config(train, steps)
    assert steps == 100 // 24
    assert config["train_batch_size"] == 24 == train.global_batch_size
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 3
    assert config["zero_optimization"]["stage"] == 3
    assert config["bf16"]["enabled"] and not config["fp16"]["enabled"]
    assert config["gradient_clipping"] == 0.5
    assert config["scheduler"]["params"]["total_num_steps"] == steps * 2
    assert config["scheduler"]["params"]["warmup_num_steps"] == 2
    no_warmup = build_deepspeed_config(TrainConfig(warmup_ratio=0.0), 10)
    assert no_warmup["scheduler"]["params"]["warmup_num_steps"] == 2
    assert config["optimizer"]["params"]["lr"] == 1e-4


def test_too_few_rows_for_one_global_batch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="fewer than one global batch"):
        optimizer_steps(10, TrainConfig(num_workers=2, batch_size=8))
