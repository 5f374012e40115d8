"""Drivers of `raytune-llm bench train`: run, summarise, append JSON and Markdown results."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from raytune_llm.bench.mfu import FORMULA
from raytune_llm.bench.train import bench_loop_per_worker, scaling_efficiency, seconds_per_sample_bare, summarise


def _one_run(session: Any, prepared: Any, gpu: bool, workers: int, warmup: int, steps: int) -> dict[str, float]:
    """One `TorchTrainer` fit of the timing loop at `workers` workers; its rank-0 metrics."""
    from raytune_llm.config.loader import set_dotted
    from raytune_llm.train.launch import build_trainer

    cfg = set_dotted(session.cfg, "train.num_workers", workers)
    name = f"bench-{workers}w-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = session.run_dir / "bench"
    result_path = str(storage / name / "metrics.jsonl")
    trainer = build_trainer(cfg, prepared, session.model_path, gpu=gpu, storage=storage, name=name,
                            loop=bench_loop_per_worker,
                            extra={"warmup_steps": warmup, "measure_steps": steps, "history_path": None,
                                   "result_path": result_path})
    trainer.fit()
    return dict(json.loads(Path(result_path).read_text().splitlines()[0]))


def run_bench_train(config_path: str, overrides: list[str], address: str | None, *, workers: list[int],
                    warmup_steps: int, measure_steps: int, peak_tflops: float | None, out_dir: str | None,
                    bare: bool) -> dict[str, Any]:
    """Benchmark the configured training step at each worker count; write and return the results."""
    from raytune_llm.app import preflight, start

    session = preflight(config_path, overrides)
    _, gpu, prepared = start(session, address)
    cfg = session.cfg
    runs = []
    for count in workers:
        raw = _one_run(session, prepared, gpu, count, warmup_steps, measure_steps)
        runs.append(summarise(raw, cfg.train.precision, peak_tflops))
        print(f"[bench] {count} worker(s): {runs[-1]['tokens_per_s']:.0f} tokens/s, "
              f"{runs[-1]['samples_per_s']:.1f} samples/s", flush=True)
    efficiency = scaling_efficiency(runs)
    for run in runs:
        run["scaling_efficiency"] = efficiency[run["workers"]]
    result: dict[str, Any] = {
        "config": config_path, "overrides": overrides, "model": cfg.model.name_or_path,
        "strategy": cfg.train.strategy, "zero_stage": cfg.train.zero_stage, "precision": cfg.train.precision,
        "micro_batch": cfg.train.batch_size, "accumulation": cfg.train.gradient_accumulation_steps,
        "lora_r": cfg.lora.r if cfg.lora.enabled else None,
        "warmup_steps": warmup_steps, "measured_steps": measure_steps, "formula": FORMULA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": runs,
    }
    if bare:
        bare_seconds = seconds_per_sample_bare(session.model_path, prepared.labels, prepared.splits["train"], cfg,
                                               measure_steps * cfg.train.gradient_accumulation_steps, warmup_steps)
        one = next((r for r in runs if r["workers"] == 1), None)
        result["bare_pytorch_seconds_per_sample"] = bare_seconds
        result["overhead_vs_bare"] = one["seconds_per_sample"] / bare_seconds if one else None
    target = Path(out_dir) if out_dir else session.run_dir / "bench"
    paths = write_results(result, target)
    print(markdown_table(result))
    print(f"[bench] appended to {paths['json']} and {paths['markdown']}")
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The human-readable block for one benchmark invocation."""
    lines = [f"## {result['created']} — {result['model']} ({result['strategy']}, ZeRO-{result['zero_stage']}, "
             f"{result['precision']}, micro-batch {result['micro_batch']} × accumulation {result['accumulation']})",
             "", f"{result['warmup_steps']} warm-up + {result['measured_steps']} measured optimizer steps per run. "
             f"MFU: {result['formula']}.", "",
             "| workers | device | tokens/s | tokens/s/worker | samples/s | scaling eff. | padding | "
             "data / fwd / bwd / opt ms per micro-step | peak mem GiB (max worker) | model TFLOP/s | MFU |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        split = " / ".join(f"{1000 * r['step_seconds'][p]:.1f}" for p in ("data", "forward", "backward", "optimizer"))
        mfu = "n/a (no peak: pass --peak-tflops)" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
        lines.append(f"| {r['workers']} | {r['device']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s_per_worker']:.0f} | "
                     f"{r['samples_per_s']:.2f} | {r['scaling_efficiency']:.2f} | {100 * r['padding_fraction']:.1f} % | "
                     f"{split} | {r['peak_memory_gib_max_worker']:.2f} | {r['model_tflops_per_s']:.4f} | {mfu} |")
    first = result["runs"][0] if result["runs"] else {}
    if first.get("total_params"):
        lines += ["", f"Trainable parameters: {first['trainable_params']:,} of {first['total_params']:,} "
                  f"({100 * first['trainable_params'] / first['total_params']:.3g} %)"
                  + (f"; LoRA r={result['lora_r']}" if result.get("lora_r") else "; full fine-tuning")]
    if "bare_pytorch_seconds_per_sample" in result:
        ratio = result["overhead_vs_bare"]
        lines += ["", f"Bare PyTorch (one process, no Ray, no DeepSpeed): "
                  f"{1000 * result['bare_pytorch_seconds_per_sample']:.2f} ms/sample; 1-worker run / bare = "
                  f"{'n/a' if ratio is None else f'{ratio:.3f}×'}"]
    return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any], target: Path) -> dict[str, Path]:
    """Append the result as one JSON line and one Markdown block under `target`."""
    target.mkdir(parents=True, exist_ok=True)
    paths = {"json": target / "bench_train.jsonl", "markdown": target / "bench_train.md"}
    with paths["json"].open("a") as stream:
        stream.write(json.dumps(result) + "\n")
    with paths["markdown"].open("a") as stream:
        stream.write(markdown_table(result) + "\n")
    return paths
