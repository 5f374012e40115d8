"""Helpers of benchmarks/gpu/run_gpu_checks.sh (the lent-GPU checks). Run from the repository root.

    make-model   a save_pretrained folder with random weights from an architecture config.json
    no-ray       `bench train`'s own worker loop (setup_worker + train_step) in one plain process:
                 no Ray, the same DeepSpeed engine, model, batches and timing; the yardstick for
                 Ray Train's overhead (`bench train --bare` times a CPU classifier without
                 DeepSpeed, which is not the same step)
    estimate     the memory planner's per-GPU estimate (train/memory.py plan_training), as JSON
    resume       `raytune-llm train`, interrupted (SIGINT) after its first registered checkpoint,
                 then the same command again; checks that optimizer steps continue
    summary      results.json + summary.md from what the steps wrote

Nothing here changes how raytune_llm trains; every figure comes from the project's own code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16}


def _write_json(path: str | Path, data: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- make-model


def make_model(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    arch = json.loads(Path(args.arch).read_text())
    if args.tiny:
        arch.update(TINY)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    # The architecture's own token ids would point outside SmolLM2's tokenizer: use the tokenizer's.
    arch.update({"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                 "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id})
    assert len(tokenizer) <= arch["vocab_size"], (len(tokenizer), arch["vocab_size"])
    (out / "config.json").write_text(json.dumps(arch, indent=2))
    config = AutoConfig.from_pretrained(out)  # transformers converts the hub file's rope keys itself
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    started = time.perf_counter()
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (Path(args.tokenizer) / name).exists():
            shutil.copy(Path(args.tokenizer) / name, out / name)
    params = sum(p.numel() for p in model.parameters())
    print(f"[make-model] {out}: {type(model).__name__}, {params:,} parameters, {args.dtype}, "
          f"random init on {device} + save in {time.perf_counter() - started:.1f} s", flush=True)
    _write_json(out / "gpu_checks_model.json", {"parameters": params, "arch": args.arch, "tiny": args.tiny,
                                                "dtype": args.dtype})


# --------------------------------------------------------------------------- no-ray


class _Context:
    """Stands in for ray.train's context: one worker, rank 0."""

    def get_world_rank(self) -> int:
        return 0

    def get_local_rank(self) -> int:
        return 0

    def get_world_size(self) -> int:
        return 1

    def get_local_world_size(self) -> int:
        return 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def no_ray(args: argparse.Namespace) -> None:
    """Run raytune_llm.bench.train.bench_loop_per_worker in this process, without Ray."""
    from raytune_llm.app import preflight
    from raytune_llm.bench.train import summarise
    from raytune_llm.config.loader import set_dotted
    from raytune_llm.train.launch import loop_config

    overrides = list(args.overrides) + ["train.num_workers=1"]
    session = preflight(args.config, overrides)
    cfg = set_dotted(session.cfg, "train.num_workers", 1)
    manifest_file = session.run_dir / "prepared" / "manifest.json"
    if not manifest_file.exists():
        raise SystemExit(f"no prepared splits at {manifest_file}: run `raytune-llm bench train` with this config first")
    manifest = json.loads(manifest_file.read_text())
    root = manifest_file.parent

    class Prepared:  # the fields of PreparedData that loop_config reads
        labels = manifest["labels"]
        splits = {s: str(root / s) for s in manifest["split_rows"]}

    import torch

    gpu = torch.cuda.is_available()
    if not gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"  # as Ray Train's worker_runtime_env does on CPU
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())})
    if gpu:
        torch.cuda.set_device(0)
    torch.distributed.init_process_group("nccl" if gpu else "gloo", rank=0, world_size=1)

    import ray.train  # the library only: no ray.init, no cluster

    reported: list[dict[str, Any]] = []
    ray.train.get_context = _Context  # type: ignore[assignment]
    ray.train.report = lambda metrics, checkpoint=None: reported.append(metrics)  # type: ignore[assignment]
    from raytune_llm.bench.train import bench_loop_per_worker

    result_path = str(Path(args.out).with_suffix(".raw.jsonl").resolve())
    config = {**loop_config(cfg, Prepared, session.model_path, gpu), "warmup_steps": args.warmup_steps,
              "measure_steps": args.steps, "history_path": None, "result_path": result_path}
    started = time.perf_counter()
    bench_loop_per_worker(config)
    raw = reported[-1]
    summary = summarise(raw, cfg.train.precision, args.peak_tflops)
    result: dict[str, Any] = {"mode": "no-ray (same worker loop, one plain process)", "config": args.config,
                              "overrides": overrides, "warmup_steps": args.warmup_steps, "measured_steps": args.steps,
                              "wall_seconds_total": time.perf_counter() - started, "run": summary}
    if args.ray_result and Path(args.ray_result).exists():
        lines = [json.loads(line) for line in Path(args.ray_result).read_text().splitlines() if line.strip()]
        ray_run = next(r for r in lines[-1]["runs"] if r["workers"] == 1)
        result["ray_run"] = ray_run
        # Time per real token under Ray Train divided by the same without Ray, minus 1.
        result["ray_overhead"] = summary["tokens_per_s"] / ray_run["tokens_per_s"] - 1.0
    _write_json(args.out, result)
    s = summary
    mfu = "n/a" if s["mfu"] is None else f"{100 * s['mfu']:.1f} %"
    print(f"[no-ray] {s['device']}: {s['tokens_per_s']:.0f} tokens/s, model TFLOP/s {s['model_tflops_per_s']:.1f}, "
          f"MFU {mfu}, peak {s['peak_memory_gib_max_worker']:.2f} GiB", flush=True)
    if "ray_overhead" in result:
        print(f"[no-ray] Ray Train run: {result['ray_run']['tokens_per_s']:.0f} tokens/s -> Ray Train overhead "
              f"{100 * result['ray_overhead']:+.2f} % (target <= 3 %)", flush=True)
    torch.distributed.destroy_process_group()


