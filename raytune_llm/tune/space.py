"""Turn the YAML search space into a Ray Tune `param_space` (a plain dict)."""

from __future__ import annotations

from typing import Any

from raytune_llm.config.schema import SearchDimension, TuneConfig


def dimension(spec: SearchDimension, is_int: bool) -> Any:
    """One Ray Tune sampler (or grid, crossed with the rest by `search: random`) for a search dimension."""
    import ray.tune

    if spec.type == "grid":
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
    """`{dotted.path: sampler}`; trial configs come back with the same flat dotted keys.

    Under `search: grid` the dimensions are plain choices: the grid itself is handed to
    the searcher as `grid_points`, in a seeded random order.
    """
    if tune.search == "grid":
        import ray.tune

        return {path: ray.tune.choice(list(spec.values or [])) for path, spec in tune.search_space.items()}
    return {path: dimension(spec, path in int_fields) for path, spec in tune.search_space.items()}


def grid_points(tune: TuneConfig) -> list[dict[str, Any]]:
    """Every combination of a `search: grid` space (× num_samples), shuffled with `tune.seed`.

    Why shuffled: an asynchronous scheduler (ASHA) always promotes the first trials to reach
    a rung, as there is nothing yet to compare them with. Run in the order the values are
    listed (usually small to large learning rates), those would always be the same corner
    of the grid; a seeded shuffle makes the order fair and still repeatable.
    """
    import itertools
    import random

    paths = sorted(tune.search_space)
    combos = [dict(zip(paths, values)) for values in
              itertools.product(*(list(tune.search_space[p].values or []) for p in paths))]
    points = combos * tune.num_samples
    random.Random(tune.seed).shuffle(points)
    return points


def grid_size(tune: TuneConfig) -> int:
    """Number of trials Tune will run: grid points × num_samples."""
    size = 1
    for spec in tune.search_space.values():
        if spec.type == "grid" or (tune.search == "grid" and spec.type == "choice"):
            size *= len(spec.values or [])
    return size * tune.num_samples
