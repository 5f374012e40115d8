"""`raytune-llm cluster validate`: check cluster definition files, every problem at once.

Each problem is one line `FILE: dotted.path: message`, like `raytune-llm validate` for run
configs. Other Kubernetes objects in a manifest (a Secret, a PersistentVolumeClaim) are
allowed beside the KubeRay ones and not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from raytune_llm.cluster.kuberay import check_raycluster, check_rayjob
from raytune_llm.cluster.launcher import check_launcher
from raytune_llm.cluster.specs import Kind, detect_kind, read_documents

__all__ = ["validate_cluster_file", "validate_cluster_files"]


def validate_cluster_file(path: str | Path) -> tuple[list[Kind], list[str]]:
    """The kinds of the documents in `path` and its problem lines (empty when valid)."""
    docs, problems = read_documents(Path(path))
    kinds: list[Kind] = []
    for doc in docs:
        kind = detect_kind(doc.data)
        kinds.append(kind)
        if kind == "launcher":
            lines = check_launcher(doc)
        elif kind == "RayCluster":
            lines = check_raycluster(doc)
        elif kind == "RayJob":
            lines = check_rayjob(doc)
        elif kind == "other-k8s":
            lines = []
        else:
            lines = [f"{doc.where()}: cannot tell what this is: expected a Ray cluster-launcher config "
                     "(cluster_name, provider, available_node_types) or a KubeRay manifest "
                     "(apiVersion: ray.io/v1, kind: RayCluster or RayJob)"]
        problems += [f"{path}: {line}" for line in lines]
    if docs and all(kind == "other-k8s" for kind in kinds):
        problems.append(f"{path}: no Ray cluster definition in this file (found {', '.join(kinds)})")
    return kinds, problems


def validate_cluster_files(paths: Sequence[str | Path]) -> dict[str, tuple[list[Kind], list[str]]]:
    """Check each file; map `str(path)` to (document kinds, problem lines). Never raises."""
    return {str(path): validate_cluster_file(path) for path in paths}
