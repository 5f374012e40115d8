"""`raytune-llm bench train`: time the real training step, on 1..N workers.

Each worker runs `setup_worker` and `train_step` from `raytune_llm.train.loop`, the
very functions `raytune-llm train` runs, for a warm-up and then a measured phase of
optimizer steps. Workers sum their counts and seconds with one all-reduce; rank 0
reports them through `ray.train.report`, and the driver turns them into tokens/s,
the step-time split, peak memory and MFU (formula in `raytune_llm.bench.mfu`).
"""

from __future__ import annotations

import resource
import time
from typing import Any

import numpy as np

from raytune_llm.bench.mfu import flops_per_token, model_shape
from raytune_llm.models.lora import parameter_counts
from raytune_llm.train.collectives import reduce_over_workers

#: Numbers every worker contributes to the all-reduce, in this order.
_SUMMED = ("samples", "tokens", "padded_tokens", "model_flops", "data", "forward", "backward", "optimizer",
           "loss_sum", "micro_steps")


def _peak_memory_bytes(torch: Any, on_gpu: bool) -> float:
    """Peak GPU memory allocated by torch, or on CPU the process's peak resident set."""
    if on_gpu:
        return float(torch.cuda.max_memory_allocated())
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024.0  # Linux reports KiB


def _micro_batches(w: Any) -> Any:
    """Endless micro-batches of this worker, epoch after epoch, in training order."""
    from raytune_llm.train.loop import epoch_micro_batches

    epoch = 0
    while True:
        yield from epoch_micro_batches(w.train_data, epoch, w.cfg, w.ctx)
        epoch += 1


def _run_steps(w: Any, batches: Any, optimizer_steps: int, measure: bool) -> dict[str, float]:
    """Run `optimizer_steps` optimizer steps of micro-steps; return this worker's sums."""
    from raytune_llm.train.loop import StepTimes, train_step

    shape = model_shape(w.engine.module)
    times = StepTimes() if measure else None
    sums = dict.fromkeys(_SUMMED, 0.0)
    for _ in range(optimizer_steps * w.cfg.train.gradient_accumulation_steps):
        index = next(batches)
        loss, tokens, width, rows = train_step(w.torch, w.engine, w.train_data, index, w.ctx["pad_id"], times,
                                               class_weights=w.ctx["class_weights"], packing=w.ctx["packing"])
        sums["samples"] += len(index)
        sums["tokens"] += tokens
        sums["padded_tokens"] += rows * width
        sums["model_flops"] += tokens * flops_per_token(shape, width)
        sums["loss_sum"] += loss
        sums["micro_steps"] += 1
    if times is not None:
        sums.update(times.seconds)
    return sums


