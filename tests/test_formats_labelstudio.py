"""Label Studio JSON exports, written here in Label Studio's export layout (a JSON array of tasks:
`data`, `annotations[].result[]` with `from_name`/`to_name`/`type`/`value`, `completed_by`,
`was_cancelled`, plus `predictions` that must be ignored)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.formats.labelstudio import read_labelstudio
from raytune_llm.data.formats.spans import spans_to_bio
from raytune_llm.data.quarantine import detach
from raytune_llm.data.readers import read_input, read_records
from raytune_llm.errors import DataError

_IDS = iter(range(1000, 100000))


def _choices(label: str | list[str], control: str = "sentiment") -> dict[str, Any]:
    chosen = label if isinstance(label, list) else [label]
    return {"id": f"r{next(_IDS)}", "from_name": control, "to_name": "text", "type": "choices",
            "origin": "manual", "value": {"choices": chosen}}


def _span(start: int, end: int, text: str, label: str) -> dict[str, Any]:
    return {"id": f"r{next(_IDS)}", "from_name": "label", "to_name": "text", "type": "labels", "origin": "manual",
            "value": {"start": start, "end": end, "text": text, "labels": [label]}}


def _annotation(annotator: Any, *results: dict[str, Any], cancelled: bool = False) -> dict[str, Any]:
    return {"id": next(_IDS), "completed_by": annotator, "result": list(results), "was_cancelled": cancelled,
            "ground_truth": False, "created_at": "2024-03-09T21:52:49.513742Z",
            "updated_at": "2024-03-09T22:16:08.746926Z", "lead_time": 4.288, "result_count": 0, "project": 5}


def _task(task_id: int, text: str | None, *annotations: dict[str, Any], **extra: Any) -> dict[str, Any]:
    data = {} if text is None else {"text": text}
    return {"id": task_id, "data": {**data, "meta_info": "batch 3"}, "annotations": list(annotations),
            "predictions": extra.pop("predictions", []), "meta": {}, "created_at": "2024-03-09T21:50:00Z",
            "updated_at": "2024-03-09T22:16:08Z", "inner_id": task_id, "total_annotations": len(annotations),
            "cancelled_annotations": sum(a["was_cancelled"] for a in annotations), "project": 5, **extra}


CLASSIFICATION = [
    _task(1, "Shipping was fast and the box was intact.",
          _annotation(3, _choices("Positive")), _annotation(4, _choices("Positive")),
          _annotation({"id": 5, "email": "c@example.com"}, _choices("Negative")),
          predictions=[{"model_version": "v1", "result": [_choices("Negative")]}]),
    _task(2, "It arrived, I guess.", _annotation(3, _choices("Negative")), _annotation(4, _choices("Positive"))),
    _task(3, "Refund still missing after a month.", _annotation(3, _choices("Negative")),
          _annotation(4, cancelled=True)),
    _task(4, "asdf", _annotation(3, cancelled=True)),
    _task(5, "Not looked at yet."),
    _task(6, "Great support team!", _annotation(3, _choices(["Positive", "Neutral"])),
          _annotation(4, _choices("Neutral"))),
    _task(7, None, _annotation(3, _choices("Neutral"))),
]


def _export(path: Path, tasks: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(tasks, indent=2), encoding="utf-8")  # Label Studio exports are indented
    return path


def test_votes_majority_ties_and_cancelled(tmp_path: Path) -> None:
    result = read_labelstudio(str(_export(tmp_path / "export.json", CLASSIFICATION)))
    majority = {r["source_id"]: (r["label"], r["votes"], round(r["vote_share"], 3)) for r in result.table.to_pylist()}
    assert majority == {"1": ("Positive", 3, 0.667), "3": ("Negative", 1, 1.0), "6": ("Neutral", 1, 1.0)}
    assert {(q.kind, q.detail) for q in result.quarantine} == {
        ("tie", "Negative=1, Positive=1"), ("no_annotation", ""), ("missing_text", "")}
    assert Counter(q.kind for q in result.quarantine)["no_annotation"] == 2  # tasks 4 and 5
    assert result.table.num_rows + len(result.quarantine) == len(CLASSIFICATION)
    # Long form: one row per submitted single choice; predictions and cancelled ones are not votes.
    single = [(str(t["id"]), a) for t in CLASSIFICATION for a in t["annotations"]
              if not a["was_cancelled"] and len(a["result"][0]["value"]["choices"]) == 1]
    assert result.votes.num_rows == len(single) == 8
    assert ("1", "c@example.com", "Negative") in {(r["task_id"], r["annotator"], r["label"])
                                                  for r in result.votes.to_pylist()}
    [multi] = result.annotation_quarantine
    assert multi.kind == "ambiguous_choice" and multi.detail.startswith("annotator 3:")
    assert result.stats == {"annotations": 11, "cancelled_annotations": 2, "tasks": 7, "ties": 1}
    # Line numbers point into the indented export: task 2 starts where its "id" object opens.
    lines = (tmp_path / "export.json").read_text().split("\n")
    tie = next(q for q in result.quarantine if q.kind == "tie")
    assert lines[tie.line - 1].strip() == "{" and '"id": 2,' in lines[tie.line]


def test_classification_path_with_declared_labels_and_strict(tmp_path: Path) -> None:
    path = _export(tmp_path / "export.json", CLASSIFICATION)
    cfg = DataConfig(path=str(path), format="labelstudio", labels=["Positive", "Negative"])
    result = read_input(cfg)
    assert result.table.column("label").to_pylist() == ["Positive", "Negative"]
    assert Counter(q.kind for q in result.quarantine) == {"no_annotation": 2, "tie": 1, "missing_text": 1,
                                                          "unknown_label": 1}
    assert result.read == len(CLASSIFICATION)
    table, _, stats = detach(read_records(cfg))
    assert table.column_names[-2:] == ["votes", "vote_share"]
    assert stats["labelstudio_ties"] == 1 and stats["labelstudio_annotations_quarantined"] == 1
    with pytest.raises(DataError, match=r"export\.json:\d+: text"):
        read_records(cfg.model_copy(update={"strict": True}))


def test_several_choice_controls_need_a_name(tmp_path: Path) -> None:
    tasks = [_task(1, "Late but polite.", _annotation(3, _choices("Negative"), _choices("yes", control="polite")),
                   _annotation(4, _choices("Negative"), _choices("no", control="polite")))]
    path = _export(tmp_path / "two_controls.json", tasks)
    named = read_labelstudio(str(path), choice_name="polite")
    assert named.votes.column("label").to_pylist() == ["yes", "no"] and named.stats["ties"] == 1
    unnamed = read_labelstudio(str(path))
    assert len(unnamed.annotation_quarantine) == 2 and "data.label_column" in unnamed.annotation_quarantine[0].reason


def test_ner_spans_per_annotator(tmp_path: Path) -> None:
    text = "Ada Lovelace met Babbage in London ."
    tasks = [
        _task(1, text, _annotation(3, _span(0, 12, "Ada Lovelace", "PER"), _span(28, 34, "London", "LOC")),
              _annotation(4, _span(17, 24, "Babbage", "PER"))),
        _task(2, text, _annotation(3, _span(0, 12, "Ada Lovelace", "PER"), _span(4, 20, "Lovelace met", "PER")),
              _annotation(4, _span(0, 3, "Adz", "PER")), _annotation(5, _span(30, 99, "x", "LOC"))),
    ]
    result = read_labelstudio(str(_export(tmp_path / "ner.json", tasks)))
    rows = result.spans.to_pylist()
    assert [(r["task_id"], r["annotator"]) for r in rows] == [("1", "3"), ("1", "4")]
    _, tags = spans_to_bio(text, [(s["start"], s["end"], s["label"]) for s in rows[0]["spans"]])
    assert tags == ["B-PER", "I-PER", "O", "O", "O", "B-LOC", "O"]
    problems = sorted(q.detail.split(":")[0] for q in result.annotation_quarantine)
    assert problems == ["annotator 3", "annotator 4", "annotator 5"]  # overlap, wrong text, out of bounds


def test_a_file_that_is_not_an_export(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text('{"text": "a", "label": "x"}\n')
    with pytest.raises(DataError, match="not a Label Studio JSON export"):
        read_labelstudio(str(path))
    _export(path, [_task(1, None, _annotation(3, _choices("x")))])
    with pytest.raises(DataError, match=r"no task has data\.text .* keys in data: \['meta_info'\]"):
        read_labelstudio(str(path))


def test_auto_format_hints_at_labelstudio(tmp_path: Path) -> None:
    path = _export(tmp_path / "export.json", CLASSIFICATION)
    with pytest.raises(DataError, match="set data.format=labelstudio"):
        read_input(DataConfig(path=str(path)))
