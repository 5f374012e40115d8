"""What a job uploads: the working directory minus what the cluster must not receive.

Ray zips `runtime_env.working_dir` on the laptop and POSTs it to the dashboard, which
accepts at most 100 MiB per request (`DASHBOARD_CLIENT_MAX_SIZE`; the GCS caps packages
at 512 MiB behind that). A virtualenv, `.git` or a `runs/` folder blows through that in
seconds, so they are excluded by default, as is any single file over `max_file_mb`. The
plan is computed with the same matcher Ray applies (`.gitignore`/`.rayignore` in the
root included), and its byte count is of uncompressed files, so it errs on the safe side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Never uploaded: environments, VCS data, run outputs, caches.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git", ".venv", "venv", ".tox", "runs", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache",
    ".ruff_cache", "*.egg-info", "node_modules", ".ipynb_checkpoints", "wandb", "mlruns",
)
DEFAULT_MAX_FILE_MB = 50.0


def upload_limit_bytes() -> int:
    """The largest package the dashboard accepts (Ray's own constants, with their 2.60 values)."""
    try:
        from ray._private.ray_constants import DASHBOARD_CLIENT_MAX_SIZE, GRPC_CPP_MAX_MESSAGE_SIZE
    except ImportError:  # the names are Ray internals; keep working if they move
        return 100 * 1024**2
    return min(int(DASHBOARD_CLIENT_MAX_SIZE), int(GRPC_CPP_MAX_MESSAGE_SIZE))


@dataclass
class UploadPlan:
    """The working directory as Ray will package it."""

    root: Path
    excludes: list[str]
    total_bytes: int = 0
    files: int = 0
    large_files: list[tuple[str, int]] = field(default_factory=list)  # excluded for size
    biggest: list[tuple[str, int]] = field(default_factory=list)  # top-level entries by size

    def includes(self, path: Path) -> bool:
        """Whether `path` (inside root) is part of the upload."""
        matcher = _matcher(self.root, self.excludes)
        rel = path.resolve().relative_to(self.root)
        parts = rel.parts
        return not any(matcher(self.root.joinpath(*parts[:i])) for i in range(1, len(parts) + 1))


def plan_upload(root: Path, extra_excludes: Sequence[str] = (),
                max_file_mb: float = DEFAULT_MAX_FILE_MB) -> UploadPlan:
    """Walk `root` as Ray will, excluding defaults, `extra_excludes` and files over `max_file_mb`."""
    root = root.resolve()
    plan = UploadPlan(root, [*DEFAULT_EXCLUDES, *extra_excludes])
    matcher = _matcher(root, plan.excludes)
    top: dict[str, int] = {}
    limit = int(max_file_mb * 1024**2)
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not matcher(here / d)]
        for name in names:
            path = here / name
            if matcher(path) or not path.is_file():
                continue
            size = path.stat().st_size
            rel = path.relative_to(root).as_posix()
            if size > limit:
                plan.large_files.append((rel, size))
                continue
            plan.total_bytes += size
            plan.files += 1
            top[rel.split("/")[0]] = top.get(rel.split("/")[0], 0) + size
    # Anchored patterns: exclude exactly these files, not same-named files elsewhere.
    plan.excludes += [f"/{rel}" for rel, _ in plan.large_files]
    plan.biggest = sorted(top.items(), key=lambda item: -item[1])[:5]
    return plan


def _matcher(root: Path, excludes: Sequence[str]) -> Any:
    """A predicate `path -> excluded?` with Ray's own gitwildmatch semantics."""
    from ray._private.thirdparty.pathspec import PathSpec  # type: ignore[attr-defined]

    lines = list(excludes)
    if os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1":
        lines += _ignore_lines(root / ".gitignore")
    lines += _ignore_lines(root / ".rayignore")
    spec = PathSpec.from_lines("gitwildmatch", lines)  # type: ignore[no-untyped-call]

    def excluded(path: Path) -> bool:
        rel = path.relative_to(root).as_posix()
        return spec.match_file(rel) or (path.is_dir() and spec.match_file(rel + "/"))

    return excluded


def _ignore_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def mib(size: int) -> str:
    """A byte count for people."""
    return f"{size / 1024**2:.1f} MiB"
