"""Promotion-based ASHA bookkeeping (tune/rungs.py), without Ray: rungs, pausing, who is promoted."""

from __future__ import annotations

import json

import pytest

from raytune_llm.tune.rungs import RungBook, milestones, next_rung


def test_milestones_are_grace_times_powers_of_the_reduction_factor_below_max_t() -> None:
    assert milestones(1 / 3, 3, 3) == pytest.approx([1 / 3, 1])
    assert milestones(1, 2, 8) == [1, 2, 4]
    assert milestones(3, 3, 3) == []


def test_nothing_is_promoted_until_the_rung_holds_reduction_factor_results() -> None:
    book = RungBook(grace=1, reduction_factor=3, max_t=9, mode="max")
    assert book.record("a", 1.0, 0.9) is True  # reached rung 0 without a promotion: pause
    assert book.record("b", 1.0, 0.5) is True
    assert book.promotable() == []  # 2 results: top floor(2/3) = none, however good "a" is
    book.record("c", 1.0, 0.7)
    assert book.promotable() == ["a"]
    book.promote("a")
    assert book.promotable() == []  # "a" is running again; floor(3/3) = 1 promotion used
    assert book.record("a", 2.0, 0.91) is False  # between rungs: keep going
    assert book.record("a", 3.0, 0.92) is True  # rung 1 (3 epochs): pause again
    assert book.trials["a"].values == {"0": 0.9, "1": 0.92}


def test_promotions_come_from_the_highest_rung_first_and_best_first() -> None:
    book = RungBook(grace=1, reduction_factor=2, max_t=4, mode="max")
    for tid, value in (("a", 0.1), ("b", 0.8), ("c", 0.6), ("d", 0.7)):
        book.record(tid, 1.0, value)
    assert book.promotable() == ["b", "d"]
    book.promote("b")
    book.record("b", 2.0, 0.85)
    book.promote("d")
    book.record("d", 2.0, 0.95)
    # rung 1 holds b and d: top 1 is d; rung 0's top 2 (b, d) are both promoted already.
    assert book.promotable() == ["d"]
    book.promote("d")
    assert book.record("d", 4.0, 0.96) is False  # max_t: never paused there
    assert "rank 3 of 4" in book.stop_reason("c") and "top 2" in book.stop_reason("c")


def test_min_mode_missing_metrics_rank_last_and_a_sparse_report_passes_several_rungs() -> None:
    book = RungBook(grace=1, reduction_factor=2, max_t=8, mode="min")
    book.record("a", 1.0, 0.3)
    book.record("b", 1.0, float("nan"))
    book.record("c", 1.0, 0.2)
    book.record("d", 1.0, None)
    assert book.ranked(0)[:2] == ["c", "a"]
    book.promote("c")
    assert book.record("c", 4.0, 0.1) is True  # one report at 4 epochs passed rungs 1 and 2
    assert book.trials["c"].values == {"0": 0.2, "1": 0.1, "2": 0.1} and book.trials["c"].rung == 2


def test_state_round_trips_through_json_and_refuses_other_rungs() -> None:
    book = RungBook(grace=1 / 3, reduction_factor=3, max_t=3, mode="max")
    book.record("a", 0.3333, 0.5)
    book.finish("b", "error")
    again = RungBook(grace=1 / 3, reduction_factor=3, max_t=3, mode="max")
    again.load_json(json.loads(json.dumps(book.to_json())))
    assert again.trials["a"].paused and again.trials["a"].values == {"0": 0.5}
    assert again.trials["b"].done and again.trials["b"].stop_reason == "error"
    with pytest.raises(ValueError, match="rungs"):
        RungBook(grace=1, reduction_factor=3, max_t=3, mode="max").load_json(book.to_json())
    with pytest.raises(ValueError, match="mode"):
        RungBook(grace=1, reduction_factor=3, max_t=3, mode="maximum")


def test_a_train_run_stops_at_the_first_rung_after_where_it_starts() -> None:
    thresholds = [r * (1 - 1e-3) for r in milestones(1 / 3, 3, 3)]
    assert next_rung(thresholds, 0.0) == pytest.approx(thresholds[0])
    assert next_rung(thresholds, 0.3402) == pytest.approx(thresholds[1])  # resumed from the rung checkpoint
    assert next_rung(thresholds, 0.6667) == pytest.approx(thresholds[1])  # resumed between rungs
    assert next_rung(thresholds, 1.0) is None  # past the last rung: train to the end
    assert next_rung(None, 0.0) is None and next_rung([], 0.0) is None
