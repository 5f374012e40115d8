"""`raytune-llm evaluate`: metrics against scikit-learn, calibration by hand, slices, real data.

No Ray here: evaluation scores in process. The model is the session's tiny random BERT
wrapped into a 3-class classifier (its head scaled up so that predictions and confidences
vary); we check plumbing and arithmetic, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from raytune_llm.errors import DataError
from raytune_llm.evaluation.calibration import (
    bin_index,
    brier_score,
    calibration_summary,
    expected_calibration_error,
    negative_log_likelihood,
)
from raytune_llm.evaluation.metrics import AVERAGES, scores
from raytune_llm.evaluation.slices import MISSING, length_bucket, length_slicing, slice_metrics, slicing
from tests.conftest import shared_data

LABELS = ["negative", "neutral", "positive"]


def make_classifier(body: Path, folder: Path, labels: list[str] = LABELS) -> Path:
    """The tiny BERT body with a classification head, saved as a plain `save_pretrained` folder.

    A random 32-wide body maps every sentence to nearly the same pooled vector, so a random
    head predicts one class for everything. The head here reads the two directions in which
    pooled vectors of some made-up sentences vary most (centred, scaled to unit spread), so
    predictions differ between inputs and confidences spread over many calibration bins.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(body))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(body), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}).eval()
    words = ["profit", "loss", "sales", "the", "company", "said", "shares", "fell", "rose", "market", "EUR",
             "mn", "quarter", "net", "operating"]
    texts = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(2 + i % 25)) + f" {i}" for i in range(200)]
    with torch.no_grad():
        pooled = model.bert(**tokenizer(texts, padding=True, return_tensors="pt")).pooler_output
        centred = pooled - pooled.mean(dim=0)
        directions = torch.linalg.svd(centred, full_matrices=False)[2][:2]
        directions = directions / (centred @ directions.T).std(dim=0)[:, None]
        weight = 1.5 * torch.stack([directions[0], -directions[0], directions[1]])
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(-weight @ pooled.mean(dim=0))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def classifier_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classifier(tiny_model_dir, tmp_path_factory.mktemp("classifier"))


def reference_probabilities(model_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    """Each text alone through plain transformers (no batching, no padding): the yardstick."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raytune_llm.data.transforms import normalize_text

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            encoded = tokenizer(normalize_text(text), truncation=True, max_length=max_length, return_tensors="pt")
            rows.append(torch.softmax(model(**encoded).logits, dim=-1)[0].numpy())
    return np.array(rows)


def ece_by_hand(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE the slow, obvious way: for each bin (lo, hi], its share of rows times |accuracy - confidence|."""
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i, c in enumerate(confidence) if lo < c <= hi or (b == 0 and c == 0)]
        if members:
            accuracy = sum(float(correct[i]) for i in members) / len(members)
            mean_conf = sum(float(confidence[i]) for i in members) / len(members)
            total += len(members) / len(confidence) * abs(accuracy - mean_conf)
    return total


# Metrics -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_scores_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c", "d"]
    gold = rng.integers(0, 3, size=150)  # "d" never gold
    predicted = rng.choice([0, 2, 3], size=150)  # "b" never predicted: zero-division paths
    predicted[:60] = gold[:60]
    got = scores(gold, predicted, labels)
    ids = list(range(len(labels)))
    assert got["n"] == 150
    assert got["accuracy"] == pytest.approx(accuracy_score(gold, predicted), abs=1e-12)
    for average in AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(gold, predicted, labels=ids, average=average, zero_division=0)
        assert got["precision"][average] == pytest.approx(p, abs=1e-12), average
        assert got["recall"][average] == pytest.approx(r, abs=1e-12), average
        assert got["f1"][average] == pytest.approx(f, abs=1e-12), average
    p, r, f, support = precision_recall_fscore_support(gold, predicted, labels=ids, average=None, zero_division=0)
    table = got["per_class"]
    assert [row["label"] for row in table] == labels
    np.testing.assert_allclose([row["precision"] for row in table], p, atol=1e-12)
    np.testing.assert_allclose([row["recall"] for row in table], r, atol=1e-12)
    np.testing.assert_allclose([row["f1"] for row in table], f, atol=1e-12)
    assert [row["support"] for row in table] == support.tolist()
    assert [row["predicted"] for row in table] == np.bincount(predicted, minlength=4).tolist()
    assert got["confusion"] == confusion_matrix(gold, predicted, labels=ids).tolist()


