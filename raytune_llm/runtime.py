"""Connecting to Ray and sizing requests to the cluster we actually have.

On a laptop or CI box we start a local Ray. Its logical CPU count is raised
to what one trial needs (workers × CPUs per worker, plus the trial's own
driver) because Ray treats CPUs as scheduling tokens: on 2 physical cores a
2-worker trial would otherwise wait forever for a third token. Torch threads
are set per worker so the physical cores are not oversubscribed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from raytune_llm.config.schema import TrainConfig

TRIAL_DRIVER_CPUS = 0.01  # the Tune trial function only waits on its TorchTrainer


@dataclass(frozen=True)
class Resources:
    """What the connected cluster offers for trials, as Ray reports it.

    `reserve_cpus` are logical CPUs set aside (local Ray only) that trials are
    not planned on; see `ensure_ray`.
    """

    cpus: float
    gpus: float
    reserve_cpus: float = 0.0


def ensure_ray(train: TrainConfig, address: str | None = None) -> Resources:
    """Connect to `address`/RAY_ADDRESS if given, else start a local Ray sized for one trial.

    A local Ray gets twice the logical CPUs one trial needs. The spare half is
    headroom, not capacity: when ASHA stops a trial, Ray Train releases that
    trial's worker placement group lazily (a cleaner actor polls for the dead
    controller), and without headroom the next trial's workers wait for those
    CPUs until Train's worker-group start-up times out. Concurrency is planned
    on the first half only, so the physical cores are never oversubscribed.
    """
    import ray

    reserve = 0.0
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        # The dashboard backs the State API that Train V2 uses to watch its controller;
        # without it every trial logs a warning a second.
        kwargs: dict[str, Any] = {"log_to_driver": True}
        if address:
            ray.init(address=address, **kwargs)
        else:
            need = math.ceil(train.num_workers * train.cpus_per_worker + TRIAL_DRIVER_CPUS + 1)  # +1: Ray Data
            usable = max(os.cpu_count() or 1, need)
            reserve = float(need)
            ray.init(num_cpus=usable + need, **kwargs)
    _quiet_ray_data()
    total = ray.cluster_resources()
    return Resources(cpus=float(total.get("CPU", 0)) - reserve, gpus=float(total.get("GPU", 0)), reserve_cpus=reserve)


def use_gpu(train: TrainConfig, resources: Resources) -> bool:
    """Resolve `train.use_gpu: auto` against the cluster."""
    if train.use_gpu == "auto":
        return resources.gpus >= 1
    return bool(train.use_gpu)


def max_concurrent_trials(train: TrainConfig, resources: Resources, gpu: bool) -> int:
    """How many trials the cluster can run at once (at least 1).

    Never more than fit, so trials do not queue half-started while holding
    resources (the cause of the worker-group start-up time-outs on small boxes).
    """
    per_trial_cpu = train.num_workers * train.cpus_per_worker + TRIAL_DRIVER_CPUS
    fit = math.floor(resources.cpus / per_trial_cpu + 1e-9)
    if gpu:
        fit = min(fit, math.floor(resources.gpus / train.num_workers + 1e-9))
    return max(1, fit)


def check_fits(train: TrainConfig, resources: Resources, gpu: bool) -> None:
    """Fail fast, with the fix, when one trial cannot fit the cluster at all."""
    from raytune_llm.errors import ConfigError

    problems = []
    if train.num_workers * train.cpus_per_worker + TRIAL_DRIVER_CPUS > resources.cpus:
        problems.append(
            f"train: one trial needs {train.num_workers} workers × {train.cpus_per_worker} CPUs but the "
            f"cluster has {resources.cpus:g} CPUs; lower train.num_workers or train.cpus_per_worker"
        )
    if gpu and train.num_workers > resources.gpus:
        problems.append(
            f"train.num_workers: {train.num_workers} GPU workers requested but the cluster has "
            f"{resources.gpus:g} GPUs; lower train.num_workers or set train.use_gpu=false"
        )
    if problems:
        raise ConfigError(problems)


def _quiet_ray_data() -> None:
    """Ray Data's per-operator progress logs drown our own report on small inputs."""
    import logging

    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
