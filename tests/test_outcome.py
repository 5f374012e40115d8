"""The closing lines of `tune`/`train` name the transformers class that loads the export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raytune_llm.app import _auto_class


@pytest.mark.parametrize(("files", "expected"), [
    ({"config.json": {"architectures": ["LlamaForCausalLM"]}}, "AutoModelForCausalLM"),
    ({"config.json": {"architectures": ["BertForTokenClassification"]}}, "AutoModelForTokenClassification"),
    ({"config.json": {"architectures": ["BertForSequenceClassification"]}}, "AutoModelForSequenceClassification"),
    ({"config.json": {}}, "AutoModel"),
    ({"adapter_config.json": {"task_type": "CAUSAL_LM"}}, "AutoModelForCausalLM"),
    ({"adapter_config.json": {"task_type": "SEQ_CLS"}, "config.json": {"architectures": ["LlamaForCausalLM"]}},
     "AutoModelForSequenceClassification"),  # a LoRA export: the adapter's task decides
])
def test_auto_class_follows_the_exported_architecture(tmp_path: Path, files: dict, expected: str) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    assert _auto_class(tmp_path) == expected
