"""`raytune-llm cluster validate`, `raytune-llm submit` and `raytune-llm jobs ...`.

`add_parsers` adds the three commands to the main CLI's subparsers and `run` executes a
parsed command; `main` runs them on their own (`python -m raytune_llm.cluster.cli`),
with the main CLI's error handling: a user error is one message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


COMMANDS = ("cluster", "submit", "jobs")
_CONNECT_HELP = "dashboard URL, e.g. http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, then RAY_ADDRESS)"


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--address", default=None, help=_CONNECT_HELP)
    parent.add_argument("--token-file", default=None, metavar="PATH",
                        help="file holding the cluster's auth token (default: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, "
                             "~/.ray/auth_token)")
    parent.add_argument("--token", default=None, help="the auth token itself (visible in `ps`; prefer --token-file)")
    return parent


def add_parsers(subparsers: Any) -> None:
    """Add `cluster`, `submit` and `jobs` to the main parser's subparsers."""
    connect = _connection_options()
    cluster = subparsers.add_parser("cluster", help="cluster definition files (clusters/)")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    validate = cluster_sub.add_parser("validate", help="check launcher/KubeRay files and report every problem")
    validate.add_argument("files", nargs="+", help="cluster YAML files")
    _add_submit(subparsers, connect)
    jobs = subparsers.add_parser("jobs", help="list, inspect, follow and stop jobs on a cluster")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    jobs_sub.add_parser("list", parents=[connect], help="every job, newest first")
    for name, text in [("status", "a job's status"), ("logs", "a job's output"), ("stop", "stop a job")]:
        cmd = jobs_sub.add_parser(name, parents=[connect], help=text)
        cmd.add_argument("submission_id", help="the id `submit` printed (see `jobs list`)")
        if name == "logs":
            cmd.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")


def _add_submit(subparsers: Any, connect: argparse.ArgumentParser) -> None:
    text = "check on this machine, then run a config on a Ray cluster as a job"
    cmd = subparsers.add_parser("submit", parents=[connect], help=text, description=text)
    cmd.add_argument("config", help="YAML run config (inside the working dir)")
    cmd.add_argument("rest", nargs="*", metavar="-- [tune|train|prepare] OVERRIDES",
                     help="command (default tune) and dotted.key=value overrides, after --")
    cmd.add_argument("--working-dir", default=".", help="folder uploaded with the job (default: .)")
    cmd.add_argument("--cluster-path", action="append", default=[], metavar="PREFIX",
                     help="a path prefix that exists on every node (shared storage), repeatable")
    cmd.add_argument("--cluster-file", action="append", default=[], metavar="FILE",
                     help="cluster YAML whose worker groups the cluster can scale to, repeatable")
    cmd.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="job env var, repeatable")
    cmd.add_argument("--pip", action="append", default=[], metavar="REQ", help="extra pip requirement, repeatable")
    cmd.add_argument("--requirements", default=None, metavar="FILE", help="pip requirements file for the job")
    cmd.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                     help="gitignore-style pattern left out of the upload, repeatable")
    cmd.add_argument("--max-file-mb", type=float, default=50.0, help="files larger than this are not uploaded")
    cmd.add_argument("--entrypoint-num-cpus", type=float, default=None, help="CPUs reserved for the driver")
    cmd.add_argument("--entrypoint-num-gpus", type=float, default=None, help="GPUs reserved for the driver")
    cmd.add_argument("--entrypoint-memory", type=int, default=None, help="memory (bytes) reserved for the driver")
    cmd.add_argument("--entrypoint-resources", type=json.loads, default=None, metavar="JSON",
                     help='custom resources for the driver, e.g. \'{"head": 1}\'')
    cmd.add_argument("--python", default="python", help="interpreter on the cluster (default: python on PATH)")
    cmd.add_argument("--submission-id", default=None, help="job id (default: raytune-CMD-NAME-TIME-XXXX)")
    cmd.add_argument("--dry-run", action="store_true", help="check and show the job, submit nothing")
    cmd.add_argument("--follow", "-f", action="store_true", help="stream the job's logs until it ends")


