"""Checks a submission must pass on the laptop, before anything reaches the cluster.

Each check returns `Finding`s (where, what, how to fix) instead of raising, so that the
user sees every problem in one screen: the config is valid; every path the job will open
is one the cluster can see; the upload fits Ray's limit; one trial's workers fit the
cluster's nodes. Path checks also return the overrides that make paths work on the
cluster (a file inside the working directory becomes a path relative to it, because the
job runs in the uploaded copy).
"""

from __future__ import annotations

import glob
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from raytune_llm.cluster.connection import NodeInfo
from raytune_llm.cluster.specs import NodeGroup
from raytune_llm.cluster.workdir import UploadPlan, mib, upload_limit_bytes
from raytune_llm.config.schema import TrainConfig
from raytune_llm.errors import RaytuneLLMError
from raytune_llm.runtime import TRIAL_DRIVER_CPUS

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SHARED_FIX = ("put it under the working dir (it is uploaded), on s3:// or gs://, or on storage every node "
               "mounts and declare that with --cluster-path PREFIX (e.g. --cluster-path /mnt/shared)")


@dataclass(frozen=True)
class Finding:
    """One problem found before submission: where, what, and the fix."""

    where: str
    message: str
    fix: str

    def lines(self) -> list[str]:
        """The report lines: the problem, then its fix when there is one."""
        return [f"  - {self.where}: {self.message}"] + ([f"      fix: {self.fix}"] if self.fix else [])


class PreflightError(RaytuneLLMError):
    """Problems that stop a submission; the message is the whole report."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        lines = [f"{len(self.findings)} problem(s) found before submitting; nothing was submitted:"]
        for finding in self.findings:
            lines += finding.lines()
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class PathPolicy:
    """What the cluster can see: the uploaded working dir, declared cluster paths, or all of ours."""

    plan: UploadPlan
    cluster_paths: tuple[str, ...] = ()
    same_machine: bool = False  # every node runs on this machine

    def on_cluster(self, value: str) -> bool:
        """A path the user declared as existing on the cluster (checked there, not here)."""
        return any(value == p or value.startswith(p.rstrip("/") + "/") for p in self.cluster_paths)


def check_input_path(key: str, value: str, policy: PathPolicy, cwd: Path,
                     hub_ids: bool = False) -> tuple[str | None, list[Finding]]:
    """Check a path the job reads; return (override value or None, findings).

    `hub_ids`: a value that is not a local path is a model id fetched by the cluster itself.
    A glob (`data/*.jsonl`) is checked by its folder part and keeps its pattern.
    """
    if value.startswith("builtin:") or _URI.match(value) or policy.on_cluster(value):
        return None, []
    target = cwd / Path(value).expanduser()  # an absolute value stays as it is
    anchor, tail = _split_glob(target)
    exists = bool(glob.glob(str(target))) if tail else target.exists()
    if hub_ids and not exists and not value.startswith(("/", ".", "~")):
        return None, []  # e.g. "bert-base-uncased": the cluster downloads it
    if not exists:
        return None, [Finding(key, f"{value} does not exist on this machine",
                              "fix the path; if it exists only on the cluster, declare it with --cluster-path PREFIX")]
    anchor = anchor.resolve()
    root = policy.plan.root
    inside = anchor == root or root in anchor.parents
    if inside and policy.plan.includes(anchor):
        return Path(anchor.relative_to(root), *tail).as_posix(), []
    if policy.same_machine:
        return str(Path(anchor, *tail)), []
    why = ("is inside the working dir but excluded from the upload (default excludes, .gitignore/.rayignore "
           "or over --max-file-mb)" if inside else "is a local path the cluster cannot see")
    return None, [Finding(key, f"{value} {why}", _SHARED_FIX)]


def _split_glob(path: Path) -> tuple[Path, tuple[str, ...]]:
    """(folder part without wildcards, the remaining pattern parts); no tail for a plain path."""
    parts = path.parts
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            return Path(*parts[:i]), tuple(parts[i:])
    return path, ()


def check_output_dir(value: str, policy: PathPolicy, cwd: Path) -> tuple[str | None, list[Finding]]:
    """The run directory: every node writes checkpoints there, so it must be shared."""
    fix = ("set output.dir to a folder every node mounts (clusters/ mount S3/GCS at /mnt/shared: "
           "output.dir=/mnt/shared/runs) and declare it with --cluster-path /mnt/shared")
    if _URI.match(value):
        return None, [Finding("output.dir", f"{value}: raytune_llm writes the run directory as a file-system path; "
                                            "mount the bucket (s3fs/gcsfuse) instead of giving its URI", fix)]
    if policy.on_cluster(value):
        return None, []
    if policy.same_machine:
        return str((cwd / Path(value).expanduser()).resolve()), []
    return None, [Finding("output.dir", f"{value} is not declared as shared storage: trials on other nodes could "
                                        "not write checkpoints there, and results would stay on the cluster", fix)]


def check_upload(plan: UploadPlan) -> list[Finding]:
    """The working directory must fit Ray's upload limit."""
    limit = upload_limit_bytes()
    if plan.total_bytes <= limit:
        return []
    biggest = ", ".join(f"{name} {mib(size)}" for name, size in plan.biggest)
    return [Finding("--working-dir", f"{plan.root} would upload {mib(plan.total_bytes)} in {plan.files} files, over "
                                     f"Ray's limit of {mib(limit)} (largest: {biggest})",
                    "exclude folders with --exclude PATTERN or a .rayignore file, move data to s3://, gs:// or "
                    "shared storage, or point --working-dir at a smaller folder")]


