"""The per-worker training loop: forward, backward, step, evaluate, report.

Runs inside each Ray Train worker. Everything it needs arrives in
`loop_config` (no globals): the validated run config as a dict, where the
prepared splits are, the label names and the resolved model path.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raytune_llm.config.schema import RunConfig
from raytune_llm.train.batches import TokenizedSplit, eval_batches, pad_batch, read_split, train_micro_batches
from raytune_llm.train.checkpoint import full_state_dict, write_checkpoint
from raytune_llm.train.metrics import confusion_counts, metrics_from_counts
from raytune_llm.tune.rungs import next_rung
from raytune_llm.train.collectives import reduce_over_workers


def _setup_torch(cfg: RunConfig, use_gpu: bool) -> Any:
    if not use_gpu:
        # DeepSpeed picks its accelerator at import time; on CPU-only nodes it must be told.
        os.environ["DS_ACCELERATOR"] = "cpu"
    import torch

    threads = cfg.train.threads_per_worker or max(1, int(cfg.train.cpus_per_worker))
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    return torch


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    # Biases and norm weights are not decayed: the usual BERT/Llama recipe.
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _to_device(torch: Any, device: Any, *arrays: np.ndarray) -> list[Any]:
    return [torch.from_numpy(a).to(device) for a in arrays]


class StepTimes:
    """Seconds spent in each phase of `train_step`, summed over the steps it timed."""

    PHASES = ("data", "forward", "backward", "optimizer")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.PHASES, 0.0)

    def add(self, marks: list[float]) -> None:
        """Add one step's phase durations from its five time marks."""
        for phase, start, end in zip(self.PHASES, marks, marks[1:]):
            self.seconds[phase] += end - start


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (k · n_c) per class, as scikit-learn's 'balanced'; a class absent from train gets 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.ones(num_classes)
    present = counts > 0
    weights[present] = len(labels) / (num_classes * counts[present])
    return weights


def train_step(torch: Any, engine: Any, data: TokenizedSplit, index: np.ndarray, pad_id: int,
               times: StepTimes | None = None, class_weights: Any = None, packing: bool = True,
               ) -> tuple[float, int, int, int]:
    """One micro-step: build the batch, forward, backward, optimizer step.

    Returns the loss, the real (non-padding) tokens, the padded width and the rows (packed
    generation batches have fewer rows than examples). The
    training loop and `raytune-llm bench train` both run exactly this function.
    With `times`, each phase is timed; on a GPU that means synchronising after
    each phase, which is why ordinary training passes no `times`.
    """
    clock = _clock(torch, engine) if times is not None else None
    marks = [clock()] if clock else []
    if data.is_generation:
        # Causal LM on answers: the micro-batch's examples packed into rows (train/generation.py).
        from raytune_llm.train.causal import causal_lm_forward
        from raytune_llm.train.generation import generation_batch, mask_dtype

        batch = generation_batch(data, index, pad_id, packing_width(data, index), packing)
        marks += [clock()] if clock else []
        out, real = causal_lm_forward(torch, engine, batch, engine.device, mask_dtype(torch, engine))
        loss = out.loss
        real_tokens, (rows, width) = real, batch.input_ids.shape
    else:
        ids, mask = pad_batch([data.input_ids[i] for i in index], pad_id)
        input_ids, attention, labels = _to_device(torch, engine.device, ids, mask, data.targets(index, ids.shape[1]))
        marks += [clock()] if clock else []
        out = engine(input_ids=input_ids, attention_mask=attention, labels=labels)
        loss = out.loss if class_weights is None else torch.nn.functional.cross_entropy(
            out.logits.float(), labels, weight=class_weights.to(out.logits.device))
        real_tokens, (rows, width) = int(mask.sum()), ids.shape
    marks += [clock()] if clock else []
    engine.backward(loss)
    marks += [clock()] if clock else []
    engine.step()  # DeepSpeed only steps the optimizer at accumulation boundaries
    if clock and times is not None:
        times.add([*marks, clock()])
    return float(loss.detach()), real_tokens, int(width), int(rows)


