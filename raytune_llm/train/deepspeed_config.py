"""Derive the DeepSpeed config dict from the typed schema, and merge an expert's raw one over it.

Plain functions returning plain dicts, so tests can compare them directly and
users can print exactly what DeepSpeed will receive. The learning-rate curves
are also written out here as functions of the optimizer step, because the DDP
engine (`ddp_engine.py`) must follow DeepSpeed's schedulers step for step.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from raytune_llm.config.schema import TrainConfig

#: The DeepSpeed scheduler behind each `train.lr_schedule`.
SCHEDULERS = {"linear": "WarmupDecayLR", "cosine": "WarmupCosineLR"}

#: Keys whose value comes from the schema, each with the settings an expert should change instead.
#: A dotted key ending in "." governs its whole subtree.
_GOVERNED: dict[str, str] = {
    "train_batch_size": "train.batch_size × train.gradient_accumulation_steps × train.num_workers",
    "train_micro_batch_size_per_gpu": "train.batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "gradient_clipping": "train.max_grad_norm",
    "zero_optimization.stage": "train.zero_stage",
    "zero_optimization.offload_optimizer.device": "train.offload_optimizer",
    "zero_optimization.offload_param.device": "train.offload_params",
    "zero_optimization.stage3_gather_16bit_weights_on_model_save": "nothing: the ZeRO-3 model export needs it",
    "bf16.enabled": "train.precision",
    "bfloat16.enabled": "train.precision",
    "fp16.enabled": "train.precision",
    "optimizer.type": "train.optimizer",
    "optimizer.params.lr": "train.learning_rate",
    "optimizer.params.weight_decay": "train.weight_decay",
    "scheduler.": "train.lr_schedule, train.learning_rate, train.warmup_ratio and train.epochs",
}
#: Derived values that depend on the number of training rows, unknown when only the config is checked.
_STEP_DEPENDENT = ("scheduler.params.total_num_steps", "scheduler.params.warmup_num_steps")
_OFFLOAD_DEVICES = ("zero_optimization.offload_optimizer.device", "zero_optimization.offload_param.device")


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
    """Warm-up steps for DeepSpeed's WarmupDecayLR / WarmupCosineLR.

    At least 2: both constructors take log(warmup_num_steps) even for linear
    warm-up (and raise it to 2 themselves), so 0 and 1 crash or mislead them.
    Two steps at a tiny LR are the closest to "none".
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


