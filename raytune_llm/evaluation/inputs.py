"""The rows to score: read and checked by the data step's reader, prepared as the model was trained.

`read_records` reads the file (any format the data step reads) and quarantines bad rows with
the same checks and reasons as `raytune-llm prepare`; the quarantine travels with the table
and is split off here (`quarantine.detach`), so `read = scored + quarantined` always holds.
Text then goes through the data step's normalisation (PII redaction if the model was trained
with it, NFKC, control characters, whitespace) and gets the same stable row id.

Evaluation needs gold labels: the reader's `data.labels` is set to the model's labels, so a
row whose label the model does not know is quarantined as `unknown_label`. Prediction does
not: unless labels are asked for, the reader is pointed at the text column for its label
check (which then tests nothing the text check has not), and no label is kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from raytune_llm.config.problems import convert_errors, format_problem
from raytune_llm.config.schema import DataConfig
from raytune_llm.data import parsers
from raytune_llm.data.cleaning import pii_kinds, pop_pii_counts, redact_and_normalize
from raytune_llm.data.quarantine import Quarantined, detach
from raytune_llm.data.readers import read_records
from raytune_llm.data.sources import format_of, resolve_files
from raytune_llm.errors import ConfigError, DataError
from raytune_llm.evaluation.model import model_metadata

__all__ = ["LABELLED_FORMATS", "ScoringInput", "TextSettings", "data_config", "read_scoring_input",
           "text_settings", "with_input_columns"]

#: Formats whose rows always carry a label (the reader cannot read them without one).
LABELLED_FORMATS = frozenset({"phrasebank", "phrasebank_agreement", "labelstudio"})


@dataclass(frozen=True)
class TextSettings:
    """How text is prepared for the model: as it was in training."""

    max_length: int
    pii_kinds: tuple[str, ...]


@dataclass(frozen=True)
class ScoringInput:
    """Usable rows and the quarantine of one read.

    `table` has `text` (normalised, what the model sees), `input_text` (as read), `id`,
    `source_id`, `_source`, `_line`, `label` when labels were read, and any metadata columns
    of the format (`agreement`, `votes`, ...).
    """

    table: pa.Table
    quarantine: list[Quarantined]
    labelled: bool
    pii_redacted: dict[str, int]

    @property
    def read(self) -> int:
        """Data rows seen: each is either scored or quarantined."""
        return int(self.table.num_rows) + len(self.quarantine)


def data_config(path: str, config_path: str | None = None, options: Mapping[str, Any] | None = None) -> DataConfig:
    """A `DataConfig` for `path`: the `data` section of `config_path` (if given), then `options`.

    `options` maps DataConfig fields to command-line values; None values are left out.
    Bad values raise a `ConfigError` naming the option.
    """
    base: dict[str, Any] = {}
    if config_path is not None:
        from raytune_llm.config.loader import load_config

        base = load_config(config_path).data.model_dump()
    given = {key: value for key, value in (options or {}).items() if value is not None}
    try:
        return DataConfig.model_validate({**base, **given, "path": path})
    except ValidationError as exc:
        source = config_path or "command line"
        raise ConfigError([format_problem(source, p) for p in convert_errors(exc)]) from None


def text_settings(model_dir: str | Path, cfg: DataConfig, max_length: int | None = None) -> TextSettings:
    """Truncation length and PII kinds: `max_length` if given, else what the model was trained
    with (`config.data` in its `raytune_llm.json`), else `cfg` (--config, or the defaults:
    128 tokens, no redaction)."""
    trained = model_metadata(model_dir).get("config", {}).get("data", {})
    redact = trained.get("redact_pii", cfg.redact_pii)
    kinds = pii_kinds(DataConfig.model_validate({"path": cfg.path, "redact_pii": redact}))
    return TextSettings(int(max_length or trained.get("max_length") or cfg.max_length), kinds)


def _always_labelled(cfg: DataConfig) -> bool:
    if cfg.format != "auto":
        return cfg.format in LABELLED_FORMATS
    return any(format_of(f.display, cfg)[0] in LABELLED_FORMATS for f in resolve_files(cfg.path))


def _reader_config(cfg: DataConfig, labels: Sequence[str], labelled: bool) -> DataConfig:
    if not labelled:
        return cfg.model_copy(update={"label_column": cfg.text_column, "labels": None})
    if cfg.labels is not None and set(cfg.labels) != set(labels):
        raise DataError(f"data.labels {list(cfg.labels)} differ from the model's labels {list(labels)}; "
                        "evaluate on data annotated with the labels the model was trained on")
    return cfg.model_copy(update={"labels": list(labels)})


def read_scoring_input(cfg: DataConfig, labels: Sequence[str], settings: TextSettings,
                       labelled: bool = True) -> ScoringInput:
    """Read `cfg.path` with the data step's reader and normalise it; see the module docstring.

    With `labelled=False`, labels are still read for formats that always carry them
    (PhraseBank, Label Studio), and checked against `labels` there.
    """
    labelled = labelled or _always_labelled(cfg)
    table, quarantine, _ = detach(read_records(_reader_config(cfg, labels, labelled)))
    table = table.append_column("input_text", table.column("text"))
    table, pii = pop_pii_counts(redact_and_normalize(table, settings.pii_kinds))
    if not labelled:
        table = table.drop_columns(["label"])
    return ScoringInput(table, quarantine, labelled, pii)


#: Formats whose other columns can be looked up again by file and line.
_TABULAR = frozenset({"jsonl", "csv", "tsv", "parquet"})


def _fields_by_line(cfg: DataConfig, names: Sequence[str]) -> dict[tuple[str, int], dict[str, Any]]:
    """`(file, line) -> fields` of every parsed row of the tabular files of `cfg.path`."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for file in resolve_files(cfg.path):
        fmt, told_by = format_of(file.display, cfg)
        if fmt not in _TABULAR:
            continue
        data = file.read_bytes()
        if fmt == "parquet":
            parsed = parsers.parquet_records(data, file.display, told_by, names)
        elif fmt == "jsonl":
            parsed = parsers.jsonl_records(parsers.decode(data, cfg.encoding, file.display), file.display, told_by)
        else:
            delimiter = {"\\t": "\t", "tab": "\t"}.get(cfg.delimiter or "", cfg.delimiter)
            delimiter = delimiter or ("\t" if fmt == "tsv" else ",")
            parsed = parsers.csv_records(parsers.decode(data, cfg.encoding, file.display), file.display, delimiter)
        found.update({(file.display, record.line): record.fields for record in parsed.records})
    return found


def _scalar(value: Any) -> Any:
    # Slices need hashable values; a list or object in a JSON field is sliced by its JSON text.
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def with_input_columns(data: ScoringInput, cfg: DataConfig, names: Sequence[str]) -> ScoringInput:
    """`data` plus the input columns `names` that the reader does not keep (a `domain` column of a
    JSON lines, CSV or Parquet file, say), looked up by each row's file and line. A name found in no
    row is left out (the caller reports it)."""
    table = data.table
    wanted = [name for name in dict.fromkeys(names) if name not in table.column_names]
    if not wanted:
        return data
    fields = _fields_by_line(cfg, wanted)
    places = list(zip(table.column("_source").to_pylist(), table.column("_line").to_pylist()))
    for name in wanted:
        values = [_scalar(fields.get(place, {}).get(name)) for place in places]
        if any(name in fields.get(place, {}) for place in places):
            try:
                column = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: slice by their text
                column = pa.array([None if v is None else str(v) for v in values], pa.string())
            table = table.append_column(name, column)
    return ScoringInput(table, data.quarantine, data.labelled, data.pii_redacted)
