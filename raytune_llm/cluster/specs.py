"""Cluster definition files: what kind each YAML document is, and its node groups.

Three kinds are understood: a Ray cluster-launcher config (`ray up FILE`), a KubeRay
`RayCluster` and a KubeRay `RayJob` (whose `spec.rayClusterSpec` is a RayCluster spec).
`node_groups` reduces any of them to `NodeGroup`s (CPUs, GPUs, min/max count), which is
what the submit pre-flight needs to know what an autoscaling cluster can grow to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

Kind = Literal["launcher", "RayCluster", "RayJob", "other-k8s", "unknown"]

#: Kubernetes resource name of NVIDIA GPUs (the device plugin's extended resource).
K8S_GPU = "nvidia.com/gpu"


@dataclass(frozen=True)
class NodeGroup:
    """One group of identical nodes: the head, or a worker group that autoscales.

    `cpus`/`gpus` are what Ray will advertise per node (None: not declared in the file).
    """

    name: str
    cpus: float | None
    gpus: float
    min_count: int
    max_count: int
    is_head: bool = False


@dataclass(frozen=True)
class Document:
    """One YAML document of a cluster file, with its position for problem lines."""

    index: int
    total: int
    data: Any

    def where(self, dotted: str = "") -> str:
        """A dotted path prefixed with the document number when the file has several."""
        prefix = f"[doc {self.index + 1}]" if self.total > 1 else ""
        return ".".join(part for part in (prefix, dotted) if part) or "(top level)"


def read_documents(path: Path) -> tuple[list[Document], list[str]]:
    """Parse every YAML document in `path`; problems are `path: message` lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [], [f"{path}: cannot read file: {exc.strerror or exc}"]
    try:
        loaded = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return [], [f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}"]
    if not loaded:
        return [], [f"{path}: the file is empty"]
    return [Document(i, len(loaded), doc) for i, doc in enumerate(loaded)], []


def detect_kind(doc: Any) -> Kind:
    """Tell a launcher config from a KubeRay manifest (or another Kubernetes object)."""
    if not isinstance(doc, dict):
        return "unknown"
    if "apiVersion" in doc or "kind" in doc:
        api = str(doc.get("apiVersion", ""))
        if api.startswith("ray.io/") and doc.get("kind") == "RayCluster":
            return "RayCluster"
        if api.startswith("ray.io/") and doc.get("kind") == "RayJob":
            return "RayJob"
        return "other-k8s"
    if "provider" in doc or "available_node_types" in doc or "head_node_type" in doc:
        return "launcher"
    return "unknown"


def parse_quantity(value: Any) -> float | None:
    """A Kubernetes quantity (`8`, `500m`, `"16"`) as a number; None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"\s*([0-9.]+)\s*(m?)\s*", str(value))
    if not match:
        return None
    try:
        number = float(match.group(1))
    except ValueError:
        return None
    return number / 1000 if match.group(2) == "m" else number


def launcher_groups(doc: dict[str, Any]) -> list[NodeGroup]:
    """Node groups of a cluster-launcher config (`available_node_types`)."""
    head = doc.get("head_node_type")
    groups = []
    for name, spec in (doc.get("available_node_types") or {}).items():
        if not isinstance(spec, dict):
            continue
        resources = spec.get("resources") or {}
        cpus = resources.get("CPU")
        is_head = name == head
        groups.append(NodeGroup(
            name=str(name), cpus=float(cpus) if isinstance(cpus, (int, float)) else None,
            gpus=float(resources.get("GPU", 0) or 0), is_head=is_head,
            min_count=1 if is_head else int(spec.get("min_workers", 0) or 0),
            max_count=1 if is_head else int(spec.get("max_workers", 0) or 0)))
    return groups


def dig(obj: Any, *keys: str | int) -> Any:
    """`obj[k1][k2]...`, or None as soon as a level is missing or of the wrong type."""
    for key in keys:
        if isinstance(key, int):
            obj = obj[key] if isinstance(obj, list) and -len(obj) <= key < len(obj) else None
        else:
            obj = obj.get(key) if isinstance(obj, dict) else None
        if obj is None:
            return None
    return obj


def pod_resources(template: Any, start_params: Any) -> tuple[float | None, float]:
    """(CPUs, GPUs) Ray advertises for a KubeRay pod: rayStartParams win over container limits."""
    params = start_params if isinstance(start_params, dict) else {}
    limits = dig(template, "spec", "containers", 0, "resources", "limits") or {}
    cpus = parse_quantity(params.get("num-cpus", limits.get("cpu")))
    gpus = parse_quantity(params.get("num-gpus", limits.get(K8S_GPU, 0))) or 0.0
    return cpus, gpus


def raycluster_groups(spec: dict[str, Any]) -> list[NodeGroup]:
    """Node groups of a RayCluster spec (also a RayJob's `spec.rayClusterSpec`)."""
    head = spec.get("headGroupSpec") or {}
    cpus, gpus = pod_resources(head.get("template"), head.get("rayStartParams"))
    groups = [NodeGroup("head", cpus, gpus, 1, 1, is_head=True)]
    for worker in spec.get("workerGroupSpecs") or []:
        if not isinstance(worker, dict):
            continue
        cpus, gpus = pod_resources(worker.get("template"), worker.get("rayStartParams"))
        replicas = int(worker.get("replicas", 0) or 0)
        groups.append(NodeGroup(str(worker.get("groupName", "?")), cpus, gpus,
                                int(worker.get("minReplicas", replicas) or 0),
                                int(worker.get("maxReplicas", replicas) or 0)))
    return groups


def node_groups(paths: Sequence[str | Path]) -> list[NodeGroup]:
    """Every node group declared by the launcher/KubeRay documents in `paths`."""
    groups: list[NodeGroup] = []
    for path in paths:
        docs, _ = read_documents(Path(path))
        for doc in docs:
            kind = detect_kind(doc.data)
            if kind == "launcher":
                groups += launcher_groups(doc.data)
            elif kind == "RayCluster":
                groups += raycluster_groups(doc.data.get("spec") or {})
            elif kind == "RayJob":
                groups += raycluster_groups((doc.data.get("spec") or {}).get("rayClusterSpec") or {})
    return groups
