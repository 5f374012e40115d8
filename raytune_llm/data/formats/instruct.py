"""Instruction data: Alpaca records, Alpaca seed tasks, LIMA-style histories and chat `messages`.

Every record becomes a conversation (`messages`: role/content turns ending with the assistant)
plus its last exchange as `prompt` / `response`. Layouts, told apart per record:
- Alpaca: `instruction`, optional `input`, `output`; the prompt is the instruction, then a blank
  line and the input when there is one. An optional `history` (LIMA) of `[user, assistant]`
  pairs comes first in `messages`.
- Seed tasks (Alpaca's `seed_tasks.jsonl`): `instruction` and `instances: [{input, output}]`,
  expanded to one row per instance (`source_id` = task id `#` instance number).
- Chat: `messages: [{role, content}]`, roles `system` (first only), `user`, `assistant`,
  alternating from a user turn and ending with an assistant turn.
Files may be JSON lines or one JSON array. A record (or seed instance) that breaks these rules
is quarantined with the field at fault.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from raytune_llm.data.formats._common import FormatResult, load_files, table_of
from raytune_llm.data.parsers import json_values
from raytune_llm.data.quarantine import Quarantined, clip

__all__ = ["MESSAGE_TYPE", "ROLES", "SCHEMA", "check_messages", "read_instructions", "rows_of"]

ROLES = ("system", "user", "assistant")
MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
SCHEMA = pa.schema([("prompt", pa.string()), ("response", pa.string()), ("messages", pa.list_(MESSAGE_TYPE)),
                    ("source_id", pa.string()), ("_source", pa.string()), ("_line", pa.int64())])

_REASON = "instruction record cannot be used; fix the field named"

# What `rows_of` yields per unit: a finished row, or (field, kind, detail) of why it is unusable.
_Outcome = dict[str, Any] | tuple[str, str, str]


def read_instructions(path: str, encoding: str = "utf-8") -> FormatResult:
    """Prompt/response rows of every instruction file `path` names (JSON lines or arrays)."""
    rows: list[dict[str, Any]] = []
    quarantine: list[Quarantined] = []
    for file, decoded in load_files(path, "instruct", encoding, (".jsonl", ".json")):
        items, problems = json_values(decoded, file.display, "data.format=instruct")
        quarantine += problems
        for item in items:
            for outcome in rows_of(item.fields["value"]):
                if isinstance(outcome, tuple):
                    field, kind, detail = outcome
                    quarantine.append(Quarantined(file.display, item.line, field, kind, _REASON, detail, clip(item.raw)))
                else:
                    rows.append({**outcome, "_source": file.display, "_line": item.line})
    return FormatResult(table_of(rows, SCHEMA), quarantine, {"rows": len(rows), "quarantined": len(quarantine)})


def rows_of(record: Any) -> Iterator[_Outcome]:
    """The rows one record expands to (one per seed instance), each a row or a problem."""
    if not isinstance(record, dict):
        yield "line", "not_object", type(record).__name__
    elif "messages" in record:
        yield _chat(record)
    elif "instances" in record:
        yield from _seed_task(record)
    elif "instruction" in record:
        yield _alpaca(record, record.get("input"), record.get("output"), record.get("id"))
    else:
        yield "line", "unknown_layout", f"keys {sorted(record)}: expected messages, instances or instruction"


def _text(value: Any) -> str | None:
    """`value` when it is a string with content, else None."""
    return value if isinstance(value, str) and value.strip() else None


def _row(messages: list[dict[str, str]], source_id: Any) -> dict[str, Any]:
    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return {"prompt": prompt, "response": messages[-1]["content"], "messages": messages,
            "source_id": None if source_id is None else str(source_id)}


def _alpaca(record: Mapping[str, Any], given_input: Any, output: Any, source_id: Any) -> _Outcome:
    instruction = _text(record.get("instruction"))
    if instruction is None:
        return "instruction", "missing_field", "empty or not a string"
    if given_input is not None and not isinstance(given_input, str):
        return "input", "bad_field", f"{type(given_input).__name__}, expected a string"
    if _text(output) is None:
        return "output", "missing_field", "empty or not a string"
    history = record.get("history") or []
    turns: list[dict[str, str]] = []
    for pair in history if isinstance(history, list) else [history]:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_text(x) for x in pair)):
            return "history", "bad_field", f"{pair!r:.80}: expected [user, assistant] pairs of text"
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    prompt = instruction if not _text(given_input) else f"{instruction}\n\n{given_input}"
    turns += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return _row(turns, source_id)


def _seed_task(record: Mapping[str, Any]) -> Iterator[_Outcome]:
    instances = record.get("instances")
    if not isinstance(instances, list) or not instances:
        yield "instances", "missing_field", "expected a non-empty list of {input, output}"
        return
    for number, instance in enumerate(instances):
        if not isinstance(instance, dict):
            yield "instances", "bad_field", f"instance {number} is {type(instance).__name__}, expected an object"
            continue
        source_id = f"{record.get('id', '')}#{number}"
        yield _alpaca(record, instance.get("input"), instance.get("output"), source_id)


def check_messages(messages: Any) -> str | None:
    """What is wrong with a chat `messages` list, or None when it is a usable conversation."""
    if not isinstance(messages, list) or not messages:
        return "expected a non-empty list of {role, content}"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            role = message.get("role") if isinstance(message, dict) else message
            return f"turn {index}: role {role!r} is not one of {', '.join(ROLES)}"
        if _text(message.get("content")) is None:
            return f"turn {index} ({message['role']}): empty or non-text content"
    roles = [m["role"] for m in messages]
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        return f"turn {roles.index('system', 1)}: a system turn is only allowed first"
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    for index, (role, want) in enumerate(zip(body, expected)):
        if role != want:
            return f"turn {index + len(roles) - len(body)}: {role} where {want} was expected (turns alternate)"
    if not body or body[-1] != "assistant":
        return "the conversation must end with an assistant turn"
    return None


def _chat(record: Mapping[str, Any]) -> _Outcome:
    messages = record.get("messages")
    problem = check_messages(messages)
    if problem is not None or not isinstance(messages, list):
        return "messages", "bad_messages", problem or "not a list"
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    return _row(turns, record.get("id"))
