"""Instruction data: Alpaca records, seed tasks, LIMA histories, chat messages; real files too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raytune_llm.data.formats.instruct import check_messages, read_instructions
from tests.conftest import shared_data


def _msgs(*roles: str) -> list[dict[str, str]]:
    return [{"role": role, "content": f"{role} says {i}"} for i, role in enumerate(roles)]


def test_layouts_and_bad_records(tmp_path: Path) -> None:
    records = [
        {"instruction": "Translate to French.", "input": "cheese", "output": "fromage"},
        {"id": "seed_1", "instruction": "Name a colour.", "instances": [{"input": "", "output": "blue"},
                                                                        {"input": "warm", "output": ""}]},
        {"instruction": "Continue.", "input": "", "output": "Done.", "history": [["Hi", "Hello!"]]},
        {"messages": _msgs("system", "user", "assistant")},
        {"messages": _msgs("user", "assistant", "user")},          # 5: ends with the user
        {"messages": _msgs("user", "user", "assistant")},          # 6: turns do not alternate
        {"messages": [{"role": "bot", "content": "x"}]},           # 7: unknown role
        {"instruction": "", "output": "orphan"},                   # 8: empty instruction
        {"prompt": "?", "completion": "!"},                        # 9: unknown layout
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    result = read_instructions(str(path))
    rows = result.table.to_pylist()
    assert [(r["prompt"], r["response"], r["_line"]) for r in rows] == [
        ("Translate to French.\n\ncheese", "fromage", 1), ("Name a colour.", "blue", 2),
        ("Continue.", "Done.", 3), ("user says 1", "assistant says 2", 4)]
    assert rows[1]["source_id"] == "seed_1#0"
    assert [m["role"] for m in rows[2]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert [m["role"] for m in rows[3]["messages"]] == ["system", "user", "assistant"]
    found = [(q.line, q.field, q.kind) for q in result.quarantine]
    assert found == [(2, "output", "missing_field"), (5, "messages", "bad_messages"), (6, "messages", "bad_messages"),
                     (7, "messages", "bad_messages"), (8, "instruction", "missing_field"), (9, "line", "unknown_layout")]
    assert result.read == len(records) + 1  # the seed task has two instances


def test_message_rules() -> None:
    assert check_messages(_msgs("user", "assistant", "user", "assistant")) is None
    assert "end with an assistant" in (check_messages(_msgs("system", "user")) or "")
    assert "only allowed first" in (check_messages(_msgs("user", "system", "assistant")) or "")
    assert "empty or non-text" in (check_messages([{"role": "user", "content": " "}]) or "")
    assert check_messages([]) is not None


@pytest.mark.shared_data
def test_real_alpaca_seed_tasks() -> None:
    path = shared_data("instruct/alpaca_seed_tasks.jsonl")
    tasks = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    result = read_instructions(str(path))
    assert len(tasks) == 175  # the corpus README
    assert result.read == sum(len(t["instances"]) for t in tasks)
    assert result.quarantine == [] and result.table.num_rows == result.read
    first = result.table.slice(0, 1).to_pylist()[0]
    assert first["source_id"] == f"{tasks[0]['id']}#0" and first["response"] == tasks[0]["instances"][0]["output"]
    with_input = sum(1 for t in tasks for i in t["instances"] if i["input"].strip())
    assert sum("\n\n" in p for p in result.table.column("prompt").to_pylist()) >= with_input


@pytest.mark.shared_data
def test_real_lima_is_a_json_array_with_histories() -> None:
    path = shared_data("instruct/lima.json")
    records = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(records, list) and len(records) == 1029  # a JSON array, not JSON lines
    result = read_instructions(str(path))
    assert result.table.num_rows == 1029 and result.quarantine == []
    turns = [len(m) for m in result.table.column("messages").to_pylist()]
    assert turns == [2 * len(r["history"]) + 2 for r in records]
    assert result.table.column("response").to_pylist() == [r["output"] for r in records]
    lines = path.read_text(encoding="utf-8").split("\n")
    assert all(lines[n - 1].strip() == "{" for n in result.table.column("_line").to_pylist())
