"""Load a `RunConfig` from YAML plus `a.b=c` overrides, and report every problem at once.

Every problem becomes one line `SOURCE: dotted.path: message (got VALUE)`, where SOURCE is
the YAML file or the override that supplied the value, so that `raytune-llm validate` can
list all mistakes in one go instead of making the user fix them one run at a time.
"""

from __future__ import annotations

import copy
import difflib
import functools
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError

from raytune_llm.config.schema import RunConfig
from raytune_llm.errors import ConfigError

__all__ = ["dump_config", "get_dotted", "load_config", "set_dotted", "validate_files"]

Loc = tuple[str | int, ...]

# Sentinel for "no value to show": `None` is a legitimate value users can write.
_NO_VALUE: Any = object()
# Longest `(got ...)` we print; a whole mis-indented section would drown the message.
_MAX_SHOWN = 80
# Tune's own settings cannot be searched: a trial cannot change the sweep it belongs to.
_UNSEARCHABLE_SECTIONS = ("tune",)


class _Problem(NamedTuple):
    """One problem before its source is known: where, what, and the offending value."""

    path: str
    message: str
    value: Any = _NO_VALUE


# --------------------------------------------------------------------------- public API


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config, apply `dotted.key=value` overrides and validate it.

    Override values are parsed as YAML, so `train.epochs=3` is an int and `data.labels=[a,b]`
    a list; overrides may create keys and sections the file lacks. `data.path` is kept as
    written (relative paths are resolved by the caller). `output.name` defaults to the file's
    stem. Raises `ConfigError` listing every problem found, each tagged with its source.
    """
    source = str(path)
    problems: list[str] = []
    raw = _read_yaml(Path(path), problems)
    override_sources = _apply_overrides(raw if raw is not None else {}, overrides, problems)
    if raw is None:
        raise ConfigError(problems)

    def where(dotted: str) -> str:
        return _source_for(dotted, source, override_sources)

    config: RunConfig | None = None
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems += [_format(where(p.path), p) for p in _convert_errors(exc)]
    space_problems, coerced = _check_search_space(raw)
    problems += [_format(where(p.path), p) for p in space_problems]
    if problems or config is None:
        raise ConfigError(problems)

    # YAML reads `1e-5` as a string (YAML 1.1 floats need a dot); store choice/grid values as
    # the type their field validated to, so Tune samples and logs real numbers.
    for key, values in coerced.items():
        config.tune.search_space[key].values = values
    if config.output.name is None:
        config.output.name = Path(path).stem
    return config


def validate_files(
    paths: Sequence[str | Path], overrides: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Check each config file; map `str(path)` to its problem lines (empty when valid).

    Never raises `ConfigError`: this backs `raytune-llm validate` and the test that checks
    every shipped config, both of which want the full list for every file.
    """
    report: dict[str, list[str]] = {}
    for path in paths:
        try:
            load_config(path, overrides)
        except ConfigError as exc:
            report[str(path)] = exc.problems
        else:
            report[str(path)] = []
    return report


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
        problem = _Problem(dotted, f"unknown key '{name}'" + _did_you_mean(name, options))
        raise ConfigError([_format("get_dotted", problem)])
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
    problem = _set_path(raw, parts, value)
    if problem is not None:
        raise ConfigError([_format(source, problem)])
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_format(source, p) for p in _convert_errors(exc)]) from None


def dump_config(config: RunConfig, path: str | Path) -> None:
    """Write `config` as YAML that `load_config` reads back to an equal `RunConfig`.

    Used to record the exact, fully defaulted config next to a run's results.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # sort_keys=False keeps the schema's section order, which is the order the docs use.
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    target.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------- reading & overrides


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """Parse the file into a dict, or append one problem line and return None."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{source}: config file does not exist")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{source}: cannot read config file: {exc}")
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        problems.append(f"{source}: invalid YAML{where}: {reason}")
        return None
    if data is None:
        # An empty file is an empty mapping: the "required key is missing" lines that follow
        # say more about what to write than "not a mapping" would.
        return {}
    if not isinstance(data, dict):
        problems.append(
            f"{source}: the top level must be a mapping of sections "
            f"({', '.join(RunConfig.model_fields)}) (got a {type(data).__name__})"
        )
        return None
    return data


def _apply_overrides(
    raw: dict[str, Any], overrides: Sequence[str], problems: list[str]
) -> dict[str, str]:
    """Apply `a.b=c` overrides in order to `raw`, in place.

    Returns the dotted paths each override set, mapped to its `override 'a.b=c'` source label,
    so that later validation errors are blamed on the override rather than the file.
    """
    sources: dict[str, str] = {}
    for text in overrides:
        label = f"override '{text}'"
        key, sep, value_text = text.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep:
            problems.append(f"{label}: expected dotted.key=value (e.g. train.epochs=3)")
            continue
        if not all(parts):
            problems.append(f"{label}: '{key}' is not a dotted key like train.epochs")
            continue
        if not value_text.strip():
            problems.append(f"{label}: {key}: empty value (write {key}=null to unset it)")
            continue
        try:
            value = yaml.safe_load(value_text)
        except yaml.YAMLError as exc:
            problems.append(f"{label}: {key}: value is not valid YAML: {exc}")
            continue
        problem = _set_path(raw, parts, value)
        if problem is not None:
            problems.append(_format(label, problem))
            continue
        sources.pop(key, None)  # re-insert so the latest override of a path wins
        sources[key] = label
    return sources


