"""Majority vote, Dawid-Skene, the agreement filter, the long-table reader, the report and the CLI.

Accuracy against gold is computed here from pandas' reading of the file, not from our
reader, so a bug in the reader cannot hide a bug in the aggregators (and vice versa).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytune_llm.errors import DataError
from raytune_llm.quality import cli
from raytune_llm.quality.aggregate import NO_LABEL, dawid_skene, filter_by_agreement, majority_vote
from raytune_llm.quality.annotations import count_matrix, encode
from raytune_llm.quality.reader import LongAnnotations, read_long_annotations
from raytune_llm.quality.report import quality_report
from tests.conftest import shared_data

SNOW = "crowd/snow2008/all_collected_data/{}.standardized.tsv"
ITEM, WORKER, LABEL, GOLD = "orig_id", "!amt_worker_ids", "response", "gold"


@pytest.fixture(scope="module")
def rte_path() -> Path:
    return shared_data(SNOW.format("rte"))


@pytest.fixture(scope="module")
def rte_frame(rte_path: Path) -> pd.DataFrame:
    return pd.read_csv(rte_path, sep="\t", dtype=str)


def _gold_accuracy(frame: pd.DataFrame, item_ids: tuple[object, ...], labels: list[str | None]) -> float:
    """Accuracy of per-item labels against the file's gold column, over the labelled items."""
    gold = frame.groupby(ITEM)[GOLD].first()
    scored = [(label, gold[item]) for item, label in zip(item_ids, labels) if label is not None]
    return float(sum(a == b for a, b in scored) / len(scored))


# Majority vote ------------------------------------------------------------------------------
COUNTS = np.array([[2, 2, 1], [0, 3, 3], [1, 0, 0], [0, 1, 4]])


def test_tie_first_takes_lowest_label() -> None:
    result = majority_vote(COUNTS, tie="first")
    np.testing.assert_array_equal(result.labels, [0, 1, 0, 2])
    assert result.n_ties == 2 and result.n_dropped == 0


def test_tie_drop_counts_what_it_drops() -> None:
    result = majority_vote(COUNTS, tie="drop")
    np.testing.assert_array_equal(result.labels, [NO_LABEL, NO_LABEL, 0, 2])
    assert result.n_dropped == 2
    assert (result.labels != NO_LABEL).sum() + result.n_dropped == len(COUNTS)


def test_tie_random_is_seeded_and_fair() -> None:
    counts = np.tile([0, 2, 2], (2000, 1))  # every item tied between labels 1 and 2
    first, again = majority_vote(counts, "random", seed=7), majority_vote(counts, "random", seed=7)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert not np.array_equal(first.labels, majority_vote(counts, "random", seed=8).labels)
    assert set(first.labels.tolist()) == {1, 2}
    assert 0.45 < (first.labels == 1).mean() < 0.55
    np.testing.assert_array_equal(majority_vote(COUNTS[2:], "random").labels, [0, 2])  # no tie: no randomness


def test_tie_first_follows_natural_label_order() -> None:
    annotations = encode([("i", "a", "10"), ("i", "b", "2")])
    assert annotations.labels[majority_vote(count_matrix(annotations), "first").labels[0]] == "2"


def test_majority_vote_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="tie policy"):
        majority_vote(COUNTS, tie="coin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one rating"):
        majority_vote(np.array([[1, 0], [0, 0]]))


