"""Tests of `raytune_llm.data.readers` and the demo corpus: small files in tmp_path, plus the
real Financial PhraseBank from ../shared/data. No Ray.

Row-level problems are quarantined (returned beside the good rows) and fail only with
`data.strict=true`; file-level problems fail at once. Each row-level test checks both."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.demo import DEMO_LABELS, write_demo_corpus
from raytune_llm.data.quarantine import Quarantined, detach
from raytune_llm.data.readers import OUTPUT_SCHEMA, read_input, read_records
from raytune_llm.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHRASEBANK = SHARED_DATA / "financial_phrasebank"


def _cfg(path: Path | str, **kwargs: Any) -> DataConfig:
    return DataConfig(path=str(path), **kwargs)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _error(cfg: DataConfig) -> str:
    with pytest.raises(DataError) as info:
        read_records(cfg)
    return str(info.value)


def _strict_error(cfg: DataConfig) -> str:
    """The message of the same read with data.strict=true."""
    return _error(cfg.model_copy(update={"strict": True}))


def _quarantined(cfg: DataConfig) -> list[Quarantined]:
    """What a non-strict read quarantined; also checks it travels with the table."""
    result = read_input(cfg)
    carried = detach(read_records(cfg))[1] if result.table.num_rows else result.quarantine
    assert carried == result.quarantine
    return result.quarantine


def _needs_shared_data() -> None:
    # A fresh clone has no ../shared/data: skip there, but under CI the data must be present.
    if not PHRASEBANK.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the shared corpora are missing: {PHRASEBANK}")
        pytest.skip(f"shared corpora not found at {PHRASEBANK} (a fresh clone has no ../shared/data)")


# Formats ----------------------------------------------------------------------------------------


def test_jsonl_reads_columns_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": 0, "x": 1}\n')
    table = read_records(_cfg(path))
    assert table.schema == OUTPUT_SCHEMA
    assert table.to_pylist() == [
        {"text": "good", "label": "pos", "source_id": None, "_source": str(path), "_line": 1},
        {"text": "bad", "label": "0", "source_id": None, "_source": str(path), "_line": 3},
    ]


def test_column_mapping_and_id_column(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "a.json", [
        {"sentence": "  raw  Text ", "sentiment": True, "uid": 7},
        {"sentence": "other", "sentiment": False, "uid": "x-2"},
    ])
    cfg = _cfg(path, text_column="sentence", label_column="sentiment", id_column="uid")
    table = read_records(cfg)
    assert table.column("text").to_pylist() == ["  raw  Text ", "other"]  # not normalised
    assert table.column("label").to_pylist() == ["True", "False"]
    assert table.column("source_id").to_pylist() == ["7", "x-2"]


def test_csv_quoted_multiline_field_reports_start_line(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('id,text,label\n1,"hello, world",pos\n2,"two\nlines",neg\n3,plain,pos\n')
    table = read_records(_cfg(path, id_column="id"))
    assert table.column("text").to_pylist() == ["hello, world", "two\nlines", "plain"]
    assert table.column("_line").to_pylist() == [2, 3, 5]
    assert table.column("source_id").to_pylist() == ["1", "2", "3"]


def test_tsv_by_extension(tmp_path: Path) -> None:
    path = tmp_path / "a.tsv"
    path.write_text("text\tlabel\na, b; c\tx\nd\ty\n")
    table = read_records(_cfg(path))
    assert table.column("text").to_pylist() == ["a, b; c", "d"]
    assert table.column("label").to_pylist() == ["x", "y"]


def test_semicolon_delimiter_and_explicit_format(tmp_path: Path) -> None:
    path = tmp_path / "export.dat"
    path.write_text('text;label\n"a;b";one\nc;two\n')
    table = read_records(_cfg(path, format="csv", delimiter=";"))
    assert table.column("text").to_pylist() == ["a;b", "c"]
    assert table.column("label").to_pylist() == ["one", "two"]


def test_wrong_delimiter_hints_at_the_right_one(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("text;label\na;one\n")
    message = _error(_cfg(path))
    assert "missing column 'text'" in message
    assert "data.delimiter=';'" in message


def test_phrasebank_splits_on_last_at(tmp_path: Path) -> None:
    path = tmp_path / "pb.txt"
    path.write_text("Email ir@corp.com for news .@neutral\r\nProfit rose .@positive\r\n")
    table = read_records(_cfg(path))
    assert table.column("text").to_pylist() == ["Email ir@corp.com for news .", "Profit rose ."]
    assert table.column("label").to_pylist() == ["neutral", "positive"]
    assert table.column("_line").to_pylist() == [1, 2]


def test_phrasebank_line_without_at(tmp_path: Path) -> None:
    path = tmp_path / "pb.txt"
    path.write_text("ok .@neutral\nno label here\nfine .@positive\n")
    assert read_records(_cfg(path)).column("_line").to_pylist() == [1, 3]
    [record] = _quarantined(_cfg(path))
    assert (record.line, record.kind, record.raw) == (2, "no_separator", "no label here")
    message = _strict_error(_cfg(path))
    assert f"{path}:2" in message and "'@'" in message


def test_parquet_lines_are_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [1, 2], "extra": [0.5, 0.7]}), path)
    table = read_records(_cfg(path))
    assert table.column("label").to_pylist() == ["1", "2"]
    assert table.column("_line").to_pylist() == [1, 2]


def test_empty_text_rows_are_quarantined(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "a.jsonl", [
        {"text": "   ", "label": "a"}, {"text": None, "label": "b"}, {"label": "c"}, {"text": "\u200b\t", "label": "d"},
        {"text": "kept", "label": "e"},
    ])
    assert read_records(_cfg(path)).column("label").to_pylist() == ["e"]
    quarantined = _quarantined(_cfg(path))
    assert [(q.line, q.field, q.kind) for q in quarantined] == [(n, "text", "missing_text") for n in (1, 2, 3, 4)]


# Encodings ----------------------------------------------------------------------------------------


def test_latin1_read_with_declared_encoding(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("text,label\nCafé in Espoo,pos\n".encode("latin-1"))
    assert read_records(_cfg(path, encoding="latin-1")).column("text").to_pylist() == ["Café in Espoo"]


def test_wrong_encoding_names_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("text,label\nplain,pos\nna\u00efve,neg\nlast,neg\n".encode("latin-1"))
    assert read_records(_cfg(path)).column("text").to_pylist() == ["plain", "last"]
    [record] = _quarantined(_cfg(path))
    assert (record.line, record.field, record.kind) == (3, "text", "undecodable")
    message = _strict_error(_cfg(path))
    assert f"{path}:3" in message
    assert "utf-8" in message and "data.encoding=latin-1" in message


def test_utf8_bom_does_not_break_the_header(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("text,label\nx,y\n".encode("utf-8-sig"))
    assert read_records(_cfg(path)).num_rows == 1


# Errors -------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = _error(_cfg(tmp_path / "nope.jsonl"))
    assert message == f"file not found: {tmp_path / 'nope.jsonl'}; check data.path"


def test_truncated_json_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", "lab\n')
    assert read_records(_cfg(path)).column("text").to_pylist() == ["a", "b"]
    [record] = _quarantined(_cfg(path))
    assert (record.line, record.kind, record.raw) == (3, "invalid_json", '{"text": "c", "lab')
    message = _strict_error(_cfg(path))
    assert f"{path}:3" in message and "not valid JSON" in message


def test_missing_column_lists_columns_and_suggests(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("id,txt,label\n1,a,b\n")
    message = _error(_cfg(path))
    assert str(path) in message
    assert "missing column 'text'" in message and "data.text_column" in message
    assert "did you mean 'txt'" in message
    assert "'id', 'txt', 'label'" in message


def test_empty_labels_reported_with_lines_and_total(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    body = "".join(f"t{i},{'' if i % 2 else 'x'}\n" for i in range(16))  # 8 empty labels
    path.write_text("text,label\n" + body)
    assert [q.line for q in _quarantined(_cfg(path))] == [3, 5, 7, 9, 11, 13, 15, 17]
    assert read_records(_cfg(path)).num_rows == 8
    message = _strict_error(_cfg(path))
    assert message.startswith("data.strict=true and 8 row(s)")
    assert "8 row(s): empty or missing label (data.label_column='label')" in message
    assert "remove the row or give it a label" in message
    assert f"{path}:3: label" in message and f"{path}:11: label" in message
    assert f"{path}:13" not in message and "... and 3 more" in message


def test_label_outside_declared_set(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "a.jsonl", [
        {"text": "a", "label": "pos"}, {"text": "b", "label": "Negative"}, {"text": "c", "label": "neg"},
    ])
    [record] = _quarantined(_cfg(path, labels=["pos", "neg"]))
    assert (record.line, record.field, record.kind) == (2, "label", "unknown_label")
    assert record.detail == "'Negative'"
    message = _strict_error(_cfg(path, labels=["pos", "neg"]))
    assert f"{path}:2: label: 'Negative'" in message
    assert "['pos', 'neg']" in message and "1 row(s)" in message


def test_jsonl_that_is_really_parquet(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    pq.write_table(pa.table({"text": ["a"], "label": ["b"]}), path)
    message = _error(_cfg(path))
    assert "not what its extension says" in message and "Parquet" in message


def test_jsonl_that_is_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("text,label\na,b\n")
    assert "not what its extension says" in _error(_cfg(path))


def test_parquet_that_is_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    path.write_text('{"text": "a", "label": "b"}\n')
    assert "not what its extension says" in _error(_cfg(path))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("\n\n")
    assert "no rows" in _error(_cfg(path))


def test_unknown_extension_asks_for_format(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text("<x/>")
    assert "data.format" in _error(_cfg(path))


# Many files ---------------------------------------------------------------------------------------


def test_directory_reads_supported_files_sorted(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "b.jsonl", [{"text": "from b", "label": "x"}])
    (tmp_path / "a.csv").write_text("text,label\nfrom a,y\n")
    (tmp_path / "notes.md").write_text("not data")
    (tmp_path / "_SUCCESS").write_text("")
    table = read_records(_cfg(tmp_path))
    assert table.column("text").to_pylist() == ["from a", "from b"]
    assert table.column("_source").to_pylist() == [str(tmp_path / "a.csv"), str(tmp_path / "b.jsonl")]


def test_glob_and_glob_matching_nothing(tmp_path: Path) -> None:
    for name in ("p1.jsonl", "p2.jsonl", "q.jsonl"):
        _write_jsonl(tmp_path / name, [{"text": name, "label": "x"}])
    table = read_records(_cfg(tmp_path / "p*.jsonl"))
    assert table.column("text").to_pylist() == ["p1.jsonl", "p2.jsonl"]
    assert "no files match" in _error(_cfg(tmp_path / "z*.jsonl"))


def test_empty_directory(tmp_path: Path) -> None:
    assert "no files ending in" in _error(_cfg(tmp_path))


def test_file_uri(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "a.jsonl", [{"text": "t", "label": "x"}])
    table = read_records(_cfg(path.as_uri()))
    assert table.column("_source").to_pylist() == [path.as_uri()]


# Real corpus --------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_phrasebank_all_agree_real_file() -> None:
    _needs_shared_data()
    table = read_records(_cfg(PHRASEBANK / "Sentences_AllAgree.txt", encoding="latin-1"))
    assert table.num_rows == 2264
    assert Counter(table.column("label").to_pylist()) == {"negative": 303, "neutral": 1391, "positive": 570}
    assert table.column("_line")[0].as_py() == 1


@pytest.mark.shared_data
def test_phrasebank_all_agree_as_utf8_quarantines_and_strict_fails_with_the_fix() -> None:
    _needs_shared_data()
    path = PHRASEBANK / "Sentences_AllAgree.txt"
    # Independent of the reader: the lines whose bytes are not valid UTF-8.
    expected = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            expected.append(number)
    quarantined = _quarantined(_cfg(path))
    assert [q.line for q in quarantined] == expected and len(expected) > 10
    assert {q.kind for q in quarantined} == {"undecodable"}
    assert read_input(_cfg(path)).read == 2264
    message = _strict_error(_cfg(path))
    assert "Sentences_AllAgree.txt:" in message and "data.encoding=latin-1" in message


# Demo corpus --------------------------------------------------------------------------------------


def test_demo_corpus_is_distinct_balanced_and_reproducible(tmp_path: Path) -> None:
    first = write_demo_corpus(tmp_path / "one" / "demo.jsonl")
    second = write_demo_corpus(tmp_path / "two.jsonl")
    assert first.read_bytes() == second.read_bytes()
    table = read_records(_cfg(first, id_column="id"))
    texts = table.column("text").to_pylist()
    assert len(set(texts)) == len(texts) >= 360
    counts = Counter(table.column("label").to_pylist())
    assert set(counts) == set(DEMO_LABELS) and min(counts.values()) >= 100
    assert write_demo_corpus(tmp_path / "three.jsonl", seed=1).read_bytes() != first.read_bytes()
