"""Load an exported model (merged weights, or a LoRA adapter folder) and turn text into probabilities.

Two layouts, told apart by their files:
- merged: a `save_pretrained` folder with `config.json` (an exported `best_model`, or a Ray
  Train checkpoint folder, whose extra `engine/` folder is ignored) -> transformers'
  `AutoModelForSequenceClassification`;
- LoRA: a folder with `adapter_config.json` -> peft's `AutoPeftModelForSequenceClassification`,
  which loads the base model named in the adapter config and applies the adapter (and the
  classification head the adapter saved).

Label names come from `raytune_llm.json` (written beside every checkpoint) when present, else
from the model config's `id2label`. The tokenizer comes from the folder, or for an adapter
without tokenizer files from its base model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raytune_llm.errors import ModelError
from raytune_llm.train.checkpoint import METADATA_FILE

__all__ = ["ADAPTER_CONFIG", "Scorer", "base_model_path", "check_model_dir", "is_adapter", "load_scorer",
           "model_labels", "model_metadata", "tokenizer_source"]

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(folder: str | Path) -> bool:
    """True for a peft adapter folder (it holds `adapter_config.json`)."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def check_model_dir(path: str | Path) -> Path:
    """The model folder, resolved; a `ModelError` naming the fix when it is not one."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"model folder not found: {path}; pass an exported model (runs/NAME/best_model), "
                         "a checkpoint folder or a LoRA adapter folder")
    if not (folder / "config.json").is_file() and not is_adapter(folder):
        raise ModelError(f"{folder} has neither config.json (a save_pretrained model) nor {ADAPTER_CONFIG} "
                         "(a LoRA adapter); pass the folder that holds one of them")
    return folder.resolve()


def model_metadata(folder: str | Path) -> dict[str, Any]:
    """`raytune_llm.json` of a checkpoint or exported model ({} when absent)."""
    path = Path(folder) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def base_model_path(folder: str | Path) -> str:
    """The base model an adapter folder was trained on (its `adapter_config.json`)."""
    return str(json.loads((Path(folder) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"])


def tokenizer_source(folder: str | Path) -> str:
    """Where a model folder's tokenizer loads from: the folder, or for an adapter without tokenizer files its base."""
    folder = Path(folder)
    if (folder / "tokenizer_config.json").is_file() or not is_adapter(folder):
        return str(folder)
    return base_model_path(folder)


def model_labels(folder: str | Path) -> list[str]:
    """Label names in class-id order: `raytune_llm.json`, else `id2label` of the (base) model config."""
    from transformers import AutoConfig

    folder = Path(folder)
    labels = model_metadata(folder).get("labels")
    if labels:
        return [str(label) for label in labels]
    source = str(folder) if (folder / "config.json").is_file() else base_model_path(folder)
    config = AutoConfig.from_pretrained(source)
    return [str(config.id2label[i]) for i in range(config.num_labels)]


@dataclass
class Scorer:
    """A loaded classifier and its tokenizer: `probabilities(texts)` is one row of class probabilities per text."""

    model: Any
    tokenizer: Any
    labels: list[str]
    device: str
    adapter: bool

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, without truncation."""
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]

    def probabilities(self, texts: Sequence[str], max_length: int, batch_size: int = 64) -> np.ndarray:
        """Softmax class probabilities, `(len(texts), len(labels))`, in input order.

        Texts are batched in order of length so that little padding is computed.
        """
        import torch

        from raytune_llm.train.batches import pad_batch

        encoded = self.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        out = np.zeros((len(encoded), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                ids, mask = pad_batch([encoded[i] for i in rows], self.tokenizer.pad_token_id)
                logits = self.model(input_ids=torch.from_numpy(ids).to(self.device),
                                    attention_mask=torch.from_numpy(mask).to(self.device)).logits
                out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out


def load_scorer(folder: str | Path, device: str = "cpu") -> Scorer:
    """Load a merged model or a LoRA adapter folder for inference on `device`."""
    from raytune_llm.models.loading import load_tokenizer

    folder = check_model_dir(folder)
    labels = model_labels(folder)
    label_args: dict[str, Any] = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {label: i for i, label in enumerate(labels)}}
    adapter = is_adapter(folder)
    try:
        if adapter:
            from peft import AutoPeftModelForSequenceClassification

            model = AutoPeftModelForSequenceClassification.from_pretrained(str(folder), **label_args)
        else:
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(str(folder), **label_args)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the model in {folder}: {str(exc).splitlines()[0]}") from exc
    tokenizer = load_tokenizer(tokenizer_source(folder))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # decoder LLMs: pad with EOS, as in training
    return Scorer(model.to(device).eval(), tokenizer, labels, device, adapter)
