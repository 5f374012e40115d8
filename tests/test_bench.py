"""`raytune-llm bench train`: the MFU arithmetic by hand, and proof that it times the real step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raytune_llm.bench.mfu import ModelShape, flops_per_token, mfu, model_shape, peak_tflops_for
from raytune_llm.bench.train import scaling_efficiency


def _tiny_bert(num_labels: int = 3):  # type: ignore[no-untyped-def]
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=num_labels)
    return BertForSequenceClassification(config)


def test_matmul_parameters_and_flops_match_a_hand_count() -> None:
    model = _tiny_bert()
    # Per layer: Q, K, V, O (4 × 32×32) + FFN (32×64 + 64×32) = 8192; two layers; pooler 32×32;
    # classifier 32×3. Embeddings (1000×32 words, 64×32 positions) are look-ups: not counted.
    n = 2 * (4 * 32 * 32 + 32 * 64 + 64 * 32) + 32 * 32 + 32 * 3
    shape = model_shape(model)
    assert (shape.matmul_params, shape.layers, shape.hidden) == (n, 2, 32)
    assert not shape.frozen
    # 6N + 12·L·d·s at s = 10.
    assert flops_per_token(shape, 10) == 6 * 17504 + 12 * 2 * 32 * 10 == 112704


def test_frozen_weights_use_the_lora_formula() -> None:
    model = _tiny_bert()
    for param in model.bert.parameters():
        param.requires_grad_(False)
    shape = model_shape(model)
    assert shape.trainable_matmul_params == 32 * 3 and shape.frozen
    assert flops_per_token(shape, 10) == 4 * 17504 + 2 * 96 + 12 * 2 * 32 * 10


def test_tied_weights_count_once() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    shape = model_shape(model)
    # c_attn 16×48, c_proj 16×16, c_fc 16×64, mlp c_proj 64×16 (Conv1D) + the tied LM head 100×16.
    assert shape.matmul_params == 16 * 48 + 16 * 16 + 16 * 64 + 64 * 16 + 100 * 16
    assert (shape.layers, shape.hidden) == (1, 16)


def test_mfu_and_peak_table() -> None:
    assert mfu(1e12, 2.0, 1, 1.0) == pytest.approx(0.5)
    assert mfu(4e12, 1.0, 2, 4.0) == pytest.approx(0.5)
    assert mfu(1e12, 1.0, 1, None) is None
    assert peak_tflops_for("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4)
    assert peak_tflops_for("NVIDIA H100 PCIe", "bf16") == pytest.approx(756.0)
    assert peak_tflops_for("NVIDIA A100-SXM4-80GB", "bf16") == pytest.approx(312.0)
    assert peak_tflops_for("NVIDIA H200", "fp16") == pytest.approx(989.4)
    assert peak_tflops_for("Tesla T4", "bf16") is None


def test_scaling_efficiency() -> None:
    runs = [{"workers": 1, "tokens_per_s": 100.0}, {"workers": 2, "tokens_per_s": 150.0}]
    assert scaling_efficiency(runs) == {1: pytest.approx(1.0), 2: pytest.approx(0.75)}
    assert ModelShape(10, 10, 1, 1).frozen is False


@pytest.mark.usefixtures("local_ray")
def test_bench_runs_the_real_training_step(tmp_path: Path, tiny_model_dir: Path) -> None:
    """One epoch of benchmark steps gives exactly the loss `train` reports for its first epoch.

    The bench loop does not copy the training step: it calls it, with the same set-up,
    batches, schedule and seed, so the losses agree to float precision.
    """
    from raytune_llm import app
    from raytune_llm.bench.run import run_bench_train
    from raytune_llm.data.demo import write_demo_corpus
    from tests.conftest import write_config

    corpus = write_demo_corpus(tmp_path / "demo.jsonl")
    config = write_config(tmp_path / "run.yaml", corpus, tiny_model_dir, tmp_path / "runs")
    trained = app.run_train(str(config), ["train.epochs=1", "output.name=ref"])
    train_rows = json.loads((tmp_path / "runs" / "ref" / "prepared" / "manifest.json")
                            .read_text())["split_rows"]["train"]
    steps = train_rows // 8  # batch_size 8, one worker, no accumulation
    result = run_bench_train(str(config), ["train.epochs=1", "output.name=bench"], None, workers=[1],
                             warmup_steps=0, measure_steps=steps, peak_tflops=1.0, out_dir=str(tmp_path / "out"),
                             bare=True)
    run = result["runs"][0]
    assert run["mean_loss"] == pytest.approx(float(trained["history"]["train_loss"].iloc[0]), rel=1e-5)
    assert run["tokens_per_s"] > 0 and 0 < run["padding_fraction"] < 1
    assert run["mfu"] == pytest.approx(run["model_tflops_per_s"] / 1.0)
    assert all(v > 0 for v in run["step_seconds"].values())
    assert result["overhead_vs_bare"] > 0
    lines = (tmp_path / "out" / "bench_train.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["runs"][0]["workers"] == 1
    assert "| 1 | cpu |" in (tmp_path / "out" / "bench_train.md").read_text()
