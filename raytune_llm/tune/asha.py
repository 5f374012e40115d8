"""ASHA with promotions (`tune.scheduler: asha`, `tune.asha_mode: promote`) on Ray Tune.

Two pieces, because Tune splits the decision between scheduler and searcher:

- `PromotingASHA` (a Tune `TrialScheduler`) answers PAUSE when a trial reaches a rung it
  was not promoted past, and resumes (via `choose_trial_to_run`) a paused trial once it
  ranks in the top 1/rf of its rung (`tune/rungs.py`). A paused trial's Tune actor stops,
  which frees its Train workers; resuming runs the trial function again, whose Train run
  of the same name continues from the checkpoint written at the rung (every evaluation
  checkpoints, see train/loop.py), so no step is trained twice.
- `SlotGate` (a Tune `SearchAlgorithm` around the real searcher) asks for a new
  configuration only while a trial slot is free and no paused trial is waiting for
  promotion. Searcher-side concurrency limits (`ConcurrencyLimiter`, the variant
  generator's `max_concurrent`) count paused trials as live: with pausing they deadlock
  once every slot holds a paused trial, so the limit lives here instead.

When the searcher has no configurations left and nothing runs, the trials still paused
can never be promoted (their rungs are final): they are stopped, with the rank that
stopped them as the reason. The rung book is written to `runs/NAME/asha_state.json` after
every change, so an interrupted sweep resumes with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import SearchAlgorithm

from raytune_llm.tune.rungs import RungBook

STATE_FILE = "asha_state.json"


class PromotingASHA(FIFOScheduler):
    """Promotion-based asynchronous successive halving; `time_attr` may be fractional (epochs)."""

    def __init__(self, *, metric: str, mode: str, time_attr: str, grace_period: float, reduction_factor: float,
                 max_t: float, max_concurrent: int, state_dir: str | None = None, slack: float = 1e-3) -> None:
        super().__init__()
        self._metric, self._mode, self.time_attr = metric, mode, time_attr
        self.book = RungBook(grace_period, reduction_factor, max_t, mode, slack)
        self.max_concurrent = max_concurrent
        self.state_dir = state_dir
        self._loaded = False
        self._trials: dict[str, Trial] = {}
        self._controller: Any = None

    # -- Tune's scheduler interface ---------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return (metric in (None, self._metric)) and (mode in (None, self._mode))

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._load()
        self._controller = tune_controller
        self._trials[trial.trial_id] = trial
        book = self.book.add(trial.trial_id)
        # A restored finished trial stays done; one Tune retries after an error runs again.
        book.done = trial.status in (Trial.TERMINATED, Trial.ERROR)
        if not book.done and book.stop_reason == "error":
            book.stop_reason = None
        self._save()

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        self._controller = tune_controller
        if self.time_attr not in result:
            return TrialScheduler.CONTINUE
        value = result.get(self._metric)
        pause = self.book.record(trial.trial_id, float(result[self.time_attr]),
                                 None if value is None else float(value))
        self._save()
        if pause:
            book = self.book.trials[trial.trial_id]
            ranked = self.book.ranked(book.rung)
            print(f"[tune] {trial.trial_id} paused at rung {self.book.rungs[book.rung]:.3g} epochs: rank "
                  f"{ranked.index(trial.trial_id) + 1} of {len(ranked)} there", flush=True)
        return TrialScheduler.PAUSE if pause else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        self.book.finish(trial.trial_id)
        self._save()

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        # Tune may retry the trial (max_failures); it comes back through on_trial_add then.
        self.book.finish(trial.trial_id, "error")
        self._save()

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self.book.finish(trial.trial_id)
        self._save()

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        self._controller = tune_controller
        self._repause_restored(tune_controller)
        if self._active(tune_controller) < self.max_concurrent:
            for trial_id in self.book.promotable():
                trial = self._trials.get(trial_id)
                if trial is not None and trial.status == Trial.PAUSED:
                    self.book.promote(trial_id)
                    self._save()
                    rung = self.book.trials[trial_id].rung
                    print(f"[tune] {trial_id} promoted from rung {self.book.rungs[rung]:.3g} epochs (top "
                          f"1/{self.book.reduction_factor:g} of {len(self.book.ranked(rung))})", flush=True)
                    return trial
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PENDING:
                return trial
        self._stop_unpromotable(tune_controller)
        return None

    def debug_string(self) -> str:
        rungs = ", ".join(f"{mark:g}: {len(self.book.ranked(i))}" for i, mark in enumerate(self.book.rungs))
        return f"Using promotion-based ASHA (results per rung: {rungs})"

    # -- what the gate asks -------------------------------------------------------------------

    def free_slots(self) -> int:
        """Slots for a new configuration: free slots not claimed by a paused trial due for promotion."""
        if self._controller is None:
            return self.max_concurrent
        waiting = sum(1 for tid in self.book.promotable()
                      if tid in self._trials and self._trials[tid].status == Trial.PAUSED)
        return self.max_concurrent - self._active(self._controller) - waiting

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _active(tune_controller: Any) -> int:
        return sum(1 for t in tune_controller.get_trials() if t.status in (Trial.RUNNING, Trial.PENDING))

    def _repause_restored(self, tune_controller: Any) -> None:
        """A resumed sweep re-queues paused trials as PENDING; those not promoted go back to PAUSED."""
        for trial in tune_controller.get_trials():
            book = self.book.trials.get(trial.trial_id)
            if book is not None and book.paused and trial.status == Trial.PENDING:
                tune_controller._set_trial_status(trial, Trial.PAUSED)

    def _stop_unpromotable(self, tune_controller: Any) -> None:
        """Stop paused trials once their rungs are final: no configurations left and nothing running."""
        if self._active(tune_controller) or not tune_controller.search_alg.is_finished():
            return
        for trial in list(tune_controller.get_trials()):
            if trial.status == Trial.PAUSED:
                self.book.finish(trial.trial_id, self.book.stop_reason(trial.trial_id))
                print(f"[tune] {trial.trial_id}: {self.book.trials[trial.trial_id].stop_reason}", flush=True)
                tune_controller.stop_trial(trial)
        self._save()

    def _state_path(self) -> Path | None:
        return Path(self.state_dir) / STATE_FILE if self.state_dir else None

    def _load(self) -> None:
        path = self._state_path()
        if self._loaded or path is None:
            return
        self._loaded = True
        if path.exists():
            self.book.load_json(json.loads(path.read_text()))

    def _save(self) -> None:
        path = self._state_path()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.book.to_json(), indent=1, sort_keys=True))
        os.replace(tmp, path)  # never a half-written file if the driver is killed here

    def stop_reasons(self) -> dict[str, str]:
        return {tid: b.stop_reason for tid, b in self.book.trials.items() if b.stop_reason}


class SlotGate(SearchAlgorithm):
    """The sweep's searcher, asked for a new configuration only when the scheduler has a slot for it."""

    def __init__(self, searcher: SearchAlgorithm, scheduler: PromotingASHA) -> None:
        self.searcher, self.scheduler = searcher, scheduler

    def next_trial(self) -> Trial | None:
        if self.scheduler.free_slots() <= 0:
            return None
        return self.searcher.next_trial()

    # Everything else is the wrapped searcher's.
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def add_configurations(self, experiments: Any) -> None:
        self.searcher.add_configurations(experiments)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def is_finished(self) -> bool:
        return self.searcher.is_finished()

    def set_finished(self) -> None:
        self.searcher.set_finished()

    @property
    def metric(self) -> str | None:
        return self.searcher.metric

    @property
    def total_samples(self) -> int:
        return self.searcher.total_samples

    def has_checkpoint(self, dirpath: str) -> bool:
        return self.searcher.has_checkpoint(dirpath)

    def save_to_dir(self, dirpath: str, **kwargs: Any) -> None:
        self.searcher.save_to_dir(dirpath, **kwargs)

    def restore_from_dir(self, dirpath: str) -> None:
        self.searcher.restore_from_dir(dirpath)