def _set_path(tree: dict[str, Any], parts: Sequence[str], value: Any) -> _Problem | None:
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
            return _Problem(".".join(keys), message, child)
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
    entry = _model_at((*at, "")) if at is not None else None
    if entry is not None and typing.get_origin(_walk(at)[1]) is dict:
        used = len(parts) - 1 if len(parts) > 1 and parts[-1] in entry.model_fields else len(parts)
        return ".".join(parts[:used]), used
    return parts[0], 1


def _source_for(dotted: str, file_source: str, override_sources: dict[str, str]) -> str:
    """Blame the latest override that set `dotted`, a parent of it, or a child of it.

    A child counts because model-level checks (split fractions, metric/mode) report at the
    section, even when an override changed only one field inside it.
    """
    blamed = file_source
    for key, label in override_sources.items():
        if _is_within(dotted, key) or _is_within(key, dotted):
            blamed = label
    return blamed


def _is_within(path: str, ancestor: str) -> bool:
    """True if dotted `path` is `ancestor` or lies below it."""
    return path == ancestor or path.startswith((ancestor + ".", ancestor + "["))


# ------------------------------------------------------------------- pydantic -> problems


def _convert_errors(exc: ValidationError) -> list[_Problem]:
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
        value = _NO_VALUE if errs[0]["type"] == "missing" else errs[0].get("input", _NO_VALUE)
        problems.append(_Problem(_dotted(loc), merged, value))
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
    model = _model_at(loc[:-1])
    options = list(model.model_fields) if model is not None else []
    suggestion = _did_you_mean(name, options)
    if suggestion:
        return "unknown key" + suggestion
    elsewhere = [path for path in _field_paths() if path.rsplit(".", 1)[-1] == name]
    if elsewhere:
        return f"unknown key here; did you mean '{elsewhere[0]}'?"
    if options:
        return f"unknown key (expected one of: {', '.join(options)})"
    return "unknown key"


def _did_you_mean(name: str, options: Sequence[str]) -> str:
    """`; did you mean 'X'?` for the closest option, or '' when nothing is close."""
    close = difflib.get_close_matches(name, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _format(source: str, problem: _Problem) -> str:
    """`SOURCE: dotted.path: message (got VALUE)`; the value is left out when the message
    already shows it (our validators include it) or when there is none (missing keys)."""
    where = f"{problem.path}: " if problem.path else ""
    text = f"{source}: {where}{problem.message}"
    if problem.value is not _NO_VALUE and "(got " not in problem.message:
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


def _walk(loc: Loc) -> tuple[int, Any]:
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
    depth, node = _walk(loc)
    return loc if node is None else loc[:depth]


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class whose fields live at `loc` (e.g. SearchDimension inside search_space)."""
    depth, node = _walk(loc)
    if node is None or depth != len(loc):
        return None
    members = _union_members(node)
    return members[0] if len(members) == 1 and _is_model(members[0]) else None


@functools.cache
def _field_paths() -> dict[str, Any]:
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


def _is_scalar(annotation: Any) -> bool:
    """True for a single value (number, string, bool, literal), not a section or container."""
    return all(
        not _is_model(member) and typing.get_origin(member) not in (list, dict)
        for member in _union_members(annotation)
    )


def _searchable_paths() -> list[str]:
    return [
        path
        for path, annotation in _field_paths().items()
        if _is_scalar(annotation) and path.split(".")[0] not in _UNSEARCHABLE_SECTIONS
    ]


# --------------------------------------------------------------------------- search space


def _check_search_space(raw: dict[str, Any]) -> tuple[list[_Problem], dict[str, list[Any]]]:
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
    problems: list[_Problem] = []
    coerced: dict[str, list[Any]] = {}
    for key, dim in space.items():
        where = f"tune.search_space.{key}"
        key_problem = _check_space_key(str(key))
        if key_problem is not None:
            problems.append(_Problem(where, key_problem))
            continue
        if not isinstance(dim, dict):
            continue  # pydantic reports a malformed entry
        # An existing error at or below this field is exactly what a candidate replaces.
        unrelated = {path for path in base_errors if not _is_within(path, str(key))}
        validated: list[Any] = []
        for suffix, value in _candidates(dim):
            messages, good = _try_value(raw, str(key), value, unrelated)
            problems += [_Problem(where + suffix, message, value) for message in messages]
            validated.append(good)
        all_valid = bool(validated) and all(v is not _NO_VALUE for v in validated)
        if dim.get("type") in ("choice", "grid") and all_valid:
            coerced[str(key)] = validated
    return problems, coerced


def _check_space_key(key: str) -> str | None:
    """Why `key` cannot be a search-space key, or None when it can."""
    searchable = _searchable_paths()
    if key in searchable:
        return None
    if key not in _field_paths():
        return "not a field of the config" + _did_you_mean(key, searchable)
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
    there already) and the validated value, or `_NO_VALUE` when the whole copy did not
    validate.
    """
    trial = copy.deepcopy(raw)
    if _set_path(trial, key.split("."), value) is not None:
        return [], _NO_VALUE  # the section itself is malformed; pydantic reports that
    try:
        config = RunConfig.model_validate(trial)
    except ValidationError as exc:
        new = [p for p in _convert_errors(exc) if p.path not in ignore]
        # Name the location only when a cross-field check elsewhere (e.g. data.split) failed.
        return [p.message if p.path == key else f"{p.path}: {p.message}" for p in new], _NO_VALUE
    return [], get_dotted(config, key)


def _errors_of(raw: dict[str, Any]) -> list[_Problem]:
    try:
        RunConfig.model_validate(raw)
    except ValidationError as exc:
        return _convert_errors(exc)
    return []
