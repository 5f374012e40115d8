"""Confident-learning thresholds and flags: a hand-worked example, and cleanlab on the same probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raytune_llm.audit.confident import confident_thresholds, find_label_issues
from raytune_llm.errors import DataError

# Given labels and out-of-sample probabilities of 7 rows, 3 classes.
LABELS = np.array([0, 0, 0, 1, 1, 2, 2])
PROBS = np.array([
    [0.90, 0.05, 0.05],  # 0: clearly 0
    [0.70, 0.20, 0.10],  # 1: 0, above t_0
    [0.10, 0.80, 0.10],  # 2: labelled 0, confidently 1 -> flagged
    [0.20, 0.70, 0.10],  # 3: 1
    [0.10, 0.60, 0.30],  # 4: labelled 1, but no class reaches its threshold -> counted nowhere
    [0.30, 0.30, 0.40],  # 5: 2 (0.40 >= t_2)
    [0.05, 0.66, 0.29],  # 6: labelled 2, confidently 1 -> flagged
])


def test_hand_worked_example() -> None:
    # t_0 = (0.9 + 0.7 + 0.1) / 3, t_1 = (0.7 + 0.6) / 2, t_2 = (0.4 + 0.29) / 2
    t = confident_thresholds(LABELS, PROBS)
    np.testing.assert_allclose(t, [1.7 / 3, 0.65, 0.345])
    issues = find_label_issues(LABELS, PROBS)
    # Row 4: P(1)=0.60 < 0.65, P(2)=0.30 < 0.345, P(0)=0.10 < 0.567: no confident class.
    assert issues.suggested.tolist() == [0, 0, 1, 1, -1, 2, 1]
    assert np.flatnonzero(issues.flagged).tolist() == [2, 6]
    assert issues.ranked.tolist() == [2, 6]  # given-label probability 0.10, then 0.29
    assert issues.confident_joint.tolist() == [[2, 1, 0], [0, 1, 0], [0, 1, 1]]
    np.testing.assert_allclose(issues.margin[[2, 6]], [0.10 - 0.80, 0.29 - 0.66])


def test_given_label_on_top_is_never_flagged() -> None:
    # Row 2 reaches t_1 (0.45 >= 0.45) but its given label 0 is still the most probable.
    labels = np.array([0, 0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.5, 0.5], [0.6, 0.4], [0.55, 0.45]])
    assert confident_thresholds(labels, probs)[1] == pytest.approx(0.45)
    issues = find_label_issues(labels, probs)
    assert issues.suggested[4] == 1 and not issues.flagged[4]
    # Row 3 (labelled 1): P(0)=0.6 < t_0=0.75 and P(1)=0.4 < t_1: counted nowhere, not flagged.
    assert issues.suggested[3] == -1
    assert not issues.flagged.any()


def test_class_without_rows_never_becomes_a_suggestion() -> None:
    labels = np.array([0, 0, 1])
    probs = np.array([[0.2, 0.1, 0.7], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    issues = find_label_issues(labels, probs)
    assert np.isinf(issues.thresholds[2]) and 2 not in issues.suggested.tolist()


def test_shape_errors_name_the_problem() -> None:
    with pytest.raises(DataError, match="one row per label"):
        find_label_issues(np.array([0, 1]), np.ones((3, 2)) / 2)
    with pytest.raises(DataError, match="class ids"):
        find_label_issues(np.array([0, 2]), np.ones((2, 2)) / 2)


def _noisy(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-sample-like probabilities for `n` rows, 15 % of labels flipped."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    true = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * rng.uniform(0.5, 3)
    logits[np.arange(n), true] += rng.uniform(0, 4)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    given = true.copy()
    flip = rng.random(n) < 0.15
    given[flip] = rng.integers(0, k, int(flip.sum()))
    return given, probs


def test_matches_cleanlab_on_the_same_probabilities() -> None:
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    cleanlab_count = pytest.importorskip("cleanlab.count")
    compared = differing = 0
    for seed in range(60):
        given, probs = _noisy(seed)
        ours = find_label_issues(given, probs)
        np.testing.assert_allclose(ours.thresholds, cleanlab_count.get_confident_thresholds(given, probs))
        theirs = cleanlab_filter.find_label_issues(given, probs, filter_by="confident_learning")
        compared += int(theirs.sum())
        for row in np.flatnonzero(ours.flagged != theirs):
            # The one documented difference: with several classes above their thresholds, cleanlab takes
            # the overall argmax even when that class is below its own threshold; the paper (and we) take
            # the most probable class among those above threshold.
            above = probs[row] >= ours.thresholds - 1e-6
            assert above.sum() > 1 and not above[probs[row].argmax()], (seed, row)
            differing += 1
        if (ours.flagged == theirs).all():
            ranked = cleanlab_filter.find_label_issues(given, probs, filter_by="confident_learning",
                                                       return_indices_ranked_by="self_confidence")
            assert ours.ranked.tolist() == ranked.tolist(), seed
    assert compared > 1000 and differing <= compared // 500


def test_cli_refuses_fewer_than_two_folds_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from raytune_llm.cli import main

    assert main(["audit", str(tmp_path / "never_read.yaml"), "--folds", "1"]) == 2
    assert "--folds must be >= 2" in capsys.readouterr().err
