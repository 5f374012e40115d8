"""LoRA adapters (peft) on a loaded model: defaults per architecture and task, counts, merging.

`apply_lora` wraps a `transformers` model with `peft.get_peft_model`, freezing every weight
except the adapters and the `modules_to_save` (by default the classification head, which
a new task always has to learn in full). The wrapped model's `save_pretrained` writes only
those: `adapter_config.json` + `adapter_model.safetensors`, which peft's
`AutoPeftModelForSequenceClassification` (and `raytune-llm evaluate`/`predict`) load on top
of the base model named inside. `merge_adapter_folder` turns such a folder into a plain
`save_pretrained` model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from raytune_llm.config.schema import LoraSettings
from raytune_llm.errors import ModelError

#: Adapter targets for the architectures users fine-tune most, by `config.model_type`. The
#: attention query/value projections are the LoRA paper's choice; fused QKV layers take it whole.
DEFAULT_TARGETS: dict[str, list[str]] = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "electra", "camembert", "mpnet", "ernie"), ["query", "value"]),
    **dict.fromkeys(("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "smollm3",
                     "stablelm", "phi3"), ["q_proj", "v_proj"]),
    **dict.fromkeys(("gpt_neox", "falcon", "bloom"), ["query_key_value"]),
    "distilbert": ["q_lin", "v_lin"],
    "gpt2": ["c_attn"],
}


def default_target_modules(model_type: str) -> list[str]:
    """Adapter targets for a model type: ours first, then peft's own table; `ModelError` when neither knows it."""
    if model_type in DEFAULT_TARGETS:
        return list(DEFAULT_TARGETS[model_type])
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    if model_type in PEFT_TARGETS:
        return list(PEFT_TARGETS[model_type])
    raise ModelError(f"lora.target_modules: no default adapter targets for model type '{model_type}'; set "
                     "lora.target_modules to the attention projection names of this model (e.g. [q_proj, v_proj]) "
                     "or to all-linear")


def head_modules(model: Any) -> list[str]:
    """Top-level modules with weights outside the pretrained body (`base_model_prefix`): the task head.

    BertForSequenceClassification -> ['classifier'], LlamaForSequenceClassification -> ['score'],
    DistilBertForSequenceClassification -> ['pre_classifier', 'classifier'].
    """
    body = getattr(model, "base_model_prefix", "")
    return [name for name, child in model.named_children()
            if name != body and any(True for _ in child.parameters())]


#: peft's task type per `data.task` (it decides the PeftModel class, and so how the adapter reloads).
_TASK_TYPES = {"classification": "SEQ_CLS", "token_classification": "TOKEN_CLS", "generation": "CAUSAL_LM"}


def peft_config(settings: LoraSettings, model: Any, task: str = "classification") -> Any:
    """The `peft.LoraConfig` for `settings` on `model` (defaults filled in per architecture and task).

    A classifier's or tagger's head is new for the task, so by default it trains in full; a causal
    LM keeps its pretrained LM head (vocabulary-sized, often tied to the embeddings) frozen.
    """
    from peft import LoraConfig, TaskType

    targets = settings.target_modules or default_target_modules(str(model.config.model_type))
    heads = settings.modules_to_save or (None if task == "generation" else head_modules(model))
    return LoraConfig(task_type=TaskType[_TASK_TYPES[task]], r=settings.r, lora_alpha=settings.alpha,
                      lora_dropout=settings.dropout, target_modules=targets, bias=settings.bias,
                      modules_to_save=heads)


def apply_lora(model: Any, settings: LoraSettings, task: str = "classification") -> Any:
    """Wrap `model` with LoRA adapters; only adapters, `modules_to_save` and (per `bias`) biases train."""
    from peft import get_peft_model

    config = peft_config(settings, model, task)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # peft names the targets it could not find
        raise ModelError(f"lora.target_modules: {str(exc).splitlines()[0]}; set lora.target_modules to names "
                         f"of this model's linear layers or to all-linear") from exc


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters, shared tensors counted once."""
    seen = {id(p): p for p in model.parameters()}
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, sum(p.numel() for p in seen.values())


def describe_trainable(model: Any) -> str:
    """'trainable parameters: 1,234 of 22,713,987 (0.0054 %)', the line printed before training."""
    trainable, total = parameter_counts(model)
    return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.4g} %)"


def merge_adapter_folder(adapter_dir: Path, target: Path) -> Path:
    """Write `target` as a plain `save_pretrained` model: the adapter in `adapter_dir` merged into its base.

    The peft class follows the adapter's task type (sequence or token classifier, causal LM).
    The tokenizer files and `raytune_llm.json` of the adapter folder are copied along, so the
    merged folder loads with `transformers` alone.
    """
    import peft

    from raytune_llm.evaluation.model import model_labels

    task_type = json.loads((adapter_dir / "adapter_config.json").read_text()).get("task_type") or "SEQ_CLS"
    auto = {"SEQ_CLS": peft.AutoPeftModelForSequenceClassification, "TOKEN_CLS": peft.AutoPeftModelForTokenClassification,
            "CAUSAL_LM": peft.AutoPeftModelForCausalLM}.get(task_type)
    if auto is None:
        raise ModelError(f"{adapter_dir}: cannot merge an adapter of task type {task_type}; known: SEQ_CLS, "
                         "TOKEN_CLS, CAUSAL_LM")
    label_args: dict[str, Any] = {}
    if task_type != "CAUSAL_LM":
        labels = model_labels(adapter_dir)
        label_args = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                      "label2id": {label: i for i, label in enumerate(labels)}}
    merged = auto.from_pretrained(str(adapter_dir), **label_args).merge_and_unload()
    if merged.config.pad_token_id is None:  # decoder LLMs: the base config has none; training padded with EOS
        from raytune_llm.models.loading import load_tokenizer

        merged.config.pad_token_id = load_tokenizer(str(adapter_dir)).pad_token_id
    if target.exists():
        shutil.rmtree(target)
    merged.save_pretrained(str(target), safe_serialization=True)
    adapter_files = {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md"}
    for item in adapter_dir.iterdir():
        if item.is_file() and item.name not in adapter_files:
            shutil.copy2(item, target / item.name)
    return target


def trainable_of_pretrained(model_path: str, num_labels: int, settings: LoraSettings,
                            trust_remote_code: bool = False, task: str = "classification") -> tuple[int, int]:
    """(trainable, total) parameters of the LoRA-wrapped model training would build, on the meta device.

    No weights are loaded: the memory estimate before launch needs only the counts.
    """
    import torch

    from raytune_llm.models.loading import meta_model

    model = meta_model(model_path, num_labels, task, trust_remote_code)
    with torch.device("meta"):  # the adapters are built on the meta device too
        return parameter_counts(apply_lora(model, settings, task))
