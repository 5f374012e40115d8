"""Near-duplicate detection, dedup plans and train/held-out leakage, checked against brute force.

The oracle here is independent of the module under test: shingles are Python
string sets and Jaccard indices come from a sparse incidence-matrix product over
every pair, so MinHash, LSH banding and the 64-bit shingle hashing are all checked.
"""

from __future__ import annotations

import collections
import random
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import pytest
import scipy.sparse as sp

from raytune_llm.data.near_dup import (
    dedupe_plan,
    leakage,
    lsh_bands,
    near_duplicate_groups,
    near_duplicate_pairs,
    remove_leaks,
)
from raytune_llm.data.transforms import assign_splits, normalize_text, stable_id
from tests.conftest import shared_data

THRESHOLD = 0.8
FIFTY = "financial_phrasebank/Sentences_50Agree.txt"
ALL_AGREE = "financial_phrasebank/Sentences_AllAgree.txt"


def _read_phrasebank(relative: str, encoding: str) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for line in shared_data(relative).read_text(encoding=encoding).splitlines():
        if line.strip():
            text, label = line.rsplit("@", 1)
            texts.append(text)
            labels.append(label.strip())
    return texts, labels


@pytest.fixture(scope="module")
def fifty() -> tuple[list[str], list[str]]:
    return _read_phrasebank(FIFTY, "utf-8")


@pytest.fixture(scope="module")
def all_agree() -> tuple[list[str], list[str]]:
    return _read_phrasebank(ALL_AGREE, "latin-1")


def _shingles(text: str, k: int = 5) -> set[str]:
    """The documented shingling, written out independently: NFKC, casefold, punctuation -> space."""
    canon = re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return {canon[i : i + k] for i in range(max(len(canon) - k + 1, 1))} if canon else set()


def _jaccard(a: str, b: str) -> float:
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def _incidence(texts: Sequence[str], vocab: dict[str, int]) -> sp.csr_matrix:
    rows, cols = [], []
    for i, text in enumerate(texts):
        for shingle in _shingles(text):
            rows.append(i)
            cols.append(vocab.setdefault(shingle, len(vocab)))
    return sp.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(texts), 1 << 24))


def _brute_pairs(left: Sequence[str], right: Sequence[str] | None, threshold: float) -> dict[tuple[int, int], float]:
    """Every (i, j) with exact Jaccard >= threshold; within `left` (i < j) when `right` is None."""
    vocab: dict[str, int] = {}
    a = _incidence(left, vocab)
    b = a if right is None else _incidence(right, vocab)
    size_a, size_b = np.asarray(a.sum(1)).ravel(), np.asarray(b.sum(1)).ravel()
    found: dict[tuple[int, int], float] = {}
    for start in range(0, a.shape[0], 1000):
        inter = (a[start : start + 1000] @ b.T).tocoo()
        i, j, both = inter.row + start, inter.col, inter.data
        jac = both / (size_a[i] + size_b[j] - both)
        keep = (jac >= threshold) & ((i < j) if right is None else True)
        found.update({(int(x), int(y)): float(v) for x, y, v in zip(i[keep], j[keep], jac[keep], strict=True)})
    return found


def _perturb(text: str, how: int, rng: random.Random) -> str:
    """A near copy made the way real copies drift: case, punctuation, one word, a typo."""
    words = text.split()
    pick = rng.randrange(len(words))
    if how == 0:
        return text.upper().replace(" ,", ",").replace(" .", ".")
    if how == 1:
        return " ".join(words[:pick] + ["quarterly"] + words[pick + 1 :])
    if how == 2:
        return " ".join(words[:pick] + words[pick + 1 :])
    word = words[pick]
    if len(word) > 3:
        word = word[0] + word[2] + word[1] + word[3:]
    return " ".join(words[:pick] + [word] + words[pick + 1 :]) + " ."


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_lsh_banding_keeps_recall_at_threshold(threshold: float, num_perm: int) -> None:
    bands, rows = lsh_bands(threshold, num_perm)
    assert bands * rows <= num_perm
    assert 1 - (1 - threshold**rows) ** bands >= 0.99
    tighter = num_perm // (rows + 1)
    assert 1 - (1 - threshold ** (rows + 1)) ** tighter < 0.99, "a more selective banding would do"


