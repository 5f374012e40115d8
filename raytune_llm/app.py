"""What each CLI command does, as plain functions (the CLI only parses arguments).

The order inside `tune` and `train` is deliberate: everything that can be
checked on the laptop (config, model path, input files) is checked before Ray
starts, so a typo costs seconds, not a cluster start-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from raytune_llm.config.loader import load_config, set_dotted
from raytune_llm.config.schema import RunConfig
from raytune_llm.data.pipeline import PreparedData, prepare
from raytune_llm.data.run_input import read_run_input
from raytune_llm.models.loading import check_model
from raytune_llm.runtime import Resources, check_fits, ensure_ray, use_gpu

DEMO_PATH = "builtin:demo"


@dataclass
class Session:
    """A run's checked inputs, ready for Ray work."""

    cfg: RunConfig
    run_dir: Path
    model_path: str
    raw: pa.Table


def preflight(config_path: str, overrides: list[str]) -> Session:
    """Load and check config, model and data; nothing here touches Ray."""
    cfg = load_config(config_path, overrides)
    run_dir = Path(cfg.output.dir).expanduser().resolve() / str(cfg.output.name)
    if cfg.data.path == DEMO_PATH:
        from raytune_llm.data.demo import write_demo_corpus

        demo = write_demo_corpus(run_dir / "demo_corpus.jsonl")
        cfg = set_dotted(cfg, "data.path", str(demo))
    model_path = check_model(cfg.model.name_or_path, cfg.model.trust_remote_code)
    raw = read_run_input(cfg.data)
    return Session(cfg, run_dir, model_path, raw)


def start(session: Session, address: str | None) -> tuple[Resources, bool, PreparedData]:
    """Connect to Ray, check the trial fits, and prepare (or reuse) the tokenized splits."""
    resources = ensure_ray(session.cfg.train, address)
    gpu = use_gpu(session.cfg.train, resources)
    check_fits(session.cfg.train, resources, gpu)
    session.run_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare(session.cfg, session.run_dir, session.model_path, raw=session.raw)
    return resources, gpu, prepared


def score_test(model_dir: str, prepared: PreparedData, gpu: bool) -> dict[str, Any]:
    """Score the chosen model once on the test split, as a Ray task (a GPU one when there are GPUs)."""
    import ray

    from raytune_llm.evaluate import score_split

    if "test" not in prepared.splits:
        return {"test_f1": float("nan"), "test_accuracy": float("nan"), "test_support": 0.0}
    task = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(score_split)
    return ray.get(task.remote(model_dir, prepared.splits["test"]))


def _plan(session: Session, prepared: PreparedData, gpu: bool, sweep: bool) -> None:
    """Print the global batch and the memory estimate; refuse a plan that cannot run (before Ray Train starts)."""
    from raytune_llm.train.memory import plan_training

    plan_training(session.cfg, session.model_path, len(prepared.labels), prepared.manifest["split_rows"]["train"],
                  gpu, sweep=sweep)


def run_prepare(config_path: str, overrides: list[str], address: str | None = None) -> PreparedData:
    """`raytune-llm prepare`: write the tokenized splits and print the data report."""
    session = preflight(config_path, overrides)
    return start(session, address)[2]


def run_tune(config_path: str, overrides: list[str], address: str | None = None) -> dict[str, Any]:
    """`raytune-llm tune`: sweep, pick by validation metric, score once on test, export."""
    from raytune_llm.tune.results import (export_model, pick_best, record_trial, scheduler_stop_reasons,
                                          write_summary)
    from raytune_llm.tune.sweep import apply_params, run_sweep

    started = time.perf_counter()
    session = preflight(config_path, overrides)
    resources, gpu, prepared = start(session, address)
    cfg = session.cfg
    _plan(session, prepared, gpu, sweep=True)
    grid = run_sweep(cfg, prepared, session.model_path, session.run_dir, resources, gpu)
    reasons = scheduler_stop_reasons(session.run_dir)
    records = [record_trial(result, cfg, reasons) for result in grid]
    best = pick_best(records, cfg.tune.mode)
    assert best.checkpoint is not None
    model_dir = export_model(best.checkpoint, session.run_dir / "best_model")
    test = score_test(str(model_dir), prepared, gpu)
    best_cfg = apply_params(cfg, best.params)
    wall = time.perf_counter() - started
    paths = write_summary(session.run_dir, cfg, records, best, best_cfg, test, wall)
    _print_outcome(best.trial_id, cfg.tune.metric, best.best_metric, test, paths, model_dir, wall)
    return {"best": best, "test": test, "paths": paths, "records": records, "run_dir": session.run_dir}


