"""`raytune-llm submit` and `raytune-llm jobs` against a real Ray head with token authentication.

One head for the module (`ray start --head` on loopback, 4 CPUs, RAY_AUTH_MODE=token), reached
only over HTTP through the Ray Jobs API, never through `ray.init` in this process. The pure
pre-flight pieces (path visibility, upload size, resource fit) are tested without it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raytune_llm.cluster.cli import main
from raytune_llm.cluster.connection import NodeInfo
from raytune_llm.cluster.preflight import PathPolicy, check_input_path, check_output_dir, check_resources, check_upload
from raytune_llm.cluster.specs import node_groups
from raytune_llm.cluster.workdir import plan_upload
from raytune_llm.config.schema import TrainConfig
from raytune_llm.data.demo import write_demo_corpus
from tests.conftest import REPO, write_config
from tests.ray_head import LocalHead, start_head

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def head() -> Iterator[LocalHead]:
    """A 4-CPU, 0-GPU head that requires a token."""
    running = start_head(num_cpus=4, token=secrets.token_hex(16))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ambient cluster address or token: each test says which it uses."""
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ray/auth_token either


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A working dir with the demo corpus and a 1-worker config on the tiny model (epochs set per job)."""
    root = tmp_path_factory.mktemp("project")
    write_demo_corpus(root / "data" / "demo.jsonl")
    write_config(root / "run.yaml", "data/demo.jsonl", tiny_model_dir, root / "runs")
    return root


def token_file(head: LocalHead, folder: Path) -> str:
    path = folder / "token"
    path.write_text(head.token or "")
    return str(path)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the cluster CLI in-process; return its exit code and everything it printed."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --------------------------------------------------------------------------- against the head


def test_token_is_required_and_never_printed(head: LocalHead, capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = cli(capsys, "jobs", "list", "--address", head.address)
    assert code == 2 and "requires token authentication" in out and "--token-file" in out
    (tmp_path / "wrong").write_text("not-the-token")
    code, out = cli(capsys, "jobs", "list", "--address", head.address, "--token-file", str(tmp_path / "wrong"))
    assert code == 2 and "rejected the token" in out and "not-the-token" not in out
    # The token from the environment, the address from the flag (RAY_ADDRESS must not override it).
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token or "")
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")
    code, out = cli(capsys, "jobs", "list", "--address", head.address)
    assert code == 0 and "SUBMISSION ID" in out
    assert head.token not in out


def test_train_job_prepares_trains_and_succeeds(head: LocalHead, project: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    auth = ["--address", head.address, "--token-file", token_file(head, project.parent)]
    env_secret = f"hf-{secrets.token_hex(8)}"
    code, out = cli(capsys, "submit", *auth, "--follow", "--env", f"HF_TOKEN={env_secret}",
                    "--submission-id", "t-train", "run.yaml", "--", "train", "train.epochs=1")
    assert code == 0, out
    assert "command   python -m raytune_llm.cli train run.yaml train.epochs=1" in out
    assert "HF_TOKEN=****" in out and env_secret not in out
    assert "[done] best trial train" in out and "t-train: SUCCEEDED" in out
    # Written by the job on the cluster, which is this machine: it prepared, trained and exported.
    run_dir = project / "runs" / "test"
    assert (run_dir / "prepared" / "manifest.json").is_file()
    assert json.loads((run_dir / "summary.json").read_text())
    assert (run_dir / "best_model" / "config.json").is_file()

    code, out = cli(capsys, "jobs", "list", *auth)
    assert code == 0
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:] if line.strip()}
    assert rows["t-train"] == "SUCCEEDED"
    code, out = cli(capsys, "jobs", "status", "t-train", *auth)
    assert code == 0 and "t-train: SUCCEEDED" in out
    code, out = cli(capsys, "jobs", "logs", "t-train", *auth)
    assert code == 0 and "[done] best trial train" in out
    assert head.token not in out


def test_a_long_job_can_be_stopped(head: LocalHead, project: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from raytune_llm.cluster.auth import Token
    from raytune_llm.cluster.connection import Cluster
    from raytune_llm.cluster.jobs import wait_for_status

    monkeypatch.chdir(project)
    auth = ["--address", head.address, "--token-file", token_file(head, project.parent)]
    code, out = cli(capsys, "submit", *auth, "--submission-id", "t-long", "run.yaml", "--",
                    "train", "train.epochs=500", "output.name=long")
    assert code == 0 and "submitted t-long" in out
    cluster = Cluster(head.address, Token(head.token or "", "test"))
    assert wait_for_status(cluster, "t-long", ("RUNNING",), timeout_s=60) == "RUNNING"
    code, out = cli(capsys, "jobs", "stop", "t-long", *auth)
    assert code == 0 and "t-long: STOPPED" in out
    code, out = cli(capsys, "jobs", "logs", "t-long", "--follow", *auth)
    assert code == 1  # following a stopped job reports it did not succeed


def test_too_many_gpus_is_refused_before_submission(head: LocalHead, project: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    auth = ["--address", head.address, "--token-file", token_file(head, project.parent)]
    _, before = cli(capsys, "jobs", "list", *auth)
    code, out = cli(capsys, "submit", *auth, "run.yaml", "--", "train", "train.use_gpu=true", "train.num_workers=2")
    assert code == 2
    assert "nothing was submitted" in out
    assert "train.num_workers: one trial needs 2 workers x (1 GPU and 1 CPU)" in out
    assert "can place 0: 1 alive node(s): 4 CPU, 0 GPU" in out
    assert "fix: set train.use_gpu=false" in out
    _, after = cli(capsys, "jobs", "list", *auth)
    assert len(after.splitlines()) == len(before.splitlines())  # no new job


# --------------------------------------------------------------------------- pre-flight pieces


def test_local_paths_must_be_visible_to_a_remote_cluster(tmp_path: Path) -> None:
    (tmp_path / "wd" / "data").mkdir(parents=True)
    (tmp_path / "wd" / "data" / "a.jsonl").write_text("{}\n")
    (tmp_path / "elsewhere.jsonl").write_text("{}\n")
    plan = plan_upload(tmp_path / "wd")
    remote = PathPolicy(plan, cluster_paths=("/mnt/shared",))
    cwd = tmp_path / "wd"
    assert check_input_path("data.path", "data/a.jsonl", remote, cwd) == ("data/a.jsonl", [])
    assert check_input_path("data.path", str(cwd / "data" / "*.jsonl"), remote, cwd) == ("data/*.jsonl", [])
    for fine in ("s3://bucket/a.jsonl", "gs://bucket/a.jsonl", "/mnt/shared/a.jsonl", "builtin:demo"):
        assert check_input_path("data.path", fine, remote, cwd) == (None, [])
    assert check_input_path("model.name_or_path", "bert-base-uncased", remote, cwd, hub_ids=True) == (None, [])
    _, findings = check_input_path("data.path", str(tmp_path / "elsewhere.jsonl"), remote, cwd)
    assert "is a local path the cluster cannot see" in findings[0].message and "--cluster-path" in findings[0].fix
    _, findings = check_input_path("data.path", "data/missing.jsonl", remote, cwd)
    assert "does not exist" in findings[0].message
    same = PathPolicy(plan, same_machine=True)
    elsewhere = str(tmp_path / "elsewhere.jsonl")
    assert check_input_path("data.path", elsewhere, same, cwd)[0] == elsewhere
    assert check_output_dir("/mnt/shared/runs", remote, cwd) == (None, [])
    assert "not declared as shared storage" in check_output_dir("runs", remote, cwd)[1][0].message
    assert check_output_dir("runs", same, cwd)[0] == str(cwd / "runs")


def test_upload_excludes_envs_and_large_files_and_respects_the_limit(tmp_path: Path) -> None:
    for folder in (".venv/lib", ".git", "runs/x", "src"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "f.py").write_text("x = 1\n")
    with open(tmp_path / "src" / "big.bin", "wb") as sink:  # sparse: costs no disk
        sink.truncate(60 * 1024**2)
    plan = plan_upload(tmp_path)
    assert plan.files == 1 and plan.large_files == [("src/big.bin", 60 * 1024**2)]
    assert "/src/big.bin" in plan.excludes and not plan.includes(tmp_path / "src" / "big.bin")
    assert not plan.includes(tmp_path / ".venv" / "lib" / "f.py") and plan.includes(tmp_path / "src" / "f.py")
    assert check_upload(plan) == []
    with open(tmp_path / "src" / "huge.bin", "wb") as sink:
        sink.truncate(150 * 1024**2)
    findings = check_upload(plan_upload(tmp_path, max_file_mb=1000))
    assert "over Ray's limit of 100.0 MiB" in findings[0].message and "src" in findings[0].message


def test_resource_fit_uses_alive_nodes_and_declared_groups() -> None:
    head_only = [NodeInfo("h", "10.0.0.1", True, cpus=8, gpus=0)]
    gpu_train = TrainConfig(num_workers=16, use_gpu=True, cpus_per_worker=8)
    gpu, findings = check_resources(gpu_train, head_only, [], "http://head:8265")
    assert gpu and "--cluster-file" in findings[0].fix
    groups = node_groups([REPO / "clusters" / "aws-gpu.yaml"])  # 4 x 8 A100 + 2 x 8 H100 at max
    assert check_resources(gpu_train, head_only, groups, "x") == (True, [])
    _, findings = check_resources(TrainConfig(num_workers=64, use_gpu=True), head_only, groups, "x")
    assert "can place 48" in findings[0].message and "lower train.num_workers to 48" in findings[0].fix
    gpu, findings = check_resources(TrainConfig(num_workers=2, use_gpu="auto"), head_only, [], "x")
    assert not gpu and findings == []
    if "min_workers" in TrainConfig.model_fields:  # elastic: starting with min_workers is enough
        elastic = TrainConfig(num_workers=16, min_workers=4, strategy="ddp", use_gpu="auto")
        assert check_resources(elastic, head_only, [], "x") == (False, [])
        _, findings = check_resources(elastic.model_copy(update={"min_workers": 9}), head_only, [], "x")
        assert findings[0].where == "train.min_workers" and "at least 9 workers" in findings[0].message


def test_address_and_token_resolution(tmp_path: Path) -> None:
    from raytune_llm.cluster.auth import AuthError, Token, mask, resolve_token
    from raytune_llm.cluster.connection import ClusterError, resolve_address

    assert resolve_address("head:8265", {"RAY_ADDRESS": "http://other:8265"}) == "http://head:8265"
    assert resolve_address(None, {"RAY_API_SERVER_ADDRESS": "http://a:8265/", "RAY_ADDRESS": "b:6379"}) == "http://a:8265"
    for flag, env in [(None, {"RAY_ADDRESS": "10.0.0.1:6379"}), ("ray://h:10001", {}), (None, {})]:
        with pytest.raises(ClusterError):
            resolve_address(flag, env)
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-default-file\n")
    (tmp_path / "t").write_text("from-path-env")
    def token_from(*args: str | None, **kwargs: Any) -> Token:
        found = resolve_token(*args, **{"environ": {}, "home": home, **kwargs})
        assert found is not None
        return found

    assert token_from().source == str(home / ".ray" / "auth_token")
    assert token_from(environ={"RAY_AUTH_TOKEN_PATH": str(tmp_path / "t")}).value == "from-path-env"
    assert token_from(environ={"RAY_AUTH_TOKEN": "from-env"}).value == "from-env"
    assert token_from("from-flag", str(tmp_path / "t"), environ={"RAY_AUTH_TOKEN": "x"}).value == "from-flag"
    assert resolve_token(environ={}, home=tmp_path / "nobody") is None
    with pytest.raises(AuthError, match="cannot read token file"):
        resolve_token(token_file=str(tmp_path / "missing"), environ={}, home=home)
    token = resolve_token(environ={"RAY_AUTH_TOKEN": "s3cr3t-value"}, home=home)
    assert token is not None and "s3cr3t" not in repr(token)
    assert token.headers() == {"Authorization": "Bearer s3cr3t-value"}
    assert mask("header Bearer s3cr3t-value sent", [token.value]) == "header Bearer **** sent"
