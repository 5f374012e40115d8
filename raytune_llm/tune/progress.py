"""One clear line per trial event, on top of Ray's own progress tables."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class TrialProgress(Callback):
    """Prints `[trial NAME] epoch E val_f1=… (params)` and how each trial ended."""

    def __init__(self, metric: str, params: list[str]) -> None:
        self.metric = metric
        self.params = params

    def _params(self, trial: Any) -> str:
        return " ".join(f"{p.split('.')[-1]}={_short(trial.config.get(p))}" for p in self.params)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"[trial {trial.trial_id}] epoch {result.get('epoch')} {self.metric}={shown} "
              f"train_loss={_short(result.get('train_loss'))} ({self._params(trial)})", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"[trial {trial.trial_id}] finished ({self._params(trial)})", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"[trial {trial.trial_id}] FAILED ({self._params(trial)}); see {trial.local_path}", flush=True)
