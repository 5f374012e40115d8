"""Checks of KubeRay `RayCluster` and `RayJob` manifests.

The API server would reject some of these only at `kubectl apply`, and some never: a GPU
worker group without `nvidia.com/gpu` limits starts fine and then trains on CPU, and
`rayStartParams` with a number instead of a string fails on apply. One line per problem,
with the dotted path (`spec.workerGroupSpecs[1].template...`).
"""

from __future__ import annotations

import re
from typing import Any

from raytune_llm.cluster.specs import K8S_GPU, Document, dig, parse_quantity

# A worker group whose name, node selector, tolerations or image say "GPU" must ask for GPUs.
_GPU_HINT = re.compile(r"gpu|a100|h100|h200|l4\b|t4\b|v100|nvidia", re.IGNORECASE)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_raycluster(doc: Document) -> list[str]:
    """Every problem in a RayCluster document."""
    data = doc.data
    found = _metadata_problems(data)
    spec = data.get("spec")
    if not isinstance(spec, dict):
        found.append(("spec", "missing; a RayCluster needs spec.headGroupSpec and spec.workerGroupSpecs"))
    else:
        found += cluster_spec_problems(spec, "spec")
    return [f"{doc.where(path)}: {message}" for path, message in found]


def check_rayjob(doc: Document) -> list[str]:
    """Every problem in a RayJob document (its embedded cluster spec included)."""
    data = doc.data
    found = _metadata_problems(data)
    spec = data.get("spec")
    if not isinstance(spec, dict):
        found.append(("spec", "missing; a RayJob needs spec.entrypoint and spec.rayClusterSpec"))
        return [f"{doc.where(path)}: {message}" for path, message in found]
    entrypoint = spec.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        found.append(("spec.entrypoint", "missing; the shell command the job runs, e.g. "
                                         "`python -m raytune_llm.cli tune /mnt/shared/configs/run.yaml`"))
    if isinstance(spec.get("rayClusterSpec"), dict):
        found += cluster_spec_problems(spec["rayClusterSpec"], "spec.rayClusterSpec")
    elif not spec.get("clusterSelector"):
        found.append(("spec.rayClusterSpec", "missing; give a cluster spec, or spec.clusterSelector "
                                             "to run on an existing RayCluster"))
    for key in ("shutdownAfterJobFinishes", "suspend"):
        if key in spec and not isinstance(spec[key], bool):
            found.append((f"spec.{key}", f"must be true or false (got {spec[key]!r})"))
    ttl = spec.get("ttlSecondsAfterFinished")
    if ttl is not None and (not isinstance(ttl, int) or ttl < 0):
        found.append(("spec.ttlSecondsAfterFinished", f"must be a whole number of seconds >= 0 (got {ttl!r})"))
    return [f"{doc.where(path)}: {message}" for path, message in found]


