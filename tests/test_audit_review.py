"""Audit -> Label Studio -> back: the review tasks we write, a reviewed export in Label Studio's own
export layout (built here, as in test_formats_labelstudio.py), and its re-import through the data step."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pyarrow as pa

from raytune_llm.audit.review import read_review, write_review_tasks
from raytune_llm.data.transforms import normalize_batch

LABELS = ["negative", "neutral", "positive"]
TEXTS = ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn.",
         "The company is based in Helsinki , Finland .",
         "Net sales fell by 5 % to EUR 30 mn.",
         "Shares of the  company were unchanged."]


def _flagged() -> list[dict[str, Any]]:
    """Flagged rows as the audit writes them; ids are the corpus ids the data step gives these texts."""
    ids = normalize_batch(pa.table({"text": TEXTS, "label": ["x"] * 4})).column("id").to_pylist()
    given = ["negative", "positive", "positive", "negative"]
    suggested = ["positive", "neutral", "negative", "neutral"]
    return [{"rank": i + 1, "id": ids[i], "text": " ".join(TEXTS[i].split()), "given_label": given[i],
             "suggested_label": suggested[i], "confidence": 0.9 - i / 10, "given_label_probability": 0.05 + i / 10,
             "margin": -0.8, "fold": i % 2, "source": "Sentences_AllAgree.txt", "line": 10 + i} for i in range(4)]


def _label_studio_import_then_export(tasks: list[dict[str, Any]], reviews: list[list[Any]]) -> list[dict[str, Any]]:
    """What Label Studio exports after importing `tasks` and reviewers submitting `reviews`
    (per task: (annotator, choice) pairs, choice None for a skipped task)."""
    exported = []
    for n, (task, votes) in enumerate(zip(tasks, reviews)):
        task_id = 5000 + n  # Label Studio numbers tasks itself on import
        annotations = [{
            "id": 900 + 10 * n + k, "completed_by": who, "was_cancelled": choice is None,
            "result": [] if choice is None else [{"id": f"a{n}{k}", "from_name": "label", "to_name": "text",
                                                  "type": "choices", "origin": "manual",
                                                  "value": {"choices": [choice]}}],
            "ground_truth": False, "created_at": "2026-11-25T10:00:00Z", "updated_at": "2026-11-25T10:01:00Z",
            "lead_time": 6.2, "prediction": {}, "result_count": 0, "task": task_id, "project": 7,
        } for k, (who, choice) in enumerate(votes)]
        predictions = [{**p, "id": 700 + n, "created_ago": "2 hours", "task": task_id, "project": 7,
                        "result": [{**r, "id": f"p{n}"} for r in p["result"]]} for p in task["predictions"]]
        exported.append({"id": task_id, "data": task["data"], "meta": task["meta"], "annotations": annotations,
                         "predictions": predictions, "drafts": [], "created_at": "2026-11-25T09:00:00Z",
                         "updated_at": "2026-11-25T10:01:00Z", "inner_id": n + 1, "total_annotations": len(votes),
                         "cancelled_annotations": sum(c is None for _, c in votes), "total_predictions": 1,
                         "project": 7, "updated_by": 3, "file_upload": "labelstudio_tasks.json"})
    return exported


def test_review_tasks_round_trip_through_the_data_step(tmp_path: Path) -> None:
    flagged = _flagged()
    paths = write_review_tasks(flagged, LABELS, tmp_path)
    tasks = json.loads(paths["labelstudio_tasks"].read_text())
    # Import layout: data (text + our id), the current label pre-filled as a choices prediction, the suggestion in meta.
    assert [t["data"] for t in tasks] == [{"text": r["text"], "row_id": r["id"]} for r in flagged]
    assert [t["predictions"][0]["result"][0]["value"]["choices"] for t in tasks] == [[r["given_label"]] for r in flagged]
    assert all(t["predictions"][0]["result"][0]["from_name"] == "label" for t in tasks)
    assert [t["meta"]["model_suggestion"] for t in tasks] == [r["suggested_label"] for r in flagged]
    assert [t["predictions"][0]["score"] for t in tasks] == [r["given_label_probability"] for r in flagged]
    # The labeling interface names the same controls and offers every label.
    view = ET.fromstring(paths["labelstudio_config"].read_text())
    choices = view.find("Choices")
    assert choices is not None and choices.get("name") == "label" and choices.get("toName") == "text"
    assert [c.get("value") for c in choices.findall("Choice")] == LABELS
    assert view.find("Text").get("value") == "$text"  # type: ignore[union-attr]

    reviews = [[(3, "positive"), (4, "positive")],      # reviewers agree with the suggestion
               [(3, "positive")],                       # reviewer keeps the given label
               [(3, "negative"), (4, "negative"), (5, "neutral")],  # majority
               [(3, None)]]                             # skipped: stays out, quarantined
    export = tmp_path / "project-7-at-2026-11-25.json"
    export.write_text(json.dumps(_label_studio_import_then_export(tasks, reviews), indent=2))

    rows, quarantine = read_review(str(export), LABELS)
    by_id = {r["id"]: r for r in rows.to_pylist()}
    assert set(by_id) == {r["id"] for r in flagged[:3]}, "reviewed rows come back under their corpus ids"
    assert [by_id[r["id"]]["label"] for r in flagged[:3]] == ["positive", "positive", "negative"]
    assert [by_id[r["id"]]["text"] for r in flagged[:3]] == [r["text"] for r in flagged[:3]]
    assert by_id[flagged[2]["id"]]["votes"] == 3
    # The prediction we pre-filled is not a vote: the skipped task has no label and is quarantined.
    assert [q.kind for q in quarantine] == ["no_annotation"] and flagged[3]["id"] in quarantine[0].raw
    assert quarantine[0].source.endswith(export.name) and quarantine[0].line > 1  # file and line of the task
    assert rows.num_rows + len(quarantine) == len(tasks)


def test_without_our_id_the_label_studio_task_id_is_used(tmp_path: Path) -> None:
    tasks = json.loads(write_review_tasks(_flagged()[:1], LABELS, tmp_path)["labelstudio_tasks"].read_text())
    del tasks[0]["data"]["row_id"]  # e.g. tasks made by hand in the same project
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_label_studio_import_then_export(tasks, [[(3, "neutral")]])))
    rows, _ = read_review(str(export), LABELS)
    assert rows.column("id").to_pylist() == ["5000"]
