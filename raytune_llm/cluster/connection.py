"""Reaching a cluster's dashboard: the address, the token, the Jobs client, the node list.

Everything goes over HTTP to the head's dashboard (default port 8265): the Ray Jobs API
through `ray.job_submission.JobSubmissionClient`, and node resources through the State
API (`GET /api/v0/nodes?detail=true`, what `ray list nodes --detail` reads). Nothing here
calls `ray.init`, so a laptop never joins the cluster and a test process keeps its own
local Ray.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from raytune_llm.cluster.auth import Token, auth_failure, mask
from raytune_llm.errors import RaytuneLLMError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

#: Where Ray's own job CLI looks for the dashboard address, in order.
ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
HTTP_TIMEOUT_S = 15.0


class ClusterError(RaytuneLLMError):
    """The cluster cannot be reached, or answered with an error."""


@dataclass(frozen=True)
class NodeInfo:
    """One alive node as the cluster reports it."""

    node_id: str
    ip: str
    is_head: bool
    cpus: float
    gpus: float


def resolve_address(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The dashboard URL from --address, RAY_API_SERVER_ADDRESS or RAY_ADDRESS (in that order)."""
    env = os.environ if environ is None else environ
    source, address = next(((name, value) for name, value in [("--address", flag)] +
                            [(name, env.get(name)) for name in ADDRESS_ENV] if value), ("", None))
    if not address:
        raise ClusterError("no cluster address: pass --address http://HEAD:8265 or set RAY_API_SERVER_ADDRESS "
                           "(the dashboard URL that `ray start --head` prints)")
    host = urlparse(address if "://" in address else f"//{address}").hostname or "HEAD"
    if address.startswith("ray://") or (source == "RAY_ADDRESS" and "://" not in address):
        # RAY_ADDRESS often holds the GCS or Ray Client address that `raytune-llm tune` uses.
        raise ClusterError(f"{source or '--address'}={address} is not the dashboard; jobs go to its HTTP "
                           f"address: --address http://{host}:8265 (or set RAY_API_SERVER_ADDRESS)")
    if "://" not in address:
        address = f"http://{address}"
    if urlparse(address).scheme not in ("http", "https"):
        raise ClusterError(f"{source}: the dashboard's address must be http(s)://HOST:PORT (got {address})")
    return address.rstrip("/")


@contextlib.contextmanager
def _explicit_address() -> Iterator[None]:
    """Hide RAY_ADDRESS / RAY_API_SERVER_ADDRESS while the Jobs client is built.

    `JobSubmissionClient` lets those variables override the address it is given; the
    address we pass was already chosen with the flag first, so they must not win again.
    """
    saved = {name: os.environ.pop(name) for name in ADDRESS_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class Cluster:
    """A dashboard address plus the token to present there."""

    def __init__(self, address: str, token: Token | None) -> None:
        self.address = address
        self.token = token
        self._client: JobSubmissionClient | None = None
        self.ray_version = "?"

    def headers(self) -> dict[str, str]:
        """HTTP headers for every request (the bearer token, when there is one)."""
        return self.token.headers() if self.token else {}

    def scrub(self, text: str) -> str:
        """`text` safe to print: the token masked."""
        return mask(text, [self.token.value if self.token else None])

    def get_json(self, path: str) -> Any:
        """GET a dashboard endpoint; auth and connection failures become one-line errors."""
        import requests

        try:
            response = requests.get(self.address + path, headers=self.headers(), timeout=HTTP_TIMEOUT_S)
        except requests.RequestException as exc:
            raise ClusterError(self.scrub(
                f"cannot reach the Ray dashboard at {self.address} ({type(exc).__name__}). Is the head "
                f"running? `ray start --head` prints the address; for `ray up` clusters run `ray dashboard "
                f"CLUSTER.yaml`, for KubeRay `kubectl port-forward svc/NAME-head-svc 8265:8265`")) from None
        if response.status_code in (401, 403):
            raise auth_failure(response.status_code, self.address, self.token)
        if response.status_code >= 400:
            raise ClusterError(self.scrub(f"{self.address}{path}: HTTP {response.status_code}: "
                                          f"{response.text[:300]}"))
        return response.json()

    def client(self) -> JobSubmissionClient:
        """The Jobs API client, built once after checking the dashboard answers and accepts us."""
        if self._client is None:
            version = self.get_json("/api/version")  # 401/403 here beat Ray's longer messages
            from ray.job_submission import JobSubmissionClient

            with _explicit_address(), self.translate_errors():
                self._client = JobSubmissionClient(self.address, headers=self.headers())
            self.ray_version = str(version.get("ray_version", "?"))
        return self._client

    @contextlib.contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Turn the Jobs client's exceptions into `ClusterError` lines with the token masked."""
        from ray.exceptions import AuthenticationError

        try:
            yield
        except AuthenticationError:
            raise auth_failure(403 if self.token else 401, self.address, self.token) from None
        except (ConnectionError, RuntimeError, ValueError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(self.scrub(f"{self.address}: {text}")) from None

    def nodes(self) -> list[NodeInfo]:
        """Alive nodes and their total CPU/GPU resources, from the State API."""
        payload = self.get_json("/api/v0/nodes?detail=true&limit=10000")
        rows = (payload.get("data") or {}).get("result", {}).get("result", [])
        return [NodeInfo(node_id=str(row.get("node_id", "")), ip=str(row.get("node_ip", "")),
                         is_head=bool(row.get("is_head_node")),
                         cpus=float((row.get("resources_total") or {}).get("CPU", 0)),
                         gpus=float((row.get("resources_total") or {}).get("GPU", 0)))
                for row in rows if row.get("state") == "ALIVE"]


def on_this_machine(nodes: list[NodeInfo]) -> bool:
    """Whether every alive node runs here, so local paths are the cluster's paths too.

    Compared by IP against this machine's interfaces, not by the address we dialled: a
    dashboard on http://127.0.0.1:8265 is often a port-forward to a remote head.
    """
    import psutil

    local = {addr.address for addrs in psutil.net_if_addrs().values() for addr in addrs}
    if not nodes:
        return False
    for node in nodes:
        try:
            loopback = ipaddress.ip_address(node.ip).is_loopback
        except ValueError:
            loopback = False
        if not (loopback or node.ip in local):
            return False
    return True
