"""Generative evaluation: label parsing, scores against scikit-learn, answer metrics, and a real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raytune_llm.evaluation.generation import exact_match, label_scores, parse_label, token_f1

LABELS = ["negative", "neutral", "positive"]


@pytest.mark.parametrize(("answer", "expected"), [
    ("Positive.", "positive"), ("The sentiment is negative", "negative"), ("neutral or positive", "neutral"),
    ("It is neutral or positive", None), ("positively good", None), ("", None), ("NEGATIVE!", "negative"),
])
def test_parse_label(answer: str, expected: str | None) -> None:
    assert parse_label(answer, LABELS) == expected


def test_label_scores_equal_sklearn_with_unparsed_answers() -> None:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    gold = rng.choice(LABELS, size=300).tolist()
    predicted = [None if rng.random() < 0.1 else (g if rng.random() < 0.7 else str(rng.choice(LABELS)))
                 for g in gold]
    ours = label_scores(gold, predicted, LABELS)
    as_sklearn = [p if p is not None else "<none>" for p in predicted]
    assert ours["unparsed"] == sum(p is None for p in predicted)
    assert ours["accuracy"] == pytest.approx(accuracy_score(gold, as_sklearn))
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(gold, as_sklearn, labels=LABELS, average=average, zero_division=0)
        assert ours["precision"][average] == pytest.approx(p)
        assert ours["recall"][average] == pytest.approx(r)
        assert ours["f1"][average] == pytest.approx(f)
    p, r, f, s = precision_recall_fscore_support(gold, as_sklearn, labels=LABELS, zero_division=0)
    assert [c["f1"] for c in ours["per_class"]] == pytest.approx(f.tolist())
    assert [c["support"] for c in ours["per_class"]] == s.tolist()


def test_answer_metrics_on_hand_computed_examples() -> None:
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    # pred {paris, is, capital}, ref {capital, is, paris, france}: 3 shared; P 3/3, R 3/4 -> 6/7
    assert token_f1("Paris is the capital", "The capital is Paris, France") == pytest.approx(6 / 7)
    assert token_f1("", "") == 1.0 and token_f1("yes", "") == 0.0


@pytest.mark.shared_data
def test_evaluate_cli_classifies_by_generation_with_smollm2(smollm2_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import shared_data

    data = tmp_path / "fpb.txt"
    lines = shared_data("financial_phrasebank/Sentences_AllAgree.txt").read_bytes().splitlines()
    data.write_bytes(b"\n".join(lines[:6] + [b"a line without the separator"]) + b"\n")
    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, "-m", "raytune_llm.cli", "evaluate", str(smollm2_dir), str(data),
                           "--format", "phrasebank", "--encoding", "latin-1", "--out", str(out), "--threads", "2"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "evaluation.json").read_text())
    assert report["rows"] == {"read": 7, "scored": 6, "quarantined": 1, "not_scored": 0}
    assert report["metrics"]["task"] == "classification_by_generation" and report["metrics"]["n"] == 6
    predictions = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 6 and all(p["answer"] for p in predictions)
    # The instruction-tuned model answers with label words on this easy, unanimous data.
    assert sum(p["predicted"] is not None for p in predictions) >= 4
    assert "classification by generation" in done.stdout
