"""`raytune-llm predict`: Ray Data batch inference, quarantine accounting, outputs, LoRA adapters.

The pure pieces (worker plan, output kinds, the output schema) and the two loading paths are
tested without Ray; the rest runs REAL Ray Data on CPU with the session's local Ray: an
actor pool of predictors over a file with deliberately broken lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytune_llm.errors import ConfigError
from raytune_llm.evaluation.inputs import data_config
from raytune_llm.evaluation.model import load_scorer
from raytune_llm.evaluation.predict import (
    block_rows,
    output_kind,
    plan_workers,
    predict,
    prediction_columns,
    quarantine_path,
)
from tests.test_evaluate import LABELS, make_classifier

PROBS = [f"prob_{label}" for label in LABELS]


@pytest.fixture(scope="module")
def classifier_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classifier(tiny_model_dir, tmp_path_factory.mktemp("classifier"))


@pytest.fixture(scope="module")
def lora_dirs(classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A LoRA adapter on the classifier (adapter weights made non-zero) and the same model merged."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("lora")
    model = AutoModelForSequenceClassification.from_pretrained(str(classifier_dir))
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["query", "value"])
    peft_model = get_peft_model(model, config)
    torch.manual_seed(3)
    with torch.no_grad():  # lora_B starts at zero (a no-op adapter); make the adapter matter
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
            elif "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.5)
    peft_model.save_pretrained(str(root / "adapter"))  # adapter only: no tokenizer, no config.json
    merged: Any = peft_model.merge_and_unload()  # type: ignore[operator]  # typed through peft's __getattr__
    merged.save_pretrained(str(root / "merged"))
    AutoTokenizer.from_pretrained(str(classifier_dir)).save_pretrained(str(root / "merged"))
    return {"adapter": root / "adapter", "merged": root / "merged", "base": classifier_dir}


def _texts(n: int) -> list[str]:
    subjects = ["Revenue", "Operating margin", "The order book", "Net debt", "Headcount"]
    moves = ["rose sharply", "was flat", "fell slightly", "doubled", "declined"]
    return [f"{subjects[i % 5]} at unit {i} {moves[(i * 3) % 5]} in period {i % 7}" + " again" * (i % 9)
            for i in range(n)]


def _broken_jsonl(path: Path, n_good: int = 30) -> tuple[Path, list[str], int]:
    """`n_good` rows (no labels: predict needs none) with four bad lines among them."""
    lines = [json.dumps({"doc_id": f"r{i:03d}", "text": text}) for i, text in enumerate(_texts(n_good))]
    bad = ['{"doc_id": "bad-json", "text": "cut off',  # invalid JSON
           json.dumps({"doc_id": "bad-empty", "text": "   "}),  # empty text
           json.dumps({"doc_id": "bad-fffd", "text": "Sales \ufffd rose"}),  # characters lost before writing
           "[1, 2, 3]"]  # not an object
    for offset, line in enumerate(bad):
        lines.insert(5 + offset * 7, line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, [f"r{i:03d}" for i in range(n_good)], len(bad)


# Pure pieces ---------------------------------------------------------------------------------------
def test_plan_workers_is_a_decision() -> None:
    assert plan_workers(None, cpus=8, gpus=0) == (4, False)
    assert plan_workers(None, cpus=2, gpus=0) == (1, False)
    assert plan_workers(None, cpus=32, gpus=2) == (2, True)  # one actor per GPU
    assert plan_workers(3, cpus=8, gpus=0) == (3, False)
    with pytest.raises(ConfigError, match="needs 1 GPU but the cluster has 2"):
        plan_workers(3, cpus=32, gpus=2)
    with pytest.raises(ConfigError, match="needs 1 CPU"):
        plan_workers(9, cpus=8, gpus=0)


def test_outputs_and_blocks(tmp_path: Path) -> None:
    assert output_kind(tmp_path / "p.jsonl") == "jsonl"
    assert output_kind(tmp_path / "p.parquet") == "parquet"
    assert output_kind(tmp_path / "preds") == "folder"
    with pytest.raises(ConfigError, match="must end in .parquet or .jsonl"):
        output_kind(tmp_path / "p.csv")
    assert quarantine_path(tmp_path / "p.jsonl") == tmp_path / "p.jsonl.quarantine.jsonl"
    assert quarantine_path(f"{tmp_path}/preds/") == tmp_path / "preds.quarantine.jsonl"
    assert block_rows(10, 64, 2) == 64
    assert block_rows(1000, 8, 2) == 125  # 8 blocks: 4 per actor
    assert block_rows(10**6, 8, 2) == 128  # at most 16 batches per block, so results stream


def test_prediction_columns_schema() -> None:
    batch = pa.table({"text": ["a", "b"], "input_text": ["A", "B"], "id": ["1", "2"], "_source": ["f", "f"],
                      "_line": [3, 4]})
    probabilities = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], dtype=np.float32)
    out = prediction_columns(batch, probabilities, LABELS)
    assert out.column_names == ["id", "text", "_source", "_line", "predicted_label", "confidence", *PROBS]
    assert out.column("text").to_pylist() == ["A", "B"]  # the text as read, not as normalised
    assert out.column("predicted_label").to_pylist() == ["neutral", "negative"]
    np.testing.assert_allclose(out.column("confidence").to_numpy(), [0.7, 0.5])


def test_lora_adapter_loads_with_peft_and_equals_the_merged_model(lora_dirs: dict[str, Path]) -> None:
    adapter = load_scorer(lora_dirs["adapter"])
    merged = load_scorer(lora_dirs["merged"])
    base = load_scorer(lora_dirs["base"])
    assert adapter.adapter and "Peft" in type(adapter.model).__name__
    assert not merged.adapter and type(merged.model).__name__ == "BertForSequenceClassification"
    assert adapter.labels == merged.labels == LABELS  # from the base model's id2label
    texts = _texts(12)
    got = adapter.probabilities(texts, 64, batch_size=5)
    np.testing.assert_allclose(got, merged.probabilities(texts, 64, batch_size=5), atol=1e-5)
    assert np.abs(got - base.probabilities(texts, 64, batch_size=5)).max() > 1e-2  # the adapter is applied


# Real Ray Data -------------------------------------------------------------------------------------
def _normalised(texts: list[str]) -> list[str]:
    from raytune_llm.data.transforms import normalize_text

    return [normalize_text(t) for t in texts]


def test_predict_jsonl_quarantines_broken_lines(local_ray: None, classifier_dir: Path, tmp_path: Path) -> None:
    data, ids, n_bad = _broken_jsonl(tmp_path / "input.jsonl")
    out = tmp_path / "out" / "predictions.jsonl"
    result = predict(classifier_dir, data_config(str(data), None, {"id_column": "doc_id"}), out,
                     batch_size=4, workers=2)
    assert (result.read, result.quarantined, result.workers, result.device) == (len(ids) + n_bad, n_bad, 2, "CPU")
    assert result.written == result.read - result.quarantined == len(ids)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == result.written
    assert [row["id"] for row in rows] == ids  # every good row, in input order
    assert "label" not in rows[0]  # no --label-column: labels are neither needed nor read
    quarantine = [json.loads(line) for line in result.quarantine_file.read_text().splitlines()]
    assert result.quarantine_file == tmp_path / "out" / "predictions.jsonl.quarantine.jsonl"
    assert sorted(q["kind"] for q in quarantine) == ["invalid_json", "missing_text", "not_object",
                                                     "replacement_char"]
    assert [q["line"] for q in quarantine] == [6, 13, 20, 27]

    probabilities = np.array([[row[p] for p in PROBS] for row in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert [row["predicted_label"] for row in rows] == [LABELS[i] for i in probabilities.argmax(axis=1)]
    np.testing.assert_allclose([row["confidence"] for row in rows], probabilities.max(axis=1), atol=1e-7)
    # What the actors computed is what the model gives in process, row for row.
    texts = [row["text"] for row in rows]
    expected = load_scorer(classifier_dir).probabilities(_normalised(texts), 128)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    assert result.rows_per_s > 0


def _labelled_csv(path: Path) -> tuple[Path, int, int]:
    texts = _texts(24)
    lines = ["doc_id,text,label"] + [f"c{i},{text},{LABELS[i % 3]}" for i, text in enumerate(texts)]
    lines[3] = "c2,Margins improved,bullish"  # a label the model does not have
    lines[8] = "c7,Order intake slowed,"  # no label
    lines[12] = "c11,too,many,fields,here"  # a bad CSV row
    path.write_text("\n".join(lines) + "\n")
    return path, 24, 3


def test_predict_parquet_file_and_folder_with_labels(local_ray: None, classifier_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from raytune_llm.evaluation import cli

    data, n_rows, n_bad = _labelled_csv(tmp_path / "labelled.csv")
    parser = argparse.ArgumentParser()
    cli.add_parsers(parser.add_subparsers(dest="command"))
    out_file = tmp_path / "predictions.parquet"
    args = parser.parse_args(["predict", str(classifier_dir), str(data), "--out", str(out_file), "--label-column",
                              "label", "--id-column", "doc_id", "--workers", "1", "--batch-size", "8"])
    assert cli.run(args) == 0
    printed = capsys.readouterr().out
    assert f"read {n_rows} rows = predicted {n_rows - n_bad} + quarantined {n_bad}" in printed
    assert "rows/s (1 CPU actor(s), batch 8)" in printed
    table = pq.read_table(out_file)
    assert table.num_rows == n_rows - n_bad
    assert table.column("label").to_pylist() == [LABELS[i % 3] for i in range(n_rows) if i not in (2, 7, 11)]
    kinds = sorted(json.loads(line)["kind"] for line in quarantine_path(out_file).read_text().splitlines())
    assert kinds == ["bad_csv_row", "missing_label", "unknown_label"]

    folder = tmp_path / "predictions"
    cfg = data_config(str(data), None, {"id_column": "doc_id", "label_column": "label"})
    result = predict(classifier_dir, cfg, folder, batch_size=4, workers=2, labelled=True)
    assert result.written == result.read - result.quarantined == n_rows - n_bad
    parts = sorted(p.name for p in folder.glob("*.parquet"))
    assert parts == ["part-00000.parquet"]
    again = pq.read_table(folder / parts[0])
    assert again.column_names == table.column_names
    for name in ("id", "text", "_source", "_line", "label", "predicted_label"):
        assert again.column(name).to_pylist() == table.column(name).to_pylist(), name  # same rows, same order
    # Batches of 4 instead of 8 pad differently: float32 rounding moves, nothing more.
    np.testing.assert_allclose(again.column("prob_neutral").to_numpy(), table.column("prob_neutral").to_numpy(),
                               atol=1e-4)


def test_predict_lora_adapter_through_ray(local_ray: None, lora_dirs: dict[str, Path], tmp_path: Path) -> None:
    texts = _texts(20)
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "lora.parquet"
    result = predict(lora_dirs["adapter"], data_config(str(data)), out, batch_size=8, workers=1)
    assert result.written == 20 and result.quarantined == 0
    table = pq.read_table(out)
    got = np.column_stack([table.column(p).to_numpy() for p in PROBS])
    merged = load_scorer(lora_dirs["merged"]).probabilities(_normalised(table.column("text").to_pylist()), 128)
    np.testing.assert_allclose(got, merged, atol=1e-4)
