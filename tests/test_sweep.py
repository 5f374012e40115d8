"""Sweeps: searchers and schedulers through real Ray Tune + Train, failing trials, sweep outputs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from raytune_llm import app
from raytune_llm.config.loader import load_config
from raytune_llm.data.demo import write_demo_corpus
from raytune_llm.errors import ConfigError
from tests.conftest import write_config


def _config(tmp_path: Path, tiny_model_dir: Path, space: str) -> Path:
    corpus = write_demo_corpus(tmp_path / "demo.jsonl")
    config = write_config(tmp_path / "run.yaml", corpus, tiny_model_dir, tmp_path / "runs")
    text = config.read_text().replace("""  search_space:
    train.learning_rate: {type: grid, values: [0.003]}
""", space)
    config.write_text(text)
    return config


def test_optuna_suggestions_are_seeded(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Two Optuna searchers with the same seed suggest the same points; another seed does not."""
    from raytune_llm.tune.space import build_param_space
    from raytune_llm.tune.sweep import _search_alg

    space = """  search: optuna
  search_space:
    train.learning_rate: {type: loguniform, low: 1.0e-5, high: 1.0e-2}
    train.batch_size: {type: choice, values: [4, 8, 16]}
"""
    config = _config(tmp_path, tiny_model_dir, space)

    def suggestions(seed: int) -> list[dict]:
        cfg = load_config(config, [f"tune.seed={seed}", "tune.num_samples=6"])
        searcher = _search_alg(cfg, 1)
        searcher.set_search_properties("val_f1", "max", build_param_space(cfg.tune, {"train.batch_size"}))
        points = []
        for i in range(3):
            points.append(searcher.suggest(f"t{i}"))
            searcher.on_trial_complete(f"t{i}", {"val_f1": 0.5 + 0.1 * i})
        return points

    first, again, other = suggestions(1), suggestions(1), suggestions(2)
    assert first == again
    assert first != other


def test_searcher_and_space_mismatch_is_a_config_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = _config(tmp_path, tiny_model_dir, """  search: optuna
  search_space:
    train.learning_rate: {type: grid, values: [0.001, 0.003]}
""")
    with pytest.raises(ConfigError, match="optuna.*grid"):
        load_config(config)
    with pytest.raises(ConfigError, match="search 'grid' needs every dimension"):
        load_config(config, ["tune.search=grid", "tune.search_space={train.learning_rate: {type: loguniform, low: 0.001, high: 0.01}}"])