def test_scores_of_no_rows_are_zeros_not_nan() -> None:
    got = scores(np.zeros(0, dtype=int), np.zeros(0, dtype=int), ["x", "y"])
    assert got["n"] == 0 and got["accuracy"] == 0.0 and got["f1"] == {"macro": 0.0, "micro": 0.0, "weighted": 0.0}
    json.dumps(got, allow_nan=False)


# Calibration --------------------------------------------------------------------------------
def test_ece_worked_example_and_bin_edges() -> None:
    # 0.95 twice (one right): gap 0.45; 0.5 twice (both right): gap 0.5; half the rows each.
    assert expected_calibration_error(np.array([0.95, 0.95, 0.5, 0.5]), np.array([1, 0, 1, 1])) == pytest.approx(0.475)
    # Right-closed bins: an upper edge belongs to its bin, 0 to the first, 1 to the last.
    edges = np.linspace(0.0, 1.0, 16)
    assert bin_index(edges[1:]).tolist() == list(range(15))
    assert bin_index(np.array([0.0, 1e-9, 1.0])).tolist() == [0, 0, 14]
    assert expected_calibration_error(np.ones(5), np.ones(5)) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_calibration_matches_independent_computation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet([0.6, 0.6, 0.6, 0.6], size=400)
    gold = rng.integers(0, 4, size=400)
    gold[:150] = probabilities[:150].argmax(axis=1)  # some signal, so bins differ in accuracy
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == gold
    summary = calibration_summary(probabilities, gold)
    assert summary["ece"] == pytest.approx(ece_by_hand(confidence, correct), abs=1e-12)
    assert sum(b["count"] for b in summary["bins"]) == 400
    assert summary["nll"] == pytest.approx(log_loss(gold, probabilities, labels=[0, 1, 2, 3]), abs=1e-9)
    assert summary["brier"] == pytest.approx(brier_score_loss(gold, probabilities, labels=[0, 1, 2, 3]), abs=1e-12)
    assert negative_log_likelihood(probabilities, gold) == summary["nll"]
    assert brier_score(probabilities, gold) == summary["brier"]


# Slices ---------------------------------------------------------------------------------------
def test_length_buckets() -> None:
    assert [length_bucket(n) for n in (1, 16, 17, 32, 33, 512, 513)] == \
        ["1-16", "1-16", "17-32", "17-32", "33-64", "257-512", ">512"]
    cut = length_slicing([600, 3, 40, 20])
    assert cut.order == ["1-16", "17-32", "33-64", ">512"]  # short to long, not alphabetical


def test_slicing_text_numeric_and_missing() -> None:
    assert slicing("agreement", [100, 50, 66, 100]).order == ["50", "66", "100"]  # numeric order
    cut = slicing("vote_share", [i / 20 for i in range(20)] + [None])
    assert len(cut.order) == 5 and cut.order[-1] == MISSING  # 4 quartile buckets + missing
    assert cut.keys.count(MISSING) == 1 and sum(cut.keys.count(k) for k in cut.order[:4]) == 20
    assert slicing("_source", ["b.csv", None, "a.csv"]).order == ["a.csv", "b.csv", MISSING]


def test_slice_metrics_match_sklearn_on_each_subset() -> None:
    rng = np.random.default_rng(7)
    probabilities = rng.dirichlet([1, 1, 1], size=300)
    gold = rng.integers(0, 3, size=300)
    groups = rng.choice(["x", "y", "z"], size=300).tolist()
    gold[np.array(groups) == "x"] = probabilities[np.array(groups) == "x"].argmax(axis=1)  # x: always right
    result = slice_metrics(slicing("group", groups), gold, probabilities, LABELS)
    assert list(result) == ["x", "y", "z"]
    for key, got in result.items():
        rows = np.array(groups) == key
        predicted = probabilities[rows].argmax(axis=1)
        assert got["n"] == int(rows.sum())
        assert got["accuracy"] == pytest.approx(accuracy_score(gold[rows], predicted))
        assert got["f1"]["macro"] == pytest.approx(f1_score(gold[rows], predicted, labels=[0, 1, 2], average="macro",
                                                            zero_division=0))
        assert got["ece"] == pytest.approx(ece_by_hand(probabilities[rows].max(axis=1), predicted == gold[rows]))
    assert result["x"]["accuracy"] == 1.0


