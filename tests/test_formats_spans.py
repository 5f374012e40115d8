"""Character-span JSON lines, span checks, and span <-> BIO conversion (round trip on WNUT-17)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raytune_llm.data.formats.conll import read_conll
from raytune_llm.data.formats.spans import SpanError, bio_to_spans, read_spans, spans_to_bio, to_bio_table
from tests.conftest import shared_data

TEXT = "Alice Smith visited New York ."


def test_read_spans_accepts_lists_and_dicts_and_quarantines_bad_records(tmp_path: Path) -> None:
    records = [
        {"id": 7, "text": TEXT, "spans": [[20, 28, "loc"], {"start": 0, "end": 11, "label": "per"}]},
        {"text": "no entities here", "entities": []},
        {"text": TEXT, "spans": [[0, 99, "per"]]},                     # 3: past the end
        {"text": TEXT, "spans": [[0, 11, "per"], [6, 19, "x"]]},       # 4: overlap
        {"text": TEXT, "spans": [[0, "5", "per"]]},                    # 5: not an integer offset
        {"text": TEXT},                                                # 6: no spans at all
        {"text": "", "spans": []},                                     # 7: no text
        ["not", "an", "object"],                                       # 8
    ]
    path = tmp_path / "spans.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + '\n{"text": "trunc\n')
    result = read_spans(str(path))
    assert result.table.to_pylist() == [
        {"text": TEXT, "spans": [{"start": 0, "end": 11, "label": "per"}, {"start": 20, "end": 28, "label": "loc"}],
         "source_id": "7", "_source": str(path), "_line": 1},
        {"text": "no entities here", "spans": [], "source_id": None, "_source": str(path), "_line": 2},
    ]
    kinds = sorted((q.line, q.kind) for q in result.quarantine)
    assert kinds == [(3, "span_out_of_bounds"), (4, "span_overlap"), (5, "bad_span"), (6, "missing_spans"),
                     (7, "missing_text"), (8, "not_object"), (9, "invalid_json")]
    assert result.read == 9


def test_spans_to_bio_and_back() -> None:
    tokens, tags = spans_to_bio(TEXT, [(20, 28, "loc"), (0, 11, "per")])
    assert tokens == ["Alice", "Smith", "visited", "New", "York", "."]
    assert tags == ["B-per", "I-per", "O", "B-loc", "I-loc", "O"]
    assert bio_to_spans(tokens, tags) == (TEXT, [(0, 11, "per"), (20, 28, "loc")])
    # Two adjacent entities of one type stay two entities.
    assert bio_to_spans(["a", "b"], ["B-x", "B-x"])[1] == [(0, 1, "x"), (2, 3, "x")]


def test_span_cutting_a_word_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpanError, match="cuts the token 'Smith'"):
        spans_to_bio(TEXT, [(0, 8, "per")])
    with pytest.raises(SpanError, match="whitespace"):
        bio_to_spans(["New York"], ["B-loc"])
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"text": TEXT, "spans": [[0, 8, "per"]]}) + "\n"
                    + json.dumps({"text": TEXT, "spans": [[0, 5, "per"]]}) + "\n")
    converted = to_bio_table(read_spans(str(path)).table)
    assert converted.table.column("tags").to_pylist() == [["B-per", "O", "O", "O", "O", "O"]]
    assert [(q.line, q.kind) for q in converted.quarantine] == [(1, "span_not_on_tokens")]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["wnut17train.conll", "emerging.dev.conll", "emerging.test.annotated"])
def test_real_wnut17_bio_spans_bio_round_trip(name: str) -> None:
    table = read_conll(str(shared_data(f"wnut17/{name}"))).table
    entities = 0
    for tokens, tags in zip(table.column("tokens").to_pylist(), table.column("tags").to_pylist()):
        text, spans = bio_to_spans(tokens, tags)
        assert spans_to_bio(text, spans) == (tokens, tags)
        assert len(spans) == sum(tag.startswith("B-") for tag in tags)
        # Each span's text is exactly its tokens: its first token is a B- token.
        starts = {len(" ".join(tokens[:i])) + (i > 0) for i, tag in enumerate(tags) if tag.startswith("B-")}
        assert {s for s, _, _ in spans} == starts
        entities += len(spans)
    assert entities > 500
