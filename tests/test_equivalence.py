"""Equivalent set-ups give the same losses: ZeRO stages, and accumulation vs a bigger micro-batch.

fp32, fixed seed, dropout off, real DeepSpeed on CPU under real Ray Train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raytune_llm import app
from raytune_llm.data.demo import write_demo_corpus
from tests.conftest import write_config

pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("equiv")
    corpus = write_demo_corpus(folder / "demo.jsonl")
    return write_config(folder / "run.yaml", corpus, tiny_model_dir, folder / "runs")


def _losses(config: Path, *overrides: str) -> np.ndarray:
    history = app.run_train(str(config), list(overrides))["history"]
    return history[["train_loss", "val_loss"]].to_numpy()


def test_zero_stages_give_the_same_losses(config: Path) -> None:
    reference = _losses(config, "train.zero_stage=0", "output.name=z0")
    for stage in (2, 3):
        np.testing.assert_allclose(_losses(config, f"train.zero_stage={stage}", f"output.name=z{stage}"),
                                   reference, rtol=2e-3, err_msg=f"ZeRO-{stage} vs ZeRO-0")


def test_accumulation_matches_a_bigger_micro_batch(config: Path) -> None:
    big = _losses(config, "train.batch_size=8", "train.gradient_accumulation_steps=1", "output.name=b8")
    accumulated = _losses(config, "train.batch_size=4", "train.gradient_accumulation_steps=2", "output.name=a2")
    np.testing.assert_allclose(accumulated, big, rtol=2e-3)


def test_deepspeed_matches_plain_ddp(config: Path) -> None:
    deepspeed = _losses(config, "train.num_workers=2", "train.batch_size=4", "output.name=ds2")
    ddp = _losses(config, "train.strategy=ddp", "train.num_workers=2", "train.batch_size=4", "output.name=ddp2")
    np.testing.assert_allclose(ddp, deepspeed, rtol=2e-3)


def test_warmup_decay_factor_follows_deepspeed() -> None:
    """Our copy of the schedule against DeepSpeed's own scheduler object, step by step."""
    import torch
    from deepspeed.runtime.lr_schedules import WarmupDecayLR

    from raytune_llm.train.deepspeed_config import warmup_decay_factor

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupDecayLR(optimizer, total_num_steps=20, warmup_min_lr=0.0, warmup_max_lr=1.0,
                             warmup_num_steps=5, warmup_type="linear")
    for step in range(20):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(warmup_decay_factor(step, 5, 20)), step
        optimizer.step()
        schedule.step()
