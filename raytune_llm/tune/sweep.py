"""The Ray Tune sweep: one Train V2 `TorchTrainer` per trial, ASHA by default.

Each trial is a small Tune function that applies its sampled values to the
run config and runs a `TorchTrainer` whose `TuneReportCallback` forwards the
per-epoch metrics (and checkpoint paths) to Tune. Passing a Trainer object to
the Tuner is deprecated in Ray 2.5x+, hence this shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raytune_llm.config.loader import get_dotted, set_dotted
from raytune_llm.config.schema import RunConfig
from raytune_llm.data.pipeline import PreparedData
from raytune_llm.runtime import TRIAL_DRIVER_CPUS, Resources, max_concurrent_trials
from raytune_llm.train.launch import build_trainer
from raytune_llm.tune.progress import TrialProgress
from raytune_llm.tune.rungs import reached, stop_thresholds
from raytune_llm.tune.space import build_param_space, grid_points


def apply_params(base: RunConfig, params: dict[str, Any]) -> RunConfig:
    """The run config of one trial: the base with each sampled dotted value set."""
    cfg = base
    for path, value in sorted(params.items()):
        cfg = set_dotted(cfg, path, value.item() if hasattr(value, "item") else value)
    return cfg


def _trial(params: dict[str, Any], base: dict[str, Any], prepared: PreparedData, model_path: str,
           gpu: bool, storage: str) -> None:
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = apply_params(RunConfig.model_validate(base), params)
    name = ray.tune.get_context().get_trial_name()
    if cfg.tune.scheduler == "pbt":
        from raytune_llm.tune.pbt import run_trial

        run_trial(cfg, prepared, model_path, gpu, Path(storage), name, EPOCH_SLACK)
        return
    promoting = cfg.tune.scheduler == "asha" and cfg.tune.asha_mode == "promote"
    extra = {"pause_at_rungs": stop_thresholds(asha_rungs(cfg), EPOCH_SLACK)} if promoting else None
    trainer = build_trainer(cfg, prepared, model_path, gpu=gpu, storage=Path(storage), name=name,
                            callbacks=[TuneReportCallback()], extra=extra)
    result = trainer.fit()
    epoch = float((result.metrics or {}).get("epoch", cfg.train.epochs))
    if promoting and not reached(epoch, cfg.train.epochs, EPOCH_SLACK):
        _wait_to_be_paused(name, epoch)


def asha_rungs(cfg: RunConfig) -> list[float]:
    """The epochs at which promotion-based ASHA pauses a trial (below `train.epochs`)."""
    from raytune_llm.tune.rungs import milestones

    return milestones(min(cfg.tune.grace_period, cfg.train.epochs), cfg.tune.reduction_factor, cfg.train.epochs)


PAUSE_WAIT_S = 600.0


def _wait_to_be_paused(name: str, epoch: float) -> None:
    """The Train run stopped at a rung; the scheduler pauses this trial on that report.

    Returning would end the trial as finished, so the trial function waits (holding no
    Train workers) until Tune stops it.
    """
    import time

    time.sleep(PAUSE_WAIT_S)
    raise RuntimeError(f"trial {name} stopped at its ASHA rung ({epoch:g} epochs) but was not paused within "
                       f"{PAUSE_WAIT_S:g} s; this is a bug in raytune_llm's scheduler, please report it")


def _scheduler(cfg: RunConfig, concurrency: int = 1, state_dir: Path | None = None) -> Any:
    """The trial scheduler, with epochs (fractional for step checkpoints) as its time unit."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.tune.scheduler == "fifo":
        return FIFOScheduler()
    if cfg.tune.scheduler == "hyperband":
        from raytune_llm.tune.hyperband import HyperBand

        return HyperBand(time_attr="epoch", max_t=cfg.train.epochs, reduction_factor=cfg.tune.reduction_factor)
    if cfg.tune.scheduler == "pbt":
        from raytune_llm.tune.pbt import pbt_scheduler

        return pbt_scheduler(cfg, EPOCH_SLACK)
    # Reported epochs are rounded to 4 decimals (1/3 epoch reports as 0.3333): the slack lets
    # that report reach a rung at 1/3 instead of the next one.
    grace = min(cfg.tune.grace_period, cfg.train.epochs)
    if cfg.tune.asha_mode == "promote":
        from raytune_llm.tune.asha import PromotingASHA

        return PromotingASHA(metric=cfg.tune.metric, mode=cfg.tune.mode, time_attr="epoch", grace_period=grace,
                             reduction_factor=cfg.tune.reduction_factor, max_t=cfg.train.epochs,
                             max_concurrent=concurrency, state_dir=None if state_dir is None else str(state_dir),
                             slack=EPOCH_SLACK)
    return ASHAScheduler(time_attr="epoch", max_t=cfg.train.epochs, grace_period=grace * (1 - EPOCH_SLACK),
                         reduction_factor=cfg.tune.reduction_factor)


EPOCH_SLACK = 1e-3  # relative; far below any real spacing of evaluations


