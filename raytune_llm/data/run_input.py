"""What a training run reads: the rows of `data.path` for the configured task, and predefined splits.

Classification without predefined splits reads exactly as `readers.read_records`. Token
classification reads `conll`/`spans` through `tasks.read_task_table` and `tokens.read_token_input`.
With `data.validation_path` (and `data.test_path`), each file is read the same way and its rows
carry the split they belong to in a `_split` column, which the prepare step uses instead of the
hashed split. The quarantine of every file travels with the table (`quarantine.attach`).
"""

from __future__ import annotations

import pyarrow as pa

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.formats._common import FormatResult, merge_stats
from raytune_llm.data.quarantine import Quarantined, attach, describe, strict_error
from raytune_llm.data.readers import read_input, read_records
from raytune_llm.errors import DataError

__all__ = ["PREDEFINED_SPLIT", "read_run_input", "split_files"]

#: The column holding each row's split when the splits come from files.
PREDEFINED_SPLIT = "_split"


def split_files(cfg: DataConfig) -> list[tuple[str, str]]:
    """(split, path) of each predefined split file; empty when the split is hashed."""
    if cfg.validation_path is None:
        return []
    files = [("train", cfg.path), ("validation", cfg.validation_path)]
    return files + ([("test", cfg.test_path)] if cfg.test_path is not None else [])


def _read_one(cfg: DataConfig) -> FormatResult:
    if cfg.task == "token_classification":
        from raytune_llm.data.tasks import read_task_table
        from raytune_llm.data.tokens import read_token_input

        # strict is applied once below, after the span records that cut a word are quarantined too
        return read_token_input(read_task_table(cfg.model_copy(update={"strict": False})), cfg.format)
    if cfg.format == "instruct":
        from raytune_llm.data.formats.instruct import read_instructions

        found = read_instructions(cfg.path, cfg.encoding)
        # `text` (the prompt) gives the row id and what near-duplicate cleaning compares; the empty
        # `label` puts every record in one stratum for the split and never counts as a conflict.
        table = found.table.append_column("text", found.table.column("prompt"))
        table = table.append_column("label", pa.array([""] * table.num_rows, pa.string()))
        return FormatResult(table, found.quarantine, found.stats)
    return read_input(cfg)


def read_run_input(cfg: DataConfig) -> pa.Table:
    """The usable rows for `cfg.task`, carrying the quarantine; a `DataError` when a file has none."""
    files = split_files(cfg)
    if cfg.task == "classification" and not files:
        return read_records(cfg)
    tables: list[pa.Table] = []
    quarantine: list[Quarantined] = []
    stats: dict[str, int] = {}
    for split, path in files or [("", cfg.path)]:
        found = _read_one(cfg.model_copy(update={"path": path}))
        if found.table.num_rows == 0:
            key = {"train": "data.path", "validation": "data.validation_path", "test": "data.test_path"}.get(split)
            raise DataError(f"no usable rows in {path}{f' ({key})' if key else ''}: all {found.read} were "
                            f"quarantined or the file is empty\n{describe(found.quarantine)}")
        table = found.table
        if split:
            table = table.append_column(PREDEFINED_SPLIT, pa.array([split] * table.num_rows, pa.string()))
        tables.append(table)
        quarantine += found.quarantine
        merge_stats(stats, found.stats)
    if cfg.strict and quarantine:
        raise strict_error(quarantine, cfg.path)
    return attach(pa.concat_tables(tables, promote_options="default"), quarantine, stats)
