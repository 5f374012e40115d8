"""After the sweep: pick the winner, score it once on test, export it, write the summary."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raytune_llm.config.loader import dump_config
from raytune_llm.config.schema import RunConfig
from raytune_llm.train.resume import ENGINE_DIR


@dataclass
class TrialRecord:
    """One trial as a person wants to read it in the summary."""

    trial_id: str
    params: dict[str, Any]
    status: str
    epochs_run: float  # fractional with evaluations inside epochs (a trial stopped at 1/3 epoch: 0.3333)
    best_metric: float | None
    best_epoch: float | None
    final_metric: float | None
    wall_seconds: float
    checkpoint: str | None
    error: str | None = None
    curve: list[float] = field(default_factory=list)
    curve_epochs: list[float] = field(default_factory=list)  # the epoch of each curve point (fractions too)
    tokens_per_s: float | None = None
    stop_reason: str | None = None  # why the scheduler stopped it early (promotion-based ASHA names the rank)


def scheduler_stop_reasons(run_dir: Path) -> dict[str, str]:
    """Trial id -> why the promotion-based ASHA stopped it (tune/asha.py's state file), if it ran."""
    from raytune_llm.tune.asha import STATE_FILE

    path = run_dir / STATE_FILE
    if not path.exists():
        return {}
    trials = json.loads(path.read_text()).get("trials", {})
    return {tid: t["stop_reason"] for tid, t in trials.items() if t.get("stop_reason")}


def _wall_seconds(history: Any) -> float:
    """Seconds the trial trained: summed per report, since a paused and resumed trial restarts Tune's clock."""
    if "time_this_iter_s" in history:
        return float(history["time_this_iter_s"].sum())
    return float(history["time_total_s"].max())


def _clean(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def record_trial(result: Any, cfg: RunConfig, stop_reasons: dict[str, str] | None = None) -> TrialRecord:
    """Summarise one `ray.tune.Result` (its per-epoch history, error and best checkpoint)."""
    metric, mode = cfg.tune.metric, cfg.tune.mode
    params = {k: _clean(v) for k, v in (result.config or {}).items()}
    trial_id = str((result.metrics or {}).get("trial_id") or Path(result.path).name)
    history = result.metrics_dataframe
    error = None if result.error is None else str(result.error).strip().splitlines()[-1][:300]
    if history is None or history.empty or metric not in history:
        return TrialRecord(trial_id, params, "error" if error else "no result", 0, None, None, None, 0.0, None, error)
    values = history[metric].astype(float)
    best_row = _best_kept_row(history, metric, mode)
    epochs_run = _epochs(history["epoch"].max())
    status = "error" if error else ("completed" if epochs_run >= cfg.train.epochs else "stopped early")
    return TrialRecord(
        trial_id=trial_id, params=params, status=status, epochs_run=epochs_run,
        best_metric=float(best_row[metric]), best_epoch=_epochs(best_row["epoch"]),
        final_metric=float(values.iloc[-1]), wall_seconds=_wall_seconds(history),
        checkpoint=str(best_row.get("checkpoint_path")) if best_row.get("checkpoint_path") else None,
        error=error, curve=[round(float(v), 4) for v in values],
        curve_epochs=[round(float(e), 4) for e in history["epoch"]],
        tokens_per_s=float(history["train_tokens_per_s"].mean()) if "train_tokens_per_s" in history else None,
        stop_reason=(stop_reasons or {}).get(trial_id) if status == "stopped early" else None,
    )


def _epochs(value: Any) -> float:
    """An epoch count as reported (fractions from step checkpoints), an int when whole: 3 not 3.0."""
    number = round(float(value), 4)
    return int(number) if number.is_integer() else number


def _checkpoint_exists(path: Any) -> bool:
    if not isinstance(path, str) or not path:
        return False
    import pyarrow.fs

    filesystem, inner = pyarrow.fs.FileSystem.from_uri(path) if "://" in path else (pyarrow.fs.LocalFileSystem(), path)
    return filesystem.get_file_info(inner).type != pyarrow.fs.FileType.NotFound


def _best_kept_row(history: Any, metric: str, mode: str) -> Any:
    """The best epoch whose checkpoint Ray Train kept (it keeps only the best one).

    Ties go to the later epoch; Ray's own tie-break decides which checkpoint
    survives, so we look at what is on storage rather than guess.
    """
    kept = history[[_checkpoint_exists(p) for p in history.get("checkpoint_path", [None] * len(history))]]
    rows = kept if not kept.empty else history
    ordered = rows.iloc[::-1]  # later epochs first, so idxmax/idxmin prefer them on ties
    values = ordered[metric].astype(float)
    return ordered.loc[values.idxmax() if mode == "max" else values.idxmin()]


def pick_best(records: list[TrialRecord], mode: str) -> TrialRecord:
    """The trial with the best validation metric over all its epochs."""
    scored = [r for r in records if r.best_metric is not None and r.checkpoint]
    if not scored:
        from raytune_llm.errors import TrainingError

        reasons = "; ".join(f"{r.trial_id}: {r.error or r.status}" for r in records) or "no trials ran"
        raise TrainingError(f"no trial finished an epoch with a checkpoint ({reasons})")
    return (max if mode == "max" else min)(scored, key=lambda r: r.best_metric)  # type: ignore[arg-type,return-value]


def export_model(checkpoint: str, target: Path) -> Path:
    """Copy the chosen checkpoint's `save_pretrained` folder (without its resumable state) to `target`.

    Under LoRA that folder is the adapter (+ saved head, tokenizer, raytune_llm.json); with
    `lora.merge_on_export` the merged plain model is written to `merged_path(target)` as well.
    """
    if target.exists():
        shutil.rmtree(target)
    if "://" in checkpoint:
        import pyarrow.fs

        target.mkdir(parents=True)
        pyarrow.fs.copy_files(checkpoint, str(target))
        shutil.rmtree(target / ENGINE_DIR, ignore_errors=True)
    else:
        # The engine/ folder is optimizer and ZeRO state for resuming, not part of the model.
        shutil.copytree(checkpoint, target, ignore=shutil.ignore_patterns(ENGINE_DIR))
    _merge_if_asked(target)
    return target


def merged_path(target: Path) -> Path:
    """Where `lora.merge_on_export` writes the merged model: beside the adapter, `<target>_merged`."""
    return target.with_name(target.name + "_merged")


def _merge_if_asked(target: Path) -> None:
    """A LoRA run with `lora.merge_on_export`: also write the adapter merged into its base model."""
    from raytune_llm.evaluation.model import is_adapter, model_metadata

    lora = model_metadata(target).get("config", {}).get("lora", {})
    if is_adapter(target) and lora.get("merge_on_export"):
        from raytune_llm.models.lora import merge_adapter_folder

        print(f"[export] merging the LoRA adapter into its base model: {merge_adapter_folder(target, merged_path(target))}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    return "—" if value is None else str(value)


def markdown_summary(cfg: RunConfig, records: list[TrialRecord], best: TrialRecord, test: dict[str, Any],
                     wall_seconds: float) -> str:
    """The human-readable summary: every trial, the winner, and its test scores."""
    params = sorted({k for r in records for k in r.params})
    metric = cfg.tune.metric
    head = ["trial", *params, f"best {metric}", "best epoch", "epochs run", "status", "wall s", "tokens/s"]
    lines = [f"# Sweep summary: {cfg.output.name}", "",
             f"Model `{cfg.model.name_or_path}`, data `{cfg.data.path}`, {len(records)} trials, "
             f"{cfg.train.num_workers} worker(s) per trial, ZeRO-{cfg.train.zero_stage}, "
             f"scheduler {cfg.tune.scheduler}. Wall time {wall_seconds:.0f} s.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(records, key=lambda r: -(r.best_metric or -1) if cfg.tune.mode == "max" else (r.best_metric or 1e9)):
        mark = " **(best)**" if r is best else ""
        row = [r.trial_id + mark, *(_fmt(r.params.get(p)) for p in params), _fmt(r.best_metric),
               _fmt(r.best_epoch), _fmt(r.epochs_run), r.status + (f": {r.error or r.stop_reason}" if r.error or r.stop_reason else ""),
               f"{r.wall_seconds:.0f}", _fmt(r.tokens_per_s)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"## Test split (scored once, trial {best.trial_id}, epoch {best.best_epoch})", "",
              _test_line(test), ""]
    return "\n".join(lines)


def _test_line(test: dict[str, Any]) -> str:
    if "test_entities" in test:  # token classification: entity-level scores
        types = sorted(k.split("/", 1)[1] for k in test if k.startswith("test_f1/"))
        per_type = ", ".join(f"{t} {test[f'test_f1/{t}']:.3f}" for t in types)
        return (f"- entity micro-F1 **{test['test_f1']:.4f}** (precision {test['test_precision']:.4f}, recall "
                f"{test['test_recall']:.4f}), {int(test['test_entities'])} gold entities; per type: {per_type}")
    return (f"- macro-F1 **{test['test_f1']:.4f}**, accuracy {test['test_accuracy']:.4f}, "
            f"rows {int(test['test_support'])}")


def write_trials_csv(records: list[TrialRecord], path: Path) -> Path:
    """One row per trial: every hyperparameter, the curve, stop reason, wall time and tokens/s."""
    import csv

    params = sorted({k for r in records for k in r.params})
    head = ["trial_id", *params, "status", "stop_reason", "epochs_run", "best_metric", "best_epoch",
            "final_metric", "wall_seconds", "tokens_per_s", "curve"]
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(head)
        for r in records:
            writer.writerow([r.trial_id, *(r.params.get(p) for p in params), r.status, r.error or r.stop_reason or r.status,
                             r.epochs_run, r.best_metric, r.best_epoch, r.final_metric, round(r.wall_seconds, 1),
                             None if r.tokens_per_s is None else round(r.tokens_per_s, 1),
                             " ".join(f"{v:.4f}" for v in r.curve)])
    return path


def write_summary(run_dir: Path, cfg: RunConfig, records: list[TrialRecord], best: TrialRecord,
                  best_cfg: RunConfig, test: dict[str, Any], wall_seconds: float) -> dict[str, Path]:
    """Write summary.json, summary.md, trials.csv, plots/*.png and best.yaml; return their paths."""
    from raytune_llm.tune.plots import write_plots

    paths = {"json": run_dir / "summary.json", "markdown": run_dir / "summary.md", "best_config": run_dir / "best.yaml",
             "csv": write_trials_csv(records, run_dir / "trials.csv")}
    plots = write_plots(records, cfg.tune.metric, run_dir / "plots")
    payload = {"name": cfg.output.name, "metric": cfg.tune.metric, "mode": cfg.tune.mode,
               "wall_seconds": round(wall_seconds, 1), "best_trial": best.trial_id, "best_params": best.params,
               "best_val_metric": best.best_metric, "test": test, "best_model": str(run_dir / "best_model"),
               "plots": {k: str(v) for k, v in plots.items()}, "trials": [asdict(r) for r in records]}
    paths["json"].write_text(json.dumps(payload, indent=2, default=_clean))
    markdown = markdown_summary(cfg, records, best, test, wall_seconds)
    markdown += "".join(f"\n![{name}](plots/{p.name})\n" for name, p in plots.items())
    paths["markdown"].write_text(markdown)
    dump_config(best_cfg, paths["best_config"])
    paths.update({f"plot_{k}": v for k, v in plots.items()})
    return paths
