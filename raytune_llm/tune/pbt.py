"""Population based training (`tune.scheduler: pbt`) on Train V2 trials.

PBT needs what the other schedulers do not: a Tune checkpoint per trial, so that a
weak trial can continue from a strong one's state ("exploit") with mutated
hyperparameters ("explore"). Train V2's `TuneReportCallback` forwards metrics and a
checkpoint *path* only, so a PBT trial relays each report itself: the Train run's
callback puts the report on a queue, and the trial function hands it to Tune, with
the Train checkpoint attached at the reports where PBT decides (every
`tune.perturbation_interval` epochs, mirrored here from PBT's own rule) so that
Tune keeps a copy of exactly the states a trial may be cloned from.

A trial that starts from a Tune checkpoint (the donor's after an exploit, or its own
after a sweep resume) runs a *new* Train run, named after the start point: a Train
run of the old name would resume from its own latest checkpoint, i.e. this trial's
state before it was exploited. The workers load the donor's state through
`train_loop_config["start_from"]` (train/resume.py), then apply the mutated
learning rate, weight decay and schedule.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from raytune_llm.config.schema import PBT_MUTABLE, RunConfig, SearchDimension
from raytune_llm.data.pipeline import PreparedData


def mutations(cfg: RunConfig) -> dict[str, Any]:
    """PBT's `hyperparam_mutations`: the search-space dimensions a running trial can change."""
    import ray.tune

    out: dict[str, Any] = {}
    for path, spec in cfg.tune.search_space.items():
        if path not in PBT_MUTABLE:
            continue  # sampled at the start, then copied from the donor with its checkpoint
        if spec.values is not None:
            out[path] = list(spec.values)  # PBT moves to a neighbouring value (or resamples)
        elif spec.type == "loguniform":
            out[path] = ray.tune.loguniform(spec.low, spec.high)
        else:
            out[path] = ray.tune.uniform(spec.low, spec.high)
    return out


def _clip_to_space(space: dict[str, SearchDimension]) -> Any:
    """PBT multiplies a value by 0.8 or 1.2; keep the result inside the declared [low, high]."""

    def explore(config: dict[str, Any]) -> dict[str, Any]:
        for path, spec in space.items():
            if path in config and spec.low is not None and spec.high is not None:
                config[path] = min(max(config[path], spec.low), spec.high)
        return config

    return explore


def pbt_scheduler(cfg: RunConfig, slack: float) -> Any:
    """Ray Tune's PopulationBasedTraining, with epochs (fractional) as its time unit."""
    from ray.tune.schedulers import PopulationBasedTraining

    return PopulationBasedTraining(
        time_attr="epoch", perturbation_interval=interval(cfg, slack), hyperparam_mutations=mutations(cfg),
        custom_explore_fn=_clip_to_space(cfg.tune.search_space), quantile_fraction=0.25, resample_probability=0.25,
    )


def interval(cfg: RunConfig, slack: float) -> float:
    """The perturbation interval PBT is given (with the same rounding slack as ASHA's rungs)."""
    return cfg.tune.perturbation_interval * (1 - slack)


class Decisions:
    """Which reports PBT will decide at: the same rule as PBT's own (time since the last ≥ interval).

    Only those reports carry a checkpoint to Tune: a trial is cloned only from the state
    it had at its latest decision, so the copies in between would be dead weight.
    """

    def __init__(self, start_epoch: float, every: float) -> None:
        self.last, self.every = start_epoch, every

    def due(self, epoch: float) -> bool:
        if epoch - self.last < self.every:
            return False
        self.last = epoch
        return True


def _relay_class() -> Any:
    from ray.train.v2.api.callback import UserCallback

    class Relay(UserCallback):
        """In the Train controller: put each report (rank 0's metrics + checkpoint path) on the trial's queue."""

        def __init__(self, reports: Any, handed: Any) -> None:
            self.reports, self.handed = reports, handed

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            row = dict(metrics[0])
            if checkpoint is not None:
                row["checkpoint_path"] = checkpoint.path
            self.reports.put(row)
            # Wait until Tune has its copy: the next report may delete this Train checkpoint
            # (train.keep_checkpoints), and it cannot be registered while this call waits.
            self.handed.get()

    return Relay


def start_point(checkpoint: Any) -> tuple[str | None, dict[str, Any]]:
    """The Tune checkpoint a trial starts from and where it came from (trial, epoch, step)."""
    if checkpoint is None:
        return None, {"trial": "", "epoch": 0.0, "step": 0}
    return checkpoint.path, {"trial": "", "epoch": 0.0, "step": 0, **checkpoint.get_metadata()}


def run_trial(cfg: RunConfig, prepared: PreparedData, model_path: str, gpu: bool, storage: Path,
              trial_name: str, slack: float) -> None:
    """One PBT trial: a Train run (from the start checkpoint, if any) whose reports are relayed to Tune."""
    import ray.tune
    from ray.util.queue import Queue

    from raytune_llm.train.launch import build_trainer

    start_from, origin = start_point(ray.tune.get_checkpoint())
    me = ray.tune.get_context().get_trial_id()
    name = trial_name
    if start_from is not None:
        # The start point in the name: a fresh Train run, never a resume of this trial's pre-exploit
        # run; the same start point again (a resumed sweep) does resume that run, as it should.
        name = f"{trial_name}_from_{hashlib.sha1(start_from.encode()).hexdigest()[:10]}"
        print(f"[pbt] {trial_name}: continuing from trial {origin['trial']}'s checkpoint at epoch "
              f"{origin['epoch']:g}, optimizer step {origin['step']} ({start_from}) as Train run {name}", flush=True)
    queue, handed = (Queue(maxsize=1, actor_options={"num_cpus": 0}) for _ in range(2))
    trainer = build_trainer(cfg, prepared, model_path, gpu=gpu, storage=storage, name=name,
                            callbacks=[_relay_class()(queue, handed)], extra={"start_from": start_from})
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as error:  # noqa: BLE001 - re-raised in the trial's own thread below
            failure.append(error)
        finally:
            queue.put(None)

    thread = threading.Thread(target=fit, name=f"fit-{name}", daemon=True)
    thread.start()
    decisions = Decisions(float(origin["epoch"]), interval(cfg, slack))
    while (row := queue.get()) is not None:
        # Which trial's state this one continues (itself after a pause or sweep resume, "" when fresh).
        row["pbt_origin_trial"], row["pbt_origin_step"] = origin["trial"], int(origin["step"])
        path = row.get("checkpoint_path")
        if path and decisions.due(float(row["epoch"])):
            checkpoint = ray.tune.Checkpoint(path)
            checkpoint.update_metadata({"trial": me, "epoch": float(row["epoch"]), "step": int(row["step"])})
            ray.tune.report(row, checkpoint=checkpoint)  # Tune keeps its own copy
        else:
            ray.tune.report(row)
        handed.put(True)
    thread.join()
    if failure:
        raise failure[0]