@pytest.mark.shared_data
def test_sample_with_injected_copies_matches_brute_force(all_agree: tuple[list[str], list[str]]) -> None:
    texts = sorted(set(all_agree[0]))
    rng = random.Random(3)
    sample = rng.sample(texts, 1200)
    originals = [t for t in sample if len(t.split()) >= 8][:300]
    copies = [_perturb(t, i % 4, rng) for i, t in enumerate(originals)]
    corpus = sample + copies
    truth = _brute_pairs(corpus, None, THRESHOLD)
    found = {(i, j): jac for i, j, jac in near_duplicate_pairs(corpus, THRESHOLD)}

    wrong = {p: found[p] for p in found if p not in truth}
    assert not wrong, f"pairs below the threshold were reported: {list(wrong)[:5]}"
    for pair, jac in found.items():
        assert jac == pytest.approx(truth[pair]), pair
    recall = len(found) / len(truth)
    assert len(truth) >= 200, "the injected copies should give many true pairs"
    assert recall >= 0.97, f"recall {recall:.3f} over {len(truth)} true pairs"

    where = {i: g for g in near_duplicate_groups(corpus, THRESHOLD) for i in g}
    for n, original in enumerate(originals):
        copy_index = len(sample) + n
        if _jaccard(original, copies[n]) >= THRESHOLD:
            assert copy_index in where.get(sample.index(original), []), (original, copies[n])


def test_case_and_punctuation_copies_are_one_group_and_unrelated_rows_are_not() -> None:
    texts = [
        "Net sales of the paper division increased to 120 million euros in the second quarter .",
        "NET SALES OF THE PAPER DIVISION INCREASED TO 120 MILLION EUROS IN THE SECOND QUARTER!",
        "Net sales of the paper division increased to 121 million euros in the second quarter.",
        "The board proposes that no dividend be paid for the financial year.",
        "Our new harbour crane was delivered to the port operator ahead of schedule.",
        "",
        "...",
    ]
    assert near_duplicate_groups(texts) == [[0, 1, 2]]
    assert near_duplicate_groups(texts, mode="word", shingle=2, threshold=0.7) == [[0, 1, 2]]
    assert near_duplicate_groups(texts[3:]) == []


@pytest.mark.shared_data
def test_exact_duplicates_in_phrasebank_are_grouped(
    fifty: tuple[list[str], list[str]], fifty_ids_groups: tuple[list[str], list[list[int]]]
) -> None:
    texts = fifty[0]
    repeated = [t for t, n in collections.Counter(texts).items() if n > 1]
    assert repeated, "50Agree is known to hold repeated sentences"
    where = {i: tuple(g) for g in fifty_ids_groups[1] for i in g}
    for text in repeated:
        rows = [i for i, t in enumerate(texts) if t == text]
        assert len({where.get(i) for i in rows}) == 1 and rows[0] in where, rows


@pytest.mark.shared_data
def test_allagree_rows_are_found_in_50agree_despite_mangled_characters(
    fifty: tuple[list[str], list[str]], all_agree: tuple[list[str], list[str]]
) -> None:
    # AllAgree is a subset of 50Agree, but 50Agree lost its non-ASCII letters to U+FFFD.
    ascii_key = {re.sub(r"[^\x00-\x7f]", "", t): i for i, t in enumerate(fifty[0])}
    expected = {}
    for j, text in enumerate(all_agree[0]):
        i = ascii_key[re.sub(r"[^\x00-\x7f]", "", text)]
        if _jaccard(fifty[0][i], text) >= THRESHOLD:
            expected[j] = i
    mangled = [j for j, i in expected.items() if fifty[0][i] != all_agree[0][j]]
    assert len(expected) >= len(all_agree[0]) - 5 and len(mangled) >= 30
    found = {(i, j) for i, j, _ in leakage(fifty[0], all_agree[0], THRESHOLD)}
    missed = [j for j, i in expected.items() if (i, j) not in found]
    assert not missed, f"{len(missed)} of {len(expected)} AllAgree rows not matched, e.g. row {missed[:3]}"


def test_dedupe_policies_on_a_constructed_conflict() -> None:
    base = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007"
    texts = [base + " .", base.lower(), base + " !", "Shares fell sharply after the warning on margins ."]
    ids = ["c", "a", "b", "d"]
    labels = ["positive", "negative", "positive", "negative"]
    majority = dedupe_plan(ids, texts, labels, conflict_policy="majority")
    # majority: positive wins 2-1; the smallest id among positive rows is "b" (row 2).
    assert majority.keep == [2, 3] and majority.near_duplicate == [0] and majority.conflict == [1]
    assert [c.kept_ids for c in majority.conflicts] == [("b",)]
    assert majority.conflicts[0].ids == ("a", "b", "c")
    dropped = dedupe_plan(ids, texts, labels, conflict_policy="drop")
    assert dropped.keep == [3] and sorted(dropped.conflict + dropped.near_duplicate) == [0, 1, 2]
    both = dedupe_plan(ids, texts, labels, conflict_policy="keep_all")
    assert both.keep == [1, 2, 3] and both.near_duplicate == [0] and both.conflict == []
    tie = dedupe_plan(ids[:2], texts[:2], ["positive", "negative"])
    assert tie.keep == [] and tie.conflict == [0, 1]
    with pytest.raises(ValueError, match="conflict_policy"):
        dedupe_plan(ids, texts, labels, conflict_policy="first")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fifty_ids_groups(fifty: tuple[list[str], list[str]]) -> tuple[list[str], list[list[int]]]:
    return [stable_id(normalize_text(t)) for t in fifty[0]], near_duplicate_groups(fifty[0])


