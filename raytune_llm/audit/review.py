"""Send flagged rows to Label Studio for review, and read the reviewed export back.

Out: `labelstudio_tasks.json`, a JSON list of import tasks. `data` holds the text and our row id
(`row_id`); `predictions` pre-fill the *current* label as a `choices` result, so a reviewer who
agrees with it only submits, and one who does not changes one choice; the prediction's `score`
is the given label's out-of-sample probability, so sorting by score in Label Studio's data
manager puts the likeliest errors first. The model's suggestion, its confidence and where the
row came from go in the task's `meta`. `labelstudio_config.xml` is a labeling interface whose
control names match the tasks (`<Choices name="label" toName="text">`).

Back: Label Studio's JSON export of those tasks carries `data.row_id` unchanged, so the existing
reader (`data.format=labelstudio`) with `data.id_column=row_id` returns each reviewed row under
the id it has in the corpus (`read_review`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import pyarrow as pa

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.quarantine import Quarantined

__all__ = ["CONTROL", "ID_FIELD", "TEXT_FIELD", "label_config", "read_review", "review_tasks", "write_review_tasks"]

TEXT_FIELD = "text"
ID_FIELD = "row_id"
CONTROL = "label"  # the Choices control's name: `from_name` in every result
MODEL_VERSION = "raytune-llm audit: current label"


def review_tasks(flagged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Label Studio import tasks for the flagged rows (see the module docstring), in rank order."""
    tasks = []
    for row in flagged:
        choice = {"from_name": CONTROL, "to_name": TEXT_FIELD, "type": "choices",
                  "value": {"choices": [row["given_label"]]}}
        meta = {key: row.get(key) for key in ("rank", "given_label", "suggested_label", "confidence",
                                              "given_label_probability", "margin", "source", "line")}
        tasks.append({"data": {TEXT_FIELD: row["text"], ID_FIELD: row["id"]},
                      "predictions": [{"model_version": MODEL_VERSION, "score": row["given_label_probability"],
                                       "result": [choice]}],
                      "meta": {**meta, "model_suggestion": row["suggested_label"]}})
    return tasks


def label_config(labels: list[str]) -> str:
    """A Label Studio labeling interface for single-label review of `labels`."""
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (f'<View>\n  <Text name="{TEXT_FIELD}" value="${TEXT_FIELD}"/>\n'
            f'  <Choices name="{CONTROL}" toName="{TEXT_FIELD}" choice="single" showInLine="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def write_review_tasks(flagged: list[dict[str, Any]], labels: list[str], out: Path) -> dict[str, Path]:
    """Write `labelstudio_tasks.json` and `labelstudio_config.xml` under `out`."""
    paths = {"labelstudio_tasks": out / "labelstudio_tasks.json", "labelstudio_config": out / "labelstudio_config.xml"}
    paths["labelstudio_tasks"].write_text(json.dumps(review_tasks(flagged), indent=2, ensure_ascii=False),
                                          encoding="utf-8")
    paths["labelstudio_config"].write_text(label_config(labels), encoding="utf-8")
    return paths


def read_review(path: str, labels: list[str] | None = None) -> tuple[pa.Table, list[Quarantined]]:
    """A reviewed Label Studio export of the audit's tasks, read by the data step.

    Returns the rows, normalised as `prepare` does, with `id` = our row id (`data.row_id`) and
    `label` = the reviewers' majority choice, and the quarantine: tasks without a usable review
    (unannotated, skipped, tied), each with file, line and reason, as for any Label Studio export.
    """
    from raytune_llm.data.quarantine import detach
    from raytune_llm.data.readers import read_records
    from raytune_llm.data.transforms import normalize_batch

    cfg = DataConfig(path=path, format="labelstudio", text_column=TEXT_FIELD, label_column=CONTROL,
                     id_column=ID_FIELD, labels=labels)
    table, quarantine, _ = detach(read_records(cfg))
    return normalize_batch(table), quarantine
