"""Check `tune.search_space` against the schema before any trial runs.

Pydantic checks the shape of each search dimension; only here do we learn whether its key
names a field that can be searched and whether every value it can hand to a trial is valid
for that field. A bad candidate found now costs one `validate` run instead of one failed
trial in the middle of a sweep. Internal to `raytune_llm.config`; the loader calls
`check_search_space`.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError

from raytune_llm.config.dotted import get_dotted, is_within, set_path
from raytune_llm.config.problems import (
    NO_VALUE,
    Problem,
    convert_errors,
    did_you_mean,
    field_paths,
    is_scalar,
)
from raytune_llm.config.schema import RunConfig

__all__ = ["check_search_space"]

# Tune's own settings cannot be searched: a trial cannot change the sweep it belongs to.
_UNSEARCHABLE_SECTIONS = ("tune",)


def check_search_space(raw: dict[str, Any]) -> tuple[list[Problem], dict[str, list[Any]]]:
    """Check that every search-space key names a searchable field and every candidate
    value (choice/grid values, range bounds) is valid for that field.

    Works on the raw dict so that it also runs when other parts of the config are broken.
    Returns the problems and, per choice/grid key whose values all validated, those values
    as the field's validator produced them.
    """
    tune = raw.get("tune")
    space = tune.get("search_space") if isinstance(tune, dict) else None
    if not isinstance(space, dict):
        return [], {}  # absent: the schema's default space is valid; malformed: pydantic says so
    base_errors = {p.path for p in _errors_of(raw)}
    problems: list[Problem] = []
    coerced: dict[str, list[Any]] = {}
    for key, dim in space.items():
        where = f"tune.search_space.{key}"
        key_problem = _check_space_key(str(key))
        if key_problem is not None:
            problems.append(Problem(where, key_problem))
            continue
        if not isinstance(dim, dict):
            continue  # pydantic reports a malformed entry
        # An existing error at or below this field is exactly what a candidate replaces.
        unrelated = {path for path in base_errors if not is_within(path, str(key))}
        validated: list[Any] = []
        for suffix, value in _candidates(dim):
            messages, good = _try_value(raw, str(key), value, unrelated)
            problems += [Problem(where + suffix, message, value) for message in messages]
            validated.append(good)
        all_valid = bool(validated) and all(v is not NO_VALUE for v in validated)
        if dim.get("type") in ("choice", "grid") and all_valid:
            coerced[str(key)] = validated
    return problems, coerced


def _searchable_paths() -> list[str]:
    return [
        path
        for path, annotation in field_paths().items()
        if is_scalar(annotation) and path.split(".")[0] not in _UNSEARCHABLE_SECTIONS
    ]


def _check_space_key(key: str) -> str | None:
    """Why `key` cannot be a search-space key, or None when it can."""
    searchable = _searchable_paths()
    if key in searchable:
        return None
    if key not in field_paths():
        return "not a field of the config" + did_you_mean(key, searchable)
    if key.split(".")[0] in _UNSEARCHABLE_SECTIONS:
        return "the sweep's own settings cannot be searched"
    return "a section or list cannot be searched; search one of its single-valued fields"


def _candidates(dim: dict[str, Any]) -> list[tuple[str, Any]]:
    """(location suffix, value) for each value a search dimension can hand to a trial."""
    kind = dim.get("type")
    values = dim.get("values")
    if kind in ("choice", "grid") and isinstance(values, list):
        return [(f".values[{index}]", value) for index, value in enumerate(values)]
    bounds = [(f".{name}", dim.get(name)) for name in ("low", "high")]
    return [(suffix, value) for suffix, value in bounds if _is_number(value)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _try_value(
    raw: dict[str, Any], key: str, value: Any, ignore: set[str]
) -> tuple[list[str], Any]:
    """Validate a copy of `raw` with `key` set to `value`.

    Returns the messages of errors the value introduces (errors at paths in `ignore` were
    there already) and the validated value, or `NO_VALUE` when the whole copy did not
    validate.
    """
    trial = copy.deepcopy(raw)
    if set_path(trial, key.split("."), value) is not None:
        return [], NO_VALUE  # the section itself is malformed; pydantic reports that
    try:
        config = RunConfig.model_validate(trial)
    except ValidationError as exc:
        new = [p for p in convert_errors(exc) if p.path not in ignore]
        # Name the location only when a cross-field check elsewhere (e.g. data.split) failed.
        return [p.message if p.path == key else f"{p.path}: {p.message}" for p in new], NO_VALUE
    return [], get_dotted(config, key)


def _errors_of(raw: dict[str, Any]) -> list[Problem]:
    try:
        RunConfig.model_validate(raw)
    except ValidationError as exc:
        return convert_errors(exc)
    return []
