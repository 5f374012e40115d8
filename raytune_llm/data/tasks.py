"""One entry point for every input format: `read_task_table(cfg)` -> table + quarantine.

The classification pipeline reads through `readers.read_records`; token-tagging (`conll`,
`spans`) and instruction (`instruct`) tables have no training path yet, and this is how that
later work, and users in a notebook, get them from the same `data:` config, with the same
`data.strict` rule. Label Studio exports give their majority-vote table here; the long-form
votes and the spans are on `formats.labelstudio.read_labelstudio`.
"""

from __future__ import annotations

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.formats._common import FormatResult
from raytune_llm.data.formats.conll import read_conll
from raytune_llm.data.formats.instruct import read_instructions
from raytune_llm.data.formats.spans import read_spans
from raytune_llm.data.quarantine import strict_error
from raytune_llm.data.readers import read_input

__all__ = ["read_task_table"]


def read_task_table(cfg: DataConfig) -> FormatResult:
    """The records `cfg` describes, for any `data.format`, and the ones quarantined.

    `conll`: `tokens`/`tags` (IOB2); `spans`: `text`/`spans`; `instruct`: `prompt`/`response`/
    `messages`; every other format: the classification table of `readers.read_input`.
    With `data.strict=true` any quarantined record raises a `DataError`.
    """
    if cfg.format == "conll":
        result = read_conll(cfg.path, cfg.token_index, cfg.tag_index, cfg.tag_scheme, cfg.delimiter, cfg.encoding)
    elif cfg.format == "spans":
        result = read_spans(cfg.path, cfg.text_column, cfg.encoding)
    elif cfg.format == "instruct":
        result = read_instructions(cfg.path, cfg.encoding)
    else:
        read = read_input(cfg)
        result = FormatResult(read.table, read.quarantine, read.stats)
    if cfg.strict and result.quarantine:
        raise strict_error(result.quarantine, cfg.path)
    return result
