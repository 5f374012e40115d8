"""The data QA report: numbers checked against pandas, warnings exactly at their thresholds, real PhraseBank."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from raytune_llm.data.report import write_qa_report
from tests.conftest import shared_data

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LABELS = ["alpha", "beta", "gamma"]
# Known shape: beta is rare in train (12 < 20), train is imbalanced (150 / 12 = 12.5 > 10),
# validation has no gamma at all; test is fine (20 / 3 = 6.7).
COUNTS = {"train": {"alpha": 150, "beta": 12, "gamma": 30},
          "validation": {"alpha": 20, "beta": 5, "gamma": 0},
          "test": {"alpha": 20, "beta": 3, "gamma": 4}}


def _rows(counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Rows with our own filler text; metadata depends on the label so that slices differ."""
    rows: list[dict[str, Any]] = []
    for split, per_label in counts.items():
        for label, count in per_label.items():
            for _ in range(count):
                i = len(rows)
                rows.append({
                    "id": f"r{i}", "text": f"note {i} about {label} " + "word " * (i % 23),
                    "label": label, "split": split, "source_id": None, "_line": i + 1,
                    "_source": "batch_a.jsonl" if (i % 3 == 0 or label == "beta") else "batch_b.jsonl",
                    "agreement": 100 if label == "alpha" and i % 2 else (50, 66, 75)[i % 3],
                    "score": round((i * 37 % 101) / 100, 2),
                })
    return rows


def _manifest(kept: int, quarantined: int = 3, duplicate: int = 2, leak: int = 0) -> dict[str, Any]:
    read = kept + quarantined + duplicate + leak
    return {"source": "synthetic", "labels": LABELS,
            "rows": {"read": read, "kept": kept, "quarantined": quarantined, "dropped_duplicate": duplicate,
                     "dropped_leak": leak},
            "quarantine": {"file": "quarantine.jsonl", "kinds": {"invalid_json": quarantined}},
            "leaks_by_split": {"validation": leak} if leak else {}}


def _report(tmp_path: Path, rows: list[dict[str, Any]], manifest: dict[str, Any],
            columns: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Path]]:
    paths = write_qa_report(tmp_path, pa.Table.from_pylist(rows), manifest, columns)
    return json.loads(paths["json"].read_text()), paths


def test_numbers_equal_an_independent_count(tmp_path: Path) -> None:
    rows = _rows(COUNTS)
    frame = pd.DataFrame(rows)
    report, _ = _report(tmp_path, rows, _manifest(len(rows)))

    assert report["rows"] == {"read": len(rows) + 5, "kept": len(rows), "quarantined": 3,
                              "dropped": {"duplicate": 2, "leak": 0}, "dropped_total": 2,
                              "kept_in_table": len(rows), "balanced": True,
                              "quarantined_share": pytest.approx(3 / (len(rows) + 5))}
    assert report["quarantine"]["kinds"] == {"invalid_json": 3}
    table = pd.crosstab(frame["split"], frame["label"]).reindex(columns=LABELS, fill_value=0)
    for split in ("train", "validation", "test"):
        expected = table.loc[split]
        part = report["splits"][split]
        assert part["counts"] == {lb: int(expected[lb]) for lb in LABELS}
        assert part["shares"] == pytest.approx({lb: round(expected[lb] / expected.sum(), 4) for lb in LABELS})
        nonzero = expected[expected > 0]
        assert part["imbalance_ratio"] == pytest.approx(nonzero.max() / nonzero.min())
        lengths = frame.loc[frame["split"] == split, "text"].str.len()
        chars = report["text_chars"]["by_split"][split]
        assert chars["mean"] == pytest.approx(lengths.mean(), abs=0.01)
        assert chars["median"] == pytest.approx(lengths.median())
        assert chars["p95"] == pytest.approx(lengths.quantile(0.95), abs=0.01)
        assert chars["max"] == lengths.max()
    assert report["splits"]["validation"]["missing_labels"] == ["gamma"]


