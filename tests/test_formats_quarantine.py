"""Deliberately broken inputs: every bad row is quarantined with its line and reason, the good
rows are read, and `read = kept + quarantined + dropped` holds. No Ray: the pipeline's pure
steps (normalise, de-duplicate, account) run directly on the reader's output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.quarantine import RAW_CHARS, Quarantined, attach, detach, write_quarantine
from raytune_llm.data.readers import ReadResult, read_input, read_records
from raytune_llm.data.tasks import read_task_table
from raytune_llm.data.transforms import drop_empty_and_duplicates, normalize_batch, row_accounting
from raytune_llm.errors import DataError


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


# (bytes of one line, the kind it must be quarantined as, or None for a usable row)
BROKEN_JSONL: list[tuple[bytes, str | None]] = [
    (_line({"text": "good one", "label": "pos"}), None),
    (b'{"text": "cut off mid-wr', "invalid_json"),
    (_line({"text": "x", "label": "maybe"}), "unknown_label"),
    (_line({"text": "y", "label": ""}), "missing_label"),
    (_line({"text": "  \t", "label": "neg"}), "missing_text"),
    ('{"text": "caf\u00e9 in Espoo", "label": "neg"}'.encode("latin-1"), "undecodable"),  # a latin-1 line
    (_line({"text": "lost \ufffd character", "label": "neg"}), "replacement_char"),
    (b"[1, 2]", "not_object"),
    (b"", None),  # blank: not a row at all
    (_line({"text": "good one", "label": "pos"}), None),  # duplicate
    (_line({"text": "good  one", "label": "neg"}), None),  # the same text after normalisation, other label
    (_line({"text": "good two", "label": "neg"}), None),
]


def _accounting(result: ReadResult) -> dict[str, int]:
    """What the pipeline computes after reading: normalise, de-duplicate, balance."""
    kept, dropped = drop_empty_and_duplicates(normalize_batch(result.table))
    return row_accounting(result.read, kept.num_rows, len(result.quarantine), dropped)


def test_broken_jsonl_quarantines_each_bad_line_and_balances(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(raw for raw, _ in BROKEN_JSONL) + b"\n")
    result = read_input(DataConfig(path=str(path), labels=["pos", "neg"]))
    expected = {n: kind for n, (_, kind) in enumerate(BROKEN_JSONL, start=1) if kind is not None}
    assert {q.line: q.kind for q in result.quarantine} == expected
    data_lines = [raw for raw, _ in BROKEN_JSONL if raw.strip()]
    assert result.read == len(data_lines) == 11
    rows = _accounting(result)
    assert rows == {"read": 11, "kept": 2, "quarantined": 7, "dropped_empty_text": 0, "dropped_duplicate": 1,
                    "dropped_conflicting_duplicate": 1}
    assert all(q.source == str(path) for q in result.quarantine)
    by_line = {q.line: q for q in result.quarantine}
    assert by_line[2].raw == '{"text": "cut off mid-wr' and by_line[2].field == "line"
    assert by_line[3].field == "label" and by_line[3].detail == "'maybe'"
    assert by_line[6].field == "text" and "data.encoding=latin-1" in by_line[6].reason


def test_strict_lists_every_reason_with_lines_and_totals(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(raw for raw, _ in BROKEN_JSONL))
    with pytest.raises(DataError) as info:
        read_records(DataConfig(path=str(path), labels=["pos", "neg"], strict=True))
    message = str(info.value)
    assert message.startswith(f"data.strict=true and 7 row(s) of {path} cannot be used")
    for number in (2, 3, 4, 5, 6, 7, 8):
        assert f"{path}:{number}:" in message
    assert message.count("1 row(s): ") == 7  # one section per reason


def test_broken_csv_rows_and_mixed_encoding(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    lines = [
        b"text,label", b"ok one,pos",
        b'"broken "quote,neg',            # 3: text after a closing quote
        b"three,fields,here",             # 4: more fields than the header
        b'"ok', b'two",neg',              # 5-6: one quoted field over two lines
        b"na\xefve,neg",                  # 7: a latin-1 byte in a UTF-8 file
        b"last,pos",
        b'"open quote never closed,neg',  # 9: swallows the next line, then the file ends
        b"after,pos",
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = read_input(DataConfig(path=str(path)))
    assert result.table.column("text").to_pylist() == ["ok one", "ok\ntwo", "last"]
    assert result.table.column("_line").to_pylist() == [2, 5, 8]
    assert [(q.line, q.kind) for q in result.quarantine] == [
        (3, "bad_csv_row"), (4, "bad_csv_row"), (7, "undecodable"), (9, "bad_csv_row")]
    assert "after,pos" in result.quarantine[3].raw, "the swallowed line must be visible in the quarantine"
    assert result.read == 7  # header excluded; lines 5-6 are one row, 9-10 one broken row
    assert _accounting(result)["kept"] == 3


def test_parquet_null_and_unknown_labels(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c", None], "label": [1.0, None, 7.0, 2.0]}), path)
    result = read_input(DataConfig(path=str(path), labels=["1", "2"]))
    assert result.table.column("label").to_pylist() == ["1"]
    assert [(q.line, q.kind) for q in result.quarantine] == [(2, "missing_label"), (3, "unknown_label"),
                                                             (4, "missing_text")]


def test_json_array_file_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('[\n  {"text": "a", "label": "x"},\n  {"text": "b",\n   "label": ""},\n  {"text": "c", "label": "y"}\n]\n')
    result = read_input(DataConfig(path=str(path)))
    assert result.table.column("_line").to_pylist() == [2, 5]
    assert [(q.line, q.kind) for q in result.quarantine] == [(3, "missing_label")]


def test_truncated_json_array_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('[\n  {"text": "a", "label": "x"},\n  {"text": "b", "lab')
    with pytest.raises(DataError, match=r"a\.json:3: the JSON array breaks off"):
        read_input(DataConfig(path=str(path)))


def test_quarantine_travels_with_the_table_and_is_written(tmp_path: Path) -> None:
    record = Quarantined("f.jsonl", 3, "label", "unknown_label", "why", "'z'", "r" * RAW_CHARS)
    table, records, stats = detach(attach(pa.table({"text": ["a"]}), [record], {"n": 1}))
    assert records == [record] and stats == {"n": 1} and table.schema.metadata is None
    path = write_quarantine(tmp_path / "prepared" / "quarantine.jsonl", [record, record])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [record.as_dict()] * 2


def test_long_raw_lines_are_clipped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "ok", "label": "x"}\n{"text": "' + "w" * 5000 + "\n")
    [record] = read_input(DataConfig(path=str(path))).quarantine
    assert len(record.raw) == RAW_CHARS and record.raw.endswith("\u2026")


def test_row_accounting_refuses_a_vanished_row() -> None:
    assert row_accounting(5, 3, 1, {"duplicate": 1})["read"] == 5
    with pytest.raises(ValueError, match="does not balance"):
        row_accounting(5, 3, 1, {"duplicate": 0})


def test_task_table_honours_strict(tmp_path: Path) -> None:
    path = tmp_path / "a.conll"
    path.write_text("Paris\tB-loc\n\nhello\tPER\n")
    result = read_task_table(DataConfig(path=str(path), format="conll"))
    assert result.table.num_rows == 1 and [q.line for q in result.quarantine] == [3]
    with pytest.raises(DataError, match=r"a\.conll:3: tag: line 3: 'PER'"):
        read_task_table(DataConfig(path=str(path), format="conll", strict=True))


def test_task_formats_are_refused_by_the_classification_reader(tmp_path: Path) -> None:
    path = tmp_path / "a.conll"
    path.write_text("Paris\tB-loc\n")
    with pytest.raises(DataError, match="read_task_table"):
        read_records(DataConfig(path=str(path), format="conll"))


def test_prepare_writes_the_quarantine_and_balanced_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The pipeline's own bookkeeping, with its Ray pass replaced by the pure normalisation it runs
    (tokenization is covered end to end by the Ray tests in test_training.py)."""
    from raytune_llm.config.schema import RunConfig
    from raytune_llm.data import pipeline

    monkeypatch.setattr(pipeline, "_transform_with_ray", lambda raw, *_: normalize_batch(raw))
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(raw for raw, _ in BROKEN_JSONL) + b"\n")
    cfg = RunConfig.model_validate({"data": {"path": str(path), "labels": ["pos", "neg"]},
                                    "model": {"name_or_path": "unused"}})
    prepared = pipeline.prepare(cfg, tmp_path / "run", "unused")
    rows = prepared.manifest["rows"]
    assert rows["read"] == 11 and rows["quarantined"] == 7
    assert rows["read"] == rows["kept"] + rows["quarantined"] + sum(v for k, v in rows.items() if k.startswith("dropped_"))
    written = (prepared.root / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["line"] for line in written] == [2, 3, 4, 5, 6, 7, 8]
    assert prepared.manifest["quarantine"]["kinds"]["unknown_label"] == 1
    assert "+ quarantined 7 +" in capsys.readouterr().out
    again = pipeline.prepare(cfg, tmp_path / "run", "unused")
    assert again.manifest["created"] == prepared.manifest["created"], "same inputs: reuse"
    path.write_bytes(path.read_bytes().replace(b'"maybe"', b'"perhaps"'))  # only a quarantined row changes
    third = pipeline.prepare(cfg, tmp_path / "run", "unused")
    assert third.manifest["fingerprint"] != prepared.manifest["fingerprint"]
    assert "perhaps" in (third.root / "quarantine.jsonl").read_text(encoding="utf-8")
