"""`raytune-llm audit`: k-fold out-of-sample probabilities, then confident-learning label issues.

The data is read and prepared by the normal pipeline (`app.preflight` / `app.start`), each
fold's model is trained by the same Ray Train + DeepSpeed path as `raytune-llm train`
(`build_trainer` + the per-worker loop) on the other folds' rows, and its last-epoch
checkpoint scores the held-out fold in a Ray task. The last epoch, not the best by validation,
so that no fold's checkpoint choice has looked at any held-out label. Every training row gets
exactly one out-of-sample prediction (checked), and the flags come from `confident.py`.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raytune_llm.audit.confident import LabelIssues, find_label_issues
from raytune_llm.audit.folds import FoldSplits, assign_folds, write_folds
from raytune_llm.errors import ConfigError, DataError

__all__ = ["AuditResult", "held_out_probabilities", "run_audit"]


@dataclass
class AuditResult:
    """The audited rows (prepared train split, sorted by id), their OOS probabilities and the flags."""

    rows: pa.Table
    labels: list[str]
    folds: np.ndarray
    pred_probs: np.ndarray
    issues: LabelIssues
    fold_stats: list[dict[str, Any]]
    paths: dict[str, Path]
    out_dir: Path
    seconds: float


def held_out_probabilities(checkpoint: Any, held_out: str, max_length: int, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Class probabilities of a fold checkpoint on its held-out rows (ids, (n, k)); runs as a Ray task."""
    from raytune_llm.evaluation.model import load_scorer

    table = pq.read_table(held_out, columns=["id", "text"])
    with checkpoint.as_directory() as folder:
        scorer = load_scorer(folder)
        if scorer.labels != labels:
            raise DataError(f"fold checkpoint {folder} has labels {scorer.labels}, the run has {labels}")
        probs = scorer.probabilities(table.column("text").to_pylist(), max_length)
    return table.column("id").to_pylist(), probs


def _train_fold(fold: FoldSplits, cfg: Any, model_path: str, gpu: bool, storage: Path) -> tuple[Any, dict[str, Any]]:
    from raytune_llm.train.launch import build_trainer

    started = time.perf_counter()
    result = build_trainer(cfg, fold.prepared, model_path, gpu=gpu, storage=storage, name=f"fold_{fold.fold}").fit()
    if result.checkpoint is None:
        raise DataError(f"fold {fold.fold} reported no checkpoint; see {storage / f'fold_{fold.fold}'}")
    metrics = result.metrics or {}
    stats = {"fold": fold.fold, "train_rows": fold.prepared.manifest["split_rows"]["train"],
             "epochs": metrics.get("epoch"), "val_f1": metrics.get("val_f1"),
             "train_seconds": round(time.perf_counter() - started, 1)}
    return result.checkpoint, stats


def _collect(ids: list[str], scored: dict[str, np.ndarray], k: int) -> np.ndarray:
    """Stack per-row probabilities in `ids` order; every audited row must have exactly one."""
    missing = [i for i in ids if i not in scored]
    if missing or len(scored) != len(ids):
        raise DataError(f"out-of-sample predictions do not cover the training rows exactly once: "
                        f"{len(missing)} missing (e.g. {missing[:3]}), {len(scored)} scored for {len(ids)} rows")
    return np.stack([scored[i] for i in ids]).reshape(len(ids), k)


