"""CoNLL/BIO token files: hand-made files for each rule, then the real WNUT-17 files."""

from __future__ import annotations

from pathlib import Path

import pytest

from raytune_llm.data.formats.conll import iob1_to_iob2, iob2_problem, looks_like_iob1, read_conll
from tests.conftest import shared_data

WNUT_TAGS = {"O"} | {f"{p}-{t}" for p in "BI" for t in
                     ("person", "location", "corporation", "product", "creative-work", "group")}


def test_sentences_docstart_separators_and_bad_sentences(tmp_path: Path) -> None:
    path = tmp_path / "a.conll"
    path.write_text(
        "-DOCSTART-\tO\n\n"          # 1-2: skipped
        "Alice\tB-per\nSmith\tI-per\nsaid\tO\n\t\n"  # 3-5, then a tab-only break (WNUT-17 style)
        "Bob  O\nin   O\nParis B-loc\r\n\n"          # 7-9: space separated, CRLF
        "the\tO\nAcme\tI-org\n\n"                     # 11-12: I- after O: not IOB2
        "x\tPER\n\n"                                  # 14: not a BIO tag
        "glued\tB-corp,B-group\n\n"                   # 16: two tags in one cell
        "lonely\n"                                    # 18: no tag column
    )
    result = read_conll(str(path))
    assert result.table.to_pylist() == [
        {"tokens": ["Alice", "Smith", "said"], "tags": ["B-per", "I-per", "O"], "_source": str(path), "_line": 3},
        {"tokens": ["Bob", "in", "Paris"], "tags": ["O", "O", "B-loc"], "_source": str(path), "_line": 7},
    ]
    found = [(q.line, q.field, q.kind, q.detail) for q in result.quarantine]
    assert found == [
        (14, "tag", "invalid_tag", "line 14: 'PER'"),
        (16, "tag", "invalid_tag", "line 16: 'B-corp,B-group'"),
        (18, "line", "bad_line", "line 18: 1 column(s) in 'lonely'"),
        (11, "tag", "invalid_sequence", "line 12: I-org after O"),
    ]
    assert result.stats["docstart_lines"] == 1 and result.read == result.stats["sentences"] == 6


IOB1 = "EU I-ORG\nrejects O\nGerman I-MISC\ncall O\n\nPeter I-PER\nBlack I-PER\nJohn B-PER\n"


def test_iob1_is_converted_and_refused_as_iob2(tmp_path: Path) -> None:
    path = tmp_path / "iob1.conll"
    path.write_text(IOB1)
    expected = [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER", "B-PER"]]
    assert read_conll(str(path), scheme="iob1").table.column("tags").to_pylist() == expected
    auto = read_conll(str(path), scheme="auto")
    assert auto.table.column("tags").to_pylist() == expected and auto.stats["iob1_files"] == 1
    strict = read_conll(str(path), scheme="iob2")
    assert strict.table.num_rows == 0 and [q.kind for q in strict.quarantine] == ["invalid_sequence"] * 2


def test_column_indices_and_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "conll03.txt"
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    assert read_conll(str(path), token_index=0, tag_index=3).table.column("tags").to_pylist() == [["B-ORG", "O"]]
    pos = read_conll(str(path), tag_index=1)
    assert pos.table.num_rows == 0 and pos.quarantine[0].detail == "line 1: 'NNP'"
    piped = tmp_path / "piped.conll"
    piped.write_text("New York|B-loc\nrocks|O\n")
    result = read_conll(str(piped), delimiter="|")
    assert result.table.column("tokens").to_pylist() == [["New York", "rocks"]]


def test_iob_helpers() -> None:
    assert iob2_problem(["B-a", "I-a", "O", "B-b", "I-b"]) is None
    assert iob2_problem(["B-a", "I-b"]) == (1, "I-b after B-a")
    assert iob1_to_iob2(["I-a", "B-a", "I-a", "I-b", "O"]) == ["B-a", "B-a", "I-a", "B-b", "O"]
    assert looks_like_iob1([["I-a", "O"]]) and not looks_like_iob1([["I-a", "O", "B-b"]])


def _count_file(path: Path) -> tuple[int, int, int]:
    """(sentences, tokens, sentences holding a tag with a comma), counted straight from the text."""
    sentences = tokens = glued = 0
    in_sentence = has_glued = False
    for line in path.read_text(encoding="utf-8").split("\n") + [""]:
        if line.strip():
            tokens += 1
            in_sentence = True
            has_glued |= "," in line.split("\t")[-1]
        elif in_sentence:
            sentences += 1
            glued += has_glued
            in_sentence = has_glued = False
    return sentences, tokens, glued


@pytest.mark.shared_data
@pytest.mark.parametrize("name, sentences", [("wnut17train.conll", 3394), ("emerging.dev.conll", 1009),
                                             ("emerging.test.annotated", 1287)])
def test_real_wnut17_files(name: str, sentences: int) -> None:
    path = shared_data(f"wnut17/{name}")
    result = read_conll(str(path))
    assert _count_file(path)[:2] == (sentences, result.stats["tokens"])  # sentence count from the corpus README
    assert result.table.num_rows == sentences and result.quarantine == []
    tags = {tag for row in result.table.column("tags").to_pylist() for tag in row}
    assert tags == WNUT_TAGS
    assert all(iob2_problem(row) is None for row in result.table.column("tags").to_pylist())


@pytest.mark.shared_data
def test_real_wnut17_unannotated_test_file_has_glued_tags() -> None:
    # emerging.test.conll is the test text with several candidate tags glued by commas in some
    # cells: those sentences are quarantined rather than trained on.
    path = shared_data("wnut17/emerging.test.conll")
    sentences, _, glued = _count_file(path)
    result = read_conll(str(path))
    assert result.read == sentences == 1287
    assert sum(q.kind == "invalid_tag" for q in result.quarantine) == glued > 100


@pytest.mark.shared_data
def test_real_wnut17_through_a_file_uri() -> None:
    path = shared_data("wnut17/emerging.dev.conll")
    local, remote = read_conll(str(path)), read_conll(path.as_uri())
    assert remote.table.column("_source")[0].as_py() == path.as_uri()
    assert remote.table.drop_columns(["_source"]).equals(local.table.drop_columns(["_source"]))