def cluster_spec_problems(spec: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """Problems of a RayCluster spec found at dotted path `where`."""
    found: list[tuple[str, str]] = []
    head = spec.get("headGroupSpec")
    if not isinstance(head, dict):
        found.append((f"{where}.headGroupSpec", "missing; the head pod's template"))
    else:
        found += _pod_problems(head.get("template"), f"{where}.headGroupSpec.template", gpu_group=False)
        found += _start_param_problems(head.get("rayStartParams"), f"{where}.headGroupSpec.rayStartParams")
    workers = spec.get("workerGroupSpecs")
    if not isinstance(workers, list) or not workers:
        found.append((f"{where}.workerGroupSpecs", "declare at least one worker group (e.g. 8x A100 nodes)"))
        workers = []
    names: set[str] = set()
    for i, group in enumerate(workers):
        at = f"{where}.workerGroupSpecs[{i}]"
        if not isinstance(group, dict):
            found.append((at, "must be a mapping with groupName, replicas, template"))
            continue
        name = group.get("groupName")
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            found.append((f"{at}.groupName", f"must be a lower-case DNS label like 'gpu-a100' (got {name!r})"))
        elif name in names:
            found.append((f"{at}.groupName", f"'{name}' is used by another worker group"))
        names.add(str(name))
        found += _replica_problems(group, at)
        found += _pod_problems(group.get("template"), f"{at}.template", gpu_group=_looks_gpu(group))
        found += _start_param_problems(group.get("rayStartParams"), f"{at}.rayStartParams")
    found += _image_problems(spec, where)
    return found


def _metadata_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    if not isinstance(data.get("apiVersion"), str) or not data["apiVersion"].startswith("ray.io/"):
        return [("apiVersion", f"must be ray.io/v1 (got {data.get('apiVersion')!r})")]
    name = dig(data, "metadata", "name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        return [("metadata.name", f"must be a lower-case DNS label (got {name!r})")]
    return []


def _replica_problems(group: dict[str, Any], at: str) -> list[tuple[str, str]]:
    counts = {key: group.get(key) for key in ("minReplicas", "maxReplicas", "replicas")}
    found = [(f"{at}.{key}", f"must be a whole number >= 0 (got {value!r})")
             for key, value in counts.items() if value is not None and (not isinstance(value, int) or value < 0)]
    if found:
        return found
    low, high, now = counts["minReplicas"], counts["maxReplicas"], counts["replicas"]
    if low is not None and high is not None and low > high:
        found.append((f"{at}.minReplicas", f"minReplicas ({low}) is above maxReplicas ({high})"))
    if high is not None and high < 1:
        found.append((f"{at}.maxReplicas", "maxReplicas is 0: this worker group never starts"))
    if now is not None and high is not None and now > high:
        found.append((f"{at}.replicas", f"replicas ({now}) is above maxReplicas ({high})"))
    if now is not None and low is not None and now < low:
        found.append((f"{at}.replicas", f"replicas ({now}) is below minReplicas ({low})"))
    return found


def _pod_problems(template: Any, at: str, gpu_group: bool) -> list[tuple[str, str]]:
    containers = dig(template, "spec", "containers")
    if not isinstance(containers, list) or not containers:
        return [(f"{at}.spec.containers", "missing; the Ray container (image, resources)")]
    found = []
    for i, container in enumerate(containers):
        where = f"{at}.spec.containers[{i}]"
        if not isinstance(container, dict):
            found.append((where, "must be a mapping"))
            continue
        for key in ("name", "image"):
            if not container.get(key):
                found.append((f"{where}.{key}", "missing"))
    ray = containers[0] if isinstance(containers[0], dict) else {}
    where = f"{at}.spec.containers[0].resources"
    limits = dig(ray, "resources", "limits") or {}
    requests = dig(ray, "resources", "requests") or {}
    for key in ("cpu", "memory"):
        if key not in limits:
            found.append((f"{where}.limits.{key}", f"missing; KubeRay sizes Ray's {key} from the limits"))
    gpus = parse_quantity(limits.get(K8S_GPU, 0))
    if gpus is None or (gpu_group and not gpus):
        found.append((f"{where}.limits.{K8S_GPU}", f"this looks like a GPU group: set limits `{K8S_GPU}: N` "
                                                   f"(whole GPUs per pod) (got {limits.get(K8S_GPU)!r})"))
    if K8S_GPU in requests and parse_quantity(requests[K8S_GPU]) != gpus:
        found.append((f"{where}.requests.{K8S_GPU}", f"must equal limits.{K8S_GPU} (Kubernetes does not "
                                                     f"overcommit GPUs) (got {requests[K8S_GPU]!r})"))
    return found


def _start_param_problems(params: Any, at: str) -> list[tuple[str, str]]:
    if params is None:
        return []
    if not isinstance(params, dict):
        return [(at, f"must be a mapping of strings (got {type(params).__name__})")]
    return [(f"{at}.{key}", f"values must be strings, e.g. '{value}' in quotes (got {value!r})")
            for key, value in params.items() if not isinstance(value, str)]


def _looks_gpu(group: dict[str, Any]) -> bool:
    hints = [group.get("groupName"), dig(group, "template", "spec", "nodeSelector"),
             dig(group, "template", "spec", "tolerations"), dig(group, "rayStartParams", "num-gpus")]
    return any(hint and _GPU_HINT.search(str(hint)) for hint in hints[:3]) or bool(hints[3])


def _image_problems(spec: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """Head and workers must run the same Ray version; a mismatch fails at connect time."""
    tags: dict[str, str] = {}
    head = dig(spec, "headGroupSpec", "template", "spec", "containers", 0, "image")
    if isinstance(head, str):
        tags[f"{where}.headGroupSpec"] = _ray_version(head)
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        image = dig(group, "template", "spec", "containers", 0, "image")
        if isinstance(image, str):
            tags[f"{where}.workerGroupSpecs[{i}]"] = _ray_version(image)
    versions = {tag for tag in tags.values() if tag}
    if len(versions) > 1:
        return [(f"{where}.workerGroupSpecs", "head and worker images carry different Ray versions "
                                              f"({', '.join(sorted(versions))}); use one Ray version everywhere")]
    return []


def _ray_version(image: str) -> str:
    """The Ray version an image names: `rayproject/ray:2.60.0-gpu`, or a tag like `0.1.0-ray2.60.0`."""
    tag = image.rpartition(":")[2]
    match = re.search(r"ray-?(\d+\.\d+\.\d+)", tag) or (
        re.match(r"(\d+\.\d+\.\d+)", tag) if "rayproject/ray" in image else None)
    return match.group(1) if match else ""