# --------------------------------------------------------------------------- estimate


def estimate(args: argparse.Namespace) -> None:
    """The planner's estimate for this config, exactly as `raytune-llm train` prints it before launch."""
    from raytune_llm.app import preflight
    from raytune_llm.train.memory import plan_training

    overrides = list(args.overrides)
    session = preflight(args.config, overrides)
    manifest = json.loads((session.run_dir / "prepared" / "manifest.json").read_text())
    import torch

    gpu = torch.cuda.is_available()
    est = plan_training(session.cfg, session.model_path, len(manifest["labels"]), manifest["split_rows"]["train"], gpu)
    if est is None:
        raise SystemExit("the planner gave no estimate")
    data = {"config": args.config, "overrides": overrides, "zero_stage": session.cfg.train.zero_stage,
            "device": "cuda" if gpu else "cpu", "params": est.params, "gradients": est.gradients,
            "optimizer": est.optimizer, "activations": est.activations, "buffers": est.buffers,
            "step_only": est.step_only, "peak": est.peak, "model_params": est.shape.params,
            "seq_len": est.seq_len, "micro_batch": session.cfg.train.batch_size}
    _write_json(args.out, data)
    print(f"[estimate] ZeRO-{data['zero_stage']}: planner peak {est.peak / 2**30:.2f} GiB per GPU", flush=True)


# --------------------------------------------------------------------------- resume