# End to end -----------------------------------------------------------------------------------
def test_evaluate_financial_phrasebank(classifier_dir: Path, tmp_path: Path) -> None:
    from raytune_llm.config.schema import DataConfig
    from raytune_llm.data.readers import read_input
    from raytune_llm.evaluation.evaluate import evaluate
    from raytune_llm.evaluation.inputs import data_config

    folder = shared_data("financial_phrasebank")
    cfg = data_config(str(folder), None, {"format": "phrasebank_agreement"})
    result = evaluate(classifier_dir, cfg, tmp_path / "eval", threads=1)
    report, paths = result.report, result.paths
    rows = report["rows"]
    independent = read_input(DataConfig.model_validate({"path": str(folder), "format": "phrasebank_agreement",
                                                        "labels": LABELS}))
    assert rows["read"] == independent.read == rows["scored"] + rows["quarantined"]
    assert rows["quarantined"] == len(paths["quarantine"].read_text().splitlines()) > 0

    preds = pq.read_table(paths["predictions"]).to_pandas()
    assert len(preds) == rows["scored"] == report["metrics"]["n"]
    gold = preds["label"].map(LABELS.index).to_numpy()
    predicted = preds["predicted_label"].map(LABELS.index).to_numpy()
    probabilities = preds[[f"prob_{label}" for label in LABELS]].to_numpy(dtype=np.float64)
    assert len(set(predicted)) > 1  # the wide head makes the check meaningful
    np.testing.assert_array_equal(predicted, probabilities.argmax(axis=1))
    m = report["metrics"]
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    for average in AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(gold, predicted, labels=[0, 1, 2], average=average,
                                                     zero_division=0)
        assert (m["precision"][average], m["recall"][average], m["f1"][average]) == pytest.approx((p, r, f))
    assert m["confusion"] == confusion_matrix(gold, predicted, labels=[0, 1, 2]).tolist()
    assert report["calibration"]["ece"] == pytest.approx(
        ece_by_hand(preds["confidence"].to_numpy(np.float64), predicted == gold), abs=1e-6)
    normalised = probabilities / probabilities.sum(axis=1, keepdims=True)  # float32 sums are 1 +- 1e-7
    assert report["calibration"]["nll"] == pytest.approx(log_loss(gold, normalised, labels=[0, 1, 2]), abs=1e-5)

    # Slices: PhraseBank's agreement levels and the built-in length buckets, by default.
    assert set(report["slices"]) == {"length_bucket", "agreement"}
    assert list(report["slices"]["agreement"]) == ["50", "66", "75", "100"]
    for level, got in report["slices"]["agreement"].items():
        rows_in = (preds["slice:agreement"] == level).to_numpy()
        assert got["n"] == int(rows_in.sum())
        assert got["f1"]["macro"] == pytest.approx(f1_score(gold[rows_in], predicted[rows_in], labels=[0, 1, 2],
                                                            average="macro", zero_division=0))
    assert preds["slice:length_bucket"].tolist() == [length_bucket(n) for n in preds["num_tokens"]]
    assert sum(g["n"] for g in report["slices"]["length_bucket"].values()) == rows["scored"]

    # Plumbing: the batched, length-sorted probabilities are what the model gives each text alone.
    sample = preds.sort_values("num_tokens").iloc[np.linspace(0, len(preds) - 1, 12).astype(int)]
    expected = reference_probabilities(classifier_dir, sample["text"].tolist(), 128)
    # Padding changes float32 rounding a little (the head amplifies it), never by a row's worth.
    np.testing.assert_allclose(sample[[f"prob_{label}" for label in LABELS]].to_numpy(), expected, atol=1e-4)

    for png in ("confusion_png", "reliability_png"):
        assert paths[png].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = paths["markdown"].read_text()
    for needle in ("![confusion matrix](confusion_matrix.png)", "![reliability diagram](reliability.png)",
                   "### By `agreement`", "| gold \\ predicted | negative | neutral | positive | total |"):
        assert needle in markdown
    assert json.loads(paths["json"].read_text())["metrics"] == m


