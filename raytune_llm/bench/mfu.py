"""Model FLOPs utilisation: the arithmetic, stated once, with the peak table it divides by.

MFU = model FLOPs per second actually achieved / the hardware's peak FLOPs per second.
"Model FLOPs" count only the work the model needs (not recomputation, not padding), so
two set-ups that train the same model on the same tokens get comparable numbers.

Per real (non-padding) token of a training step we count, after Kaplan et al. 2020 and
the PaLM paper's appendix B:

    full fine-tuning:  6·N            + 12·L·d·s
    LoRA / frozen:     4·N + 2·N_train + 12·L·d·s

N is the number of parameters that take part in matrix multiplications (the weights of
linear layers: embedding look-ups cost no FLOPs, a tied LM head does and is counted
once), N_train the trainable share of those, L the layers, d the hidden width and s the
sequence length the token was processed at (for padded batches, the batch's width). The
forward pass costs 2·N per token and the backward pass 4·N: 2·N for the gradients of the
activations and 2·N for the gradients of the weights, which frozen weights skip. The
attention score and value products add 4·L·d·s forward and twice that backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORMULA = ("model FLOPs per real token = 6·N + 12·L·d·s (full fine-tuning) or 4·N + 2·N_trainable + "
           "12·L·d·s (LoRA/frozen weights); N = parameters in matrix multiplications, L layers, d width, "
           "s the padded length the token was processed at")

#: Dense peak TFLOP/s per GPU by precision (vendor data sheets, without sparsity).
#: fp32 means tensor-core TF32, which PyTorch uses for fp32 matmuls when allowed.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0},
    "H100 SXM": {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "fp32": 378.0},
    "H200": {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7},
}


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs to know about a model."""

    matmul_params: int
    trainable_matmul_params: int
    layers: int
    hidden: int

    @property
    def frozen(self) -> bool:
        """True when some matmul weights get no gradient (LoRA, frozen layers)."""
        return self.trainable_matmul_params < self.matmul_params


def model_shape(model: Any) -> ModelShape:
    """Count matmul parameters, layers and width of a `transformers` model.

    Linear layers are found by type (torch's `nn.Linear` and the `Conv1D` that GPT-2
    style models use); a weight shared by two modules (a tied LM head) counts once. Under
    LoRA the adapters' A and B are linear layers too (trainable, so the 4·N + 2·N_train form
    applies), and the frozen copy of a `modules_to_save` head is skipped.
    """
    import torch

    seen: set[int] = set()
    total = trainable = 0
    for name, module in model.named_modules():
        if ".original_module" in f".{name}":
            continue  # peft keeps the pretrained head beside the trained copy (modules_to_save); it never runs
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            weight = module.weight
            if id(weight) in seen:
                continue
            seen.add(id(weight))
            total += weight.numel()
            trainable += weight.numel() if weight.requires_grad else 0
    config = model.config
    layers = int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0))
    hidden = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0))
    return ModelShape(total, trainable, layers, hidden)


def flops_per_token(shape: ModelShape, seq_len: float) -> float:
    """Training FLOPs for one real token processed at sequence length `seq_len` (see module doc)."""
    dense = 6.0 * shape.matmul_params if not shape.frozen else (
        4.0 * shape.matmul_params + 2.0 * shape.trainable_matmul_params)
    return dense + 12.0 * shape.layers * shape.hidden * seq_len


def peak_tflops_for(device_name: str, precision: str) -> float | None:
    """Peak dense TFLOP/s for a GPU name as torch reports it, or None when unknown."""
    name = device_name.upper()
    if "H200" in name:
        key = "H200"
    elif "H100" in name:
        key = "H100 PCIe" if "PCIE" in name else "H100 SXM"
    elif "A100" in name:
        key = "A100"
    else:
        return None
    return PEAK_TFLOPS[key][precision]


def mfu(model_flops: float, seconds: float, devices: int, peak_tflops: float | None) -> float | None:
    """Achieved share of peak: model FLOPs / (seconds × devices × peak); None without a peak."""
    if not peak_tflops or seconds <= 0:
        return None
    return model_flops / (seconds * devices * peak_tflops * 1e12)
