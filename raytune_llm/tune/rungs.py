"""Promotion-based successive halving: the bookkeeping of ASHA as Li et al. (2020) define it.

Ray's `ASHAScheduler` is the *stopping* variant: a trial that reaches a rung keeps
running unless it is below the rung's cutoff, and with one or two results recorded
there the cutoff is the trial itself, so the first arrivals always run to the end.
On a sweep of a few configurations that start-up cost is most of the budget
(benchmarks/README.md measured 0.457 of a full grid's trial-epochs for 9 configurations).

The paper's algorithm promotes instead: a trial *pauses* at every rung, and a paused
trial is resumed only once it ranks in the top `1/reduction_factor` of everything
recorded at its rung, so nothing is promoted from a rung that holds fewer than
`reduction_factor` results. A trial promoted early may later drop out of the rung's top
1/rf (it still counts as promoted), so a sweep can train a little more than synchronous
successive halving, but it never waits for a whole rung to fill.

This module is the pure state (JSON round-trip, no Ray), so it is tested directly;
`tune/asha.py` is the Ray Tune glue.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


def milestones(grace: float, reduction_factor: float, max_t: float) -> list[float]:
    """The rung times below `max_t`: grace, grace·rf, grace·rf², …"""
    out, t = [], grace
    while t < max_t * (1 - 1e-9):
        out.append(t)
        t *= reduction_factor
    return out


def reached(time: float, mark: float, slack: float) -> bool:
    """Whether a report at `time` counts as reaching `mark`.

    Reported epochs are rounded (1/3 epoch reports as 0.3333), so a mark is reached a
    relative `slack` early. The scheduler's rung book and the Train run's stop-at-rung
    test both ask this, so they agree on where a rung is.
    """
    return time >= mark * (1 - slack)


def stop_thresholds(marks: list[float], slack: float) -> list[float]:
    """The epochs a Train run may stop at to land on `marks` (see `reached`)."""
    return [mark * (1 - slack) for mark in marks]


def next_rung(thresholds: list[float] | None, at: float) -> float | None:
    """The first rung threshold after epoch `at` (None: none left, or no rungs at all).

    A Train run started at `at` (0, or the rung checkpoint a promotion resumes from) trains
    until it reaches this threshold, so a paused trial never trains past its rung.
    """
    ahead = [t for t in thresholds or [] if t > at + 1e-9]
    return min(ahead) if ahead else None


@dataclass
class TrialBook:
    """What the scheduler knows of one trial (JSON-serialisable, so a resumed sweep keeps it)."""

    values: dict[str, float] = field(default_factory=dict)  # rung index (as str, for JSON) -> metric there
    allowed: int = 0  # the trial may train until it reaches rung `allowed`; then it pauses
    paused: bool = False
    done: bool = False
    stop_reason: str | None = None

    @property
    def rung(self) -> int:
        """The highest rung this trial has a result at (-1: none yet)."""
        return max((int(k) for k in self.values), default=-1)


class RungBook:
    """Rung results and promotion decisions for one sweep."""

    def __init__(self, grace: float, reduction_factor: float, max_t: float, mode: str, slack: float = 1e-3) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        self.rungs = milestones(grace, reduction_factor, max_t)
        self.reduction_factor, self.max_t, self.mode, self.slack = reduction_factor, max_t, mode, slack
        self.trials: dict[str, TrialBook] = {}

    def add(self, trial_id: str) -> TrialBook:
        return self.trials.setdefault(trial_id, TrialBook())

    def record(self, trial_id: str, time: float, value: float | None) -> bool:
        """Record a result; True when the trial must pause (it reached a rung it was not promoted past).

        A report that passes several rungs at once (evaluations sparser than the rungs) is
        recorded at each of them: it is the trial's value when it passed them.
        """
        book = self.add(trial_id)
        metric = _worst(self.mode) if value is None or math.isnan(value) else float(value)
        for index, mark in enumerate(self.rungs):
            if reached(time, mark, self.slack) and str(index) not in book.values:
                book.values[str(index)] = metric
        if reached(time, self.max_t, self.slack) or book.rung < book.allowed:
            return False
        book.paused = True
        return True

    def ranked(self, index: int) -> list[str]:
        """Trial ids with a result at rung `index`, best first (ties: first recorded first)."""
        at = [(tid, b.values[str(index)]) for tid, b in self.trials.items() if str(index) in b.values]
        return [tid for tid, _ in sorted(at, key=lambda x: -x[1] if self.mode == "max" else x[1])]

    def promotable(self) -> list[str]:
        """Paused trials now in the top 1/rf of their rung, highest rung first, best first."""
        out = []
        for index in reversed(range(len(self.rungs))):
            ranked = self.ranked(index)
            top = ranked[: int(len(ranked) / self.reduction_factor + 1e-9)]
            out += [tid for tid in top if self.trials[tid].paused and self.trials[tid].rung == index]
        return out

    def promote(self, trial_id: str) -> None:
        book = self.trials[trial_id]
        book.paused, book.allowed = False, book.rung + 1

    def finish(self, trial_id: str, reason: str | None = None) -> None:
        book = self.add(trial_id)
        book.paused, book.done = False, True
        book.stop_reason = book.stop_reason or reason

    def stop_reason(self, trial_id: str) -> str:
        """Why a paused trial is stopped at the end of the sweep, for the report."""
        book = self.trials[trial_id]
        ranked = self.ranked(book.rung)
        keep = int(len(ranked) / self.reduction_factor + 1e-9)
        return (f"stopped by ASHA at rung {self.rungs[book.rung]:.3g} epochs: rank {ranked.index(trial_id) + 1} of "
                f"{len(ranked)}, only the top {keep} are promoted")

    def to_json(self) -> dict[str, Any]:
        return {"rungs": self.rungs, "trials": {tid: asdict(b) for tid, b in self.trials.items()}}

    def load_json(self, state: dict[str, Any]) -> None:
        if [round(r, 9) for r in state.get("rungs", [])] != [round(r, 9) for r in self.rungs]:
            raise ValueError(f"saved ASHA rungs {state.get('rungs')} differ from this sweep's {self.rungs}")
        self.trials = {tid: TrialBook(**b) for tid, b in state.get("trials", {}).items()}


def _worst(mode: str) -> float:
    return -math.inf if mode == "max" else math.inf