# Dawid-Skene ---------------------------------------------------------------------------------
def _crowd_with_adversary(seed: int, n_items: int = 300) -> tuple[list[tuple[int, str, int]], np.ndarray]:
    """Four honest annotators (65 % right) and one who always answers (truth + 1) mod 3."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n_items)
    triples = []
    for who in range(4):
        given = np.where(rng.random(n_items) < 0.65, truth, (truth + rng.integers(1, 3, n_items)) % 3)
        triples += [(item, f"honest{who}", int(label)) for item, label in enumerate(given)]
    triples += [(item, "adversary", int((label + 1) % 3)) for item, label in enumerate(truth)]
    return triples, truth


@pytest.mark.parametrize("seed", [0, 1])
def test_dawid_skene_beats_majority_with_an_adversary(seed: int) -> None:
    triples, truth = _crowd_with_adversary(seed)
    annotations = encode(triples)
    assert annotations.labels == (0, 1, 2)  # codes equal the labels, so we can compare with truth
    majority = (majority_vote(count_matrix(annotations), "random", seed).labels == truth).mean()
    ds = dawid_skene(annotations)
    assert (ds.labels == truth).mean() >= 0.97
    assert (ds.labels == truth).mean() > majority + 0.2
    adversary = annotations.annotator_ids.index("adversary")
    assert ds.annotator_accuracy[adversary] < 0.05  # recognised as always wrong ...
    for true_label in range(3):  # ... in a systematic, hence informative, way
        assert ds.confusion[adversary, true_label, (true_label + 1) % 3] > 0.9
    honest = np.delete(ds.annotator_accuracy, adversary)
    assert np.all(np.abs(honest - 0.65) < 0.1)


def test_dawid_skene_outputs_are_distributions() -> None:
    ds = dawid_skene(encode(_crowd_with_adversary(0)[0]))
    np.testing.assert_allclose(ds.posteriors.sum(axis=1), 1.0)
    np.testing.assert_allclose(ds.confusion.sum(axis=2), 1.0)
    assert ds.priors.sum() == pytest.approx(1.0)
    assert ds.converged and ds.iterations < 200
    assert ds.annotator_counts.tolist() == [300] * 5


def test_dawid_skene_stops_at_max_iter_and_checks_arguments() -> None:
    annotations = encode(_crowd_with_adversary(0)[0])
    capped = dawid_skene(annotations, max_iter=2)
    assert capped.iterations == 2 and not capped.converged
    with pytest.raises(ValueError, match="smoothing > 0"):
        dawid_skene(annotations, smoothing=0.0)


def test_dawid_skene_on_unanimous_labels_agrees_with_majority() -> None:
    triples = [(item, who, "ab"[item % 2]) for item in range(20) for who in range(3)]
    ds = dawid_skene(encode(triples))
    np.testing.assert_array_equal(ds.labels, np.arange(20) % 2)
    assert ds.posteriors.max(axis=1).min() > 0.99


@pytest.mark.parametrize("task", ["rte", "temp", "wsd"])
def test_dawid_skene_on_snow_at_least_matches_majority(task: str) -> None:
    frame = pd.read_csv(shared_data(SNOW.format(task)), sep="\t", dtype=str)
    annotations = encode(zip(frame[ITEM], frame[WORKER], frame[LABEL]))
    counts = count_matrix(annotations)
    ds = dawid_skene(annotations)
    ds_accuracy = _gold_accuracy(frame, annotations.item_ids, [annotations.labels[c] for c in ds.labels])
    for tie in ("random", "first"):
        mv = majority_vote(counts, tie=tie, seed=0).labels
        assert ds_accuracy >= _gold_accuracy(frame, annotations.item_ids, [annotations.labels[c] for c in mv])
    if task == "rte":  # published: majority vote about 0.90, Dawid-Skene about 0.93
        assert ds_accuracy >= 0.925


# Minimum-agreement filter -------------------------------------------------------------------
def test_filter_boundaries_and_reasons() -> None:
    counts = np.array([[7, 3], [6, 4], [1, 0], [0, 0], [10, 0]])
    result = filter_by_agreement(counts, 0.7, min_ratings=2)
    np.testing.assert_array_equal(result.kept, [0, 4])  # 7/10 is not below 0.7
    assert result.removed_counts() == {"too_few_ratings": 2, "below_min_agreement": 1}
    assert result.n_kept + result.n_removed == result.n_total == 5
    with pytest.raises(ValueError, match="between 0 and 1"):
        filter_by_agreement(counts, 70)


@pytest.mark.parametrize("threshold", [0.6, 0.7, 0.9, 1.0])
def test_filter_on_rte_adds_up(rte_frame: pd.DataFrame, threshold: float) -> None:
    frame = rte_frame
    votes = pd.crosstab(frame[ITEM], frame[LABEL])
    share = votes.max(axis=1) / votes.sum(axis=1)
    result = filter_by_agreement(count_matrix(encode(zip(frame[ITEM], frame[WORKER], frame[LABEL]))), threshold)
    assert result.n_kept == int((share >= threshold - 1e-9).sum())
    assert result.n_kept + result.n_removed == 800
    assert 0 < result.n_kept < 800


# Reader ------------------------------------------------------------------------------------
def test_reader_on_rte(rte_path: Path) -> None:
    data = read_long_annotations(rte_path, ITEM, WORKER, LABEL, GOLD)
    assert len(data.triples) == data.n_rows == 8000 and data.skipped == {}
    assert len(data.gold) == 800 and set(data.gold.values()) == {"0", "1"}
    # The first data row, read here with the csv module rather than copied into the test.
    import csv

    with rte_path.open(newline="") as handle:
        first = next(csv.DictReader(handle, delimiter="\t"))
    assert data.lines[0] == 2 and data.triples[0] == (first[ITEM], first[WORKER], first[LABEL])


ROWS = [{"item": "q1", "who": "ann", "label": "pos", "gold": "pos"},
        {"item": "q1", "who": "bob", "label": "neg", "gold": ""},
        {"item": "q2", "who": "ann", "label": "neg", "gold": "neg"}]


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl", ".parquet"])
def test_reader_formats_agree(tmp_path: Path, suffix: str) -> None:
    data = read_long_annotations(_write(tmp_path / f"a{suffix}", ROWS), "item", "who", "label", "gold")
    assert data.triples == [("q1", "ann", "pos"), ("q1", "bob", "neg"), ("q2", "ann", "neg")]
    assert data.gold == {"q1": "pos", "q2": "neg"}


def test_reader_counts_skipped_rows(tmp_path: Path) -> None:
    rows = [*ROWS, {"item": "q2", "who": "bob", "label": " ", "gold": ""},  # line 5: empty label
            {"item": "q1", "who": "ann", "label": "pos", "gold": ""}]  # line 6: repeat of line 2
    data = read_long_annotations(_write(tmp_path / "a.csv", rows), "item", "who", "label")
    assert data.skipped == {"empty_label": [5], "duplicate_annotation": [6]}
    assert data.n_rows == 5 and len(data.triples) == 3


@pytest.mark.parametrize(("bad", "message"), [
    ({"item": "", "who": "cy", "label": "pos", "gold": ""}, r"empty id in column 'item'.*\n  .*a\.tsv:5"),
    ({"item": "q1", "who": "ann", "label": "neg", "gold": ""},
     r"second, different label.*\n.*a\.tsv:5.*'pos' on line 2"),
    ({"item": "q1", "who": "cy", "label": "pos", "gold": "neg"},
     r"different gold label.*\n.*a\.tsv:5.*'pos' on line 2"),
])
def test_reader_reports_bad_rows_with_line(tmp_path: Path, bad: dict[str, str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_long_annotations(_write(tmp_path / "a.tsv", [*ROWS, bad]), "item", "who", "label", "gold")


def test_reader_names_missing_column_and_fix(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.tsv", ROWS)
    with pytest.raises(DataError, match=r"a\.tsv: missing column 'labels' \(--label-column\); did you mean 'label'"):
        read_long_annotations(path, "item", "who", "labels")


def test_reader_file_problems(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_long_annotations(tmp_path / "none.tsv", "item", "who", "label")
    with pytest.raises(DataError, match="unknown file type"):
        read_long_annotations(tmp_path / "a.xlsx", "item", "who", "label")
    (tmp_path / "b.jsonl").write_text('{"item": "q", "who": "a", "label": "x"}\n{"item": \n')
    with pytest.raises(DataError, match=r"not valid JSON.*\n  .*b\.jsonl:2"):
        read_long_annotations(tmp_path / "b.jsonl", "item", "who", "label")
    (tmp_path / "c.csv").write_bytes("item,who,label\nq,a,x\nq,b,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"c\.csv:3: .*latin-1"):
        read_long_annotations(tmp_path / "c.csv", "item", "who", "label")
    latin = read_long_annotations(tmp_path / "c.csv", "item", "who", "label", encoding="latin-1")
    assert latin.triples[1][2] == "café"


# Report and CLI ----------------------------------------------------------------------------
def test_quality_report_on_rte(rte_path: Path) -> None:
    report = quality_report(read_long_annotations(rte_path, ITEM, WORKER, LABEL, GOLD), min_agreement=0.7)
    json.dumps(report, allow_nan=False)  # plain JSON: no NaN, no numpy types
    assert (report["n_items"], report["n_annotators"], report["n_annotations"]) == (800, 164, 8000)
    assert report["gold"]["dawid_skene"]["accuracy"] >= 0.925
    assert report["gold"]["dawid_skene"]["accuracy"] > report["gold"]["majority_vote"]["accuracy"]
    final = report["aggregated"]
    assert final["kept"] + sum(final["removed"].values()) == 800
    assert sum(final["label_counts"].values()) == final["kept"]
    assert len(report["dawid_skene"]["annotators"]) == 164


def test_report_without_fixed_ratings_skips_fleiss() -> None:
    triples = [("a", "x", "1"), ("a", "y", "1"), ("b", "x", "0"), ("b", "y", "1"), ("b", "z", "1")]
    report = quality_report(LongAnnotations("<memory>", triples), tie="drop", method="majority")
    assert report["agreement"]["fleiss_kappa"] is None and "vary" in report["agreement"]["fleiss_kappa_note"]
    assert report["agreement"]["krippendorff_alpha_nominal"] is not None and report["gold"] is None


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="raytune-llm")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_writes_json_markdown_and_labels(
    rte_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse(["agreement", str(rte_path), "--item-column", ITEM, "--annotator-column", WORKER,
                   "--label-column", LABEL, "--gold-column", GOLD, "--method", "majority", "--tie", "drop",
                   "--out", str(tmp_path)])
    assert cli.run(args) == 0
    report = json.loads((tmp_path / "agreement.json").read_text())
    assert report["majority_vote"]["dropped_ties"] == report["aggregated"]["removed"]["tie_dropped"] > 0
    assert "Krippendorff" in (tmp_path / "agreement.md").read_text()
    for png in ("annotator_quality.png", "item_agreement.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in (tmp_path / "agreement.md").read_text()
    labels = pd.read_csv(tmp_path / "labels.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert len(labels) == 800 and (labels["label"] == "").sum() == report["majority_vote"]["dropped_ties"]
    assert "accuracy vs gold" in capsys.readouterr().out


def test_cli_choices_match_the_library() -> None:
    from raytune_llm.quality.aggregate import TIE_POLICIES
    from raytune_llm.quality.report import METHODS

    assert (cli._METHODS, cli._TIES) == (METHODS, TIE_POLICIES)


def test_cli_rejects_bad_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(["agreement", "x.tsv", "--min-agreement", "1.5"])
    assert "between 0 and 1" in capsys.readouterr().err
