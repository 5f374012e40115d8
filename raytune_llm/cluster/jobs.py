"""`raytune-llm jobs list|status|logs|stop`: the Ray Jobs API, with our output and errors.

Every line printed passes through `Cluster.scrub`, so a token that ends up in a job's own
output (an `env` dump, a traceback) is masked here too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from raytune_llm.cluster.connection import Cluster

Out = Callable[[str], None]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def list_jobs(cluster: Cluster, out: Out = print) -> list[Any]:
    """Print one line per job, newest first; return the `JobDetails`."""
    client = cluster.client()
    with cluster.translate_errors():
        jobs = client.list_jobs()
    jobs = sorted(jobs, key=lambda job: job.start_time or 0, reverse=True)
    out(f"{'SUBMISSION ID':48} {'STATUS':10} {'STARTED':19} COMMAND")
    for job in jobs:
        command = (job.metadata or {}).get("raytune_llm.command")
        config = (job.metadata or {}).get("raytune_llm.config")
        what = f"{command} {config}" if command else job.entrypoint[:60]
        out(cluster.scrub(f"{str(job.submission_id or job.job_id):48} {_status(job):10} "
                          f"{_when(job.start_time):19} {what}"))
    if not jobs:
        out("(no jobs)")
    return jobs


def job_status(cluster: Cluster, submission_id: str, out: Out = print) -> str:
    """Print a job's status, timing and message; return the status name."""
    client = cluster.client()
    with cluster.translate_errors():
        info = client.get_job_info(submission_id)
    out(f"{submission_id}: {_status(info)}")
    out(f"  started  {_when(info.start_time)}   ended {_when(info.end_time)}")
    out(cluster.scrub(f"  command  {info.entrypoint}"))
    if info.message:
        out(cluster.scrub(f"  message  {info.message}"))
    return _status(info)


def job_logs(cluster: Cluster, submission_id: str, follow: bool = False, out: Out = print) -> str:
    """Print a job's logs (streaming them until it ends with `follow`); return its status then."""
    client = cluster.client()
    if not follow:
        with cluster.translate_errors():
            text = client.get_job_logs(submission_id)
        if text:
            out(cluster.scrub(text.rstrip("\n")))
        return job_status_name(cluster, submission_id)

    async def tail() -> None:
        # Chunks can end mid-line (or mid-token): print, and mask, whole lines only.
        pending = ""
        async for chunk in client.tail_job_logs(submission_id):
            *lines, pending = (pending + chunk).split("\n")
            for line in lines:
                out(cluster.scrub(line))
        if pending:
            out(cluster.scrub(pending))

    with cluster.translate_errors():
        client.get_job_info(submission_id)  # an unknown id fails here, not as a websocket error
        asyncio.run(tail())
    # The log stream closes when the job ends; its final status can lag by a moment.
    return wait_for_status(cluster, submission_id, TERMINAL, timeout_s=30.0)


def stop_job(cluster: Cluster, submission_id: str, wait_s: float = 30.0, out: Out = print) -> str:
    """Ask the cluster to stop a job, wait for it to end; return its final status."""
    client = cluster.client()
    with cluster.translate_errors():
        asked = client.stop_job(submission_id)
    if not asked:
        status = job_status_name(cluster, submission_id)
        out(f"{submission_id}: already {status}")
        return status
    status = wait_for_status(cluster, submission_id, TERMINAL, timeout_s=wait_s)
    out(f"{submission_id}: {status}")
    return status


def job_status_name(cluster: Cluster, submission_id: str) -> str:
    """The job's status as a plain string (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    client = cluster.client()
    with cluster.translate_errors():
        return _status(client.get_job_info(submission_id))


def wait_for_status(cluster: Cluster, submission_id: str, wanted: tuple[str, ...], timeout_s: float) -> str:
    """Poll until the job's status is one of `wanted` or the time is up; return the last status."""
    deadline = time.monotonic() + timeout_s
    status = job_status_name(cluster, submission_id)
    while status not in wanted and time.monotonic() < deadline:
        time.sleep(0.5)
        status = job_status_name(cluster, submission_id)
    return status


def _status(info: Any) -> str:
    status = info.status
    return str(getattr(status, "value", status))


def _when(millis: int | None) -> str:
    return datetime.fromtimestamp(millis / 1000).strftime("%Y-%m-%d %H:%M:%S") if millis else "-"
