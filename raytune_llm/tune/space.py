"""Turn the YAML search space into a Ray Tune `param_space` (a plain dict)."""

from __future__ import annotations

from typing import Any

from raytune_llm.config.schema import SearchDimension, TuneConfig


def dimension(spec: SearchDimension, is_int: bool, all_grid: bool = False) -> Any:
    """One Ray Tune sampler (or grid) for a search dimension.

    With `all_grid` (`tune.search: grid`), choice dimensions are crossed like grid ones.
    """
    import ray.tune

    if spec.type == "grid" or (all_grid and spec.type == "choice"):
        return ray.tune.grid_search(list(spec.values or []))
    if spec.type == "choice":
        return ray.tune.choice(list(spec.values or []))
    assert spec.low is not None and spec.high is not None  # checked by the schema
    if spec.type == "randint" or is_int:
        return ray.tune.randint(int(spec.low), int(spec.high) + 1)  # upper bound inclusive for users
    if spec.type == "loguniform":
        return ray.tune.loguniform(spec.low, spec.high)
    return ray.tune.uniform(spec.low, spec.high)


def build_param_space(tune: TuneConfig, int_fields: set[str]) -> dict[str, Any]:
    """`{dotted.path: sampler}`; trial configs come back with the same flat dotted keys."""
    all_grid = tune.search == "grid"
    return {path: dimension(spec, path in int_fields, all_grid) for path, spec in tune.search_space.items()}


def grid_size(tune: TuneConfig) -> int:
    """Number of trials Tune will run: grid points × num_samples."""
    size = 1
    for spec in tune.search_space.values():
        if spec.type == "grid" or (tune.search == "grid" and spec.type == "choice"):
            size *= len(spec.values or [])
    return size * tune.num_samples