def test_metadata_distributions_per_split_and_label_shares_per_value(tmp_path: Path) -> None:
    rows = _rows(COUNTS)
    frame = pd.DataFrame(rows)
    report, _ = _report(tmp_path, rows, _manifest(len(rows)))
    assert set(report["metadata"]) == {"_source", "agreement", "score"}  # id, text, _line... are not metadata

    for column in ("_source", "agreement"):
        meta = report["metadata"][column]
        assert meta["kind"] == "categorical"
        by_split = pd.crosstab(frame[column], frame["split"])
        for split in by_split.columns:
            assert meta["by_split"][split]["counts"] == {str(v): int(c) for v, c in by_split[split].items()}
        by_value = pd.crosstab(frame[column], frame["label"]).reindex(columns=LABELS, fill_value=0)
        for value, counts in by_value.iterrows():
            shown = meta["labels_by_value"][str(value)]
            assert shown["counts"] == {lb: int(counts[lb]) for lb in LABELS}
            assert shown["shares"] == pytest.approx({lb: round(counts[lb] / counts.sum(), 4) for lb in LABELS})
    agreement = report["metadata"]["agreement"]
    assert dict(zip(agreement["histogram"]["values"], agreement["histogram"]["counts"])) == dict(
        Counter(frame["agreement"]))
    means = frame.groupby("split")["agreement"].mean()
    assert {s: agreement["by_split"][s]["mean"] for s in means.index} == pytest.approx(means.to_dict(), abs=1e-4)

    score = report["metadata"]["score"]  # many distinct values: binned
    assert score["kind"] == "numeric" and score["distinct"] == frame["score"].nunique()
    counts, edges = np.histogram(frame["score"], bins=10)
    assert score["histogram"]["counts"] == counts.tolist()
    assert score["histogram"]["edges"] == pytest.approx(edges.tolist())
    assert sum(v["rows"] for v in score["labels_by_value"].values()) == len(rows)


def test_warnings_for_the_known_problems_and_nothing_else(tmp_path: Path) -> None:
    rows = _rows(COUNTS)
    report, paths = _report(tmp_path, rows, _manifest(len(rows)))
    found = {(w["check"], w.get("split"), w.get("label")) for w in report["warnings"]}
    assert found == {("few_train_rows", None, "beta"), ("imbalance", "train", None),
                     ("missing_class", "validation", "gamma")}
    assert report["verdict"] == "review"
    imbalance = next(w for w in report["warnings"] if w["check"] == "imbalance")
    assert imbalance["value"] == pytest.approx(12.5) and imbalance["threshold"] == 10
    assert "(> 10)" in imbalance["message"]
    text = paths["markdown"].read_text()
    assert text.index("Review before training: 3 warning(s)") < text.index("## Rows")
    assert text.index("**missing_class**") < text.index("## Labels by split")


def _balanced(train: dict[str, int]) -> list[dict[str, Any]]:
    return _rows({"train": train, "validation": {lb: 2 for lb in LABELS}, "test": {lb: 2 for lb in LABELS}})


EVEN = {"alpha": 20, "beta": 20, "gamma": 20}  # with 2 + 2 held-out rows per class: 72 rows kept


@pytest.mark.parametrize(("train", "quarantined", "read", "leak", "expected"), [
    (EVEN, 0, 72, 0, set()),  # exactly 20 train rows is enough
    ({**EVEN, "beta": 19}, 0, 71, 0, {"few_train_rows"}),
    ({**EVEN, "alpha": 200}, 0, 252, 0, set()),  # ratio exactly 10 passes
    ({**EVEN, "alpha": 201}, 0, 253, 0, {"imbalance"}),
    (EVEN, 4, 80, 0, set()),  # 4 of 80 read: exactly 5 %
    (EVEN, 5, 99, 0, {"quarantine_share"}),  # 5 of 99 read: 5.05 %
    (EVEN, 0, 73, 1, {"leakage"}),
])
def test_each_warning_fires_exactly_past_its_threshold(
    tmp_path: Path, train: dict[str, int], quarantined: int, read: int, leak: int, expected: set[str]
) -> None:
    rows = _balanced(train)
    duplicate = read - len(rows) - quarantined - leak  # the rest of what was read: dropped duplicates
    report, _ = _report(tmp_path, rows, _manifest(len(rows), quarantined, duplicate, leak), columns=[])
    assert report["rows"]["read"] == read and report["rows"]["balanced"]
    assert {w["check"] for w in report["warnings"]} == expected
    assert report["verdict"] == ("ok" if not expected else "review")


def test_accounting_that_does_not_balance_is_flagged(tmp_path: Path) -> None:
    rows = _balanced({lb: 20 for lb in LABELS})
    manifest = _manifest(len(rows), quarantined=0, duplicate=0)
    manifest["rows"]["read"] += 1  # a row vanished
    manifest["rows"]["kept"] += 1  # and the table is not the one the manifest counted
    report, _ = _report(tmp_path, rows, manifest, columns=[])
    assert {w["check"] for w in report["warnings"]} == {"kept_mismatch"}
    manifest["rows"]["read"] += 1
    report, _ = _report(tmp_path, rows, manifest, columns=[])
    assert {w["check"] for w in report["warnings"]} == {"kept_mismatch", "row_accounting"}


