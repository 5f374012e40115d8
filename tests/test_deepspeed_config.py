"""The DeepSpeed config derived from the schema, an expert's raw config merged over it, and the LR curves.

Pure dict comparisons, except two checks against DeepSpeed itself: its scheduler objects
(in-process) and a real `deepspeed.initialize` on CPU (in a subprocess, DS_ACCELERATOR=cpu).
No Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from raytune_llm.config.loader import load_config
from raytune_llm.config.schema import TrainConfig
from raytune_llm.errors import ConfigError
from raytune_llm.train.deepspeed_config import (
    build_deepspeed_config,
    derived_deepspeed_config,
    describe_plan,
    lr_factor,
    warmup_cosine_factor,
)

REPO = Path(__file__).resolve().parents[1]


def _train(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {"num_workers": 2, "batch_size": 4, "gradient_accumulation_steps": 2, "zero_stage": 2,
                            "precision": "bf16", "learning_rate": 1e-4, "warmup_ratio": 0.25, "epochs": 4,
                            "weight_decay": 0.01, "max_grad_norm": 0.5}
    return TrainConfig(**{**base, **overrides})


def test_derived_config_is_the_expected_dict() -> None:
    assert build_deepspeed_config(_train(), steps_per_epoch=10) == {
        "train_batch_size": 16,
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 2,
        "gradient_clipping": 0.5,
        "zero_optimization": {"stage": 2},
        "bf16": {"enabled": True},
        "fp16": {"enabled": False},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8,
                                                  "weight_decay": 0.01}},
        "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 40, "warmup_min_lr": 0.0,
                                                          "warmup_max_lr": 1e-4, "warmup_num_steps": 10,
                                                          "warmup_type": "linear"}},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def test_offload_and_cosine_blocks() -> None:
    config = build_deepspeed_config(_train(zero_stage=3, offload_optimizer=True, offload_params=True,
                                           lr_schedule="cosine", precision="fp16"), steps_per_epoch=10)
    assert config["zero_optimization"] == {
        "stage": 3,
        "offload_optimizer": {"device": "cpu", "pin_memory": True},
        "offload_param": {"device": "cpu", "pin_memory": True},
        "stage3_gather_16bit_weights_on_model_save": True,
    }
    assert config["scheduler"] == {"type": "WarmupCosineLR", "params": {
        "total_num_steps": 40, "warmup_min_ratio": 0.0, "warmup_num_steps": 10, "cos_min_ratio": 0.0,
        "warmup_type": "linear"}}
    assert (config["bf16"], config["fp16"]) == ({"enabled": False}, {"enabled": True})
    optimizer_only = build_deepspeed_config(_train(zero_stage=1, offload_optimizer=True), 10)
    assert optimizer_only["zero_optimization"] == {"stage": 1,
                                                   "offload_optimizer": {"device": "cpu", "pin_memory": True}}


def test_raw_config_passes_through_what_the_schema_does_not_derive() -> None:
    raw = {"zero_optimization": {"reduce_bucket_size": 50_000_000, "overlap_comm": True, "stage": 2},
           "optimizer": {"params": {"betas": [0.9, 0.95], "lr": "auto"}},
           "train_micro_batch_size_per_gpu": "auto", "activation_checkpointing": {"partition_activations": True},
           "steps_per_print": 50}
    train = _train(deepspeed_config=raw)
    expected = derived_deepspeed_config(train, 10)
    expected["zero_optimization"].update(reduce_bucket_size=50_000_000, overlap_comm=True)
    expected["optimizer"]["params"]["betas"] = [0.9, 0.95]
    expected["activation_checkpointing"] = {"partition_activations": True}
    expected["steps_per_print"] = 50
    assert build_deepspeed_config(train, 10) == expected
    assert train.deepspeed_config == raw  # the merge copies; the config keeps what the user wrote


def test_conflicting_keys_are_errors_naming_both_values_and_the_fix() -> None:
    raw = {"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 3, "reduce_bucket_size": 1000},
           "optimizer": {"params": {"lr": 1e-3}}, "bf16": {"enabled": False}, "scheduler": {"type": "OneCycle"}}
    with pytest.raises(ValidationError) as caught:
        _train(deepspeed_config=raw)
    message = str(caught.value)
    for expected in [
        "train_micro_batch_size_per_gpu contradicts train.batch_size = 4 (got 8 from the DeepSpeed JSON); "
        "set train.batch_size=8 instead",
        "zero_optimization.stage contradicts train.zero_stage = 2 (got 3 from the DeepSpeed JSON); "
        "set train.zero_stage=3 instead",
        "optimizer.params.lr contradicts train.learning_rate = 0.0001 (got 0.001 from the DeepSpeed JSON); "
        "set train.learning_rate=0.001 instead",
        "bf16.enabled contradicts train.precision = 'bf16' (got False from the DeepSpeed JSON); "
        "change train.precision instead",
        "scheduler.type contradicts train.lr_schedule, train.learning_rate, train.warmup_ratio and train.epochs = "
        "'WarmupDecayLR' (got 'OneCycle' from the DeepSpeed JSON)",
    ]:
        assert expected in message
    assert "reduce_bucket_size" not in message


def test_step_counts_are_checked_once_the_data_is_known() -> None:
    train = _train(deepspeed_config={"scheduler": {"params": {"total_num_steps": 999}}})  # unknown yet: accepted
    with pytest.raises(ConfigError, match=r"train.deepspeed_config: scheduler.params.total_num_steps contradicts "
                                          r".* = 40 \(got 999 from the DeepSpeed JSON\)"):
        build_deepspeed_config(train, steps_per_epoch=10)
    same = _train(deepspeed_config={"scheduler": {"params": {"total_num_steps": 40}}})
    assert build_deepspeed_config(same, 10) == derived_deepspeed_config(same, 10)


def test_offload_and_strategy_validation(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("data: {path: x.jsonl}\nmodel: {name_or_path: bert-base-uncased}\n")
    cases = {
        ("train.offload_params=true", "train.offload_optimizer=true"):
            "offload_params needs zero_stage 3 (DeepSpeed offloads parameters only under ZeRO-3) (got zero_stage 2); "
            "set train.zero_stage=3 or train.offload_params=false",
        ("train.offload_optimizer=true", "train.zero_stage=0"):
            "offload_optimizer needs zero_stage >= 1",
        ("train.strategy=ddp", "train.offload_optimizer=true"):
            "offload_optimizer need(s) strategy 'deepspeed' (got 'ddp')",
    }
    for overrides, expected in cases.items():
        with pytest.raises(ConfigError) as caught:
            load_config(config, list(overrides))
        assert len(caught.value.problems) == 1 and expected in caught.value.problems[0], caught.value.problems
    assert load_config(config, ["train.zero_stage=3", "train.offload_params=true",
                                "train.offload_optimizer=true"]).train.offload_params


def test_deepspeed_config_file_and_dotted_overrides(tmp_path: Path) -> None:
    ds_file = tmp_path / "ds.json"
    ds_file.write_text(json.dumps({"zero_optimization": {"reduce_bucket_size": 1000}}))
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{path: x.jsonl}}\nmodel: {{name_or_path: bert-base-uncased}}\n"
                      f"train: {{deepspeed_config: {ds_file}}}\n")
    assert load_config(config).train.deepspeed_config == {"zero_optimization": {"reduce_bucket_size": 1000}}
    inline = load_config(config, ["train.deepspeed_config={zero_optimization: {reduce_bucket_size: 1000}}",
                                  "train.deepspeed_config.zero_optimization.overlap_comm=true"])
    assert inline.train.deepspeed_config == {"zero_optimization": {"reduce_bucket_size": 1000, "overlap_comm": True}}
    with pytest.raises(ConfigError, match="cannot read the DeepSpeed config file"):
        load_config(config, [f"train.deepspeed_config={tmp_path / 'missing.json'}"])
    with pytest.raises(ConfigError, match="need.s. strategy 'deepspeed'"):
        load_config(config, ["train.strategy=ddp"])


def test_cosine_factor_follows_deepspeed() -> None:
    """Our copy of WarmupCosineLR against DeepSpeed's own scheduler object, step by step."""
    import torch
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    for warmup, total in [(5, 20), (2, 3), (2, 2), (7, 40)]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        schedule = WarmupCosineLR(optimizer, total_num_steps=total, warmup_min_ratio=0.0, warmup_num_steps=warmup,
                                  cos_min_ratio=0.0, warmup_type="linear")
        for step in range(total + 2):
            assert optimizer.param_groups[0]["lr"] == pytest.approx(warmup_cosine_factor(step, warmup, total),
                                                                    abs=1e-12), (warmup, total, step)
            optimizer.step()
            schedule.step()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddp_engine_follows_the_deepspeed_scheduler(schedule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DDP engine's learning rate at every optimizer step equals DeepSpeed's scheduler built from our config."""
    import ray.train.torch
    import torch
    from deepspeed.runtime import lr_schedules

    from raytune_llm.train.ddp_engine import DDPEngine

    monkeypatch.setattr(ray.train.torch, "prepare_model", lambda model: model)  # no Ray: one process, no DDP
    monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cpu"))
    train = _train(lr_schedule=schedule, gradient_accumulation_steps=1, learning_rate=0.01)
    model = torch.nn.Linear(2, 1)
    engine = DDPEngine(model, [{"params": list(model.parameters())}], train, total_steps=12)
    block = build_deepspeed_config(train, steps_per_epoch=3)["scheduler"]
    reference_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=train.learning_rate)
    reference = getattr(lr_schedules, block["type"])(reference_optimizer, **block["params"])
    for step in range(12):
        assert engine.get_lr()[0] == pytest.approx(reference_optimizer.param_groups[0]["lr"], abs=1e-12), step
        assert engine.get_lr()[0] == pytest.approx(0.01 * lr_factor(schedule, step, 3, 12), abs=1e-12)
        engine.backward(model(torch.ones(1, 2)).sum())
        engine.step()
        reference_optimizer.step()
        reference.step()


_ENGINE_PROBE = """
import json, os, socket, sys
import torch, torch.distributed as dist
import deepspeed
from raytune_llm.config.schema import TrainConfig
from raytune_llm.train.deepspeed_config import build_deepspeed_config
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
train = TrainConfig.model_validate(json.loads(sys.argv[1]))
config = build_deepspeed_config(train, steps_per_epoch=4)
model = torch.nn.Linear(4, 2)
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
lrs = []
for _ in range(8):
    lrs.append(engine.get_lr()[0])
    engine.backward(engine(torch.ones(train.batch_size, 4)).sum())
    engine.step()
bucket = getattr(engine.optimizer, "reduce_bucket_size", None)
print(json.dumps({"lrs": lrs, "bucket": bucket, "stage": engine.zero_optimization_stage()}))
"""


def test_real_deepspeed_accepts_the_config() -> None:
    """DeepSpeed on CPU builds an engine from our dict (cosine schedule, a passed-through bucket size) and its LR
    per optimizer step is the curve the DDP engine follows."""
    train = _train(num_workers=1, gradient_accumulation_steps=1, precision="fp32", lr_schedule="cosine",
                   epochs=2, deepspeed_config={"zero_optimization": {"reduce_bucket_size": 12345}})
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "LOCAL_RANK": "0"}
    done = subprocess.run([sys.executable, "-c", _ENGINE_PROBE, train.model_dump_json()], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["stage"] == 2 and result["bucket"] == 12345
    assert result["lrs"] == pytest.approx([1e-4 * warmup_cosine_factor(step, 2, 8) for step in range(8)], abs=1e-12)


def test_plan_line_states_the_global_batch() -> None:
    assert describe_plan(_train(), train_rows=170) == (
        "global batch 16 = micro-batch 4 × accumulation 2 × 2 worker(s); 10 optimizer steps/epoch × 4 epochs = 40; "
        "lr 0.0001, 10 warm-up steps then linear decay; DeepSpeed ZeRO-2, bf16")
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        describe_plan(_train(), train_rows=15)
