"""Load a `RunConfig` from YAML plus `a.b=c` overrides, and report every problem at once.

Every problem becomes one line `SOURCE: dotted.path: message (got VALUE)`, where SOURCE is
the YAML file or the override that supplied the value, so that `raytune-llm validate` can
list all mistakes in one go instead of making the user fix them one run at a time.

This module reads, overrides and validates; its helpers live beside it: `problems` (error
lines, did-you-mean), `dotted` (dotted-path access; `get_dotted` and `set_dotted` are
re-exported here) and `search_space` (checks of `tune.search_space`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raytune_llm.config.dotted import get_dotted, is_within, set_dotted, set_path
from raytune_llm.config.problems import convert_errors, format_problem
from raytune_llm.config.schema import RunConfig
from raytune_llm.config.search_space import check_search_space
from raytune_llm.errors import ConfigError

__all__ = ["dump_config", "get_dotted", "load_config", "set_dotted", "validate_files"]


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
        problems += [format_problem(where(p.path), p) for p in convert_errors(exc)]
    space_problems, coerced = check_search_space(raw)
    problems += [format_problem(where(p.path), p) for p in space_problems]
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
        problem = set_path(raw, parts, value)
        if problem is not None:
            problems.append(format_problem(label, problem))
            continue
        sources.pop(key, None)  # re-insert so the latest override of a path wins
        sources[key] = label
    return sources


def _source_for(dotted: str, file_source: str, override_sources: dict[str, str]) -> str:
    """Blame the latest override that set `dotted`, a parent of it, or a child of it.

    A child counts because model-level checks (split fractions, metric/mode) report at the
    section, even when an override changed only one field inside it.
    """
    blamed = file_source
    for key, label in override_sources.items():
        if is_within(dotted, key) or is_within(key, dotted):
            blamed = label
    return blamed
