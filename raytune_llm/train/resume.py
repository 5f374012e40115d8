"""Resumable training state inside each Ray Train checkpoint.

A checkpoint folder holds two things: the `save_pretrained` export (rank 0, at the
top, so the best checkpoint can be copied out as a plain model) and `engine/`, the
state needed to continue exactly where training stopped:
- the engine's own checkpoint (DeepSpeed's `save_checkpoint`: fp32 weights, optimizer
  and scheduler state, ZeRO partitions, one file per rank where ZeRO shards them; the
  DDP engine writes the same into one file, its state being replicated);
- the data position (epoch, micro-batches done in it, optimizer steps) as client state;
- every rank's RNG states (dropout masks), one file per rank.
Every rank writes into its own local folder and reports it; Ray Train gives the ranks
one checkpoint folder name and uploads all of them into it, so the shards meet there.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raytune_llm.config.schema import TrainConfig

ENGINE_DIR = "engine"
TAG = "state"


@dataclass
class Position:
    """Where training is: the epoch in progress, micro-batches of it done, optimizer steps done."""

    epoch: int = 0
    micro_in_epoch: int = 0
    global_step: int = 0


def save_state(torch: Any, engine: Any, folder: Path, position: Position, rank: int) -> None:
    """Write this rank's share of the resumable state under `folder/engine` (all ranks must call)."""
    target = folder / ENGINE_DIR
    target.mkdir(parents=True, exist_ok=True)
    # Under LoRA the frozen base weights are left out: the next run reloads them from the pretrained
    # model, so the resumable state stays as small as the adapter (+ its optimizer moments).
    engine.save_checkpoint(str(target), tag=TAG, client_state={"position": asdict(position)},
                           exclude_frozen_parameters=has_frozen_parameters(engine.module))
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, target / f"rng_rank{rank}.pt")


def has_frozen_parameters(module: Any) -> bool:
    """True when some weights do not train (LoRA): checkpoints then hold only the trainable ones."""
    return any(not param.requires_grad for param in module.parameters())


def load_state(torch: Any, engine: Any, folder: Path, rank: int) -> Position:
    """Restore the engine, this rank's RNG and the data position from a checkpoint folder."""
    target = folder / ENGINE_DIR
    _, client_state = engine.load_checkpoint(str(target), tag=TAG,
                                             load_module_strict=not has_frozen_parameters(engine.module))
    if client_state is None or "position" not in client_state:
        from raytune_llm.errors import TrainingError

        raise TrainingError(f"checkpoint {folder} holds no training state to resume from; "
                            "start a new run with another output.name")
    rng_file = target / f"rng_rank{rank}.pt"
    if rng_file.exists():  # absent when the worker count changed: the data position still holds
        rng = torch.load(rng_file, weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return Position(**client_state["position"])


def resume_position(torch: Any, engine: Any, rank: int, start_from: str | None = None,
                    train: TrainConfig | None = None) -> Position:
    """The position to start from: the latest reported checkpoint's, `start_from`'s, or the beginning.

    Ray Train hands the latest checkpoint to the workers after a worker failure, and
    also to a new run started with the same name and storage (its run snapshot); that
    one wins. Otherwise `start_from` (a PBT trial continuing from a donor's checkpoint)
    is loaded, and then `train`'s hyperparameters, which PBT may have changed, are
    applied over the donor's optimizer and LR schedule state.
    """
    import ray.train

    checkpoint, cloned = ray.train.get_checkpoint(), False
    if checkpoint is None and start_from:
        checkpoint, cloned = ray.train.Checkpoint(start_from), True
    if checkpoint is None:
        return Position()
    with checkpoint.as_directory() as folder:
        position = load_state(torch, engine, Path(folder), rank)
    if cloned and train is not None:
        apply_hyperparameters(engine, train)
    if rank == 0:
        print(f"[train] {'continuing from ' + str(start_from) if cloned else 'resuming'} at epoch {position.epoch + 1}, "
              f"micro-batch {position.micro_in_epoch}, optimizer step {position.global_step}"
              + (f", learning rate now {engine.get_lr()[0]:.3g}" if cloned else ""), flush=True)
    return position


def apply_hyperparameters(engine: Any, train: TrainConfig) -> None:
    """After loading another run's state: this run's weight decay, peak LR and LR schedule, at the loaded step.

    Loading an optimizer state also loads its param-group settings (the donor's LR and
    weight decay). DeepSpeed's schedulers keep only their step count in a checkpoint and
    take peak LR and warm-up from this run's config, so re-evaluating them at that step
    gives the new LR; the DDP engine's LambdaLR stores its base LRs, which are reset.
    """
    groups = engine.optimizer.param_groups
    if groups:
        groups[0]["weight_decay"] = train.weight_decay  # group 0 decays, group 1 (biases, norms) never does
    scheduler = getattr(engine, "lr_scheduler", None)
    if scheduler is not None and hasattr(scheduler, "last_batch_iteration"):  # DeepSpeed WarmupDecayLR/CosineLR
        scheduler.step(scheduler.last_batch_iteration)
    elif hasattr(engine, "scheduler"):  # DDPEngine
        lambda_lr = engine.scheduler
        lambda_lr.base_lrs = [train.learning_rate for _ in groups]
        for group, factor in zip(groups, lambda_lr.lr_lambdas):
            group["lr"] = train.learning_rate * factor(lambda_lr.last_epoch)


# Settings that do not change what is computed, so a run may resume under new values.
_RESUMABLE_CHANGES = ("train.max_failures", "train.keep_checkpoints", "train.threads_per_worker",
                      "train.cpus_per_worker", "train.use_gpu", "train.min_workers", "eval.batch_size",
                      "data.path", "data.strict", "data.tokenize_workers", "train.gpu_memory_gb",
                      "lora.merge_on_export")


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """A nested config dict as {dotted.path: value}, for naming what changed between two runs."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    return {prefix: value}


def check_resumable(run_folder: Path, config: dict[str, Any]) -> int:
    """Before resuming `run_folder`, make sure its checkpoints were trained with this config.

    Returns the step of the latest checkpoint there (0 when there is none). A changed
    learning rate, batch or model would silently mix two runs, so it is an error that
    names each changed setting and how to start afresh instead.
    """
    import json

    from raytune_llm.errors import ConfigError

    latest: dict[str, Any] | None = None
    for meta in run_folder.glob("checkpoint_*/raytune_llm.json"):
        data = json.loads(meta.read_text())
        if latest is None or data.get("step", 0) > latest.get("step", 0):
            latest = data
    if latest is None:
        return 0
    before, now = flatten("", latest.get("config", {})), flatten("", config)
    changed = [k for k in sorted(set(before) | set(now))
               if before.get(k) != now.get(k) and not k.startswith(("tune.", "output.")) and k not in _RESUMABLE_CHANGES]
    if changed:
        raise ConfigError([f"{k}: the checkpoints in {run_folder} were trained with {before.get(k)!r}, the config "
                           f"now says {now.get(k)!r}; resume with the old value, or start afresh with "
                           f"output.name=<new name> (or delete {run_folder})" for k in changed])
    return int(latest.get("step", 0))