def _broken_jsonl(path: Path) -> Path:
    good = [{"doc_id": f"d{i}", "text": f"Unit {i} reported {'higher' if i % 2 else 'lower'} sales in quarter {i % 4}",
             "label": LABELS[i % 3], "group": "ab"[i % 2]} for i in range(8)]
    good[3]["text"] += " and a long tail " + "of more words " * 20  # longer than the 24-token limit
    good[5]["text"] += " contact ir@example.com"
    lines = [json.dumps(row) for row in good]
    lines.insert(2, '{"doc_id": "bad1", "text": "cut off')  # invalid JSON
    lines.insert(4, json.dumps({"doc_id": "bad2", "text": "  ", "label": "neutral", "group": "a"}))
    lines.insert(6, json.dumps({"doc_id": "bad3", "text": "Margins improved", "label": "bullish", "group": "b"}))
    lines.append(json.dumps({"doc_id": "bad4", "text": "No label here", "group": "a"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_evaluate_cli_on_checkpoint_layout_with_bad_rows(classifier_dir: Path, tmp_path: Path) -> None:
    from raytune_llm.evaluation import cli
    from raytune_llm.evaluation.evaluate import evaluate
    from raytune_llm.evaluation.inputs import data_config

    checkpoint = tmp_path / "checkpoint_000001"
    shutil.copytree(classifier_dir, checkpoint)
    (checkpoint / "engine").mkdir()  # resumable state in a Ray Train checkpoint: ignored
    (checkpoint / "engine" / "state.pt").write_bytes(b"not a model")
    metadata = {"labels": LABELS, "epoch": 1, "config": {"data": {"max_length": 24, "redact_pii": True}}}
    (checkpoint / "raytune_llm.json").write_text(json.dumps(metadata))
    data = _broken_jsonl(tmp_path / "eval.jsonl")
    parser = argparse.ArgumentParser()
    cli.add_parsers(parser.add_subparsers(dest="command"))
    out = tmp_path / "report"
    args = parser.parse_args(["evaluate", str(checkpoint), str(data), "--out", str(out), "--id-column", "doc_id",
                              "--slice-by", "group", "length_bucket", "--threads", "1"])
    assert cli.run(args) == 0

    report = json.loads((out / "evaluation.json").read_text())
    assert report["rows"] == {"read": 12, "scored": 8, "quarantined": 4}
    assert report["quarantine_kinds"] == {"invalid_json": 1, "missing_label": 1, "missing_text": 1,
                                          "unknown_label": 1}
    assert len((out / "quarantine.jsonl").read_text().splitlines()) == 4
    assert report["max_length"] == 24 and report["pii_redacted"]["email"] == 1  # as the model was trained
    assert list(report["slices"]) == ["group", "length_bucket"]
    assert {k: v["n"] for k, v in report["slices"]["group"].items()} == {"a": 4, "b": 4}
    preds = pq.read_table(out / "predictions.parquet").to_pandas()
    assert preds["id"].tolist() == [f"d{i}" for i in range(8)]
    long_row = preds[preds["id"] == "d3"]
    got = long_row[[f"prob_{label}" for label in LABELS]].to_numpy()
    np.testing.assert_allclose(got, reference_probabilities(checkpoint, long_row["text"].tolist(), 24), atol=1e-4)
    assert not np.allclose(got, reference_probabilities(checkpoint, long_row["text"].tolist(), 128), atol=1e-4)

    with pytest.raises(DataError, match="available: length_bucket"):
        evaluate(checkpoint, data_config(str(data), None, {"id_column": "doc_id"}), tmp_path / "x",
                 slice_by=["no_such_column"], threads=1)
