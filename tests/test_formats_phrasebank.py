"""Financial PhraseBank agreement levels: small hand-made folders, then the real four files.

The real-file checks compare the reader with the files themselves, read here independently
(each sentence's exact text per file), and with the counts the corpus documents."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.formats.phrasebank import LEVELS, match_key, read_phrasebank_agreement
from raytune_llm.data.quarantine import detach
from raytune_llm.data.readers import read_records
from raytune_llm.errors import DataError
from tests.conftest import shared_data


def _write_folder(folder: Path, files: dict[str, list[str]]) -> Path:
    """PhraseBank-style files: 50Agree as UTF-8, the stronger ones as latin-1, like the real corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, lines in files.items():
        encoding = "utf-8" if stem == "50Agree" else "latin-1"
        (folder / f"Sentences_{stem}.txt").write_bytes("".join(f"{line}\r\n" for line in lines).encode(encoding))
    return folder


SMALL = {
    "50Agree": ["Sales rose .@positive", "Caf\ufffd chain opens in Espoo .@positive", "Costs fell .@positive",
                "Only weakly agreed .@neutral", "Lost \ufffd forever .@negative", "Profit fell .@neutral"],
    "66Agree": ["Sales rose .@positive", "Café chain opens in Espoo .@positive", "Costs fell .@positive",
                "Profit fell .@negative"],
    "75Agree": ["Sales rose .@positive", "Costs fell .@positive", "Never in the superset .@neutral"],
    "AllAgree": ["Sales rose .@positive"],
}


def test_levels_restoration_and_problems_on_a_small_folder(tmp_path: Path) -> None:
    result = read_phrasebank_agreement(str(_write_folder(tmp_path / "pb", SMALL)))
    rows = {r["text"]: (r["label"], r["agreement"], r["_line"]) for r in result.table.to_pylist()}
    assert rows == {
        "Sales rose .": ("positive", 100, 1),
        "Café chain opens in Espoo .": ("positive", 66, 2),  # U+FFFD restored from the latin-1 file
        "Costs fell .": ("positive", 75, 3),
        "Only weakly agreed .": ("neutral", 50, 4),
    }
    kinds = {(Path(q.source).name, q.line, q.kind) for q in result.quarantine}
    assert kinds == {("Sentences_50Agree.txt", 5, "replacement_char"), ("Sentences_50Agree.txt", 6, "label_conflict"),
                     ("Sentences_75Agree.txt", 3, "unmatched")}
    assert result.stats["phrasebank_restored_text"] == 1 and result.stats["phrasebank_unmatched"] == 1
    assert result.read == 6 + 1  # the 50Agree lines, plus the stronger-file line that matched none


def test_missing_level_file_names_it(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "pb", {k: v for k, v in SMALL.items() if k != "75Agree"})
    with pytest.raises(DataError, match="needs Sentences_75Agree.txt"):
        read_phrasebank_agreement(str(folder))


def test_match_key_ignores_lost_characters() -> None:
    assert match_key("Caf\ufffd  au lait") == match_key("Café au lait") == "Caf au lait"


def _sentences(path: Path) -> list[tuple[str, str]]:
    """(sentence, label) per line, decoded as the corpus README says, split on the last '@'."""
    encoding = "utf-8" if path.name == "Sentences_50Agree.txt" else "latin-1"
    lines = [line for line in path.read_bytes().decode(encoding).split("\n") if line.strip()]
    return [(s, label.strip()) for s, _, label in (line.rstrip("\r").rpartition("@") for line in lines)]


@pytest.mark.shared_data
def test_real_phrasebank_agreement_levels() -> None:
    folder = shared_data("financial_phrasebank")
    files = {level: _sentences(folder / f"Sentences_{stem}.txt") for stem, level in LEVELS.items()}
    assert [len(files[level]) for level in (50, 66, 75, 100)] == [4846, 4217, 3453, 2264]  # corpus README
    result = read_phrasebank_agreement(str(folder))
    rows = result.table.to_pylist()
    # Every 50Agree sentence is kept or quarantined; no stronger-file sentence is left unmatched.
    assert result.read == 4846 and result.stats["phrasebank_unmatched"] == 0
    assert not any("\ufffd" in r["text"] for r in rows)
    damaged = sum("\ufffd" in s for s, _ in files[50])
    quarantined = Counter(q.kind for q in result.quarantine)
    assert result.stats["phrasebank_restored_text"] + quarantined["replacement_char"] == damaged
    # A row's level is the strongest file holding its exact (restored) text, with the same label.
    for level in (66, 75, 100):
        in_file = set(files[level])
        assert all(((r["text"], r["label"]) in in_file) == (r["agreement"] >= level) for r in rows), level
    # The all-agree rows carry the corpus's published label counts.
    top = Counter(r["label"] for r in rows if r["agreement"] == 100)
    assert top == {"negative": 303, "neutral": 1391, "positive": 570}
    # Conflicts: a sentence 50Agree holds twice with two labels; the copy the 66Agree file contradicts.
    for record in (q for q in result.quarantine if q.kind == "label_conflict"):
        twins = [label for s, label in files[50] if match_key(s) == match_key(record.raw)]
        assert len(set(twins)) == 2


@pytest.mark.shared_data
def test_real_phrasebank_through_the_classification_reader() -> None:
    folder = shared_data("financial_phrasebank")
    cfg = DataConfig(path=str(folder), format="phrasebank_agreement", labels=["negative", "neutral", "positive"])
    table, quarantine, stats = detach(read_records(cfg))
    assert table.column_names[-1] == "agreement"
    assert table.num_rows + len(quarantine) == 4846
    assert Counter(table.column("agreement").to_pylist()) == {
        level: stats[f"phrasebank_agreement_{level}"] for level in (50, 66, 75, 100)}
    with pytest.raises(DataError, match="data.strict=true"):
        read_records(cfg.model_copy(update={"strict": True}))