def _history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _registered(run_folder: Path) -> bool:
    try:
        return bool(json.loads((run_folder / "checkpoint_manager_snapshot.json").read_text()).get("latest_checkpoint_result"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def resume(args: argparse.Namespace) -> None:
    """First run interrupted with SIGINT (Ctrl-C) once a checkpoint is registered; then the same command."""
    from raytune_llm.config.loader import load_config

    cfg = load_config(args.config, args.overrides)
    run_dir = Path(cfg.output.dir).expanduser().resolve() / str(cfg.output.name)
    folder = run_dir / "train"
    if folder.exists():
        shutil.rmtree(folder)  # a fresh run: no checkpoints of an earlier stage to resume from
    command = [sys.executable, "-u", "-m", "raytune_llm.cli", "train", args.config, *args.overrides]
    logs = Path(args.log_prefix)
    logs.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": " ".join(command), "zero_stage": cfg.train.zero_stage,
                              "checkpoint_every_steps": cfg.train.checkpoint_every_steps}
    started = time.perf_counter()
    with open(f"{logs}.first.log", "w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + args.first_timeout
        while not _registered(folder) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        result["first_finished_before_interrupt"] = first.poll() is not None
        first.send_signal(signal.SIGINT)
        try:
            first.wait(timeout=120)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
    result["first_returncode"] = first.returncode
    result["first_seconds"] = time.perf_counter() - started
    before = _history(folder / "history.jsonl")
    result["steps_before_interrupt"] = [row.get("step") for row in before]
    print(f"[resume] ZeRO-{cfg.train.zero_stage}: first run interrupted (rc {first.returncode}) after "
          f"{result['first_seconds']:.0f} s; history steps {result['steps_before_interrupt']}", flush=True)
    started = time.perf_counter()
    second = subprocess.run(command, capture_output=True, text=True, timeout=args.second_timeout)
    Path(f"{logs}.second.log").write_text(second.stdout + second.stderr)
    result["second_returncode"] = second.returncode
    result["second_seconds"] = time.perf_counter() - started
    plain = re.sub(r"\x1b\[[0-9;]*m", "", second.stdout)
    # The worker's own line ("[train] resuming at epoch E, micro-batch M, optimizer step S") first.
    resumed_lines = sorted({line.strip() for line in plain.splitlines() if "resuming" in line},
                           key=lambda line: "resuming at" not in line)
    result["resume_lines"] = resumed_lines
    result["memory_lines"] = [line for line in plain.splitlines() if line.startswith(("[memory]", "[plan]"))]
    after = _history(folder / "history.jsonl")
    steps = [row.get("step") for row in after]
    result["steps_after_resume"] = steps
    result["resumed_from_step"] = max((row.get("resumed_from_step", 0) for row in after), default=0)
    result["val_loss"] = [row.get("val_loss") for row in after]
    result["train_loss"] = [row.get("train_loss") for row in after]
    every = cfg.train.checkpoint_every_steps
    increasing = all(b > a for a, b in zip(steps, steps[1:]))
    result["ok"] = bool(second.returncode == 0 and resumed_lines and result["resumed_from_step"] > 0 and increasing
                        and steps and (not every or all(s % every == 0 or s == steps[-1] for s in steps)))
    _write_json(args.out, result)
    print(f"[resume] ZeRO-{cfg.train.zero_stage}: second run rc {second.returncode} in {result['second_seconds']:.0f} s; "
          f"{resumed_lines[0].strip() if resumed_lines else 'NO resume line'}; steps {steps}; "
          f"{'OK' if result['ok'] else 'NOT OK'}", flush=True)


# --------------------------------------------------------------------------- summary


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _last_bench(path: Path) -> dict[str, Any] | None:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return None
    return json.loads(lines[-1]) if lines else None


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def summary(args: argparse.Namespace) -> None:
    res = Path(args.results)
    env = _load(res / "env.json") or {}
    bench = _last_bench(res / "throughput" / "bench_train.jsonl")
    no_ray_result = _load(res / "no_ray.json")
    out: dict[str, Any] = {"env": env, "throughput": bench, "no_ray": no_ray_result, "memory": {}, "resume": {}}
    lines = ["# GPU checks (benchmarks/gpu/run_gpu_checks.sh)", ""]
    if env:
        lines += [f"- GPU: {env.get('gpu')} ({env.get('gpu_memory_gib', 0):.1f} GiB), driver {env.get('driver')}",
                  f"- python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('cuda')}), ray {env.get('ray')}, "
                  f"deepspeed {env.get('deepspeed')}, transformers {env.get('transformers')}, peft {env.get('peft')}",
                  f"- bf16 8192³ matmul on this GPU: {env.get('bf16_matmul_tflops_8192', 0) or 0:.0f} TFLOP/s "
                  f"(MFU below divides by the data-sheet peak, 989.4 for H100 SXM / H200)",
                  f"- dry run (tiny model, CPU): {env.get('dry')}", ""]
    lines += ["## Throughput: `bench train`, ~1.24B Llama-3.2-1B architecture, bf16, ZeRO-2, 1 GPU, packed rows of 2,048",
              ""]
    if bench:
        run = bench["runs"][0]
        mfu = "n/a" if run["mfu"] is None else f"{100 * run['mfu']:.1f} %"
        split = " / ".join(f"{1000 * run['step_seconds'][p]:.1f}" for p in ("data", "forward", "backward", "optimizer"))
        lines += ["| set-up | tokens/s | model TFLOP/s | peak TFLOP/s used | MFU (target ≥ 40 %) | padding | "
                  "data/fwd/bwd/opt ms per micro-step | peak GiB (max_memory_allocated) | parameters |",
                  "|---|---|---|---|---|---|---|---|---|",
                  f"| Ray Train + DeepSpeed (`bench train`) | {run['tokens_per_s']:.0f} | {run['model_tflops_per_s']:.1f} | "
                  f"{run['peak_tflops_per_device']} | **{mfu}** | {100 * run['padding_fraction']:.1f} % | {split} | "
                  f"{run['peak_memory_gib_max_worker']:.2f} | {run['total_params']:,} |"]
        if no_ray_result:
            nr = no_ray_result["run"]
            nmfu = "n/a" if nr["mfu"] is None else f"{100 * nr['mfu']:.1f} %"
            nsplit = " / ".join(f"{1000 * nr['step_seconds'][p]:.1f}" for p in ("data", "forward", "backward", "optimizer"))
            lines.append(f"| same loop, no Ray (`gpu_checks.py no-ray`) | {nr['tokens_per_s']:.0f} | "
                         f"{nr['model_tflops_per_s']:.1f} | {nr['peak_tflops_per_device']} | {nmfu} | "
                         f"{100 * nr['padding_fraction']:.1f} % | {nsplit} | {nr['peak_memory_gib_max_worker']:.2f} | "
                         f"{nr['total_params']:,} |")
            if "ray_overhead" in no_ray_result:
                lines += ["", f"Ray Train overhead (time per token with Ray / without − 1): "
                          f"**{100 * no_ray_result['ray_overhead']:+.2f} %** (target ≤ 3 %)"]
        lines += ["", f"{bench['warmup_steps']} warm-up + {bench['measured_steps']} measured optimizer steps; micro-batch "
                  f"{bench['micro_batch']} × accumulation {bench['accumulation']}; overrides {bench['overrides']}", ""]
    else:
        lines += ["(no result: see b_throughput.log)", ""]
    lines += ["## Memory planner: estimate vs torch.cuda.max_memory_allocated (`bench train`, ~135M SmolLM2 "
              "architecture, bf16, 1 GPU)", "",
              "| ZeRO | planner estimate GiB (params / grads / optimizer / activations / buffers / step-only) | "
              "planner peak GiB | measured peak GiB | measured / estimate | tokens/s |", "|---|---|---|---|---|---|"]
    for stage in (2, 3):
        est = _load(res / f"estimate_z{stage}.json")
        mb = _last_bench(res / f"memory_z{stage}" / "bench_train.jsonl")
        measured = mb["runs"][0]["peak_memory_gib_max_worker"] * 2**30 if mb else None
        out["memory"][f"zero{stage}"] = {"estimate": est, "bench": mb}
        if est is None and mb is None:
            lines.append(f"| {stage} | (not run) | | | | |")
            continue
        parts = " / ".join(_gib(est[k]) for k in ("params", "gradients", "optimizer", "activations", "buffers",
                                                   "step_only")) if est else "n/a"
        ratio = f"{measured / est['peak']:.2f}" if est and measured else "n/a"
        tps = f"{mb['runs'][0]['tokens_per_s']:.0f}" if mb else "n/a"
        lines.append(f"| {stage} | {parts} | {_gib(est['peak']) if est else 'n/a'} | {_gib(measured)} | {ratio} | {tps} |")
    lines += ["", "## Checkpoint and resume (`raytune-llm train`, SIGINT after the first registered checkpoint, "
              "then the same command)", "",
              "| ZeRO | steps before interrupt | resume line | steps after resume | resumed_from_step | rc 1st/2nd | "
              "seconds 1st/2nd | OK |", "|---|---|---|---|---|---|---|---|"]
    for stage in (3, 2):
        r = _load(res / f"resume_z{stage}.json")
        out["resume"][f"zero{stage}"] = r
        if r is None:
            lines.append(f"| {stage} | (not run) | | | | | | |")
            continue
        line = (r["resume_lines"][0].strip() if r["resume_lines"] else "none").replace("|", "/")
        lines.append(f"| {stage} | {r['steps_before_interrupt']} | {line} | {r['steps_after_resume']} | "
                     f"{r['resumed_from_step']} | {r['first_returncode']}/{r['second_returncode']} | "
                     f"{r['first_seconds']:.0f}/{r['second_seconds']:.0f} | {'yes' if r['ok'] else 'NO'} |")
    steps = []
    if (res / "steps.tsv").exists():
        for row in (res / "steps.tsv").read_text().splitlines():
            name, rc, seconds, command = (row.split("\t") + ["", "", "", ""])[:4]
            steps.append({"step": name, "rc": rc, "seconds": seconds, "command": command})
    if steps:
        lines += ["", "## Steps (exit code 124: stopped by its timeout)", "", "| step | exit code | seconds | command |",
                  "|---|---|---|---|"]
        lines += [f"| {s['step']} | {s['rc']} | {s['seconds']} | `{s['command']}` |" for s in steps]
    out["steps"] = steps
    text = "\n".join(lines) + "\n"
    Path(args.markdown).write_text(text)
    _write_json(args.json, out)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-model")
    p.add_argument("--arch", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--tiny", action="store_true", help="shrink the architecture (dry run on CPU)")
    p = sub.add_parser("no-ray")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--ray-result", default=None, help="bench_train.jsonl of the Ray Train run to compare with")
    p.add_argument("--out", required=True)
    p = sub.add_parser("estimate")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", required=True)
    p = sub.add_parser("resume")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", required=True)
    p.add_argument("--log-prefix", required=True)
    p.add_argument("--first-timeout", type=float, default=150)
    p.add_argument("--second-timeout", type=float, default=170)
    p = sub.add_parser("summary")
    p.add_argument("--results", required=True)
    p.add_argument("--markdown", required=True)
    p.add_argument("--json", required=True)
    args = parser.parse_args()
    {"make-model": make_model, "no-ray": no_ray, "estimate": estimate, "resume": resume, "summary": summary}[args.command](args)


if __name__ == "__main__":
    main()
