"""Checkpoints you can trust: a killed worker and an interrupted driver both resume, for real.

Real Ray Train, real DeepSpeed ZeRO-2 on CPU, 2 workers, a tiny BERT. A worker process
is killed by pid (SIGKILL); the driver is interrupted with SIGINT as Ctrl-C would. In
both cases the run finishes from its latest checkpoint and ends where an uninterrupted
run ends: the same optimizer steps and the same losses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from raytune_llm import app
from raytune_llm.data.demo import write_demo_corpus
from raytune_llm.errors import ConfigError
from tests.conftest import REPO, write_config

OVERRIDES = ["train.num_workers=2", "train.batch_size=4", "train.epochs=2", "train.checkpoint_every_steps=10",
             "train.keep_checkpoints=2"]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("resume")
    corpus = write_demo_corpus(folder / "demo.jsonl")
    return write_config(folder / "run.yaml", corpus, tiny_model_dir, folder / "runs")


@pytest.fixture(scope="module")
def reference(config: Path, local_ray: None) -> Any:
    """The same run without interruption."""
    return app.run_train(str(config), [*OVERRIDES, "output.name=reference"])["history"]


def _rows(history_file: Path) -> list[dict[str, Any]]:
    if not history_file.exists():
        return []
    return [json.loads(line) for line in history_file.read_text().splitlines() if line.strip()]


def _wait_for_rows(history_file: Path, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(_rows(history_file)) < count:
        assert time.monotonic() < deadline, f"no {count} history rows in {history_file} after {timeout} s"
        time.sleep(0.5)


def _wait_for_checkpoint(run_folder: Path, timeout: float = 300) -> None:
    """Until Ray Train's controller has registered a checkpoint (only those are resumed from).

    A worker reports a checkpoint a moment before the controller records it in the run
    snapshot; an interruption in between resumes from the checkpoint before.
    """
    snapshot = run_folder / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if json.loads(snapshot.read_text()).get("latest_checkpoint_result"):
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        assert time.monotonic() < deadline, f"no checkpoint registered in {snapshot} after {timeout} s"
        time.sleep(0.2)


def _train_workers() -> list[psutil.Process]:
    """Ray Train workers of this test's own local Ray (descendants of this process) only."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::RayTrainWorker") and any(p.pid == os.getpid() for p in proc.parents()):
            found.append(proc)
    return found


def _assert_same_end(resumed: Any, reference: Any) -> None:
    assert resumed["step"].tolist() == reference["step"].tolist(), "optimizer steps must continue, not restart"
    for column in ("train_loss", "val_loss", "val_f1"):
        np.testing.assert_allclose(resumed[column].to_numpy(), reference[column].to_numpy(), rtol=2e-3,
                                   atol=1e-6, err_msg=column)
    assert resumed["resumed_from_step"].max() > 0, "the run restarted from scratch instead of resuming"


def test_killed_worker_restarts_from_the_latest_checkpoint(config: Path, reference: Any, local_ray: None) -> None:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome.update(app.run_train(str(config), [*OVERRIDES, "train.max_failures=2", "output.name=killed"]))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread below
            outcome["error"] = exc

    # Workers of earlier runs can linger a moment before Ray reaps them: never kill those.
    earlier = {proc.pid for proc in _train_workers()}
    thread = threading.Thread(target=run)
    thread.start()
    _wait_for_checkpoint(config.parent / "runs" / "killed" / "train")
    workers = [proc for proc in _train_workers() if proc.pid not in earlier]
    assert workers, "no Ray Train worker process found to kill"
    os.kill(workers[-1].pid, signal.SIGKILL)
    thread.join(timeout=600)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    _assert_same_end(outcome["history"], reference)


@pytest.mark.slow
def test_rerunning_an_interrupted_command_resumes(config: Path, reference: Any) -> None:
    command = [sys.executable, "-m", "raytune_llm.cli", "train", str(config), *OVERRIDES, "output.name=interrupted"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history_file = config.parent / "runs" / "interrupted" / "train" / "history.jsonl"
    try:
        _wait_for_checkpoint(history_file.parent)
    finally:
        first.send_signal(signal.SIGINT)  # Ctrl-C
        first.wait(timeout=120)
    assert len(_rows(history_file)) < len(reference), "the first run finished before it was interrupted"
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming" in second.stdout
    import pandas as pd

    _assert_same_end(pd.DataFrame(_rows(history_file)), reference)


def test_resuming_with_a_changed_config_is_refused(config: Path, reference: Any) -> None:
    with pytest.raises(ConfigError, match=r"train.learning_rate: the checkpoints .* were trained with 0.003"):
        app.run_train(str(config), [*OVERRIDES, "train.learning_rate=0.001", "output.name=reference"])
