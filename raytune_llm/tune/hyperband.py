"""Ray's HyperBand, with one hang fixed: a paused trial left in a finished bracket.

Ray's `HyperBandScheduler` pauses a trial that reaches its bracket's milestone while
others in the bracket have not. When the last of the others ends through
`on_trial_complete` (its final report arrives with `done=True` because the trial
function returned) rather than through `on_trial_result`, Ray skips processing a
bracket that is now finished, so the paused trial is neither resumed nor stopped and
the sweep spins for ever. Which path a final report takes is a race, so the hang
came and went (seen in CI with two trials of `max_t=2`). Stopping the paused trials
of a finished bracket is what Ray does on the `on_trial_result` path
(`_Bracket.cleanup_full`); this applies it on the removal path too.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler


class HyperBand(HyperBandScheduler):
    """`HyperBandScheduler` that never leaves a finished bracket holding paused trials."""

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        bracket, _ = self._trial_info[trial]
        super().on_trial_remove(tune_controller, trial)
        if bracket.finished():
            # Those paused trials reached max_t (a finished bracket has no halvings left):
            # stopping them ends them as done, which is what a resume would do at once.
            for waiting in bracket.current_trials():
                if waiting.status == Trial.PAUSED:
                    print(f"[tune] {waiting.trial_id} stopped: its HyperBand bracket finished while it waited "
                          "at the last milestone", flush=True)
            bracket.cleanup_full(tune_controller)