def check_resources(train: TrainConfig, nodes: Sequence[NodeInfo], groups: Sequence[NodeGroup],
                    where: str) -> tuple[bool, list[Finding]]:
    """Whether the trial uses GPUs, and whether one trial's workers fit the cluster's nodes.

    Workers are packed per node (a worker needs `cpus_per_worker` CPUs, plus one GPU on GPU
    runs, on a single node). The cluster counts as big enough if either its alive nodes or
    its declared node groups at their maximum size (`--cluster-file`) hold one trial.
    """
    shapes = [(n.cpus, n.gpus, 1) for n in nodes]
    scaled = [(g.cpus if g.cpus is not None else 0.0, g.gpus, g.max_count) for g in groups]
    has_gpus = any(gpus >= 1 for _, gpus, _ in shapes + scaled)
    gpu = has_gpus if train.use_gpu == "auto" else bool(train.use_gpu)
    capacity = max(_capacity(shapes, train.cpus_per_worker, gpu), _capacity(scaled, train.cpus_per_worker, gpu))
    # Elastic runs (train.min_workers) start with fewer workers and grow when nodes appear.
    minimum = getattr(train, "min_workers", None)
    key, need = ("train.min_workers", minimum) if minimum else ("train.num_workers", train.num_workers)
    if capacity >= need:
        return gpu, []
    seen = _describe(nodes) + (f"; --cluster-file groups at max size: {_describe_groups(groups)}" if groups else "")
    per_worker = f"1 GPU and {train.cpus_per_worker:g} CPU" if gpu else f"{train.cpus_per_worker:g} CPU"
    fixes = [f"lower {key} to {capacity}" if capacity else "",
             "set train.use_gpu=false" if gpu and train.use_gpu is True else "",
             "lower train.cpus_per_worker" if not gpu else "",
             "submit to a bigger cluster" + ("" if groups else "; if it autoscales, pass --cluster-file FILE "
                                                              "so its worker groups count")]
    message = (f"one trial needs {'at least ' if minimum else ''}{need} workers x ({per_worker}) "
               f"(train.use_gpu={train.use_gpu}) but the cluster at {where} can place {capacity}: {seen}")
    return gpu, [Finding(key, message, "; or ".join(fix for fix in fixes if fix))]


def _capacity(shapes: Sequence[tuple[float, float, int]], cpus_per_worker: float, gpu: bool) -> int:
    """Workers of one trial that fit: packed per node, leaving CPU for the trial's small driver."""
    packed = 0
    for cpus, gpus, count in shapes:
        per_node = math.floor(cpus / cpus_per_worker + 1e-9)
        if gpu:
            per_node = min(per_node, math.floor(gpus + 1e-9))
        packed += max(0, per_node) * count
    total_cpus = sum(cpus * count for cpus, _, count in shapes)
    return max(0, min(packed, math.floor((total_cpus - TRIAL_DRIVER_CPUS) / cpus_per_worker + 1e-9)))


def _describe(nodes: Sequence[NodeInfo]) -> str:
    if not nodes:
        return "no alive nodes"
    counts = Counter(f"{n.cpus:g} CPU, {n.gpus:g} GPU" for n in nodes)
    return f"{len(nodes)} alive node(s): " + "; ".join(f"{k} x{v}" if v > 1 else k for k, v in counts.items())


def _describe_groups(groups: Sequence[NodeGroup]) -> str:
    return "; ".join(f"{g.name} {g.max_count} x ({g.cpus if g.cpus is not None else '?'} CPU, {g.gpus:g} GPU)"
                     for g in groups)