def bench_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: warm up, then time `measure_steps` optimizer steps of the real step."""
    import ray.train

    from raytune_llm.train.loop import setup_worker, write_history

    w = setup_worker(loop_config)
    torch = w.torch
    on_gpu = bool(loop_config["use_gpu"])
    w.engine.train()
    batches = _micro_batches(w)
    _run_steps(w, batches, loop_config["warmup_steps"], measure=False)
    torch.distributed.barrier()
    started = time.perf_counter()
    sums = _run_steps(w, batches, loop_config["measure_steps"], measure=True)
    torch.distributed.barrier()
    wall = time.perf_counter() - started
    summed = reduce_over_workers(torch, [sums[k] for k in _SUMMED], w.engine.device)
    peak = reduce_over_workers(torch, [_peak_memory_bytes(torch, on_gpu), wall], w.engine.device, op="max")
    shape = model_shape(w.engine.module)
    trainable, total = parameter_counts(w.engine.module)
    metrics = {k: float(v) for k, v in zip(_SUMMED, summed.tolist())}
    metrics.update({"wall_seconds": float(peak[1]), "peak_memory_bytes_max_worker": float(peak[0]),
                    "workers": w.ctx["world"], "matmul_params": shape.matmul_params,
                    "trainable_matmul_params": shape.trainable_matmul_params, "layers": shape.layers,
                    "trainable_params": trainable, "total_params": total,
                    "hidden": shape.hidden,
                    "device_name": torch.cuda.get_device_name() if on_gpu else "cpu"})
    # Train V2 keeps reported metrics only with checkpoints, so rank 0 also writes them where the
    # driver reads them (the run's storage: local or a URI every node sees).
    if w.ctx["rank"] == 0:
        write_history(loop_config["result_path"], [metrics])
    ray.train.report(metrics)


def summarise(raw: dict[str, float], precision: str, peak_tflops: float | None) -> dict[str, Any]:
    """Turn one run's summed counts into the figures a person reads (plain values, tested directly)."""
    from raytune_llm.bench.mfu import mfu, peak_tflops_for

    workers = int(raw["workers"])
    wall = raw["wall_seconds"]
    # Phase seconds are summed over workers; per worker they are the mean.
    phases = {p: raw[p] / workers for p in ("data", "forward", "backward", "optimizer")}
    peak = peak_tflops or (peak_tflops_for(str(raw["device_name"]), precision)
                           if raw["device_name"] != "cpu" else None)
    return {
        "workers": workers,
        "device": raw["device_name"],
        "tokens_per_s": raw["tokens"] / wall,
        "tokens_per_s_per_worker": raw["tokens"] / wall / workers,
        "samples_per_s": raw["samples"] / wall,
        "samples_per_s_per_worker": raw["samples"] / wall / workers,
        "seconds_per_sample": wall * workers / max(raw["samples"], 1.0),
        "padding_fraction": 1.0 - raw["tokens"] / max(raw["padded_tokens"], 1.0),
        "step_seconds": {k: v / max(raw["micro_steps"] / workers, 1.0) for k, v in phases.items()},
        "peak_memory_gib_max_worker": raw["peak_memory_bytes_max_worker"] / 2**30,
        "model_tflops_per_s": raw["model_flops"] / wall / 1e12,
        "peak_tflops_per_device": peak,
        "mfu": mfu(raw["model_flops"], wall, workers, peak),
        "mean_loss": raw["loss_sum"] / max(raw["micro_steps"], 1.0),
        "matmul_params": int(raw["matmul_params"]),
        "trainable_matmul_params": int(raw["trainable_matmul_params"]),
        "trainable_params": int(raw.get("trainable_params", 0)),
        "total_params": int(raw.get("total_params", 0)),
        "measured_seconds": wall,
    }


def scaling_efficiency(runs: list[dict[str, Any]]) -> dict[int, float]:
    """tokens/s at N workers divided by N × tokens/s at the smallest worker count."""
    base = min(runs, key=lambda r: r["workers"])
    per_worker = base["tokens_per_s"] / base["workers"]
    return {r["workers"]: r["tokens_per_s"] / (r["workers"] * per_worker) for r in runs}


def seconds_per_sample_bare(model_path: str, labels: list[str], split: str, cfg: Any, steps: int,
                            warmup: int) -> float:
    """The same model and batches in one plain PyTorch process: no Ray, no DeepSpeed.

    The yardstick for framework overhead: AdamW and clipping as in the DDP strategy,
    the same micro-batches as worker 0 of a 1-worker run, the same thread count.
    """
    import torch

    from raytune_llm.models.loading import load_classifier, load_tokenizer
    from raytune_llm.train.batches import pad_batch, read_split, train_micro_batches

    torch.set_num_threads(cfg.train.threads_per_worker or max(1, int(cfg.train.cpus_per_worker)))
    torch.manual_seed(cfg.train.seed)
    data = read_split(split)
    pad_id = load_tokenizer(model_path, cfg.model.trust_remote_code).pad_token_id
    model = load_classifier(model_path, labels, cfg.model.trust_remote_code).train()
    if cfg.lora.enabled:  # the same adapters as the workers train, so the yardstick compares like with like
        from raytune_llm.models.lora import apply_lora

        model = apply_lora(model, cfg.lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.learning_rate)
    lengths = data.lengths if cfg.train.group_by_length else None
    batches = (index for epoch in range(10**6)
               for index in train_micro_batches(len(data), epoch, cfg.train.seed, rank=0, world=1,
                                                micro=cfg.train.batch_size, accum=1, lengths=lengths))
    samples, started = 0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            started, samples = time.perf_counter(), 0
        index = next(batches)
        ids, mask = pad_batch([data.input_ids[i] for i in index], pad_id)
        loss = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     labels=torch.from_numpy(np.asarray(data.labels[index]))).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        samples += len(index)
    return (time.perf_counter() - started) / samples
