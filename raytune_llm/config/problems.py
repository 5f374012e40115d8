"""Problem lines for config errors, and the schema walking that makes them helpful.

A `Problem` is one mistake before its source is known; `format_problem` turns it into the
line users see, `SOURCE: dotted.path: message (got VALUE)`. `convert_errors` translates
pydantic's errors into problems, naming the likeliest intended key for an unknown one.
The schema helpers below follow a location through `RunConfig`'s annotations; the loader
and the search-space checks use them too. Internal to `raytune_llm.config`.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from collections.abc import Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from raytune_llm.config.schema import RunConfig

__all__ = [
    "NO_VALUE",
    "Loc",
    "Problem",
    "convert_errors",
    "did_you_mean",
    "field_paths",
    "format_problem",
    "is_scalar",
    "model_at",
    "walk_schema",
]

Loc = tuple[str | int, ...]

# Sentinel for "no value to show": `None` is a legitimate value users can write.
NO_VALUE: Any = object()
# Longest `(got ...)` we print; a whole mis-indented section would drown the message.
_MAX_SHOWN = 80


class Problem(NamedTuple):
    """One problem before its source is known: where, what, and the offending value."""

    path: str
    message: str
    value: Any = NO_VALUE


# ------------------------------------------------------------------- pydantic -> problems


def convert_errors(exc: ValidationError) -> list[Problem]:
    """Turn pydantic's errors into problems, one per location.

    A value that fails every member of a union (`use_gpu: bool | 'auto'`) yields one error
    per member, with the member's name appended to `loc`; those are merged into one line.
    """
    grouped: dict[Loc, list[dict[str, Any]]] = {}
    for err in exc.errors():
        # '[key]' marks an invalid dict key; the key itself is already the previous part.
        raw_loc = tuple(part for part in err["loc"] if part != "[key]")
        grouped.setdefault(_schema_loc(raw_loc), []).append(dict(err))
    problems = []
    for loc, errs in grouped.items():
        messages = [_describe(err, loc) for err in errs]
        # "Input should be A or Input should be B" reads badly; keep the phrase once.
        merged = " or ".join(
            [messages[0], *(m.removeprefix("Input should be ") for m in messages[1:])]
        )
        value = NO_VALUE if errs[0]["type"] == "missing" else errs[0].get("input", NO_VALUE)
        problems.append(Problem(_dotted(loc), merged, value))
    return problems


def _describe(err: dict[str, Any], loc: Loc) -> str:
    """The human message for one pydantic error (its location is printed separately)."""
    kind = err["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key_message(loc)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a mapping of keys (a YAML section)"
    message = str(err["msg"])
    # Our own validators raise ValueError; pydantic's prefix adds nothing for the user.
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _unknown_key_message(loc: Loc) -> str:
    """'unknown key' plus the likeliest intended key: a near spelling, or the same key in
    another section (e.g. `train.max_length` for `data.max_length`)."""
    name = str(loc[-1])
    model = model_at(loc[:-1])
    options = list(model.model_fields) if model is not None else []
    suggestion = did_you_mean(name, options)
    if suggestion:
        return "unknown key" + suggestion
    elsewhere = [path for path in field_paths() if path.rsplit(".", 1)[-1] == name]
    if elsewhere:
        return f"unknown key here; did you mean '{elsewhere[0]}'?"
    if options:
        return f"unknown key (expected one of: {', '.join(options)})"
    return "unknown key"


def did_you_mean(name: str, options: Sequence[str]) -> str:
    """`; did you mean 'X'?` for the closest option, or '' when nothing is close."""
    close = difflib.get_close_matches(name, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def format_problem(source: str, problem: Problem) -> str:
    """`SOURCE: dotted.path: message (got VALUE)`; the value is left out when the message
    already shows it (our validators include it) or when there is none (missing keys)."""
    where = f"{problem.path}: " if problem.path else ""
    text = f"{source}: {where}{problem.message}"
    if problem.value is not NO_VALUE and "(got " not in problem.message:
        text += f" (got {_show(problem.value)})"
    return text


def _show(value: Any) -> str:
    """A short repr: strings quoted so that `'3'` and `3` are told apart."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _dotted(loc: Loc) -> str:
    """('tune', 'search_space', 'train.lr', 'values', 1) -> tune.search_space.train.lr.values[1]"""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# ------------------------------------------------------------------------- schema walking


def _union_members(annotation: Any) -> list[Any]:
    """The non-None members of a union annotation, or the annotation itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def walk_schema(loc: Loc) -> tuple[int, Any]:
    """Follow `loc` through the schema's annotations.

    Returns how many parts of `loc` are real schema steps (fields, dict keys, list indices)
    and the annotation reached; the annotation is None when a part names no field.
    """
    node: Any = RunConfig
    for depth, part in enumerate(loc):
        members = _union_members(node)
        if len(members) != 1:
            return depth, node  # union of scalars: the remaining parts are member tags
        node = members[0]
        origin = typing.get_origin(node)
        if _is_model(node):
            field = node.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return depth, None
            node = field.annotation
        elif origin is dict:
            node = typing.get_args(node)[1]
        elif origin is list:
            args = typing.get_args(node)
            node = args[0] if args else Any
        else:
            return depth, node  # a scalar has no children: the remaining parts are tags
    return len(loc), node


def _schema_loc(loc: Loc) -> Loc:
    """`loc` without pydantic's union-member tags; unknown keys are kept whole."""
    depth, node = walk_schema(loc)
    return loc if node is None else loc[:depth]


def model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class whose fields live at `loc` (e.g. SearchDimension inside search_space)."""
    depth, node = walk_schema(loc)
    if node is None or depth != len(loc):
        return None
    members = _union_members(node)
    return members[0] if len(members) == 1 and _is_model(members[0]) else None


@functools.cache
def field_paths() -> dict[str, Any]:
    """Every field of RunConfig as `dotted.path -> annotation`, nested models included.

    Cached because the schema is fixed at import; callers must not mutate the result.
    """
    paths: dict[str, Any] = {}

    def visit(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            paths[prefix + name] = field.annotation
            members = _union_members(field.annotation)
            if len(members) == 1 and _is_model(members[0]):
                visit(members[0], f"{prefix}{name}.")

    visit(RunConfig, "")
    return paths


def is_scalar(annotation: Any) -> bool:
    """True for a single value (number, string, bool, literal), not a section or container."""
    return all(
        not _is_model(member) and typing.get_origin(member) not in (list, dict)
        for member in _union_members(annotation)
    )
