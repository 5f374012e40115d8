"""Label Studio JSON exports: annotators' choices (classification) and labelled spans (NER).

An export is a JSON array of tasks: `data` holds the task's fields (the text under
`data.<text_field>`), `annotations` (`completions` in exports before Label Studio 1.0) one entry
per annotator submission with `completed_by`, `was_cancelled` and a `result` list. A result of
`type: choices` carries `value.choices`; one of `type: labels` carries `value.start`, `value.end`,
`value.text` and `value.labels`. `predictions` are a model's, not a person's, and are ignored.

`parse_labelstudio` returns, from one pass:
- `votes`: one row per (task, annotator) choice, the long form agreement statistics need;
- `table`: one row per task with the majority label, the number of votes and the share of the
  winning label; a tie has no majority and quarantines the task (counted in `stats["ties"]`);
- `spans`: one row per (task, annotator) with labelled spans.
Skipped (cancelled) annotations are counted, not treated as errors; an annotation that cannot be
used (several choices in a single-label task, a span outside the text) is listed in
`annotation_quarantine`, apart from the task-level `quarantine`, so each list balances its table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from raytune_llm.data.formats._common import SPAN_TYPE, load_files, merge_stats, table_of
from raytune_llm.data.formats.spans import check_spans
from raytune_llm.data.parsers import Decoded, json_values
from raytune_llm.data.quarantine import Quarantined, clip
from raytune_llm.errors import DataError

__all__ = ["SCHEMA", "SPANS_SCHEMA", "VOTES_SCHEMA", "LabelStudioResult", "parse_labelstudio", "read_labelstudio"]

SCHEMA = pa.schema([("text", pa.string()), ("label", pa.string()), ("source_id", pa.string()),
                    ("_source", pa.string()), ("_line", pa.int64()), ("votes", pa.int64()),
                    ("vote_share", pa.float64())])
VOTES_SCHEMA = pa.schema([("task_id", pa.string()), ("annotator", pa.string()), ("label", pa.string()),
                          ("_source", pa.string()), ("_line", pa.int64())])
SPANS_SCHEMA = pa.schema([("task_id", pa.string()), ("annotator", pa.string()), ("text", pa.string()),
                          ("spans", pa.list_(SPAN_TYPE)), ("_source", pa.string()), ("_line", pa.int64())])


@dataclass
class LabelStudioResult:
    """Tables and quarantines of one or more exports (see the module docstring)."""

    table: pa.Table
    votes: pa.Table
    spans: pa.Table
    quarantine: list[Quarantined] = field(default_factory=list)
    annotation_quarantine: list[Quarantined] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class _Collected:
    rows: list[dict[str, Any]] = field(default_factory=list)
    votes: list[dict[str, Any]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)
    annotation_quarantine: list[Quarantined] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)


def read_labelstudio(path: str, text_field: str = "text", choice_name: str | None = None,
                     encoding: str = "utf-8", id_field: str | None = None) -> LabelStudioResult:
    """Read every export `path` names (a directory: its `.json` files); see `parse_labelstudio`."""
    results = [parse_labelstudio(decoded, file.display, text_field, choice_name, id_field)
               for file, decoded in load_files(path, "labelstudio", encoding, (".json",))]
    stats: dict[str, int] = {}
    for result in results:
        merge_stats(stats, result.stats)
    return LabelStudioResult(
        pa.concat_tables([r.table for r in results]), pa.concat_tables([r.votes for r in results]),
        pa.concat_tables([r.spans for r in results]), [q for r in results for q in r.quarantine],
        [q for r in results for q in r.annotation_quarantine], stats,
    )


def parse_labelstudio(decoded: Decoded, display: str, text_field: str = "text",
                      choice_name: str | None = None, id_field: str | None = None) -> LabelStudioResult:
    """One export's tasks as votes, majority rows and spans.

    `choice_name` picks the choices control (its `from_name`) when a task has several; with
    one control it is not needed. `id_field` names a `data` key holding the row's own id (the
    `row_id` that `raytune-llm audit` puts in its review tasks); without one, or where a task
    lacks it, the id is Label Studio's task id.
    """
    items, _ = json_values(decoded, display, "data.format=labelstudio")
    tasks = [(item.line, item.raw, item.fields["value"]) for item in items]
    if not all(isinstance(task, dict) and isinstance(task.get("data"), dict) for _, _, task in tasks):
        raise DataError(f"{display} is not a Label Studio JSON export: expected a JSON array of tasks, "
                        "each with a 'data' object; export with 'JSON' (not 'JSON-MIN' or CSV)")
    if tasks and not any(text_field in task["data"] for _, _, task in tasks):
        keys = sorted({key for _, _, task in tasks for key in task["data"]})
        raise DataError(f"{display}: no task has data.{text_field} (data.text_column); keys in data: {keys}")
    found = _Collected()
    for line, raw, task in tasks:
        _task(found, task, display, line, raw, text_field, choice_name, id_field)
    found.stats["tasks"] += len(tasks)
    return LabelStudioResult(table_of(found.rows, SCHEMA), table_of(found.votes, VOTES_SCHEMA),
                             table_of(found.spans, SPANS_SCHEMA), found.quarantine,
                             found.annotation_quarantine, dict(sorted(found.stats.items())))


def _annotator(annotation: Mapping[str, Any]) -> str:
    """`completed_by` as a string: an id, or an object with an id or e-mail in older exports."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return "unknown" if who is None else str(who)


