"""`raytune-llm submit`: check on the laptop, then hand the run to the cluster's Jobs API.

The job's entrypoint is `python -m raytune_llm.cli CMD CONFIG OVERRIDES...` run in Ray's
copy of the working directory, so the config (and any data beside it) travels with the
job; paths that only make sense on the laptop are rewritten or refused by `preflight`.
`python -m` rather than the `raytune-llm` script: it runs whichever interpreter is first
on the cluster's PATH (`--python` picks another), and from the repository root it runs
the uploaded package itself.
"""

from __future__ import annotations

import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raytune_llm.cluster.auth import MASK, is_secret_name
from raytune_llm.cluster.connection import Cluster, on_this_machine
from raytune_llm.cluster.preflight import (
    Finding,
    PathPolicy,
    PreflightError,
    check_input_path,
    check_output_dir,
    check_resources,
    check_upload,
)
from raytune_llm.cluster.specs import node_groups
from raytune_llm.cluster.workdir import DEFAULT_MAX_FILE_MB, UploadPlan, mib, plan_upload
from raytune_llm.config.schema import RunConfig
from raytune_llm.errors import ConfigError, RaytuneLLMError

COMMANDS = ("tune", "train", "prepare")
#: Set for every job: unbuffered output streams to `jobs logs --follow` as it happens.
BASE_ENV = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class SubmitOptions:
    """Everything `raytune-llm submit` was asked to do."""

    config: str
    command: str = "tune"
    overrides: list[str] = field(default_factory=list)
    working_dir: str = "."
    cluster_paths: list[str] = field(default_factory=list)
    cluster_files: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    pip: list[str] = field(default_factory=list)
    requirements: str | None = None
    excludes: list[str] = field(default_factory=list)
    max_file_mb: float = DEFAULT_MAX_FILE_MB
    entrypoint_resources: dict[str, Any] = field(default_factory=dict)  # num_cpus, num_gpus, memory, resources
    python: str = "python"
    submission_id: str | None = None


@dataclass
class Submission:
    """A checked job, ready for `JobSubmissionClient.submit_job`."""

    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    notes: list[str]


def prepare_submission(opts: SubmitOptions, cluster: Cluster, cwd: Path | None = None) -> Submission:
    """Run every pre-flight check; raise `PreflightError` listing all problems, or return the job."""
    cwd = (cwd or Path.cwd()).resolve()
    findings: list[Finding] = []
    env = _parse_env(opts.env, findings)
    pip = [*opts.pip, *_read_requirements(opts.requirements, findings)]
    root = (cwd / opts.working_dir).resolve()
    if not root.is_dir():
        raise PreflightError([Finding("--working-dir", f"{root} is not a folder", "pass an existing folder")])
    plan = plan_upload(root, opts.excludes, opts.max_file_mb)
    findings += check_upload(plan)
    cfg, config_rel = _check_config(opts, cwd, plan, findings)
    try:
        nodes = cluster.nodes()
    except RaytuneLLMError as exc:  # unreachable or unauthorised: nothing else can be checked
        raise PreflightError([*findings, Finding("--address", str(exc), "")]) from None
    policy = PathPolicy(plan, tuple(opts.cluster_paths), same_machine=on_this_machine(nodes))
    overrides = list(opts.overrides)
    notes = [f"cluster   {cluster.address}: {len(nodes)} alive node(s), {sum(n.cpus for n in nodes):g} CPU, "
             f"{sum(n.gpus for n in nodes):g} GPU" + (" (on this machine: local paths are visible)"
                                                       if policy.same_machine else "")]
    if cfg is not None:
        overrides += _path_overrides(cfg, policy, cwd, findings)
        groups = _groups(opts.cluster_files, findings)
        gpu, problems = check_resources(cfg.train, nodes, groups, cluster.address)
        findings += problems
        notes.append(f"trial     {cfg.train.num_workers} worker(s) x {cfg.train.cpus_per_worker:g} CPU"
                     + (" + 1 GPU" if gpu else "") + f" (train.use_gpu={cfg.train.use_gpu})")
    if findings:
        raise PreflightError(findings)
    assert cfg is not None and config_rel is not None
    skipped = f"; skipped {len(plan.large_files)} file(s) over {opts.max_file_mb:g} MB" if plan.large_files else ""
    notes.append(f"upload    {plan.root}: {plan.files} files, {mib(plan.total_bytes)}{skipped}")
    return _build(opts, cfg, config_rel, overrides, plan, env, pip, notes)


def _build(opts: SubmitOptions, cfg: RunConfig, config_rel: str, overrides: list[str], plan: UploadPlan,
           env: dict[str, str], pip: list[str], notes: list[str]) -> Submission:
    entrypoint = shlex.join([*shlex.split(opts.python), "-m", "raytune_llm.cli", opts.command, config_rel, *overrides])
    runtime_env: dict[str, Any] = {"working_dir": str(plan.root), "excludes": plan.excludes,
                                   "env_vars": {**BASE_ENV, **env}}
    if pip:
        runtime_env["pip"] = pip
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(cfg.output.name))[:40]
    submission_id = opts.submission_id or (
        f"raytune-{opts.command}-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")
    metadata = {"raytune_llm.command": opts.command, "raytune_llm.config": config_rel}
    return Submission(submission_id, entrypoint, runtime_env, metadata, notes)


