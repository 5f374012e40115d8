"""Ray's HyperBand with the finished-bracket hang fixed (raytune_llm.tune.hyperband)."""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler, TrialScheduler

from raytune_llm.tune.hyperband import HyperBand


class _Controller:
    """The one call the scheduler makes on Tune's controller here: stop a paused trial."""

    def __init__(self) -> None:
        self.stopped: list[Trial] = []

    def stop_trial(self, trial: Trial) -> None:
        self.stopped.append(trial)
        trial.set_status(Trial.TERMINATED)


def _two_trials_one_paused_at_max_t(scheduler: HyperBandScheduler) -> tuple[_Controller, Trial, Trial]:
    """Two trials in one bracket of max_t=2: the first reaches epoch 2 and is paused while the second runs."""
    scheduler.set_search_properties(metric="val_f1", mode="max")
    controller = _Controller()
    first, second = Trial("_trial", stub=True), Trial("_trial", stub=True)
    for trial in (first, second):
        scheduler.on_trial_add(controller, trial)
        trial.set_status(Trial.RUNNING)
    assert scheduler.on_trial_result(controller, first, {"epoch": 1.0, "val_f1": 0.5}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(controller, first, {"epoch": 2.0, "val_f1": 0.6}) == TrialScheduler.PAUSE
    first.set_status(Trial.PAUSED)
    assert scheduler.on_trial_result(controller, second, {"epoch": 1.0, "val_f1": 0.4}) == TrialScheduler.CONTINUE
    # The second trial's function returns: its last report reaches the scheduler as a completion.
    second.set_status(Trial.TERMINATED)
    scheduler.on_trial_complete(controller, second, {"epoch": 2.0, "val_f1": 0.7})
    return controller, first, second


def test_a_trial_paused_in_a_finished_bracket_is_stopped() -> None:
    controller, first, _ = _two_trials_one_paused_at_max_t(HyperBand(time_attr="epoch", max_t=2,
                                                                     reduction_factor=3))
    assert controller.stopped == [first] and first.status == Trial.TERMINATED


def test_rays_hyperband_leaves_that_trial_paused() -> None:
    """The reason for the subclass: if Ray fixes this, this test fails and the subclass can go."""
    controller, first, _ = _two_trials_one_paused_at_max_t(HyperBandScheduler(time_attr="epoch", max_t=2,
                                                                              reduction_factor=3))
    assert controller.stopped == [] and first.status == Trial.PAUSED