def _smallest(rows: Sequence[int], ids: Sequence[str]) -> int:
    return min(rows, key=lambda i: (ids[i], i))


@pytest.mark.shared_data
@pytest.mark.parametrize("policy", ["majority", "drop", "keep_all"])
def test_dedupe_plan_on_phrasebank_is_a_consistent_partition(
    fifty: tuple[list[str], list[str]], fifty_ids_groups: tuple[list[str], list[list[int]]], policy: str
) -> None:
    texts, labels = fifty
    ids, groups = fifty_ids_groups
    plan = dedupe_plan(ids, texts, labels, conflict_policy=policy)  # type: ignore[arg-type]
    assert sorted(plan.keep + plan.near_duplicate + plan.conflict) == list(range(len(texts)))
    conflicting = [g for g in groups if len({labels[i] for i in g}) > 1]
    assert len(plan.conflicts) == len(conflicting) > 0, "50Agree holds near-copies labelled differently"
    kept = set(plan.keep)
    for group in groups:
        survivors = sorted(i for i in group if i in kept)
        tally = collections.Counter(labels[i] for i in group).most_common()
        if len(tally) == 1 or policy == "keep_all":  # the smallest id of each label survives
            expected = [_smallest([i for i in group if labels[i] == label], ids) for label, _ in tally]
        elif policy == "drop" or tally[0][1] == tally[1][1]:
            expected = []
        else:
            expected = [_smallest([i for i in group if labels[i] == tally[0][0]], ids)]
        assert survivors == sorted(expected), [(ids[i], labels[i]) for i in group]


@pytest.mark.shared_data
def test_dedupe_plan_does_not_depend_on_row_order(
    fifty: tuple[list[str], list[str]], fifty_ids_groups: tuple[list[str], list[list[int]]]
) -> None:
    texts, labels = fifty
    ids = fifty_ids_groups[0]
    plan = dedupe_plan(ids, texts, labels)
    order = list(range(len(texts)))
    random.Random(1).shuffle(order)
    shuffled = dedupe_plan([ids[i] for i in order], [texts[i] for i in order], [labels[i] for i in order])
    assert sorted(ids[order[i]] for i in shuffled.keep) == sorted(ids[i] for i in plan.keep)
    assert len(shuffled.conflicts) == len(plan.conflicts)


@pytest.mark.shared_data
def test_remove_leaks_leaves_no_train_row_near_a_heldout_row(fifty: tuple[list[str], list[str]]) -> None:
    texts, labels = fifty
    ids = [stable_id(normalize_text(t)) for t in texts]
    split = assign_splits(ids, labels, {"train": 0.7, "validation": 0.15, "test": 0.15}, seed=42)
    train = [t for t, s in zip(texts, split, strict=True) if s == "train"]
    heldout = {name: [t for t, s in zip(texts, split, strict=True) if s == name] for name in ("validation", "test")}
    everything = heldout["validation"] + heldout["test"]
    before = _brute_pairs(train, everything, THRESHOLD)
    assert before, "a plain hash split of 50Agree leaks near-duplicates"

    result = remove_leaks(train, heldout, THRESHOLD)
    assert sorted(result.keep + result.removed) == list(range(len(train)))
    assert set(result.removed) == {i for i, _ in before}, "removed rows must be exactly the leaking ones"
    # `before` holds every leaking pair over all train rows, so this is the full invariant.
    after = [(i, j) for i, j in before if i in set(result.keep)]
    assert not after, f"{len(after)} train rows still near-duplicate a held-out row"
    n_val = len(heldout["validation"])
    for name, rows in (("validation", {i for i, j in before if j < n_val}),
                       ("test", {i for i, j in before if j >= n_val})):
        assert result.by_split[name] == len(rows)
    print(f"\nleakage on a 70/15/15 split of 50Agree: {len(result.removed)} of {len(train)} train rows "
          f"removed; {result.by_split}")
