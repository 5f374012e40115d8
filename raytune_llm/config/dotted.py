"""Read and write config values by dotted path (`train.learning_rate`).

Public here: `get_dotted` and `set_dotted`, which `raytune_llm.config.loader` re-exports
and the Tune layer uses to apply each trial's sampled values. `set_path` and `is_within`
work on raw (not yet validated) config dicts for the loader's overrides and search-space
checks. Search-space keys contain dots themselves, so a path is not simply `split(".")`:
see `_match_key`.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from raytune_llm.config.problems import (
    Loc,
    Problem,
    convert_errors,
    did_you_mean,
    format_problem,
    model_at,
    walk_schema,
)
from raytune_llm.config.schema import RunConfig
from raytune_llm.errors import ConfigError

__all__ = ["get_dotted", "is_within", "set_dotted", "set_path"]


def get_dotted(config: RunConfig, dotted: str) -> Any:
    """Return the value at `dotted` (e.g. `train.learning_rate`) in a config.

    Walks fields of models and keys of dicts; an unknown name raises `ConfigError` with a
    did-you-mean, like a misspelt key in a file would.
    """
    node: Any = config
    parts = dotted.split(".")
    done = 0
    while done < len(parts):
        if isinstance(node, BaseModel) and parts[done] in type(node).model_fields:
            node, done = getattr(node, parts[done]), done + 1
            continue
        if isinstance(node, dict):
            key, used = _match_key(node, parts[done:])
            if key in node:
                node, done = node[key], done + used
                continue
        if isinstance(node, dict):
            # Dict keys may contain dots (search space): compare the whole rest of the path.
            name, options = ".".join(parts[done:]), [str(key) for key in node]
        else:
            name = parts[done]
            options = list(type(node).model_fields) if isinstance(node, BaseModel) else []
        problem = Problem(dotted, f"unknown key '{name}'" + did_you_mean(name, options))
        raise ConfigError([format_problem("get_dotted", problem)])
    return node


def set_dotted(
    config: RunConfig, dotted: str, value: Any, *, source: str = "set_dotted"
) -> RunConfig:
    """Return a new, fully validated `RunConfig` with the field at `dotted` set to `value`.

    The input config is left untouched (the Tune layer applies each trial's sampled values
    to a shared base config). Validating the whole model, not just the field, keeps cross-field
    checks such as the split fractions honest. Raises `ConfigError`; its lines start with
    `source`.
    """
    raw = config.model_dump()
    parts = dotted.split(".")
    problem = set_path(raw, parts, value)
    if problem is not None:
        raise ConfigError([format_problem(source, problem)])
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([format_problem(source, p) for p in convert_errors(exc)]) from None


def set_path(tree: dict[str, Any], parts: Sequence[str], value: Any) -> Problem | None:
    """Set `tree[p0][p1]...= value`, creating missing (or null) sections on the way.

    Search-space keys contain dots themselves, so `tune.search_space.train.learning_rate.high`
    is split as entry `train.learning_rate`, field `high` (see `_match_key`).
    """
    node = tree
    keys: list[str] = []
    done = 0
    while True:
        key, used = _match_key(node, parts[done:], tuple(keys))
        keys.append(key)
        done += used
        if done == len(parts):
            node[key] = value
            return None
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            message = f"cannot set '{parts[done]}' inside a non-mapping"
            return Problem(".".join(keys), message, child)
        node = child


def _match_key(
    node: dict[Any, Any], parts: Sequence[str], at: Loc | None = None
) -> tuple[str, int]:
    """The key of `node` that the leading `parts` name, and how many parts it used.

    An existing key matches whole (longest first). Inside a schema dict of models (the
    search space, `at` being the node's location in a raw config) a new key takes every
    part except a trailing field name of that model. Otherwise the key is the first part.
    """
    for count in range(len(parts), 1, -1):
        if ".".join(parts[:count]) in node:
            return ".".join(parts[:count]), count
    entry = model_at((*at, "")) if at is not None else None
    if entry is not None and typing.get_origin(walk_schema(at)[1]) is dict:
        used = len(parts) - 1 if len(parts) > 1 and parts[-1] in entry.model_fields else len(parts)
        return ".".join(parts[:used]), used
    return parts[0], 1


def is_within(path: str, ancestor: str) -> bool:
    """True if dotted `path` is `ancestor` or lies below it."""
    return path == ancestor or path.startswith((ancestor + ".", ancestor + "["))
