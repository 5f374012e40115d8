"""Bad input fails fast, before Ray starts, with the file/field and the fix in one message.

File-level problems always do; row-level ones (an empty label, undecodable bytes) are
quarantined by default and fail like this only with `data.strict=true`, given here as an
override exactly as a user would (`--strict` maps to it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_config


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raytune_llm.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in: {result.stderr}"
    assert "Started a local Ray instance" not in result.stdout + result.stderr, "must fail before any Ray work"


@pytest.fixture()
def good_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(f'{{"text": "row {i}", "label": "{"ab"[i % 2]}"}}\n' for i in range(20)))
    return path


def test_missing_data_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "nope.jsonl", tiny_model_dir, tmp_path / "runs")
    _assert_user_error(_cli("train", str(config), cwd=tmp_path), "nope.jsonl", "data.path")


def test_missing_column(tmp_path: Path, tiny_model_dir: Path, good_jsonl: Path) -> None:
    config = write_config(tmp_path / "c.yaml", good_jsonl, tiny_model_dir, tmp_path / "runs")
    _assert_user_error(_cli("train", str(config), "data.text_column=sentence", cwd=tmp_path),
                       "sentence", "data.text_column", "data.jsonl")


def test_strict_empty_label_names_the_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,label\nfine,a\nnot labelled,\nalso fine,b\n")
    config = write_config(tmp_path / "c.yaml", path, tiny_model_dir, tmp_path / "runs")
    _assert_user_error(_cli("train", str(config), "data.strict=true", cwd=tmp_path),
                       "data.strict=true and 1 row(s)", "data.csv:3: label", "empty or missing label")


def test_strict_wrong_encoding_suggests_one(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes("Café sales rose@positive\nProfit fell@negative\n".encode("latin-1"))
    config = write_config(tmp_path / "c.yaml", path, tiny_model_dir, tmp_path / "runs")
    _assert_user_error(_cli("train", str(config), "data.strict=true", cwd=tmp_path),
                       "data.txt:1", "data.encoding=latin-1")


def test_every_row_quarantined_fails_before_ray(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    config = write_config(tmp_path / "c.yaml", path, tiny_model_dir, tmp_path / "runs")
    _assert_user_error(_cli("train", str(config), "data.labels=[pos,neg]", cwd=tmp_path),
                       "no usable rows", "all 2 were quarantined", "data.jsonl:1: label: 'x'")


def test_model_path_that_does_not_exist(tmp_path: Path, good_jsonl: Path) -> None:
    config = write_config(tmp_path / "c.yaml", good_jsonl, "./models/missing-model", tmp_path / "runs")
    _assert_user_error(_cli("train", str(config), cwd=tmp_path), "./models/missing-model", "model.name_or_path")


def test_bad_config_reports_every_problem(tmp_path: Path, good_jsonl: Path, tiny_model_dir: Path) -> None:
    config = write_config(tmp_path / "c.yaml", good_jsonl, tiny_model_dir, tmp_path / "runs")
    result = _cli("tune", str(config), "train.learnig_rate=0.1", "train.zero_stage=5", cwd=tmp_path)
    _assert_user_error(result, "train.learnig_rate", "did you mean 'learning_rate'", "train.zero_stage", "(got 5)")


def test_validate_command_exit_codes(tmp_path: Path, good_jsonl: Path, tiny_model_dir: Path) -> None:
    config = write_config(tmp_path / "c.yaml", good_jsonl, tiny_model_dir, tmp_path / "runs")
    ok = _cli("validate", str(config), cwd=tmp_path)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("epochs: 2", "epochs: -1"))
    failed = _cli("validate", str(config), str(bad), cwd=tmp_path)
    assert failed.returncode == 1 and "FAIL" in failed.stdout and "train.epochs" in failed.stdout