def run_train(config_path: str, overrides: list[str], address: str | None = None) -> dict[str, Any]:
    """`raytune-llm train`: one training run with the config as is (no sweep)."""
    import pandas as pd

    from raytune_llm.train.launch import build_trainer, history_path
    from raytune_llm.train.resume import check_resumable
    from raytune_llm.tune.results import TrialRecord, export_model, write_summary

    started = time.perf_counter()
    session = preflight(config_path, overrides)
    _, gpu, prepared = start(session, address)
    cfg = session.cfg
    _plan(session, prepared, gpu, sweep=False)
    # Same command, same run name: Ray Train resumes from the run's latest checkpoint.
    resumed = check_resumable(session.run_dir / "train", cfg.model_dump(mode="json"))
    if resumed:
        print(f"[train] {session.run_dir / 'train'} has checkpoints up to optimizer step {resumed}: resuming")
    result = build_trainer(cfg, prepared, session.model_path, gpu=gpu, storage=session.run_dir, name="train").fit()
    history = pd.read_json(history_path(session.run_dir, "train"), lines=True)
    pick = max if cfg.tune.mode == "max" else min
    checkpoint, metrics = pick(result.best_checkpoints, key=lambda pair: float(pair[1][cfg.tune.metric]))
    record = TrialRecord("train", {}, "completed", int(history["epoch"].max()), float(metrics[cfg.tune.metric]),
                         int(metrics["epoch"]), float(history[cfg.tune.metric].iloc[-1]),
                         time.perf_counter() - started, checkpoint.path,
                         curve=[round(float(v), 4) for v in history[cfg.tune.metric]])
    model_dir = export_model(checkpoint.path, session.run_dir / "best_model")
    test = score_test(str(model_dir), prepared, gpu)
    wall = time.perf_counter() - started
    paths = write_summary(session.run_dir, cfg, [record], record, cfg, test, wall)
    _print_outcome("train", cfg.tune.metric, record.best_metric, test, paths, model_dir, wall)
    return {"best": record, "test": test, "paths": paths, "records": [record], "run_dir": session.run_dir,
            "history": history}


_AUTO_BY_TASK = {"CAUSAL_LM": "AutoModelForCausalLM", "TOKEN_CLS": "AutoModelForTokenClassification",
                 "SEQ_CLS": "AutoModelForSequenceClassification"}


def _auto_class(model_dir: Path) -> str:
    """The transformers Auto class that loads the export: from its architecture, or the adapter's task type."""
    import json

    adapter, config = model_dir / "adapter_config.json", model_dir / "config.json"
    if adapter.is_file():
        return _AUTO_BY_TASK.get(str(json.loads(adapter.read_text()).get("task_type")), "AutoModel")
    architectures = json.loads(config.read_text()).get("architectures") or [""] if config.is_file() else [""]
    for suffix, task in (("ForCausalLM", "CAUSAL_LM"), ("ForTokenClassification", "TOKEN_CLS"),
                         ("ForSequenceClassification", "SEQ_CLS")):
        if architectures[0].endswith(suffix):
            return _AUTO_BY_TASK[task]
    return "AutoModel"


def _print_outcome(trial: str, metric: str, value: float | None, test: dict[str, Any], paths: dict[str, Path],
                   model_dir: Path, wall: float) -> None:
    print()
    score = "entity micro-F1" if "test_entities" in test else "macro-F1"
    print(f"[done] best trial {trial}: {metric}={value:.4f}; test {score}={test['test_f1']:.4f} "
          f"accuracy={test['test_accuracy']:.4f} (scored once)")
    print(f"[done] summary:    {paths['markdown']}  (and {paths['json'].name})")
    auto = _auto_class(model_dir)
    if (model_dir / "adapter_config.json").is_file():  # LoRA: the export is the adapter (+ head)
        print(f"[done] best model: {model_dir}  (LoRA adapter: peft AutoPeft{auto.removeprefix('Auto')}"
              ".from_pretrained loads it on its base model)")
        from raytune_llm.tune.results import merged_path

        if merged_path(model_dir).is_dir():
            print(f"[done] merged:     {merged_path(model_dir)}  (plain transformers: {auto}.from_pretrained)")
    else:
        print(f"[done] best model: {model_dir}  (plain transformers: {auto}.from_pretrained)")
    print(f"[done] best config: {paths['best_config']}")
    print(f"[done] wall time {wall:.0f} s")
