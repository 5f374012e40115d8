"""Derive the DeepSpeed config dict from the typed schema.

A plain function returning a plain dict, so tests can compare it directly and
users can print exactly what DeepSpeed will receive.
"""

from __future__ import annotations

import math
from typing import Any

from raytune_llm.config.schema import TrainConfig


def optimizer_steps(train_rows: int, train: TrainConfig) -> int:
    """Optimizer steps per epoch; the last partial global batch is dropped.

    Dropping it keeps every worker's micro-batch the same size, which is what
    makes N workers × micro-batch b match 1 worker × micro-batch N·b exactly.
    """
    steps = train_rows // train.global_batch_size
    if steps < 1:
        raise ValueError(
            f"the training split has {train_rows} rows, fewer than one global batch "
            f"({train.global_batch_size} = batch_size {train.batch_size} × accumulation "
            f"{train.gradient_accumulation_steps} × workers {train.num_workers}); "
            "lower train.batch_size or add data"
        )
    return steps


def warmup_steps_for(train: TrainConfig, total_steps: int) -> int:
    """Warm-up steps for DeepSpeed's WarmupDecayLR.

    At least 2: its constructor takes log(warmup_num_steps) even for linear
    warm-up, so 0 and 1 crash it. Two steps at a tiny LR are the closest to "none".
    """
    return max(2, min(total_steps - 1, math.ceil(train.warmup_ratio * total_steps)))


def warmup_decay_factor(optimizer_step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier DeepSpeed's linear WarmupDecayLR applies at a 0-based optimizer step.

    DeepSpeed starts at the minimum LR (0) and advances its schedule after each
    step, so step k runs with the schedule's value for iteration k-1. The DDP
    strategy uses this function to follow exactly the same curve.
    """
    iteration = optimizer_step - 1
    if iteration < 0:
        return 0.0
    if iteration < warmup_steps:
        return iteration / warmup_steps
    return max(0.0, (total_steps - iteration) / max(1.0, total_steps - warmup_steps))


def build_deepspeed_config(train: TrainConfig, steps_per_epoch: int) -> dict[str, Any]:
    """The DeepSpeed config for one training run (ZeRO stage, batches, precision, AdamW, warm-up)."""
    total_steps = max(1, steps_per_epoch * train.epochs)
    warmup_steps = warmup_steps_for(train, total_steps)
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage == 3:
        # Lets rank 0 gather a full 16-bit state dict when exporting the model.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": train.global_batch_size,
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "gradient_clipping": train.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {"enabled": train.precision == "fp16"},
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": train.learning_rate, "betas": [0.9, 0.999], "eps": 1e-8,
                       "weight_decay": train.weight_decay},
        },
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {
                "total_num_steps": total_steps,
                "warmup_min_lr": 0.0,
                "warmup_max_lr": train.learning_rate,
                "warmup_num_steps": warmup_steps,
                "warmup_type": "linear",
            },
        },
        "steps_per_print": 10**9,  # our loop reports; DeepSpeed's own prints would duplicate it
        "wall_clock_breakdown": False,
    }