def test_pngs_are_valid_and_linked_from_the_markdown(tmp_path: Path) -> None:
    rows = _rows(COUNTS)
    for i, row in enumerate(rows):
        row["annotator"] = f"person{i % 25}"  # 25 values: listed, but too many to plot
    _, paths = _report(tmp_path, rows, _manifest(len(rows)))
    pngs = {p.name for p in paths.values() if p.suffix == ".png"}
    assert pngs == {"qa_labels_by_split.png", "qa_text_length.png", "qa_agreement.png",
                    "qa__source_labels.png", "qa_agreement_labels.png"}
    assert {p.name for p in tmp_path.glob("*.png")} == pngs
    for name in pngs:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) > 2000, name
    links = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", paths["markdown"].read_text()))
    assert links == pngs  # every PNG linked, relative to the report, and nothing else


def test_a_named_metadata_column_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="annotator"):
        write_qa_report(tmp_path, pa.Table.from_pylist(_rows(COUNTS)), _manifest(244), ["annotator"])


def test_fifty_thousand_rows_in_under_a_second(tmp_path: Path) -> None:
    n = 50_000
    rng = np.random.default_rng(0)
    labels = rng.choice(LABELS, n, p=[0.7, 0.2, 0.1]).tolist()
    table = pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"row {i} " + "word " * (i % 40) for i in range(n)],
                      "label": labels, "split": rng.choice(["train", "validation", "test"], n).tolist(),
                      "_source": [f"file{i % 60}.jsonl" for i in range(n)], "agreement": rng.choice([50, 100], n),
                      "vote_share": rng.random(n)})
    manifest = _manifest(n, quarantined=0, duplicate=0)
    write_qa_report(tmp_path / "warm", table.slice(0, 50), manifest | {"rows": {"read": 50, "kept": 50}})
    seconds = []
    for _ in range(2):  # CPU time, best of two: other processes on a shared machine do not count
        started = time.process_time()
        paths = write_qa_report(tmp_path / "big", table, manifest)
        seconds.append(time.process_time() - started)
    assert min(seconds) < 1.0, seconds
    report = json.loads(paths["json"].read_text())
    assert len(report["metadata"]["_source"]["labels_by_value"]) == 51  # 50 listed + "(other)"
    assert sum(v["rows"] for v in report["metadata"]["_source"]["labels_by_value"].values()) == n
    assert "_source_labels" not in paths and "vote_share_labels" not in paths


@pytest.mark.shared_data
def test_real_phrasebank_agreement_report(tmp_path: Path) -> None:
    from raytune_llm.config.schema import DataConfig
    from raytune_llm.data.quarantine import detach, kind_counts
    from raytune_llm.data.readers import read_records
    from raytune_llm.data.transforms import assign_splits, normalize_batch

    cfg = DataConfig(path=str(shared_data("financial_phrasebank")), format="phrasebank_agreement",
                     labels=["negative", "neutral", "positive"])
    raw, quarantine, _ = detach(read_records(cfg))
    table = normalize_batch(raw)
    splits = assign_splits(table.column("id").to_pylist(), table.column("label").to_pylist(),
                           {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=0)
    kept = table.append_column("split", pa.array(splits.tolist(), pa.string()))
    manifest = {"source": cfg.path, "labels": list(cfg.labels or []),
                "rows": {"read": kept.num_rows + len(quarantine), "kept": kept.num_rows,
                         "quarantined": len(quarantine)},
                "quarantine": {"file": "quarantine.jsonl", "kinds": kind_counts(quarantine)}}
    paths = write_qa_report(tmp_path, kept, manifest, ["agreement", "_source"])
    report = json.loads(paths["json"].read_text())

    frame = kept.select(["label", "agreement", "split"]).to_pandas()
    histogram = report["metadata"]["agreement"]["histogram"]
    assert histogram["values"] == [50, 66, 75, 100]
    assert dict(zip(histogram["values"], histogram["counts"])) == dict(Counter(frame["agreement"]))
    for level, group in frame.groupby("agreement"):
        shown = report["metadata"]["agreement"]["labels_by_value"][str(level)]
        counts = Counter(group["label"])
        assert shown["counts"] == {lb: counts[lb] for lb in cfg.labels or []}
        assert shown["shares"] == pytest.approx({lb: round(counts[lb] / len(group), 4) for lb in counts})
    assert report["rows"]["quarantined"] == len(quarantine) > 0 and report["rows"]["balanced"]
    assert report["warnings"] == []  # 3 classes, ratio under 5, 0.2 % quarantined
    text = paths["markdown"].read_text()
    assert "![agreement histogram](qa_agreement.png)" in text and "(qa_agreement_labels.png)" in text
    assert paths["agreement"].read_bytes().startswith(PNG_SIGNATURE)