def packing_width(data: TokenizedSplit, index: np.ndarray) -> int:
    """Row width for packing a micro-batch: its longest example, or more when that packs better.

    Rows as wide as data.max_length would be ideal, but the split does not carry it; the
    longest example rounded up to a multiple of 64, and at least enough for two average
    examples, packs well without making a short batch's rows needlessly long.
    """
    lengths = [len(data.input_ids[i]) for i in index]
    width = max(max(lengths), 2 * (sum(lengths) // len(lengths)))
    return -(-width // 64) * 64


def _clock(torch: Any, engine: Any) -> Any:
    """perf_counter, synchronising the GPU first so queued kernels count where they belong."""
    on_gpu = getattr(engine.device, "type", str(engine.device)) == "cuda"

    def now() -> float:
        if on_gpu:
            torch.cuda.synchronize()
        return time.perf_counter()

    return now


def epoch_micro_batches(data: TokenizedSplit, epoch: int, cfg: RunConfig, ctx: dict[str, Any]) -> Iterator[np.ndarray]:
    """This worker's micro-batches (row indices) for one epoch."""
    return train_micro_batches(len(data), epoch, cfg.train.seed, rank=ctx["rank"], world=ctx["world"],
                               micro=cfg.train.batch_size, accum=cfg.train.gradient_accumulation_steps,
                               lengths=ctx["lengths"] if cfg.train.group_by_length else None)


def evaluate(torch: Any, engine: Any, data: TokenizedSplit, labels: list[str], cfg: RunConfig, ctx: dict[str, Any]) -> dict[str, float]:
    """Validation metrics from confusion counts (token classification: entity counts) summed over all workers."""
    if data.is_tokens:
        from raytune_llm.train.token_eval import evaluate_tokens

        return evaluate_tokens(torch, engine, data, labels, cfg.eval.batch_size, ctx)
    if data.is_generation:
        from raytune_llm.train.generation import evaluate_generation

        new_tokens = cfg.eval.max_new_tokens or (8 if labels else 64)
        return evaluate_generation(torch, engine, data, labels, ctx["tokenizer"], new_tokens, cfg.eval.batch_size,
                                   ctx["rank"], ctx["world"], ctx["pad_id"])
    engine.eval()
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    loss_sum = 0.0
    with torch.no_grad():
        for index, real in eval_batches(len(data), rank=ctx["rank"], world=ctx["world"], batch=cfg.eval.batch_size):
            ids, mask = pad_batch([data.input_ids[i] for i in index], ctx["pad_id"])
            input_ids, attention, gold = _to_device(torch, engine.device, ids, mask, data.labels[index])
            out = engine(input_ids=input_ids, attention_mask=attention, labels=gold)
            if real:
                pred = out.logits.argmax(dim=-1).cpu().numpy()
                counts += confusion_counts(data.labels[index], pred, len(labels))
                loss_sum += float(out.loss) * len(index)
    summed = reduce_over_workers(torch, np.append(counts.ravel(), loss_sum), engine.device)
    total = summed[:-1].reshape(counts.shape)
    metrics = metrics_from_counts(total, labels, prefix="val_")
    metrics["val_loss"] = float(summed[-1]) / max(float(total.sum()), 1.0)
    return metrics


def _engine(model: Any, cfg: RunConfig, steps_per_epoch: int) -> Any:
    """A DeepSpeed engine, or the DDP engine with the same surface (`train.strategy`)."""
    groups = _param_groups(model, cfg.train.weight_decay)
    if cfg.train.strategy == "ddp":
        from raytune_llm.train.ddp_engine import DDPEngine

        return DDPEngine(model, groups, cfg.train, steps_per_epoch * cfg.train.epochs)
    import deepspeed

    from raytune_llm.train.deepspeed_config import build_deepspeed_config

    config = build_deepspeed_config(cfg.train, steps_per_epoch)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=config)
    return engine


@dataclass
class Worker:
    """What every worker sets up before its first step (shared by training and `bench train`)."""

    cfg: RunConfig
    torch: Any
    tokenizer: Any
    engine: Any
    train_data: TokenizedSplit
    val_data: TokenizedSplit
    labels: list[str]
    ctx: dict[str, Any]


def setup_worker(loop_config: dict[str, Any]) -> Worker:
    """Seed, load the model and the prepared splits, and build the engine on this worker."""
    import ray.train

    cfg = RunConfig.model_validate(loop_config["run"])
    torch = _setup_torch(cfg, bool(loop_config["use_gpu"]))
    from raytune_llm.models.loading import load_classifier, load_tokenizer
    from raytune_llm.train.deepspeed_config import optimizer_steps

    context = ray.train.get_context()
    if cfg.train.min_workers is not None:
        # Elastic: the group may be smaller than num_workers; batches and the DeepSpeed
        # config follow the workers actually running (global batch = micro × accum × these).
        cfg.train.num_workers = context.get_world_size()
    labels: list[str] = loop_config["labels"]
    tokenizer = load_tokenizer(loop_config["model_path"], cfg.model.trust_remote_code)
    model = load_classifier(loop_config["model_path"], labels, cfg.model.trust_remote_code, task=cfg.data.task)
    if cfg.lora.enabled:
        from raytune_llm.models.lora import apply_lora, describe_trainable

        model = apply_lora(model, cfg.lora, cfg.data.task)  # freezes all but the adapters and modules_to_save
        if context.get_world_rank() == 0:
            print(f"[train] LoRA r={cfg.lora.r}: {describe_trainable(model)}", flush=True)
    train_data = read_split(loop_config["splits"]["train"])
    val_data = read_split(loop_config["splits"]["validation"])
    engine = _engine(model, cfg, optimizer_steps(len(train_data), cfg.train))
    weights = None
    if cfg.train.class_weights == "balanced":
        weights = torch.tensor(balanced_class_weights(train_data.labels, len(labels)), dtype=torch.float32)
    ctx = {"rank": context.get_world_rank(), "world": context.get_world_size(), "pad_id": tokenizer.pad_token_id,
           "lengths": train_data.lengths, "class_weights": weights, "tokenizer": tokenizer,
           "packing": cfg.data.packing}
    return Worker(cfg, torch, tokenizer, engine, train_data, val_data, labels, ctx)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker: resume if there is a checkpoint, then train and report.

    Evaluation, reporting and checkpointing happen at every epoch end and, with
    `train.checkpoint_every_steps`, every N optimizer steps. A restart (worker failure,
    or the same command again) skips the micro-batches already trained, so the
    optimizer sees exactly the rows it would have seen without the interruption.
    """
    from raytune_llm.train.deepspeed_config import optimizer_steps
    from raytune_llm.train.resume import Position, resume_position

    w = setup_worker(loop_config)
    position = resume_position(w.torch, w.engine, w.ctx["rank"], loop_config.get("start_from"), w.cfg.train)
    history = _earlier_history(loop_config.get("history_path"), position) if w.ctx["rank"] == 0 else []
    loop_config = {**loop_config, "resumed_from_step": position.global_step}
    accum = w.cfg.train.gradient_accumulation_steps
    micro_per_epoch = optimizer_steps(len(w.train_data), w.cfg.train) * accum
    every = w.cfg.train.checkpoint_every_steps
    marks = evaluation_marks(micro_per_epoch // accum, w.cfg.train.evaluations_per_epoch)
    # Promotion-based ASHA: end this run at the next rung after where it starts; the trial then
    # waits to be paused, and a promotion starts a new run from the checkpoint written there.
    stop_at = next_rung(loop_config.get("pause_at_rungs"), position.epoch + position.micro_in_epoch / micro_per_epoch)
    for epoch in range(position.epoch, w.cfg.train.epochs):
        w.engine.train()
        tally = _Tally()
        start = position.micro_in_epoch
        for i, index in enumerate(epoch_micro_batches(w.train_data, epoch, w.cfg, w.ctx)):
            if i < start:
                continue  # trained before the restart
            tally.add(*train_step(w.torch, w.engine, w.train_data, index, w.ctx["pad_id"], packing=w.ctx["packing"],
                                  class_weights=w.ctx["class_weights"])[:2])
            position.micro_in_epoch = i + 1
            if (i + 1) % accum:
                continue
            position.global_step += 1
            if ((every and position.global_step % every == 0) or (i + 1) // accum in marks) and i + 1 < micro_per_epoch:
                _evaluate_and_report(w, epoch + (i + 1) / micro_per_epoch, tally, position, history, loop_config)
                tally = _Tally()
                if stop_at is not None and epoch + (i + 1) / micro_per_epoch >= stop_at:
                    return
        position = Position(epoch + 1, 0, position.global_step)
        _evaluate_and_report(w, float(epoch + 1), tally, position, history, loop_config)
        if stop_at is not None and epoch + 1 >= stop_at:
            return


def evaluation_marks(steps_per_epoch: int, per_epoch: int) -> set[int]:
    """Optimizer steps into an epoch after which to evaluate (`train.evaluations_per_epoch`; the end is separate).

    Rounded up, so the k-th evaluation is never before k/N of the epoch: an ASHA rung or PBT
    interval at that fraction is then reached by the k-th report, whatever the batch size.
    """
    return {-(-k * steps_per_epoch // per_epoch) for k in range(1, per_epoch)} - {0, steps_per_epoch}


class _Tally:
    """Loss, micro-steps, real tokens and seconds since the last report, on this worker."""

    def __init__(self) -> None:
        self.loss_sum, self.micro_steps, self.tokens = 0.0, 0, 0
        self.started = time.perf_counter()

    def add(self, loss: float, tokens: int) -> None:
        self.loss_sum += loss
        self.micro_steps += 1
        self.tokens += tokens


def _evaluate_and_report(w: Worker, epoch: float, tally: _Tally, position: Any, history: list[dict[str, float]],
                         loop_config: dict[str, Any]) -> None:
    """Sum the tally over workers, evaluate, record the history, checkpoint and report (all ranks)."""
    torch = w.torch
    seconds = time.perf_counter() - tally.started
    stats = reduce_over_workers(torch, [tally.loss_sum, tally.micro_steps, tally.tokens], w.engine.device)
    metrics = {"train_loss": float(stats[0] / max(stats[1], 1)), "train_tokens": float(stats[2]),
               "train_seconds": seconds, "train_tokens_per_s": float(stats[2]) / max(seconds, 1e-9)}
    metrics.update(evaluate(torch, w.engine, w.val_data, w.labels, w.cfg, w.ctx))
    # Evaluation switched dropout off; an evaluation inside an epoch must not leave the rest of
    # the epoch training without it (a run resumed there would differ from the uninterrupted one).
    w.engine.train()
    metrics.update({"epoch": round(epoch, 4), "step": position.global_step, "lr": float(w.engine.get_lr()[0]),
                    # > 0 when this worker group started from a checkpoint (a restart), not from scratch
                    "resumed_from_step": loop_config["resumed_from_step"]})
    if w.ctx["rank"] == 0:
        history.append(metrics)
        if loop_config.get("history_path"):
            write_history(loop_config["history_path"], history)
    _report(w, metrics, position)


def _earlier_history(path: str | None, position: Any) -> list[dict[str, float]]:
    """The history rows written before a restart, up to the checkpoint resumed from."""
    import json

    import pyarrow.fs

    if not path or position.global_step == 0:
        return []
    filesystem, inner = pyarrow.fs.FileSystem.from_uri(path) if "://" in path else (pyarrow.fs.LocalFileSystem(), path)
    if filesystem.get_file_info(inner).type == pyarrow.fs.FileType.NotFound:
        return []
    with filesystem.open_input_stream(inner) as stream:
        rows = [json.loads(line) for line in stream.read().decode().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) <= position.global_step]


def write_history(path: str, history: list[dict[str, float]]) -> None:
    """Rewrite the run's per-epoch metrics as JSON lines (whole file: object stores cannot append).

    Ray Train keeps only the metrics of retained checkpoints, so this file is
    how `raytune-llm train` shows the full learning curve.
    """
    import json

    import pyarrow.fs

    filesystem, inner = pyarrow.fs.FileSystem.from_uri(path) if "://" in path else (pyarrow.fs.LocalFileSystem(), path)
    filesystem.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(inner) as stream:
        stream.write("".join(json.dumps(row) + "\n" for row in history).encode())


def _report(w: Worker, metrics: dict[str, float], position: Any) -> None:
    """Report metrics with a checkpoint: rank 0's HF export plus every rank's resumable state."""
    import ray.train

    from raytune_llm.train.resume import save_state

    cfg, engine = w.cfg, w.engine
    stage = cfg.train.zero_stage if cfg.train.strategy == "deepspeed" else 0
    state = full_state_dict(engine, stage, w.ctx["rank"])
    with tempfile.TemporaryDirectory() as tmp:
        if w.ctx["rank"] == 0:
            metadata = {"labels": w.labels, "epoch": metrics["epoch"], "step": metrics["step"], "metrics": metrics,
                        "config": cfg.model_dump(mode="json")}
            write_checkpoint(Path(tmp), engine.module, state, w.tokenizer, metadata)
        save_state(w.torch, engine, Path(tmp), position, w.ctx["rank"])
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
