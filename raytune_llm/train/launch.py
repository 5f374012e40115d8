"""Build the Ray Train `TorchTrainer` for one training run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from raytune_llm.config.schema import RunConfig
from raytune_llm.data.pipeline import PreparedData
from raytune_llm.train.loop import train_loop_per_worker


def loop_config(cfg: RunConfig, prepared: PreparedData, model_path: str, gpu: bool,
                history_path: str | None = None) -> dict[str, Any]:
    """Everything a worker needs, as plain picklable values."""
    return {
        "history_path": history_path,
        "run": cfg.model_dump(mode="json"),
        "splits": prepared.splits,
        "labels": prepared.labels,
        "model_path": model_path,
        "use_gpu": gpu,
    }


def history_path(storage: Path, name: str) -> str:
    """Where rank 0 writes the run's per-epoch metrics (`history.jsonl`)."""
    return str(storage / name / "history.jsonl")


def build_trainer(
    cfg: RunConfig,
    prepared: PreparedData,
    model_path: str,
    *,
    gpu: bool,
    storage: Path,
    name: str,
    callbacks: list[Any] | None = None,
    loop: Callable[[dict[str, Any]], None] = train_loop_per_worker,
    extra: dict[str, Any] | None = None,
) -> Any:
    """A `ray.train.torch.TorchTrainer` running `train_loop_per_worker` on N workers.

    Checkpoints are kept by the tuned metric (validation F1 by default; the best
    `train.keep_checkpoints`, plus the latest, which Ray always keeps for resuming),
    so a trial's best epoch survives even when a later epoch is worse. A new trainer
    with the same name and storage resumes from that run's latest checkpoint. `loop` and `extra` let
    `raytune-llm bench train` run its timing loop on the very same set-up.
    """
    import ray.train
    import ray.train.torch

    resources: dict[str, float] = {"CPU": cfg.train.cpus_per_worker}
    if gpu:
        resources["GPU"] = 1
    env = {} if gpu else {"DS_ACCELERATOR": "cpu"}
    return ray.train.torch.TorchTrainer(
        loop,
        train_loop_config={**loop_config(cfg, prepared, model_path, gpu, history_path(storage, name)), **(extra or {})},
        scaling_config=ray.train.ScalingConfig(
            num_workers=(cfg.train.min_workers, cfg.train.num_workers) if cfg.train.min_workers else cfg.train.num_workers,
            use_gpu=gpu, resources_per_worker=resources,
        ),
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints, checkpoint_score_attribute=cfg.tune.metric,
                checkpoint_score_order=cfg.tune.mode,
            ),
            # A failed worker group restarts from the latest checkpoint (see train/resume.py).
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            callbacks=callbacks or [],
            worker_runtime_env={"env_vars": env},
        ),
    )
