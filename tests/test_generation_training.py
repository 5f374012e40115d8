"""The generation task end to end on CPU: Ray Data renders conversations, Ray Train + DeepSpeed trains
a tiny Llama on its answers with packing, validation generates, the test split is scored once."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from raytune_llm import app
from tests.conftest import write_config

pytestmark = pytest.mark.usefixtures("local_ray")

GOOD = ["profit rose", "sales grew", "record earnings", "orders doubled", "margin improved"]
BAD = ["loss widened", "sales fell", "plant closed", "orders dropped", "margin shrank"]


def _corpus(path: Path, count: int) -> Path:
    rng = random.Random(0)
    rows = []
    for i in range(count):
        label = "positive" if i % 2 else "negative"
        phrase = rng.choice(GOOD if label == "positive" else BAD)
        rows.append({"text": f"In quarter {i} the company said {phrase} again", "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_classification_by_generation_trains_with_packing(tmp_path: Path, tiny_llama_dir: Path) -> None:
    data = _corpus(tmp_path / "fin.jsonl", 120)
    config = write_config(tmp_path / "gen.yaml", data, tiny_llama_dir, tmp_path / "runs")
    config.write_text(config.read_text().replace("  max_length: 48\n", "  max_length: 96\n  task: generation\n"))
    # ~120 optimizer steps: what a 2-layer, 32-wide model needs to start answering with a label word.
    out = app.run_train(str(config), ["train.epochs=6", "train.batch_size=4", "train.learning_rate=0.01",
                                      "data.near_dup_threshold=null", "eval.max_new_tokens=3"])
    history = out["history"]
    losses = history["train_loss"].tolist()
    assert losses[-1] < 0.7 * losses[0], f"training loss did not fall: {losses}"
    last = history.iloc[-1]
    for key in ("val_f1", "val_accuracy", "val_token_f1", "val_exact_match", "val_loss", "val_unparsed"):
        assert key in last.index, key
    # The answer is one of two label words after a fixed prompt: a 2-layer model learns to say one.
    assert last["val_unparsed"] < last["val_support"], "no validation answer named a label"
    test = out["test"]
    manifest = json.loads((out["run_dir"] / "prepared" / "manifest.json").read_text())
    assert 0.0 <= test["test_f1"] <= 1.0 and test["test_support"] == manifest["split_rows"]["test"]

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out["run_dir"] / "best_model"))
    assert model.config.num_hidden_layers == 2


@pytest.mark.slow
def test_instruction_tuning_reports_answer_metrics(tmp_path: Path, tiny_llama_dir: Path) -> None:
    records = [{"instruction": f"Repeat the word {w}.", "output": w} for w in
               ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"] * 6]
    data = tmp_path / "inst.jsonl"
    data.write_text("".join(json.dumps({**r, "instruction": r["instruction"] + f" (#{i})"}) + "\n"
                            for i, r in enumerate(records)))
    with data.open("a") as out:
        out.write('{"instruction": "no answer here"}\n')  # quarantined: no output field
    config = write_config(tmp_path / "inst.yaml", data, tiny_llama_dir, tmp_path / "runs")
    config.write_text(config.read_text().replace("  max_length: 48\n",
                                                 "  max_length: 64\n  task: generation\n  format: instruct\n"))
    out = app.run_train(str(config), ["train.epochs=2", "train.batch_size=8", "train.learning_rate=0.01",
                                      "data.near_dup_threshold=null", "eval.max_new_tokens=4"])
    losses = out["history"]["train_loss"].tolist()
    assert losses[-1] < losses[0], losses
    manifest = json.loads((out["run_dir"] / "prepared" / "manifest.json").read_text())
    assert manifest["rows"]["read"] == 49 and manifest["rows"]["quarantined"] == 1
    assert manifest["labels"] == []
    assert {"test_exact_match", "test_token_f1", "test_f1"} <= set(out["test"])


def _adapter_tensors(folder: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_lora_classification_by_generation_trains_only_adapters(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """LoRA on the causal LM: loss falls, the export is an adapter (no base weights), its B matrices moved."""
    data = _corpus(tmp_path / "fin.jsonl", 120)
    config = write_config(tmp_path / "gen_lora.yaml", data, tiny_llama_dir, tmp_path / "runs")
    config.write_text(config.read_text().replace("  max_length: 48\n", "  max_length: 96\n  task: generation\n"))
    out = app.run_train(str(config), ["train.epochs=3", "train.batch_size=4", "train.learning_rate=0.01",
                                      "data.near_dup_threshold=null", "eval.max_new_tokens=3", "lora.enabled=true",
                                      "lora.r=8"])
    losses = out["history"]["train_loss"].tolist()
    assert losses[-1] < losses[0], f"training loss did not fall: {losses}"
    best = out["run_dir"] / "best_model"
    adapter = json.loads((best / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM" and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    tensors = _adapter_tensors(best)
    assert tensors and all("lora_" in name for name in tensors), sorted(tensors)[:5]  # no base or head weights
    assert any(float(t.abs().max()) > 0 for name, t in tensors.items() if "lora_B" in name)  # B starts at zero
    assert 0.0 <= out["test"]["test_f1"] <= 1.0
