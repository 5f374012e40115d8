"""End to end on CPU: real Ray Train, real DeepSpeed (ZeRO-2, gloo), a tiny BERT, the demo corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from raytune_llm import app
from raytune_llm.config.loader import load_config
from raytune_llm.data.demo import write_demo_corpus
from tests.conftest import write_config

pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_corpus(tmp_path_factory.mktemp("demo") / "demo.jsonl")


def test_loss_falls_and_weights_change(tmp_path: Path, corpus: Path, tiny_model_dir: Path) -> None:
    config = write_config(tmp_path / "run.yaml", corpus, tiny_model_dir, tmp_path / "runs")
    # 'balanced' weights are all 1 on the balanced demo corpus: the weighted-loss path runs, same maths.
    out = app.run_train(str(config), ["train.epochs=3", "train.class_weights=balanced"])
    losses = out["history"]["train_loss"].tolist()
    assert len(losses) == 3
    assert losses[-1] < 0.8 * losses[0], f"training loss did not fall: {losses}"
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(out["run_dir"] / "best_model" / "model.safetensors"))
    changed = [k for k, v in before.items() if ("bert." + k) in after and not np.allclose(v, after["bert." + k])]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} tensors changed"
    assert out["test"]["test_support"] > 0


def test_two_workers_match_one_worker_with_the_same_global_batch(tmp_path: Path, corpus: Path, tiny_model_dir: Path) -> None:
    config = write_config(tmp_path / "run.yaml", corpus, tiny_model_dir, tmp_path / "runs")
    one = app.run_train(str(config), ["train.num_workers=1", "train.batch_size=8", "output.name=one"])
    two = app.run_train(str(config), ["train.num_workers=2", "train.batch_size=4", "output.name=two"])
    for column in ("train_loss", "val_loss"):
        a, b = one["history"][column].to_numpy(), two["history"][column].to_numpy()
        np.testing.assert_allclose(a, b, rtol=2e-3, err_msg=column)
    # And the runs really trained: a different learning rate gives a different curve.
    other = app.run_train(str(config), ["train.learning_rate=0.0003", "output.name=other"])
    assert not np.allclose(one["history"]["train_loss"].to_numpy(), other["history"]["train_loss"].to_numpy(), rtol=1e-3)


def test_prepare_splits_are_identical_across_runs_and_disjoint(tmp_path: Path, corpus: Path, tiny_model_dir: Path) -> None:
    config = write_config(tmp_path / "run.yaml", corpus, tiny_model_dir, tmp_path / "runs")
    first = app.run_prepare(str(config), ["output.name=a"])
    second = app.run_prepare(str(config), ["output.name=b"])
    ids = {}
    for split in ("train", "validation", "test"):
        a = pq.read_table(first.splits[split]).column("id").to_pylist()
        b = pq.read_table(second.splits[split]).column("id").to_pylist()
        assert sorted(a) == sorted(b), split
        ids[split] = set(a)
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"] and not ids["validation"] & ids["test"]
    rows = first.manifest["rows"]
    assert rows["read"] == rows["kept"] + rows["quarantined"] + sum(v for k, v in rows.items() if k.startswith("dropped_"))
    assert (first.root / "quarantine.jsonl").exists()
    assert sum(len(s) for s in ids.values()) == rows["kept"]
    again = app.run_prepare(str(config), ["output.name=a"])
    assert again.manifest["created"] == first.manifest["created"], "unchanged inputs must reuse the tokenized splits"


def _plain_transformers_f1(model_dir: Path, test_split: str) -> float:
    """Score the exported folder with nothing but transformers + sklearn, from raw text."""
    import torch
    from sklearn.metrics import f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    table = pq.read_table(test_split, columns=["text", "label"])
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    texts, gold = table.column("text").to_pylist(), table.column("label").to_pylist()
    with torch.no_grad():
        encoded = tokenizer(texts, truncation=True, max_length=48, padding=True, return_tensors="pt")
        predicted = model(**encoded).logits.argmax(-1).tolist()
    names = [model.config.id2label[i] for i in predicted]
    return float(f1_score(gold, names, labels=sorted(set(gold)), average="macro", zero_division=0))


def test_sweep_writes_summary_and_exports_a_plain_transformers_model(tmp_path: Path, corpus: Path, tiny_model_dir: Path) -> None:
    extra = """  search_space:
    train.learning_rate: {type: grid, values: [0.003, 0.0003]}
"""
    config = write_config(tmp_path / "run.yaml", corpus, tiny_model_dir, tmp_path / "runs")
    text = config.read_text().replace("""  search_space:
    train.learning_rate: {type: grid, values: [0.003]}
""", extra)
    config.write_text(text)
    out = app.run_tune(str(config), ["train.num_workers=2", "train.batch_size=4", "tune.scheduler=asha",
                                     "tune.max_concurrent_trials=1"])
    summary = json.loads(out["paths"]["json"].read_text())
    assert len(summary["trials"]) == 2
    # Two trials, one tokenization pass: every trial read the shards prepare wrote.
    assert len((out["run_dir"] / "tokenize_passes.jsonl").read_text().splitlines()) == 1
    assert all(t["epochs_run"] >= 1 and t["best_metric"] is not None for t in summary["trials"])
    best = max(summary["trials"], key=lambda t: t["best_metric"])
    assert summary["best_val_metric"] == pytest.approx(best["best_metric"])
    markdown = out["paths"]["markdown"].read_text()
    assert all(t["trial_id"] in markdown for t in summary["trials"])
    best_cfg = load_config(out["paths"]["best_config"])
    assert best_cfg.train.learning_rate == pytest.approx(summary["best_params"]["train.learning_rate"])
    test_split = str(out["run_dir"] / "prepared" / "test")
    reproduced = _plain_transformers_f1(out["run_dir"] / "best_model", test_split)
    assert reproduced == pytest.approx(summary["test"]["test_f1"], abs=1e-9)
    # best.yaml is runnable as is and, with the same seed, trains the winner again.
    again = app.run_train(str(out["paths"]["best_config"]), ["output.name=again"])
    assert again["best"].best_metric == pytest.approx(summary["best_val_metric"], abs=1e-3)
