"""Checks of a Ray cluster-launcher config (the file `ray up` reads).

First Ray's own JSON schema (`ray/autoscaler/ray-schema.json`, the one `ray up` applies),
so a misspelt key fails here rather than on a cloud console half-way through a launch;
then what the schema cannot say: the head node type exists, min ≤ max workers, GPU
instance types declare their GPUs to Ray, GCP GPU VMs may not live-migrate, and some
setup step installs raytune_llm.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from raytune_llm.cluster.specs import Document

#: Instance types we know: (vCPUs, GPUs). Used to check that `resources` match the machine.
KNOWN_INSTANCES: dict[str, tuple[int, int]] = {
    # AWS
    "p4d.24xlarge": (96, 8),   # 8x A100 40GB
    "p4de.24xlarge": (96, 8),  # 8x A100 80GB
    "p5.48xlarge": (192, 8),   # 8x H100 80GB
    "p5e.48xlarge": (192, 8),  # 8x H200
    "g5.xlarge": (4, 1), "g5.12xlarge": (48, 4), "g5.48xlarge": (192, 8),
    "m6i.2xlarge": (8, 0), "m6i.4xlarge": (16, 0), "m6i.8xlarge": (32, 0),
    # GCP
    "a2-highgpu-8g": (96, 8),  # 8x A100 40GB
    "a2-ultragpu-8g": (96, 8),  # 8x A100 80GB
    "a3-highgpu-8g": (208, 8),  # 8x H100 80GB
    "a3-megagpu-8g": (208, 8),
    "g2-standard-4": (4, 1),
    "n2-standard-8": (8, 0), "n2-standard-16": (16, 0), "n2-standard-32": (32, 0),
}
# Families that always carry GPUs, for instance types missing from the table above.
_GPU_FAMILY = re.compile(r"^(p[2-6][a-z]*|g[3-6][a-z]*|gr6|dl1|trn1)\.|^(a2|a3|a4|g2)-")


def check_launcher(doc: Document) -> list[str]:
    """Every problem in one launcher document, as `dotted.path: message` strings."""
    data = doc.data
    problems = [f"{doc.where(path)}: {message}" for path, message in _schema_problems(data)]
    problems += [f"{doc.where(path)}: {message}" for path, message in _semantic_problems(data)]
    return problems


@functools.lru_cache(maxsize=1)
def _ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    schema: dict[str, Any] = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    return schema


def _schema_problems(data: Any) -> list[tuple[str, str]]:
    import jsonschema

    validator = jsonschema.Draft7Validator(_ray_schema())
    found = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(part) for part in error.absolute_path)
        found.append((path, f"{error.message} (Ray's cluster-launcher schema)"))
    return found


def _semantic_problems(data: Any) -> list[tuple[str, str]]:
    if not isinstance(data, dict):
        return []
    found = _provider_problems(data.get("provider"))
    types = data.get("available_node_types")
    if not isinstance(types, dict) or not types:
        return found + [("available_node_types", "declare at least a head node type and one worker node type")]
    head = data.get("head_node_type")
    if head is None:
        found.append(("head_node_type", f"missing; name one of {sorted(types)}"))
    elif head not in types:
        found.append(("head_node_type", f"'{head}' is not in available_node_types (have {sorted(types)})"))
    provider = str((data.get("provider") or {}).get("type", ""))
    for name, spec in types.items():
        if isinstance(spec, dict):
            found += _node_type_problems(f"available_node_types.{name}", spec, name == head, provider)
    found += _worker_total_problems(data, types, head)
    if not _installs_raytune(data):
        found.append(("setup_commands", "nothing installs raytune_llm: add `pip install ...raytune_llm...` to "
                                        "setup_commands or use a docker image that has it (name containing 'raytune')"))
    return found


def _provider_problems(provider: Any) -> list[tuple[str, str]]:
    if not isinstance(provider, dict):
        return []  # the schema already reports a missing or malformed provider
    kind = provider.get("type")
    required = {"aws": ["region"], "gcp": ["region", "availability_zone", "project_id"]}.get(str(kind), [])
    return [(f"provider.{key}", f"required for provider type '{kind}'") for key in required if not provider.get(key)]


def _node_type_problems(where: str, spec: dict[str, Any], is_head: bool, provider: str) -> list[tuple[str, str]]:
    found = []
    low, high = spec.get("min_workers", 0), spec.get("max_workers", 0)
    if isinstance(low, int) and isinstance(high, int):
        if low > high:
            found.append((f"{where}.min_workers", f"min_workers ({low}) is above max_workers ({high})"))
        if not is_head and high < 1:
            found.append((f"{where}.max_workers", "max_workers is 0 (or missing): this worker group never starts"))
    resources, node_config = spec.get("resources"), spec.get("node_config")
    found += _gpu_problems(where, node_config if isinstance(node_config, dict) else {},
                           resources if isinstance(resources, dict) else {}, provider)
    return found


def _instance_type(node_config: dict[str, Any]) -> str:
    return str(node_config.get("InstanceType") or node_config.get("machineType") or "")


def _gpu_problems(where: str, node_config: dict[str, Any], resources: dict[str, Any],
                  provider: str) -> list[tuple[str, str]]:
    """A GPU machine must tell Ray its GPUs, and the counts must match the machine."""
    instance = _instance_type(node_config)
    known = KNOWN_INSTANCES.get(instance)
    has_gpu = bool(_GPU_FAMILY.search(instance)) or bool(node_config.get("guestAccelerators")) or bool(
        known and known[1])
    declared = resources.get("GPU", 0) or 0
    found = []
    if has_gpu and not declared:
        expected = f" {known[1]}" if known else " N"
        found.append((f"{where}.resources.GPU", f"'{instance}' is a GPU machine but resources declare no GPU; "
                                                f"add `GPU:{expected}` so Ray schedules GPU workers there"))
    elif known and declared != known[1]:
        found.append((f"{where}.resources.GPU", f"'{instance}' has {known[1]} GPUs (got GPU: {declared})"))
    cpus = resources.get("CPU")
    if known and isinstance(cpus, (int, float)) and cpus > known[0]:
        found.append((f"{where}.resources.CPU", f"'{instance}' has {known[0]} vCPUs (got CPU: {cpus})"))
    if provider == "gcp" and has_gpu:
        policies = [s.get("onHostMaintenance") for s in _as_list(node_config.get("scheduling")) if isinstance(s, dict)]
        if "TERMINATE" not in policies:
            found.append((f"{where}.node_config.scheduling", "GCP GPU VMs cannot live-migrate; "
                                                             "add `scheduling: [{onHostMaintenance: TERMINATE}]`"))
    return found


def _worker_total_problems(data: dict[str, Any], types: dict[str, Any], head: Any) -> list[tuple[str, str]]:
    total = data.get("max_workers")
    if not isinstance(total, int):
        return []
    floor = sum(spec.get("min_workers", 0) or 0 for name, spec in types.items()
                if isinstance(spec, dict) and name != head and isinstance(spec.get("min_workers", 0), int))
    if floor > total:
        return [("max_workers", f"the worker groups' min_workers add up to {floor}, above the "
                                f"cluster-wide max_workers ({total})")]
    return []


def _installs_raytune(data: dict[str, Any]) -> bool:
    """Some setup command pip-installs raytune_llm, or the docker image is one of ours."""
    commands: list[str] = []
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        commands += [str(c) for c in _as_list(data.get(key))]
    docker = data.get("docker")
    keys = ("image", "head_image", "worker_image")
    images = [str(docker.get(k, "")) for k in keys] if isinstance(docker, dict) else []
    for spec in (data.get("available_node_types") or {}).values():
        if isinstance(spec, dict):
            commands += [str(c) for c in _as_list(spec.get("worker_setup_commands"))]
            node_docker = spec.get("docker")
            if isinstance(node_docker, dict):
                images.append(str(node_docker.get("worker_image", "")))
    return any(re.search(r"pip3? install.*raytune", c, re.IGNORECASE | re.DOTALL) for c in commands) or any(
        "raytune" in image.lower() for image in images)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
