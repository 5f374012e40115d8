"""A plain PyTorch DDP "engine" with the same surface and semantics as DeepSpeed's.

For users who do not want DeepSpeed, and as a reference: the training loop
calls `engine(...)`, `engine.backward(loss)`, `engine.step()` the same way for
both strategies. Semantics match the DeepSpeed config we derive: the loss is
divided by the accumulation steps, the optimizer steps at accumulation
boundaries, gradients are clipped by global norm, AdamW with decoupled weight
decay, and the LR follows DeepSpeed's WarmupDecayLR (`lr_schedule: linear`) or
WarmupCosineLR (`cosine`) step for step.
"""

from __future__ import annotations

from typing import Any

from raytune_llm.config.schema import TrainConfig
from raytune_llm.train.deepspeed_config import lr_factor, warmup_steps_for


class DDPEngine:
    """Wraps a model in DDP (via Ray Train) with AdamW, accumulation, clipping and the LR schedule."""

    def __init__(self, model: Any, param_groups: list[dict[str, Any]], train: TrainConfig, total_steps: int) -> None:
        import ray.train.torch
        import torch

        self.module = model
        self.model = ray.train.torch.prepare_model(model)  # moves to the device; DDP when world > 1
        self.device = ray.train.torch.get_device()
        self.optimizer = torch.optim.AdamW(param_groups, lr=train.learning_rate, betas=(0.9, 0.999), eps=1e-8)
        warmup = warmup_steps_for(train, total_steps)
        schedule = train.lr_schedule
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(schedule, step, warmup, total_steps)
        )
        self.accumulation = train.gradient_accumulation_steps
        self.max_grad_norm = train.max_grad_norm
        self.micro_steps = 0

    def __call__(self, **inputs: Any) -> Any:
        return self.model(**inputs)

    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()

    def backward(self, loss: Any) -> None:
        # Gradients are all-reduced on every micro-step (no `no_sync`): simpler, and
        # averaging is linear, so the result is the same as reducing once per step.
        (loss / self.accumulation).backward()

    def step(self) -> None:
        """Count a micro-step; at an accumulation boundary clip, step the optimizer and the LR."""
        import torch

        self.micro_steps += 1
        if self.micro_steps % self.accumulation:
            return
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def save_checkpoint(self, save_dir: str, tag: str, client_state: dict[str, Any],
                        exclude_frozen_parameters: bool = False) -> None:
        """DeepSpeed's signature: rank 0 writes model, optimizer, schedule and counters (they are replicated)."""
        import os

        import torch
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_rank() == 0:
            os.makedirs(os.path.join(save_dir, tag), exist_ok=True)
            trainable = {name for name, param in self.module.named_parameters() if param.requires_grad}
            model = {k: v for k, v in self.module.state_dict().items()
                     if not exclude_frozen_parameters or k in trainable}
            torch.save({"model": model, "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "micro_steps": self.micro_steps,
                        "client_state": client_state}, os.path.join(save_dir, tag, "ddp_state.pt"))

    def load_checkpoint(self, load_dir: str, tag: str, load_module_strict: bool = True) -> tuple[str, dict[str, Any]]:
        """DeepSpeed's signature: restore everything `save_checkpoint` wrote; returns (path, client state)."""
        import os

        import torch

        path = os.path.join(load_dir, tag, "ddp_state.pt")
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["model"], strict=load_module_strict)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_steps = state["micro_steps"]
        return path, state["client_state"]