def run(args: argparse.Namespace) -> int:
    """Execute a parsed `cluster`, `submit` or `jobs` command; return the exit code."""
    if args.command == "cluster":
        return _validate(args.files)
    _quiet_ray_client_logs()
    cluster = _connect(args)

    def out(line: str) -> None:
        print(cluster.scrub(line), flush=True)

    if args.command == "submit":
        return _submit(args, cluster, out)
    from raytune_llm.cluster import jobs

    if args.jobs_command == "list":
        jobs.list_jobs(cluster, out)
        return 0
    if args.jobs_command == "status":
        jobs.job_status(cluster, args.submission_id, out)
        return 0
    if args.jobs_command == "logs":
        status = jobs.job_logs(cluster, args.submission_id, follow=args.follow, out=out)
        return 0 if not args.follow or status == "SUCCEEDED" else 1
    status = jobs.stop_job(cluster, args.submission_id, out=out)
    return 0 if status in jobs.TERMINAL else 1


def _quiet_ray_client_logs() -> None:
    """Ray's Jobs client logs every upload and websocket close; we print our own summary.

    Ray configures its loggers when first imported, so import it before adjusting them.
    """
    import logging

    import ray.job_submission  # noqa: F401

    for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                 "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "'.git' is now ignored by default": we exclude it (and more) ourselves.
    logging.getLogger("ray._private.runtime_env.working_dir").setLevel(logging.ERROR)


def _connect(args: argparse.Namespace) -> Any:
    from raytune_llm.cluster.auth import resolve_token
    from raytune_llm.cluster.connection import Cluster, resolve_address

    return Cluster(resolve_address(args.address), resolve_token(args.token, args.token_file))


def _validate(files: Sequence[str]) -> int:
    from raytune_llm.cluster.validate import validate_cluster_files

    failed = 0
    for path, (kinds, problems) in validate_cluster_files(files).items():
        shown = ", ".join(k for k in kinds if k != "other-k8s") or "?"
        print(f"{'FAIL' if problems else 'OK  '} {path} ({shown})")
        for problem in problems:
            print(f"  - {problem}")
        failed += bool(problems)
    return 1 if failed else 0


def _submit(args: argparse.Namespace, cluster: Any, out: Any) -> int:
    from raytune_llm.cluster import jobs
    from raytune_llm.cluster.preflight import Finding, PreflightError
    from raytune_llm.cluster.submit import COMMANDS as RUN_COMMANDS
    from raytune_llm.cluster.submit import SubmitOptions, submit

    rest = list(args.rest)
    misplaced = [item for item in rest if item.startswith("-")]
    if misplaced:
        raise PreflightError([Finding("--", f"{item} comes after `--`, where only the command and overrides go",
                                      "put options before `--`") for item in misplaced])
    command = rest.pop(0) if rest and (rest[0] in RUN_COMMANDS or "=" not in rest[0]) else "tune"
    opts = SubmitOptions(
        config=args.config, command=command, overrides=rest, working_dir=args.working_dir,
        cluster_paths=args.cluster_path, cluster_files=args.cluster_file, env=args.env, pip=args.pip,
        requirements=args.requirements, excludes=args.exclude, max_file_mb=args.max_file_mb,
        entrypoint_resources={"num_cpus": args.entrypoint_num_cpus, "num_gpus": args.entrypoint_num_gpus,
                              "memory": args.entrypoint_memory, "resources": args.entrypoint_resources},
        python=args.python, submission_id=args.submission_id)
    job = submit(opts, cluster, out, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    if not args.follow:
        out(f"follow    raytune-llm jobs logs {job.submission_id} --follow --address {cluster.address}")
        return 0
    status = jobs.job_logs(cluster, job.submission_id, follow=True, out=out)
    out(f"{job.submission_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The main `raytune-llm` entry point (same parser, same one-line errors), for `python -m` use."""
    from raytune_llm.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