def submit(opts: SubmitOptions, cluster: Cluster, out: Callable[[str], None] = print,
           dry_run: bool = False) -> Submission:
    """Check, print what will run (secrets masked), and submit unless `dry_run`."""
    job = prepare_submission(opts, cluster)
    for line in job.notes:
        out(line)
    out(f"command   {job.entrypoint}")
    shown = {k: (MASK if is_secret_name(k) else v) for k, v in job.runtime_env["env_vars"].items()}
    out(f"env       {' '.join(f'{k}={v}' for k, v in shown.items())}")
    if "pip" in job.runtime_env:
        out(f"pip       {' '.join(job.runtime_env['pip'])}")
    if dry_run:
        out("dry run: nothing submitted")
        return job
    client = cluster.client()
    with cluster.translate_errors():
        client.submit_job(entrypoint=job.entrypoint, runtime_env=job.runtime_env, metadata=job.metadata,
                          submission_id=job.submission_id, **_entrypoint_kwargs(opts.entrypoint_resources))
    out(f"submitted {job.submission_id}")
    return job


def _entrypoint_kwargs(resources: dict[str, Any]) -> dict[str, Any]:
    names = {"num_cpus": "entrypoint_num_cpus", "num_gpus": "entrypoint_num_gpus",
             "memory": "entrypoint_memory", "resources": "entrypoint_resources"}
    return {names[k]: v for k, v in resources.items() if v}


def _check_config(opts: SubmitOptions, cwd: Path, plan: UploadPlan,
                  findings: list[Finding]) -> tuple[RunConfig | None, str | None]:
    from raytune_llm.config.loader import load_config

    if opts.command not in COMMANDS:
        findings.append(Finding("command", f"'{opts.command}' is not a raytune-llm run command",
                                f"use one of {', '.join(COMMANDS)}: submit CONFIG -- train train.epochs=1"))
    path = (cwd / opts.config).resolve()
    try:
        cfg = load_config(path, opts.overrides)
    except ConfigError as exc:
        fix = f"fix the config or the override (`raytune-llm validate {opts.config}` lists the same)"
        findings += [Finding("config", problem, fix if i == len(exc.problems) - 1 else "")
                     for i, problem in enumerate(exc.problems)]
        return None, None
    if path != plan.root and plan.root not in path.parents:
        findings.append(Finding("config", f"{opts.config} is outside the working dir {plan.root}, so the job "
                                          "would not have it", "pass --working-dir with a folder that holds it"))
        return cfg, None
    if not plan.includes(path):
        findings.append(Finding("config", f"{opts.config} is excluded from the upload",
                                "move it out of excluded folders (runs/, .git, .gitignore entries)"))
        return cfg, None
    return cfg, path.relative_to(plan.root).as_posix()


def _path_overrides(cfg: RunConfig, policy: PathPolicy, cwd: Path, findings: list[Finding]) -> list[str]:
    """Check data, model and output paths; return `key=value` overrides that make them work there."""
    checked = {
        "data.path": (cfg.data.path, check_input_path("data.path", cfg.data.path, policy, cwd)),
        "model.name_or_path": (cfg.model.name_or_path, check_input_path(
            "model.name_or_path", cfg.model.name_or_path, policy, cwd, hub_ids=True)),
        "output.dir": (cfg.output.dir, check_output_dir(cfg.output.dir, policy, cwd)),
    }
    rewrites = []
    for key, (value, (new, problems)) in checked.items():
        findings += problems
        if new is not None and new != value:
            rewrites.append(f"{key}={_yaml_scalar(new)}")
    return rewrites


def _yaml_scalar(value: str) -> str:
    """`value` as the loader will read it back (overrides are parsed as YAML)."""
    return value if yaml.safe_load(value) == value else yaml.safe_dump(value, default_style='"').strip()


def _parse_env(pairs: list[str], findings: list[Finding]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            shown = MASK if sep else pair  # a value may be a secret; a lone word is only a name
            findings.append(Finding("--env", f"expected KEY=VALUE (got {shown})", "e.g. --env HF_HOME=/mnt/shared/hf"))
            continue
        env[key.strip()] = value
    return env


def _read_requirements(path: str | None, findings: list[Finding]) -> list[str]:
    if not path:
        return []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        findings.append(Finding("--requirements", f"cannot read {path}: {exc.strerror or exc}",
                                "pass a pip requirements file"))
        return []
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _groups(paths: list[str], findings: list[Finding]) -> list[Any]:
    missing = [p for p in paths if not Path(p).is_file()]
    findings += [Finding("--cluster-file", f"{p} does not exist", "pass a file from clusters/") for p in missing]
    return node_groups([p for p in paths if p not in missing])
