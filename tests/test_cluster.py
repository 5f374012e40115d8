"""`raytune-llm cluster validate`: every shipped cluster file passes, broken variants fail loudly.

Each broken variant is a shipped file with a few realistic mistakes; the test checks that
all of them are reported at once, each with the file and the dotted path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from raytune_llm.cluster.cli import main
from raytune_llm.cluster.specs import node_groups
from raytune_llm.cluster.validate import validate_cluster_file
from tests.conftest import REPO

CLUSTERS = sorted((REPO / "clusters").glob("*.yaml"))


def broken(tmp_path: Path, name: str, edit: Callable[[list[Any]], None]) -> Path:
    """A copy of clusters/NAME with `edit` applied to its YAML documents."""
    docs = list(yaml.safe_load_all((REPO / "clusters" / name).read_text()))
    edit(docs)
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def problems(path: Path) -> list[str]:
    return validate_cluster_file(path)[1]


def test_every_shipped_cluster_file_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "validate", *map(str, CLUSTERS)]) == 0
    out = capsys.readouterr().out
    assert out.count("OK   ") == len(CLUSTERS)
    kinds = {kind for path in CLUSTERS for kind in validate_cluster_file(path)[0]}
    assert {"launcher", "RayCluster", "RayJob"} <= kinds


def test_shipped_clusters_offer_8x_a100_and_8x_h100_groups() -> None:
    for name in ("aws-gpu.yaml", "gcp-gpu.yaml", "kuberay-raycluster.yaml"):
        groups = {g.name: g for g in node_groups([REPO / "clusters" / name])}
        head = [g for g in groups.values() if g.is_head]
        assert len(head) == 1 and head[0].gpus == 0
        for gpu_group in ("gpu-a100-8x", "gpu-h100-8x"):
            group = groups[gpu_group]
            assert group.gpus == 8 and group.min_count <= group.max_count and group.max_count >= 1


def test_broken_launcher_reports_every_problem(tmp_path: Path) -> None:
    def edit(docs: list[Any]) -> None:
        config = docs[0]
        config["head_node_type"] = "head"                                   # not a node type
        del config["available_node_types"]["gpu-a100-8x"]["resources"]["GPU"]  # GPUs not declared
        config["available_node_types"]["gpu-h100-8x"]["min_workers"] = 5   # above max_workers (2)
        config["available_node_types"]["gpu-h100-8x"]["max_worker"] = 3    # misspelt key
        config["setup_commands"] = ["echo nothing"]                         # raytune_llm never installed
        del config["provider"]["region"]

    path = broken(tmp_path, "aws-gpu.yaml", edit)
    found = problems(path)
    expected = [
        "head_node_type: 'head' is not in available_node_types",
        "available_node_types.gpu-a100-8x.resources.GPU: 'p4d.24xlarge' is a GPU machine but resources declare no GPU",
        "available_node_types.gpu-h100-8x.min_workers: min_workers (5) is above max_workers (2)",
        "available_node_types.gpu-h100-8x: Additional properties are not allowed ('max_worker' was unexpected)",
        "setup_commands: nothing installs raytune_llm",
        "provider.region: required for provider type 'aws'",
    ]
    for text in expected:
        assert any(line.startswith(f"{path}: {text}") for line in found), (text, found)


def test_broken_gcp_gpu_nodes_must_not_live_migrate(tmp_path: Path) -> None:
    def edit(docs: list[Any]) -> None:
        del docs[0]["available_node_types"]["gpu-h100-8x"]["node_config"]["scheduling"]
        docs[0]["available_node_types"]["gpu-a100-8x"]["resources"]["GPU"] = 4

    found = problems(broken(tmp_path, "gcp-gpu.yaml", edit))
    assert any("gpu-h100-8x.node_config.scheduling: GCP GPU VMs cannot live-migrate" in line for line in found)
    assert any("gpu-a100-8x.resources.GPU: 'a2-highgpu-8g' has 8 GPUs (got GPU: 4)" in line for line in found)


def test_broken_raycluster_reports_every_problem(tmp_path: Path) -> None:
    def edit(docs: list[Any]) -> None:
        spec = docs[1]["spec"]
        a100, h100 = spec["workerGroupSpecs"]
        del a100["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        h100["minReplicas"], h100["maxReplicas"] = 3, 1
        h100["groupName"] = "gpu-a100-8x"
        spec["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
        del spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]

    path = broken(tmp_path, "kuberay-raycluster.yaml", edit)
    found = problems(path)
    at = f"{path}: [doc 2].spec"
    a100 = f"{at}.workerGroupSpecs[0].template.spec.containers[0].resources"
    expected = [
        f"{a100}.limits.nvidia.com/gpu: this looks like a GPU group",
        f"{a100}.requests.nvidia.com/gpu: must equal limits",
        f"{at}.workerGroupSpecs[1].minReplicas: minReplicas (3) is above maxReplicas (1)",
        f"{at}.workerGroupSpecs[1].replicas: replicas (0) is below minReplicas (3)",
        f"{at}.workerGroupSpecs[1].groupName: 'gpu-a100-8x' is used by another worker group",
        f"{at}.headGroupSpec.rayStartParams.num-cpus: values must be strings",
        f"{at}.headGroupSpec.template.spec.containers[0].image: missing",
    ]
    for text in expected:
        assert any(line.startswith(text) for line in found), (text, found)
    assert len(found) == len(expected)


def test_broken_rayjob_and_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def edit(docs: list[Any]) -> None:
        del docs[0]["spec"]["entrypoint"]
        docs[0]["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
            "image"] = "rayproject/ray:2.50.0-gpu"

    job = broken(tmp_path, "kuberay-rayjob.yaml", edit)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("cluster_name: x\nprovider: [aws\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("hello: world\n")
    assert main(["cluster", "validate", str(job), str(bad_yaml), str(unknown), *map(str, CLUSTERS[:1])]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {job} (RayJob)" in out and f"OK   {CLUSTERS[0]}" in out
    assert f"{job}: spec.entrypoint: missing" in out
    assert "different Ray versions (2.50.0, 2.60.0)" in out
    assert f"{bad_yaml}: invalid YAML at line" in out
    assert f"{unknown}: (top level): cannot tell what this is" in out
