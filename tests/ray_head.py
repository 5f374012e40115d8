"""A real Ray head on loopback for tests, kept apart from the session's `ray.init` Ray.

`ray start --head --block` runs as our child in its own temp dir and on free ports, so
`ray.init()` elsewhere in the session neither finds it (the "current cluster" file lives
in that temp dir) nor collides with it (dashboard agent, client server and metrics ports
are all chosen free instead of Ray's fixed defaults). Stopping sends SIGTERM to that one
process (Ray's SIGTERM handler kills the processes it started; the drain wait is off),
then kills by pid whatever of its recorded descendants is left. No `ray stop`: that
would stop every Ray on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

PORT_FLAGS = ("port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "ray-client-server-port", "metrics-export-port", "runtime-env-agent-port",
              "node-manager-port", "object-manager-port")


@dataclass
class LocalHead:
    """A running head: its dashboard URL, token, process and temp dir."""

    address: str
    token: str | None
    process: subprocess.Popen[bytes]
    temp_dir: Path
    log: Path

    def headers(self) -> dict[str, str]:
        """Headers that authenticate to this head."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the head and everything it started; remove its temp dir."""
        try:
            family = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        gone, alive = psutil.wait_procs(family, timeout=5)
        for proc in alive:  # only our own descendants, by pid
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_head(num_cpus: int = 4, token: str | None = None, timeout_s: float = 180.0) -> LocalHead:
    """Start a head with `num_cpus` CPUs and no GPUs; token authentication when `token` is given."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rtlh", dir="/tmp"))  # short: Ray's socket paths have a length cap
    log = temp_dir / "ray-start.log"
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    # The job's `python` must be this venv's: jobs inherit the head's PATH.
    env.update(PATH=bin_dir + os.pathsep + env.get("PATH", ""), RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
               RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token" if token else "disabled")
    if token:
        env["RAY_AUTH_TOKEN"] = token
    ports = {flag: free_port() for flag in PORT_FLAGS}
    command = [str(Path(bin_dir) / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", f"--num-cpus={num_cpus}", "--num-gpus=0", f"--temp-dir={temp_dir}",
               "--include-dashboard=true", "--disable-usage-stats", *(f"--{k}={v}" for k, v in ports.items())]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    head = LocalHead(f"http://127.0.0.1:{ports['dashboard-port']}", token, process, temp_dir, log)
    try:
        _wait_ready(head, timeout_s)
    except BaseException:
        head.stop()
        raise
    return head


def _wait_ready(head: LocalHead, timeout_s: float) -> None:
    """Until the node is alive and its dashboard agent (which runs job supervisors) listens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.process.returncode}:\n{head.log.read_text()[-3000:]}")
        try:
            summary = requests.get(f"{head.address}/nodes?view=summary", headers=head.headers(), timeout=5).json()
            nodes = summary["data"]["summary"]
            if nodes and int(nodes[0]["raylet"].get("dashboardAgentListenPort", -1)) > 0:
                return
        except (requests.RequestException, ValueError, KeyError, IndexError, TypeError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"Ray head not ready after {timeout_s:.0f} s:\n{head.log.read_text()[-3000:]}")
