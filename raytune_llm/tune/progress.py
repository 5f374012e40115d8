"""One clear line per trial event, on top of Ray's own progress tables, and a table of the leaders."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

LEADERS = 3


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class TrialProgress(Callback):
    """Prints `[trial NAME] epoch E val_f1=… (params)`, how each trial ended, and the leaders so far."""

    def __init__(self, metric: str, params: list[str], mode: str = "max") -> None:
        self.metric = metric
        self.params = params
        self.mode = mode
        self.best: dict[str, tuple[float, Any]] = {}  # trial id -> (best metric, trial)

    def _params(self, trial: Any) -> str:
        return " ".join(f"{p.split('.')[-1]}={_short(trial.config.get(p))}" for p in self.params)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"[trial {trial.trial_id}] epoch {result.get('epoch')} {self.metric}={shown} "
              f"train_loss={_short(result.get('train_loss'))} ({self._params(trial)})", flush=True)
        if isinstance(value, (int, float)):
            old = self.best.get(trial.trial_id)
            better = old is None or (value > old[0] if self.mode == "max" else value < old[0])
            if better:
                self.best[trial.trial_id] = (float(value), trial)

    def _leaders(self) -> None:
        ranked = sorted(self.best.items(), key=lambda kv: kv[1][0], reverse=self.mode == "max")[:LEADERS]
        if not ranked:
            return
        print(f"[tune] leaders by best {self.metric}:", flush=True)
        for place, (trial_id, (value, trial)) in enumerate(ranked, start=1):
            print(f"[tune]   {place}. {trial_id} {value:.4f} ({self._params(trial)})", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"[trial {trial.trial_id}] finished ({self._params(trial)})", flush=True)
        self._leaders()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"[trial {trial.trial_id}] FAILED ({self._params(trial)}); see {trial.local_path}", flush=True)
        self._leaders()