@pytest.mark.usefixtures("local_ray")
def test_optuna_with_hyperband_runs_and_writes_reports(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = _config(tmp_path, tiny_model_dir, """  search: optuna
  scheduler: hyperband
  num_samples: 2
  tracking: [tensorboard, mlflow]
  search_space:
    train.learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
""")
    out = app.run_tune(str(config), ["train.epochs=2"])
    summary = json.loads(out["paths"]["json"].read_text())
    assert len(summary["trials"]) == 2
    lrs = {t["params"]["train.learning_rate"] for t in summary["trials"]}
    assert len(lrs) == 2 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    with out["paths"]["csv"].open() as stream:
        rows = list(csv.DictReader(stream))
    assert {r["trial_id"] for r in rows} == {t["trial_id"] for t in summary["trials"]}
    assert all(float(r["tokens_per_s"]) > 0 and r["curve"] for r in rows)
    # Tracking: TensorBoard event files per trial, and one MLflow run per trial with the metric logged.
    assert len(list((out["run_dir"] / "tune").glob("*/events.out.tfevents.*"))) == 2
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{(out['run_dir'] / 'mlflow.db').resolve()}")
    runs = mlflow.search_runs(experiment_names=["test"])
    assert len(runs) == 2 and runs["metrics.val_f1"].notna().all()
    for name in ("metric_vs_lr", "learning_curves"):
        png = Path(summary["plots"][name])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"plots/{png.name}" in out["paths"]["markdown"].read_text()


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_promotion_asha_pauses_at_the_rung_and_resumes_only_the_top_trials(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Four configurations, rung at half an epoch, keep 1/2: every trial pauses exactly at the rung;
    only trials ranked in the top half of what the rung held are resumed, from their rung checkpoint,
    and a paused-then-resumed trial trains exactly as the same configuration does uninterrupted
    (dropout on, so a resume that loses the RNG state or the train/eval mode shows)."""
    dropout_model = tmp_path / "tiny_dropout"
    shutil.copytree(tiny_model_dir, dropout_model)
    model_config = json.loads((dropout_model / "config.json").read_text())
    model_config.update(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    (dropout_model / "config.json").write_text(json.dumps(model_config))
    config = _config(tmp_path, dropout_model, """  search: grid
  scheduler: asha
  grace_period: 0.5
  reduction_factor: 2
  max_concurrent_trials: 2
  search_space:
    train.learning_rate: {type: grid, values: [0.00001, 0.0003, 0.003, 0.01]}
""")
    out = app.run_tune(str(config), ["train.epochs=1", "train.evaluations_per_epoch=2"])
    records = {r.trial_id: r for r in out["records"]}
    state = json.loads((out["run_dir"] / "asha_state.json").read_text())["trials"]
    assert set(state) == set(records) and len(records) == 4
    rung0 = sorted(records, key=lambda t: -state[t]["values"]["0"])  # every trial has a rung-0 result
    finished = [t for t in records if records[t].epochs_run == 1]
    stopped = [t for t in records if t not in finished]
    assert 1 <= len(finished) < 4 and rung0[0] in finished
    for tid in stopped:  # paused exactly at the rung, then stopped with the rank as the reason
        assert records[tid].epochs_run == pytest.approx(0.5, abs=0.05) and records[tid].status == "stopped early"
        assert "rank" in (records[tid].stop_reason or "") and "rank" in state[tid]["stop_reason"]
    with out["paths"]["csv"].open() as stream:
        reasons = {r["trial_id"]: r["stop_reason"] for r in csv.DictReader(stream)}
    assert all("stopped by ASHA" in reasons[t] for t in stopped)
    assert len((out["run_dir"] / "tokenize_passes.jsonl").read_text().splitlines()) == 1

    def history(folder: Path) -> list[dict]:
        return [json.loads(line) for line in folder.read_text().splitlines()]

    resumed = history(next((out["run_dir"] / "trials").glob(f"*{rung0[0]}*/history.jsonl")))
    assert [r["epoch"] for r in resumed] == [pytest.approx(0.5, abs=0.05), 1.0]  # nothing trained twice
    assert resumed[-1]["resumed_from_step"] > 0  # the second half continued from the rung checkpoint
    lr = records[rung0[0]].params["train.learning_rate"]
    alone = app.run_train(str(config), ["train.epochs=1", "train.evaluations_per_epoch=2",
                                        f"train.learning_rate={lr}", "output.name=alone"])
    for key in ("train_loss", "val_loss", "val_f1"):
        assert [r[key] for r in resumed] == pytest.approx(alone["history"][key].tolist(), rel=1e-5), key


@pytest.mark.usefixtures("local_ray")
def test_a_failing_trial_is_recorded_and_does_not_sink_the_sweep(tmp_path: Path, tiny_model_dir: Path) -> None:
    # 4096 rows per global batch is more than the demo's training split: that trial fails at start-up.
    config = _config(tmp_path, tiny_model_dir, """  search: grid
  scheduler: fifo
  search_space:
    train.batch_size: {type: choice, values: [8, 4096]}
""")
    out = app.run_tune(str(config), ["train.epochs=1"])
    by_batch = {r.params["train.batch_size"]: r for r in out["records"]}
    assert set(by_batch) == {8, 4096}
    assert by_batch[4096].status == "error" and "fewer than one global batch" in (by_batch[4096].error or "")
    assert by_batch[8].status == "completed" and out["best"] is by_batch[8]
    with out["paths"]["csv"].open() as stream:
        failed = [r for r in csv.DictReader(stream) if r["train.batch_size"] == "4096"]
    assert failed and "fewer than one global batch" in failed[0]["stop_reason"]


def _interrupt_when(sweep: subprocess.Popen[bytes], ready: Callable[[], bool], timeout_s: float = 400) -> None:
    """Ctrl-C the running sweep command as soon as `ready()` holds (failing if it ends or times out first)."""
    import signal
    import time

    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            assert sweep.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "the sweep did not reach the interruption point in time"
            time.sleep(0.5)
    finally:
        sweep.send_signal(signal.SIGINT)
        sweep.wait(timeout=120)


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Ctrl-C in the middle of a sweep, then the same command: finished trials stay as they were,
    the interrupted one continues from its latest checkpoint."""
    import os
    import sys

    from tests.conftest import REPO

    config = _config(tmp_path, tiny_model_dir, """  search: grid
  scheduler: fifo
  search_space:
    train.learning_rate: {type: grid, values: [0.003, 0.001]}
""")
    command = [sys.executable, "-m", "raytune_llm.cli", "tune", str(config), "train.epochs=3",
               "train.checkpoint_every_steps=10", "tune.max_concurrent_trials=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    trials = tmp_path / "runs" / "test" / "trials"
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def histories() -> list[Path]:
        return sorted(trials.glob("*/history.jsonl"))

    def snapshot_has_checkpoint(folder: Path) -> bool:
        try:
            return bool(json.loads((folder / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return False

    # Wait until the first trial finished (3 epoch rows) and the second has a registered checkpoint.
    _interrupt_when(first, lambda: len(histories()) == 2 and snapshot_has_checkpoint(histories()[1].parent) and any(
        sum(1 for r in h.read_text().splitlines() if '"epoch": 3.0' in r) for h in histories()))
    finished = next(h for h in histories() if '"epoch": 3.0' in h.read_text())
    before = finished.read_text()
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming the sweep" in second.stdout
    assert finished.read_text() == before, "a finished trial was trained again"
    resumed = next(h for h in histories() if h != finished)
    rows = [json.loads(line) for line in resumed.read_text().splitlines()]
    assert rows[-1]["epoch"] == 3.0 and max(r["resumed_from_step"] for r in rows) > 0
    assert len(json.loads((tmp_path / "runs" / "test" / "summary.json").read_text())["trials"]) == 2


@pytest.mark.slow
def test_interrupted_asha_sweep_keeps_its_rungs_and_paused_trials_on_resume(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Ctrl-C while ASHA holds a paused trial, then the same command: the rung results survive, a
    trial paused without promotion is not trained on, and every trial ends up either promoted to the
    end or stopped at its rung."""
    import os
    import sys

    from tests.conftest import REPO

    # Optuna behind the scheduler's slot gate: its state is saved and restored through the gate too.
    config = _config(tmp_path, tiny_model_dir, """  search: optuna
  scheduler: asha
  num_samples: 4
  grace_period: 1
  reduction_factor: 2
  search_space:
    train.learning_rate: {type: loguniform, low: 1.0e-5, high: 1.0e-2}
""")
    command = [sys.executable, "-m", "raytune_llm.cli", "tune", str(config), "train.epochs=2",
               "tune.max_concurrent_trials=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    state_file = tmp_path / "runs" / "test" / "asha_state.json"

    def state() -> dict:
        try:
            return json.loads(state_file.read_text())["trials"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return {}

    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Two rung results: one trial paused at the rung, the better one promoted.
    _interrupt_when(first, lambda: sum(1 for t in state().values() if t["values"]) >= 2)
    before = state()
    paused = [tid for tid, t in before.items() if t["paused"]]
    assert paused, before
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming the sweep" in second.stdout
    after = state()
    assert len(after) == 4 and all(t["done"] for t in after.values())
    for tid, t in before.items():
        if t["values"]:
            assert after[tid]["values"]["0"] == t["values"]["0"], "a rung result was lost or retrained"
    for tid, t in after.items():
        history = next((tmp_path / "runs" / "test" / "trials").glob(f"*{tid}*/history.jsonl"))
        epochs = [json.loads(line)["epoch"] for line in history.read_text().splitlines()]
        # Trained past the rung exactly when promoted from it; never a row twice.
        assert epochs == ([1.0, 2.0] if t["allowed"] >= 1 else [1.0]), (tid, t, epochs)
        assert (t["stop_reason"] is None) == (t["allowed"] >= 1)
    assert len(json.loads((tmp_path / "runs" / "test" / "summary.json").read_text())["trials"]) == 4


def test_pbt_and_fractional_epoch_settings_are_checked(tmp_path: Path, tiny_model_dir: Path) -> None:
    """PBT needs something it may mutate, more epochs than its interval, and no Optuna; fractions are fine."""
    from raytune_llm.train.loop import evaluation_marks

    config = _config(tmp_path, tiny_model_dir, """  scheduler: pbt
  perturbation_interval: 0.5
  grace_period: 0.33
  search_space:
    train.learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
    train.batch_size: {type: choice, values: [4, 8]}
""")
    cfg = load_config(config)
    assert cfg.tune.perturbation_interval == 0.5 and cfg.tune.grace_period == 0.33
    with pytest.raises(ConfigError, match="pbt.*needs at least one of train.learning_rate"):
        load_config(config, ["tune.search_space={train.batch_size: {type: choice, values: [4, 8]}}"])
    with pytest.raises(ConfigError, match="perturbation_interval=2 epochs, but train.epochs is 2"):
        load_config(config, ["tune.perturbation_interval=2"])
    with pytest.raises(ConfigError, match="pbt.*Optuna"):
        load_config(config, ["tune.search=optuna"])
    with pytest.raises(ConfigError, match="grace_period"):
        load_config(config, ["tune.grace_period=0"])
    # Evaluations at ceil(k/N) of an epoch's optimizer steps: never before k/N, whatever the batch size.
    assert sorted(evaluation_marks(98, 3)) == [33, 66] and sorted(evaluation_marks(49, 3)) == [17, 33]
    assert evaluation_marks(10, 1) == set()


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_pbt_continues_a_weak_trial_from_a_strong_trials_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A real PBT sweep: the weak trial (tiny LR) is exploited, continues from the donor's step and
    weights under its mutated LR in a new Train run, and the sweep still picks, scores and exports."""
    config = _config(tmp_path, tiny_model_dir, """  search: grid
  scheduler: pbt
  perturbation_interval: 0.5
  search_space:
    train.learning_rate: {type: grid, values: [0.003, 0.00001]}
""")
    out = app.run_tune(str(config), ["train.epochs=3", "train.evaluations_per_epoch=2", "tune.max_concurrent_trials=2"])
    runs = out["run_dir"] / "trials"

    def history(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # Tune's per-trial results (its record rewinds to a restored checkpoint, so the Train runs'
    # history.jsonl files hold the complete curves).
    results = {}
    for result in (out["run_dir"] / "tune").glob("*/result.json"):
        rows = history(result)
        results[rows[0]["trial_id"]] = rows
    assert len(results) == 2
    cloned = [(trial, r) for trial, rows in results.items() for r in rows if r["pbt_origin_trial"] not in ("", trial)]
    assert cloned, "PBT never exploited a trial"
    trial, row = cloned[0]
    donor, donor_step = row["pbt_origin_trial"], row["pbt_origin_step"]
    assert donor in results and donor_step > 0
    # The workers started at the donor's optimizer step, from a checkpoint the donor reported...
    assert row["resumed_from_step"] == donor_step < row["step"]
    assert donor_step in {r["step"] for run in runs.glob(f"_trial_{donor}*/history.jsonl") for r in history(run)}
    # ...in a new Train run (not a resume of the trial's own run, which Train V2 would do by name)...
    clone_runs = [history(run) for run in runs.glob(f"_trial_{trial}_from_*/history.jsonl")]
    assert any(rows[0]["resumed_from_step"] == donor_step for rows in clone_runs)
    # ...with the donor's weights: better than the trial's own run ever got, to the end. (Not "still
    # learning": PBT's unseeded explore may shift the clone's LR to 1e-5, where the loss stands still.)
    own = history(runs / f"_trial_{trial}" / "history.jsonl")
    assert row["val_loss"] < min(r["val_loss"] for r in own)
    assert results[trial][-1]["epoch"] == 3.0
    assert results[trial][-1]["train_loss"] < own[0]["train_loss"]
    assert out["best"].checkpoint and 0.0 <= out["test"]["test_f1"] <= 1.0