def warmup_cosine_factor(optimizer_step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier DeepSpeed's WarmupCosineLR applies at a 0-based optimizer step.

    With our settings (linear warm-up from ratio 0, cos_min_ratio 0) DeepSpeed's
    `get_lr_ratio` is: iteration/W during warm-up, then (1 + cos(pi·p))/2 with
    p = min(1, (iteration - W + 1) / max(1, T - W)). Note the +1: the first step
    after warm-up already decays (the ratio never sits exactly at 1.0), unlike
    the linear schedule. Step k runs with iteration k-1, as in `warmup_decay_factor`.
    """
    iteration = optimizer_step - 1
    if iteration < 0:
        return 0.0
    if iteration < warmup_steps:
        return iteration / warmup_steps
    progress = min(1.0, (iteration - warmup_steps + 1) / max(1, total_steps - warmup_steps))
    return max(0.0, (1 + math.cos(math.pi * progress)) / 2)


def lr_factor(schedule: str, optimizer_step: int, warmup_steps: int, total_steps: int) -> float:
    """The multiplier of `train.lr_schedule` ('linear' or 'cosine') at a 0-based optimizer step."""
    curve = warmup_cosine_factor if schedule == "cosine" else warmup_decay_factor
    return curve(optimizer_step, warmup_steps, total_steps)


def _scheduler(train: TrainConfig, total_steps: int) -> dict[str, Any]:
    """DeepSpeed's scheduler block: linear warm-up from 0, then linear or cosine decay to 0."""
    warmup = warmup_steps_for(train, total_steps)
    if train.lr_schedule == "cosine":
        # WarmupCosineLR scales the optimizer's own lr (optimizer.params.lr); it has no max_lr.
        params: dict[str, Any] = {"total_num_steps": total_steps, "warmup_min_ratio": 0.0,
                                  "warmup_num_steps": warmup, "cos_min_ratio": 0.0, "warmup_type": "linear"}
    else:
        params = {"total_num_steps": total_steps, "warmup_min_lr": 0.0, "warmup_max_lr": train.learning_rate,
                  "warmup_num_steps": warmup, "warmup_type": "linear"}
    return {"type": SCHEDULERS[train.lr_schedule], "params": params}


def _zero(train: TrainConfig) -> dict[str, Any]:
    """The zero_optimization block: stage and CPU offload."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if train.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if train.zero_stage == 3:
        # Lets rank 0 gather a full 16-bit state dict when exporting the model.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return zero


def derived_deepspeed_config(train: TrainConfig, steps_per_epoch: int) -> dict[str, Any]:
    """The DeepSpeed config the schema alone implies (no expert overrides)."""
    total_steps = max(1, steps_per_epoch * train.epochs)
    return {
        "train_batch_size": train.global_batch_size,
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "gradient_clipping": train.max_grad_norm,
        "zero_optimization": _zero(train),
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {"enabled": train.precision == "fp16"},
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": train.learning_rate, "betas": [0.9, 0.999], "eps": 1e-8,
                       "weight_decay": train.weight_decay},
        },
        "scheduler": _scheduler(train, total_steps),
        "steps_per_print": 10**9,  # our loop reports; DeepSpeed's own prints would duplicate it
        "wall_clock_breakdown": False,
    }


def build_deepspeed_config(train: TrainConfig, steps_per_epoch: int) -> dict[str, Any]:
    """The DeepSpeed config for one training run: the derived one with `train.deepspeed_config` merged over it.

    Raises `ConfigError` naming every key of the raw config that contradicts the schema.
    """
    derived = derived_deepspeed_config(train, steps_per_epoch)
    if not train.deepspeed_config:
        return derived
    problems = deepspeed_conflicts(train, steps_per_epoch)
    if problems:
        from raytune_llm.errors import ConfigError

        raise ConfigError([f"train.deepspeed_config: {p}" for p in problems])
    return merge_raw(derived, train.deepspeed_config)


def merge_raw(derived: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` merged over `derived`, recursively; "auto" keeps the derived value. Neither input changes."""
    merged = copy.deepcopy(derived)
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_raw(merged[key], value)
        elif not (value == "auto" and key in merged):
            merged[key] = copy.deepcopy(value)
    return merged


def deepspeed_conflicts(train: TrainConfig, steps_per_epoch: int | None = None) -> list[str]:
    """Every key of `train.deepspeed_config` that contradicts a value derived from the schema.

    Without `steps_per_epoch` (checking a config before the data is read) the
    scheduler's step counts are not compared. Keys the schema does not govern
    never conflict: they pass through to DeepSpeed.
    """
    raw = train.deepspeed_config or {}
    derived = derived_deepspeed_config(train, steps_per_epoch or 1)
    problems = []
    for key, value in _leaves("", raw):
        governed_by = _governing(key)
        ours = _lookup(derived, "bf16" + key[len("bfloat16"):] if key.startswith("bfloat16.") else key)
        if value == "auto" and ours is _ABSENT:
            problems.append(f"{key}: raytune_llm resolves 'auto' only for keys it derives (got 'auto'); give a value")
            continue
        if isinstance(ours, dict) and not isinstance(value, dict):
            problems.append(f"{key} must be a mapping, as DeepSpeed expects (got {value!r})")
            continue
        if governed_by is None or value == "auto" or isinstance(value, dict):
            continue  # passes through; "auto" takes our value; an empty mapping overrides nothing
        if steps_per_epoch is None and key in _STEP_DEPENDENT:
            continue
        if not _agrees(key, value, ours):
            field = governed_by.removeprefix("train.")
            # One schema field: show its value (precision 'bf16', not bf16.enabled True); else the derived value.
            shown = repr(getattr(train, field)) if field in TrainConfig.model_fields else (
                "unset" if ours is _ABSENT else repr(ours))
            problems.append(f"{key} contradicts {governed_by} = {shown} (got {value!r} from the DeepSpeed JSON); "
                            f"{_fix(key, governed_by, value)}")
    return problems


_ABSENT: Any = object()


def _leaves(prefix: str, value: Any) -> list[tuple[str, Any]]:
    """(dotted key, value) for every non-mapping value in a nested dict; empty mappings count as leaves."""
    if not isinstance(value, dict) or not value:
        return [(prefix, value)]
    out: list[tuple[str, Any]] = []
    for key, inner in value.items():
        out += _leaves(f"{prefix}.{key}" if prefix else str(key), inner)
    return out


def _governing(key: str) -> str | None:
    """The schema settings that derive `key`, or None when the key passes through."""
    for governed, fields in _GOVERNED.items():
        if key == governed or (governed.endswith(".") and key.startswith(governed)):
            return fields
        if governed.startswith(key + "."):  # a scalar where the schema derives a mapping
            return fields
    return None


def _lookup(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _agrees(key: str, raw: Any, ours: Any) -> bool:
    """Equal values; an offload device only has to agree on on/off ('cpu' and 'nvme' are both on)."""
    if key == "scheduler.type" and raw in SCHEDULERS.values():
        name = next(k for k, v in SCHEDULERS.items() if v == raw)
        return f"set train.lr_schedule={name} instead and remove the scheduler block"
    if key in _OFFLOAD_DEVICES:
        return (raw in ("cpu", "nvme")) == (ours in ("cpu", "nvme"))
    if ours is _ABSENT:
        return raw in (None, False, "none")
    if isinstance(ours, bool) or isinstance(raw, bool):
        return raw is ours
    if key.endswith(".type") and isinstance(raw, str) and isinstance(ours, str):
        return raw.lower() == ours.lower()  # DeepSpeed matches optimizer and scheduler names case-blind
    return bool(raw == ours)


def _fix(key: str, governed_by: str, raw: Any) -> str:
    """How to get `raw` the supported way."""
    setting = governed_by.split(" ")[0]
    if key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
               "zero_optimization.stage", "optimizer.params.lr", "optimizer.params.weight_decay"):
        return f"set {setting}={raw} instead and remove {key} from train.deepspeed_config"
    if key.endswith(".enabled") and raw is True:
        return f"set train.precision={key.split('.')[0].replace('bfloat16', 'bf16')} instead and remove {key}"
    if key == "scheduler.type" and raw in SCHEDULERS.values():
        name = next(k for k, v in SCHEDULERS.items() if v == raw)
        return f"set train.lr_schedule={name} instead and remove the scheduler block"
    if key in _OFFLOAD_DEVICES:
        return f"set {setting}={'true' if raw in ('cpu', 'nvme') else 'false'} instead and remove {key}"
    if governed_by.startswith("nothing"):
        return f"remove {key} from train.deepspeed_config"
    return f"change {governed_by} instead and remove {key} from train.deepspeed_config"


def describe_plan(train: TrainConfig, train_rows: int) -> str:
    """The one-line training plan printed before launch; raises `ConfigError` when no optimizer step fits.

    States the global batch as micro-batch × accumulation × workers (the identity the
    DeepSpeed config and the batch sampler both rely on), the steps and the schedule.
    """
    from raytune_llm.errors import ConfigError

    try:
        steps = optimizer_steps(train_rows, train)
    except ValueError as exc:
        raise ConfigError([f"train.batch_size: {exc}"]) from exc
    total = steps * train.epochs
    precision = train.precision if train.strategy == "deepspeed" else "fp32"  # the DDP engine has no mixed precision
    return (f"global batch {train.global_batch_size} = micro-batch {train.batch_size} × accumulation "
            f"{train.gradient_accumulation_steps} × {train.num_workers} worker(s); {steps} optimizer steps/epoch × "
            f"{train.epochs} epochs = {total}; lr {train.learning_rate:g}, {warmup_steps_for(train, total)} warm-up "
            f"steps then {train.lr_schedule} decay; {engine_words(train)}, {precision}")


def engine_words(train: TrainConfig) -> str:
    """'DeepSpeed ZeRO-2 + optimizer offload', or 'DDP': the engine in a few words."""
    if train.strategy == "ddp":
        return "DDP"
    words = f"DeepSpeed ZeRO-{train.zero_stage}"
    if train.offload_optimizer:
        words += " + optimizer offload"
    if train.offload_params:
        words += " + parameter offload"
    return words