def _search_alg(cfg: RunConfig, concurrency: int, scheduler: Any = None) -> Any:
    """The searcher named by `tune.search`, seeded by `tune.seed` so a sweep can be repeated.

    Under promotion-based ASHA the concurrency limit moves from the searcher to the
    scheduler's `SlotGate` (see tune/asha.py): a searcher-side limit counts paused trials.
    """
    from raytune_llm.tune.asha import PromotingASHA, SlotGate

    gated = isinstance(scheduler, PromotingASHA)
    if cfg.tune.search == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search import ConcurrencyLimiter, SearchGenerator
        from ray.tune.search.optuna import OptunaSearch

        # A TPESampler of our own: OptunaSearch's `seed` is ignored once a sampler is given,
        # and the default sampler's start-up trials would not be seeded by Ray's RNG.
        sampler = TPESampler(seed=cfg.tune.seed, n_startup_trials=min(10, max(2, cfg.tune.num_samples // 3)))
        if gated:
            return SlotGate(SearchGenerator(OptunaSearch(sampler=sampler)), scheduler)
        return ConcurrencyLimiter(OptunaSearch(sampler=sampler), max_concurrent=concurrency)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    points = grid_points(cfg.tune) if cfg.tune.search == "grid" else None
    search = BasicVariantGenerator(random_state=cfg.tune.seed, max_concurrent=0 if gated else concurrency,
                                   points_to_evaluate=points)
    return SlotGate(search, scheduler) if gated else search


SWEEP_CONFIG = "raytune_sweep_config.json"


def tracking_callbacks(cfg: RunConfig, run_dir: Path) -> list[Any]:
    """Tune logger callbacks for `tune.tracking` (TensorBoard event files, MLflow runs)."""
    callbacks: list[Any] = []
    if "tensorboard" in cfg.tune.tracking:
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    if "mlflow" in cfg.tune.tracking:
        try:
            import mlflow  # noqa: F401 - only checking that it is installed
        except ImportError:
            from raytune_llm.errors import ConfigError

            raise ConfigError(["tune.tracking: 'mlflow' needs the mlflow package; "
                               "install it with `pip install 'raytune_llm[tracking]'`"]) from None
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        # MLflow 3 keeps its file store in maintenance mode; a local SQLite file is its default now.
        uri = cfg.tune.mlflow_tracking_uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        callbacks.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=str(cfg.output.name)))
    return callbacks


def _resumable(experiment: Path, cfg: RunConfig) -> bool:
    """True when `experiment` holds an earlier sweep of this same config (rerun = resume).

    An earlier sweep with other settings is an error rather than a silent mix of two
    sweeps in one summary: the message names what changed and how to start afresh.
    """
    import ray.tune

    from raytune_llm.errors import ConfigError
    from raytune_llm.train.resume import flatten

    if not ray.tune.Tuner.can_restore(str(experiment)):
        return False
    saved = experiment / SWEEP_CONFIG
    if saved.exists():
        before, now = flatten("", json.loads(saved.read_text())), flatten("", cfg.model_dump(mode="json"))
        changed = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
        if changed:
            raise ConfigError([f"{k}: the sweep in {experiment} ran with {before.get(k)!r}, the config now says "
                               f"{now.get(k)!r}; rerun with the old value to resume it, or start a new sweep "
                               f"with output.name=<new name> (or delete {experiment.parent})" for k in changed])
    return True


def run_sweep(cfg: RunConfig, prepared: PreparedData, model_path: str, run_dir: Path,
              resources: Resources, gpu: bool) -> Any:
    """Run every trial and return Tune's `ResultGrid`."""
    import ray.tune

    int_fields = {p for p in cfg.tune.search_space if isinstance(get_dotted(cfg, p), int)
                  and not isinstance(get_dotted(cfg, p), bool)}
    concurrency = cfg.tune.max_concurrent_trials or max_concurrent_trials(cfg.train, resources, gpu)
    print(f"[tune] up to {concurrency} trial(s) at once, each {cfg.train.num_workers} worker(s) × "
          f"{cfg.train.cpus_per_worker:g} CPU{' + 1 GPU' if gpu else ''}; cluster: {resources.cpus:g} CPUs, "
          f"{resources.gpus:g} GPUs")
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, base=cfg.model_dump(mode="json"), prepared=prepared,
                                 model_path=model_path, gpu=gpu, storage=str(run_dir / "trials")),
        {"CPU": TRIAL_DRIVER_CPUS},
    )
    experiment = run_dir / "tune"
    if _resumable(experiment, cfg):
        print(f"[tune] resuming the sweep in {experiment}: finished trials are kept, unfinished ones "
              "continue from their latest checkpoints", flush=True)
        tuner = ray.tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        return tuner.fit()
    experiment.mkdir(parents=True, exist_ok=True)
    from raytune_llm.tune.asha import STATE_FILE

    (run_dir / STATE_FILE).unlink(missing_ok=True)  # rung results of an earlier, unrestorable attempt
    (experiment / SWEEP_CONFIG).write_text(json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True))
    # The rung book lives beside tune/, not in it: Tune syncs its experiment folder from a staging
    # copy taken at restore time, which would overwrite a file the scheduler keeps updating there.
    scheduler = _scheduler(cfg, concurrency, run_dir)
    tuner = ray.tune.Tuner(
        trainable,
        param_space=build_param_space(cfg.tune, int_fields),
        tune_config=ray.tune.TuneConfig(
            metric=cfg.tune.metric, mode=cfg.tune.mode, scheduler=scheduler,
            num_samples=len(grid_points(cfg.tune)) if cfg.tune.search == "grid" else cfg.tune.num_samples,
            search_alg=_search_alg(cfg, concurrency, scheduler),
            time_budget_s=cfg.tune.time_budget_s,
        ),
        run_config=ray.tune.RunConfig(name="tune", storage_path=str(run_dir), verbose=1,
                                      callbacks=[TrialProgress(cfg.tune.metric, sorted(cfg.tune.search_space),
                                                               cfg.tune.mode),
                                                 *tracking_callbacks(cfg, run_dir)]),
    )
    return tuner.fit()
