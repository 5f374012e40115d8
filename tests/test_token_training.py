"""Token classification end to end on CPU: prepare through Ray Data, train through real Ray Train and
DeepSpeed (ZeRO-2, gloo) with a tiny BERT, predefined split files, test scored once, plain export."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from raytune_llm import app
from tests.conftest import write_config

pytestmark = pytest.mark.usefixtures("local_ray")

PEOPLE = ["Alice", "Bob", "Carol", "Dmitri", "Eve", "Farouk", "Grace", "Hiroshi"]
PLACES = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Quito"]
FILLER = ["met", "saw", "in", "the", "today", "with", "near", "again", "and", "lol", "very", "late"]


def _sentences(seed: int, count: int) -> str:
    """CoNLL text: filler words with person (one or two words) and location entities."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(count):
        lines = []
        for _ in range(rng.randint(3, 9)):
            roll = rng.random()
            if roll < 0.15:
                lines.append(f"{rng.choice(PEOPLE)}\tB-person")
                if rng.random() < 0.4:
                    lines.append(f"{rng.choice(PEOPLE)}son\tI-person")
            elif roll < 0.25:
                lines.append(f"{rng.choice(PLACES)}\tB-location")
            else:
                lines.append(f"{rng.choice(FILLER)}\tO")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


@pytest.fixture(scope="module")
def conll_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ner")
    files = {"train": root / "train.conll", "dev": root / "dev.conll", "test": root / "test.conll"}
    for (name, path), seed, count in zip(files.items(), (1, 2, 3), (160, 40, 40)):
        path.write_text(_sentences(seed, count))
    # One broken sentence (an I- tag that continues nothing, invalid IOB2): quarantined, not dropped.
    with files["train"].open("a") as out:
        out.write("\nnear\tO\nOslo\tI-location\n")
    return files


def test_token_classification_trains_through_ray_train_and_deepspeed(
        tmp_path: Path, conll_files: dict[str, Path], tiny_model_dir: Path) -> None:
    extra = "\n".join(["  task: token_classification", "  format: conll", f"  validation_path: {conll_files['dev']}",
                       f"  test_path: {conll_files['test']}"])
    config = write_config(tmp_path / "ner.yaml", conll_files["train"], tiny_model_dir, tmp_path / "runs")
    text = config.read_text().replace("  max_length: 48\n", "  max_length: 48\n" + extra + "\n")
    config.write_text(text)
    # Two workers, so validation counts really are summed across ranks by the all-reduce.
    out = app.run_train(str(config), ["train.epochs=3", "train.num_workers=2", "train.batch_size=4",
                                      "train.learning_rate=0.005"])

    losses = out["history"]["train_loss"].tolist()
    assert losses[-1] < 0.7 * losses[0], f"training loss did not fall: {losses}"
    history = out["history"].iloc[-1]
    for key in ("val_f1", "val_precision", "val_recall", "val_f1/person", "val_f1/location", "val_accuracy"):
        assert 0.0 <= history[key] <= 1.0, key
    assert history["val_f1"] > 0.0, "the tagger found no entity at all"

    manifest = json.loads((out["run_dir"] / "prepared" / "manifest.json").read_text())
    rows = manifest["rows"]
    assert rows["read"] == rows["kept"] + rows["quarantined"] + sum(v for k, v in rows.items() if k.startswith("dropped_"))
    assert manifest["quarantine"]["kinds"] == {"invalid_sequence": 1}
    assert manifest["labels"] == ["O", "B-location", "I-location", "B-person", "I-person"]
    # Held-out files are kept whole: every dev and test sentence is a row of its split.
    assert manifest["split_rows"]["validation"] == 40 and manifest["split_rows"]["test"] == 40
    assert manifest["truncation"]["words_truncated"] == 0
    assert set(manifest["split_entities"]["test"]) == {"location", "person"}

    test = out["test"]
    assert test["test_entities"] == sum(manifest["split_entities"]["test"].values())
    assert 0.0 <= test["test_f1"] <= 1.0 and "test_f1/person" in test
    assert "entity micro-F1" in out["paths"]["markdown"].read_text()
    # The exported best model, scored in one process, gives the val_f1 the two workers summed up.
    from raytune_llm.evaluate import score_split

    alone = score_split(str(out["run_dir"] / "best_model"), str(out["run_dir"] / "prepared" / "validation"),
                        prefix="val_")
    assert alone["val_f1"] == pytest.approx(out["history"]["val_f1"].max(), abs=1e-9)

    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(str(out["run_dir"] / "best_model"))
    assert model.config.id2label[0] == "O" and model.config.num_labels == 5


@pytest.mark.slow
def test_lora_token_classification_trains_adapters_and_head(
        tmp_path: Path, conll_files: dict[str, Path], tiny_model_dir: Path) -> None:
    """LoRA on the tagger: loss falls; the export holds the adapters and the new head, nothing else."""
    from safetensors.torch import load_file

    extra = "\n".join(["  task: token_classification", "  format: conll", f"  validation_path: {conll_files['dev']}",
                       f"  test_path: {conll_files['test']}"])
    config = write_config(tmp_path / "ner_lora.yaml", conll_files["train"], tiny_model_dir, tmp_path / "runs")
    config.write_text(config.read_text().replace("  max_length: 48\n", "  max_length: 48\n" + extra + "\n"))
    out = app.run_train(str(config), ["train.epochs=3", "train.batch_size=8", "train.learning_rate=0.01",
                                      "lora.enabled=true"])
    losses = out["history"]["train_loss"].tolist()
    assert losses[-1] < losses[0], f"training loss did not fall: {losses}"
    best = out["run_dir"] / "best_model"
    assert json.loads((best / "adapter_config.json").read_text())["task_type"] == "TOKEN_CLS"
    tensors = load_file(str(best / "adapter_model.safetensors"))
    assert all("lora_" in name or "classifier" in name for name in tensors), sorted(tensors)[:5]
    assert any("classifier" in name for name in tensors)  # the new head is trained and saved in full
    assert any(float(t.abs().max()) > 0 for name, t in tensors.items() if "lora_B" in name)
    assert 0.0 <= out["test"]["test_f1"] <= 1.0