def _task(found: _Collected, task: dict[str, Any], display: str, line: int, raw: str, text_field: str,
          choice_name: str | None, id_field: str | None = None) -> None:
    """Collect one task's votes and spans, and its majority row or its quarantine record."""
    own_id = task["data"].get(id_field) if id_field else None
    task_id = str(own_id) if own_id not in (None, "") else str(task.get("id", line))
    text = task["data"].get(text_field)
    votes: list[str] = []
    for annotation in task.get("annotations", task.get("completions")) or []:
        found.stats["annotations"] += 1
        if annotation.get("was_cancelled"):
            found.stats["cancelled_annotations"] += 1  # the annotator skipped the task: not a vote
            continue
        base = {"task_id": task_id, "annotator": _annotator(annotation), "_source": display, "_line": line}
        results = [r for r in annotation.get("result") or [] if isinstance(r, dict)]
        label = _choice(found, results, base, raw, choice_name)
        if label is not None:
            votes.append(label)
            found.votes.append({**base, "label": label})
        if isinstance(text, str) and any(r.get("type") == "labels" for r in results):
            _spans(found, results, text, base, raw)

    def quarantine(kind: str, reason: str, detail: str = "") -> None:  # a task-level record
        found.quarantine.append(Quarantined(display, line, text_field, kind, reason, detail, clip(raw)))

    if not isinstance(text, str) or not text.strip():
        quarantine("missing_text", f"task has no text in data.{text_field}; fix the task or data.text_column")
    elif not votes:
        quarantine("no_annotation", "task has no submitted choice (unannotated, or every annotation was "
                   "cancelled); annotate it or leave it out of the export")
    else:
        _majority(found, votes, text, task_id, display, line, quarantine)


def _majority(found: _Collected, votes: list[str], text: str, task_id: str, display: str, line: int,
              quarantine: Callable[[str, str, str], None]) -> None:
    """Append the task's majority row, or quarantine it when the top labels tie."""
    ranked = Counter(votes).most_common()
    top = ranked[0][1]
    if len(ranked) > 1 and ranked[1][1] == top:
        found.stats["ties"] += 1
        detail = ", ".join(f"{label}={count}" for label, count in ranked)
        quarantine("tie", "annotators tie: no majority label; fix: add an annotation or adjudicate", detail)
        return
    found.rows.append({"text": text, "label": ranked[0][0], "source_id": task_id, "_source": display,
                       "_line": line, "votes": len(votes), "vote_share": round(top / len(votes), 6)})


def _choice(found: _Collected, results: list[dict[str, Any]], base: dict[str, Any], raw: str,
            choice_name: str | None) -> str | None:
    """The one choice an annotation made, or None (no choice, or quarantined when ambiguous)."""
    choices = [r for r in results if r.get("type") == "choices"]
    named = [r for r in choices if r.get("from_name") == choice_name]
    if named:
        choices = named
    if not choices:
        return None
    picked = [c for r in choices for c in (r.get("value") or {}).get("choices") or []]
    if len({r.get("from_name") for r in choices}) > 1 or len(picked) != 1:
        controls = sorted({str(r.get("from_name")) for r in choices})
        reason = ("annotation has several choices controls; set data.label_column to one from_name"
                  if len(controls) > 1 else "annotation does not make exactly one choice (single-label task)")
        found.annotation_quarantine.append(_annotation_problem(base, "choices", "ambiguous_choice", reason,
                                                               f"controls {controls}, choices {picked}", raw))
        return None
    return str(picked[0])


def _spans(found: _Collected, results: list[dict[str, Any]], text: str, base: dict[str, Any], raw: str) -> None:
    """Append one annotation's labelled spans, or quarantine the annotation."""
    spans: list[tuple[int, int, str]] = []
    problem = ""
    for result in (r for r in results if r.get("type") == "labels"):
        value = result.get("value") or {}
        labels, start, end = value.get("labels") or [], value.get("start"), value.get("end")
        if len(labels) != 1 or not isinstance(start, int) or not isinstance(end, int):
            problem = f"span needs integer start/end and one label (got {value})"
            break
        if "text" in value and text[start:end] != value["text"]:
            problem = f"value.text {value['text']!r} is not text[{start}:{end}] {text[start:end]!r}"
            break
        spans.append((start, end, str(labels[0])))
    problem = problem or (check_spans(text, spans) or ("", ""))[1]
    if problem:
        found.annotation_quarantine.append(_annotation_problem(base, "spans", "bad_span", "span annotation "
                                                               "cannot be used; fix it in Label Studio", problem, raw))
        return
    found.spans.append({**base, "text": text,
                        "spans": [{"start": s, "end": e, "label": label} for s, e, label in sorted(spans)]})


def _annotation_problem(base: dict[str, Any], field_name: str, kind: str, reason: str, detail: str,
                        raw: str) -> Quarantined:
    detail = f"annotator {base['annotator']}: {detail}"
    return Quarantined(base["_source"], base["_line"], field_name, kind, reason, detail, clip(raw))