def _out_of_sample(fold_splits: list[FoldSplits], cfg: Any, model_path: str, gpu: bool, storage: Path,
                   labels: list[str], rows: pa.Table) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Train each fold, score its held-out rows in a Ray task; row id -> probabilities, and per-fold figures."""
    import ray

    score = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(held_out_probabilities)
    scored: dict[str, np.ndarray] = {}
    fold_stats = []
    for fold in fold_splits:
        checkpoint, stats = _train_fold(fold, cfg, model_path, gpu, storage)
        fold_ids, probs = ray.get(score.remote(checkpoint, fold.held_out, cfg.data.max_length, labels))
        for row_id, row in zip(fold_ids, probs):
            if row_id in scored:
                raise DataError(f"row {row_id} was scored by two folds; row ids must be unique")
            scored[row_id] = row
        # The fold's model has done its job; its checkpoints (model + optimizer state) only take disk.
        for folder in (storage / f"fold_{fold.fold}").glob("checkpoint_*"):
            shutil.rmtree(folder, ignore_errors=True)
        stats.update(held_out_rows=len(fold_ids), held_out_accuracy=_accuracy(fold_ids, probs, rows))
        fold_stats.append(stats)
        print(f"[audit] fold {fold.fold}: trained on {stats['train_rows']} rows in {stats['train_seconds']} s, "
              f"held-out accuracy vs given labels {stats['held_out_accuracy']:.4f} ({len(fold_ids)} rows)")
    return scored, fold_stats


def run_audit(config_path: str, overrides: list[str], folds: int = 5, out_dir: str | None = None,
              address: str | None = None) -> AuditResult:
    """`raytune-llm audit`: prepare, k-fold train and score, flag label issues, write the reports."""
    from raytune_llm.app import preflight, start
    from raytune_llm.audit.report import write_reports
    from raytune_llm.train.memory import plan_training

    started = time.perf_counter()
    if folds < 2:
        raise ConfigError([f"--folds must be >= 2: each row is scored by a model trained without it (got {folds})"])
    session = preflight(config_path, overrides)
    task = getattr(session.cfg.data, "task", "classification")
    if task != "classification":
        raise ConfigError([f"{config_path}: data.task: audit finds label errors of text classification "
                           f"(one label per text) (got {task!r}); set data.task=classification"])
    _, gpu, prepared = start(session, address)
    cfg = session.cfg
    out = Path(out_dir).expanduser().resolve() if out_dir else session.run_dir / "audit"
    rows = pq.read_table(prepared.splits["train"]).sort_by("id")
    ids = rows.column("id").to_pylist()
    given = rows.column("label_id").to_numpy().astype(np.int64)
    fold_of = assign_folds(ids, given.tolist(), folds, cfg.data.seed)
    # Fresh folds and fold runs every time: a fold run left from another audit would resume, not retrain.
    for stale in (out / "folds", out / "runs"):
        shutil.rmtree(stale, ignore_errors=True)
    fold_splits = write_folds(prepared, rows, fold_of, out / "folds")
    plan_training(cfg, session.model_path, len(prepared.labels), min(f.prepared.manifest["split_rows"]["train"]
                  for f in fold_splits), gpu, sweep=False)
    print(f"[audit] {len(ids)} training rows, {folds} folds (seed {cfg.data.seed}); "
          f"{cfg.train.epochs} epoch(s) per fold")
    scored, fold_stats = _out_of_sample(fold_splits, cfg, session.model_path, gpu, out / "runs", prepared.labels, rows)
    pred_probs = _collect(ids, scored, len(prepared.labels))
    issues = find_label_issues(given, pred_probs)
    result = AuditResult(rows, prepared.labels, fold_of, pred_probs, issues, fold_stats, {}, out,
                         time.perf_counter() - started)
    result.paths = write_reports(result, cfg)
    print(f"[audit] {int(issues.flagged.sum())} of {len(ids)} rows flagged as likely label errors "
          f"({result.seconds:.0f} s)")
    for name, path in result.paths.items():
        print(f"[audit]   {name:<18} {path}")
    return result


def _accuracy(fold_ids: list[str], probs: np.ndarray, rows: pa.Table) -> float:
    """Share of held-out rows whose argmax equals the given label."""
    lookup = dict(zip(rows.column("id").to_pylist(), rows.column("label_id").to_pylist()))
    gold = np.array([lookup[i] for i in fold_ids])
    return float((probs.argmax(axis=1) == gold).mean()) if len(gold) else float("nan")
