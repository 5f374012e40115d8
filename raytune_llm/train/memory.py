"""Per-GPU memory of a training plan, estimated before launch, and the cheapest change when it will not fit.

All figures are bytes per GPU (per Ray Train worker). Notation: e bytes per weight
and activation element (2 under bf16/fp16, 4 under fp32; always 4 for strategy
'ddp', whose engine trains in fp32), N GPUs, P parameters, T trainable ones (P,
or the LoRA adapters), G the largest module's own parameters (the word embeddings
of an encoder), R DeepSpeed's `reduce_bucket_size` (default 5e8 elements).

                    stage 0 (DeepSpeed)   stage 1          stage 2          stage 3
    parameters      e·P                   e·P              e·P              e·P/N + 2·e·G (a gathered layer)
    gradients       e·T                   e·T              e·T/N            e·T/N
    optimizer       8·T (12·T mixed)      12·T/N           12·T/N           12·T/N
    step-only       4·T fp32 grads ¹      4·T/N            4·T/N            4·T/N
    buffers         —                     e·R              e·R              e·R

Optimizer states are AdamW's two fp32 moments (8 bytes) plus, whenever DeepSpeed
keeps one, an fp32 master copy (4): under ZeRO ≥ 1 it always does, even in fp32
(measured). ¹ Under mixed precision only; stage 0 with N > 1 also flattens up to 5e8
gradient elements for its all-reduce. `buffers` is the contiguous gradient bucket ZeRO
allocates for the backward pass (two with `overlap_comm` at stage 1/2); pass a smaller
`zero_optimization.reduce_bucket_size` through `train.deepspeed_config` to shrink it.
`train.offload_optimizer` moves the optimizer and the fp32 gradients (stage ≥ 2: all
gradient partitions) to CPU memory; `train.offload_params` moves the parameters, leaving
the 2·e·G working set. Under bf16 these match DeepSpeed's own `estimate_zero2_model_states_mem_needs`
(2 + 18/N bytes per parameter) and, with offload, `estimate_zero3_model_states_mem_needs`; without
offload ZeRO-3 here counts 20/N where DeepSpeed's estimator says 18/N (it leaves out the 16-bit
gradient partition that sits beside the fp32 gradients in the step). Strategy 'ddp': 4·P, 4·T, 8·T,
DDP's gradient buckets 4·T when N > 1, and torch AdamW's temporaries in the step
(one fp32 copy of T on GPU with foreach kernels; 2·4·G on CPU, one tensor at a time).

Activations per transformer layer (Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models", eq. 1, generalised), micro-batch b, sequence s,
hidden h, MLP width I, heads a:

    e·s·b·(8·h + 2·I)                       inputs kept for backward: LayerNorms, Q, K, V,
                                            attention output, MLP input, GeLU in and out
  + e·a·s²·b                                softmax output, only where scores are stored (eager
                                            attention; sdpa/flash keep O(s) state instead)
  + (e + 1)·a·s²·b      with attention dropout (its output and 1-byte mask)
  + 2·s·b·h bytes       with hidden dropout (masks)

  + 2·e·s·b·I           with a gated (SwiGLU) MLP: gate and up outputs both kept
  + 2·s·b·h·(4 + 4)     with fp32 RMSNorm (Llama): the fp32 normalised copy of each of the
                        two norms, and its fp32 input under bf16/fp16 (4 bytes only in fp32)

plus 2·e·s·b·h for the embeddings. With I = 4h, eager attention, dropout and e = 2 this is
the paper's s·b·h·(34 + 5·a·s/h). A causal LM adds 12·s·b·V bytes for its logits over a
vocabulary of V (`LOGIT_BYTES`): the paper counts the transformer layers only, and at a 50k
vocabulary the loss holds more than a small model's layers. The first GPU run (H200, SmolLM2-135M
architecture, bf16 ZeRO-2, micro-batch 8 × 1024) measured 13.30 GiB where the estimate without
these three terms said 6.47; with them it says 14.5. The peak is params + gradients + optimizer +
max(activations + buffers, step-only): activations are freed before the optimizer step.
Measured on CPU (tests/test_memory.py) it is within 10 % of torch's peak allocation for torch
AdamW, ZeRO-0 fp32 and ZeRO-2 bf16.
Not modelled: activation checkpointing (not offered yet), the CUDA context and allocator
fragmentation (left to `USABLE_FRACTION`), sequence lengths above `data.max_length`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raytune_llm.config.schema import RunConfig, TrainConfig

#: Share of a GPU's memory a plan may use; the rest is the CUDA context, allocator fragmentation, NCCL.
USABLE_FRACTION = 0.90
_DEFAULT_BUCKET = 500_000_000  # DeepSpeed's reduce_bucket_size and stage-0 all-reduce bucket (elements)
_SMALL_BUCKET = 50_000_000  # the bucket size suggested when the default one is what does not fit
_LORA_RANK = 8
#: Bytes per logit (token × vocabulary entry) a causal LM holds at the loss: the logits, their fp32
#: log-softmax kept for backward and its gradient. Measured on CPU with DeepSpeed ZeRO-2, tiny Llamas
#: of 8k and 32k vocabularies: 12.0-12.3 under fp32 and bf16 alike (tests/test_memory.py).
LOGIT_BYTES = 12


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a model; `model_shape` reads it off a `transformers` model."""

    params: int
    layers: int
    hidden: int
    heads: int
    intermediate: int
    largest_layer: int  # parameters of the largest module (own parameters only)
    trainable: int | None = None  # None: all parameters train
    scores_stored: bool = True  # eager attention keeps the s×s softmax output; sdpa/flash do not
    hidden_dropout: bool = False
    attention_dropout: bool = False
    vocab: int = 0  # logits per token (a causal LM's vocabulary); 0: the head scores whole sequences or few tags
    gated_mlp: bool = False  # SwiGLU-style MLP (Llama, Mistral, Qwen): gate and up projections both kept
    rms_norm_fp32: bool = False  # RMSNorm that computes in fp32 (Llama-style), keeping fp32 copies


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU for one plan, by kind; `peak` is what has to fit. `cpu_offloaded` is per worker, in RAM."""

    params: int
    gradients: int
    optimizer: int
    activations: int
    buffers: int
    step_only: int
    cpu_offloaded: int
    shape: ModelShape
    train: TrainConfig
    seq_len: int
    num_gpus: int
    lora_trainable: int | None = None
    device: str = "cuda"

    @property
    def peak(self) -> int:
        """Params, gradients and optimizer states, plus the larger of the backward and the step extras."""
        return self.params + self.gradients + self.optimizer + max(self.activations + self.buffers, self.step_only)


def model_shape(model: Any) -> ModelShape:
    """Count parameters (shared ones once) and read the layer geometry of a `transformers` model."""
    seen: dict[int, Any] = {}
    for param in model.parameters():
        seen[id(param)] = param
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    config = model.config

    def first(*names: str, default: Any = 0) -> Any:
        return next((getattr(config, n) for n in names if getattr(config, n, None) is not None), default)

    hidden = int(first("hidden_size", "n_embd", "d_model"))
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    total = sum(p.numel() for p in seen.values())
    return ModelShape(
        params=total, layers=int(first("num_hidden_layers", "n_layer", "num_layers")), hidden=hidden,
        heads=int(first("num_attention_heads", "n_head")), intermediate=int(first("intermediate_size", "n_inner",
                                                                                  "ffn_dim", default=4 * hidden)),
        largest_layer=int(largest), trainable=None if trainable == total else trainable,
        scores_stored=getattr(config, "_attn_implementation", "eager") in ("eager", None),
        hidden_dropout=float(first("hidden_dropout_prob", "resid_pdrop", "dropout", default=0.0)) > 0,
        attention_dropout=float(first("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout",
                                      default=0.0)) > 0,
        vocab=_logit_width(model),
        gated_mlp=any(hasattr(m, "gate_proj") and hasattr(m, "up_proj") for m in model.modules()),
        rms_norm_fp32=any("RMSNorm" in type(m).__name__ for m in model.modules()),
    )


def _logit_width(model: Any) -> int:
    """Logits per token when the model ends in a vocabulary-sized LM head (causal LMs), else 0."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(getattr(head, "out_features", 0) or 0) if head is not None else 0


def shape_of_pretrained(model_path: str, num_labels: int, trust_remote_code: bool = False,
                        task: str = "classification") -> ModelShape:
    """The shape of the model training would build for `task`, without loading any weights (meta device)."""
    from raytune_llm.models.loading import meta_model

    model = meta_model(model_path, num_labels, task, trust_remote_code)
    return model_shape(model)


def activation_bytes(shape: ModelShape, micro_batch: int, seq_len: int, element_bytes: int) -> int:
    """Activations kept for the backward pass of one micro-batch (see the module docstring)."""
    tokens = micro_batch * seq_len
    scores = shape.heads * seq_len * tokens if shape.scores_stored else 0  # a·s²·b
    per_layer = element_bytes * tokens * (8 * shape.hidden + 2 * shape.intermediate) + element_bytes * scores
    if shape.attention_dropout:
        per_layer += (element_bytes + 1) * scores
    if shape.hidden_dropout:
        per_layer += 2 * tokens * shape.hidden
    if shape.gated_mlp:  # gate and up outputs both kept, and the activation of one of them
        per_layer += element_bytes * tokens * 2 * shape.intermediate
    if shape.rms_norm_fp32:  # two norms a layer keep an fp32 normalised copy, and an fp32 input under 16-bit
        per_layer += 2 * tokens * shape.hidden * (4 + (4 if element_bytes < 4 else 0))
    embeddings = 2 * element_bytes * tokens * shape.hidden + (tokens * shape.hidden if shape.hidden_dropout else 0)
    return shape.layers * per_layer + embeddings + LOGIT_BYTES * tokens * shape.vocab


def estimate_memory(model_or_shape: Any, train_cfg: TrainConfig, seq_len: int, num_gpus: int,
                    lora_trainable: int | None = None, device: str = "cuda") -> MemoryEstimate:
    """Per-GPU bytes of a plan: parameters, gradients, optimizer states, activations, buffers, step extras.

    `model_or_shape` is a `ModelShape` or a `transformers` model; `lora_trainable`, when given, is
    the number of trainable (adapter) parameters, the rest being frozen. `device` matters only
    for strategy 'ddp', whose torch AdamW needs different temporaries on 'cuda' and 'cpu'.
    """
    shape = model_or_shape if isinstance(model_or_shape, ModelShape) else model_shape(model_or_shape)
    trainable = lora_trainable if lora_trainable is not None else (shape.trainable or shape.params)
    params = shape.params + (lora_trainable or 0)  # adapters come on top of the frozen base
    if train_cfg.strategy == "ddp":
        states = _ddp_states(params, trainable, shape, num_gpus, device)
        element = 4
    else:
        states = _zero_states(params, trainable, shape, train_cfg, num_gpus)
        element = 2 if train_cfg.precision in ("bf16", "fp16") else 4
    activations = activation_bytes(shape, train_cfg.batch_size, seq_len, element)
    return MemoryEstimate(**states, activations=activations, shape=shape, train=train_cfg, seq_len=seq_len,
                          num_gpus=num_gpus, lora_trainable=lora_trainable, device=device)


def _ddp_states(params: int, trainable: int, shape: ModelShape, num_gpus: int, device: str) -> dict[str, int]:
    """Plain DDP with torch AdamW in fp32: everything replicated."""
    temporaries = 4 * trainable if device == "cuda" else 2 * 4 * min(shape.largest_layer, trainable)
    return {"params": 4 * params, "gradients": 4 * trainable, "optimizer": 8 * trainable,
            "buffers": 4 * trainable if num_gpus > 1 else 0, "step_only": temporaries, "cpu_offloaded": 0}


def _zero_states(params: int, trainable: int, shape: ModelShape, train: TrainConfig, num_gpus: int) -> dict[str, int]:
    """DeepSpeed at `train.zero_stage`, with its offload settings (see the table in the module docstring)."""
    e, n, stage = (2 if train.precision in ("bf16", "fp16") else 4), num_gpus, train.zero_stage
    zero = (train.deepspeed_config or {}).get("zero_optimization", {})
    bucket = int(zero.get("reduce_bucket_size", _DEFAULT_BUCKET))
    working = 2 * e * min(shape.largest_layer, params)
    # Under ZeRO-3 each GPU holds its partition plus the layer being gathered (nothing to gather on one GPU).
    gpu_params = (e * params // n + (working if n > 1 else 0)) if stage == 3 else e * params
    grads = e * trainable // n if stage >= 2 else e * trainable
    if stage == 0:
        mixed = e == 2
        optimizer, step_only = (12 if mixed else 8) * trainable, (4 * trainable if mixed else 0)
        step_only += e * min(trainable, bucket) if n > 1 else 0  # the flattened all-reduce bucket
        buffers = 0
    else:
        optimizer, step_only = 12 * trainable // n, 4 * trainable // n
        copies = 2 if zero.get("overlap_comm", False) and stage < 3 else 1
        buffers = e * bucket * copies if zero.get("contiguous_gradients", True) or stage == 3 else 0
    offloaded = 0
    if train.offload_optimizer:
        offloaded += optimizer + step_only + (grads if stage >= 2 else 0)
        optimizer, step_only, grads = 0, 0, (0 if stage >= 2 else grads)
    if train.offload_params:
        offloaded += e * params // n
        gpu_params = working
    return {"params": gpu_params, "gradients": grads, "optimizer": optimizer, "buffers": buffers,
            "step_only": step_only, "cpu_offloaded": offloaded}


def lora_parameters(shape: ModelShape, rank: int = _LORA_RANK) -> int:
    """Adapter parameters of LoRA at `rank` on the query and value projections (peft's usual default)."""
    return shape.layers * 2 * rank * (shape.hidden + shape.hidden)


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f} GB" if value >= 1e8 else f"{value / 1e6:.1f} MB"


def format_estimate(estimate: MemoryEstimate) -> str:
    """The short table printed before launch."""
    from raytune_llm.train.deepspeed_config import engine_words

    t = estimate.train
    rows = [("parameters", estimate.params, ""), ("gradients", estimate.gradients, ""),
            ("optimizer states", estimate.optimizer, "AdamW moments + fp32 master weights"),
            ("activations", estimate.activations, f"micro-batch {t.batch_size} × {estimate.seq_len} tokens" + (
                f", logits {LOGIT_BYTES} B × {estimate.shape.vocab:,} per token" if estimate.shape.vocab else "")),
            ("buffers", estimate.buffers, "gradient buckets, during backward" + (
                " (on CPU mostly never written, so little RAM)" if estimate.device == "cpu" else "")),
            ("step-only", estimate.step_only, "fp32 gradients / temporaries, during the optimizer step"),
            ("peak", estimate.peak, "params + gradients + optimizer + max(activations + buffers, step-only)")]
    if estimate.cpu_offloaded:
        rows.append(("in CPU memory", estimate.cpu_offloaded, "offloaded, per worker"))
    where = "per-GPU" if estimate.device == "cuda" else "per-worker (CPU)"
    head = (f"[memory] {where} estimate: {engine_words(t)}, {t.precision if t.strategy == 'deepspeed' else 'fp32'}, "
            f"{estimate.num_gpus} worker(s)")
    return "\n".join([head, *(f"[memory]   {name:<17}{_gb(value):>10}  {note}".rstrip() for name, value, note in rows)])


def _alternatives(estimate: MemoryEstimate) -> list[tuple[str, dict[str, Any], int | None]]:
    """Changes to try, cheapest first: (what to set, TrainConfig updates, LoRA trainable parameters)."""
    t = estimate.train
    stage = t.zero_stage if t.strategy == "deepspeed" else 0
    prefix = {"strategy": "deepspeed"} if t.strategy == "ddp" else {}
    switch = "train.strategy=deepspeed " if t.strategy == "ddp" else ""
    options: list[tuple[str, dict[str, Any], int | None]] = []
    zero = (t.deepspeed_config or {}).get("zero_optimization", {})
    big_bucket = int(zero.get("reduce_bucket_size", _DEFAULT_BUCKET)) > _SMALL_BUCKET
    if t.strategy == "deepspeed" and estimate.buffers and big_bucket:
        # Free: DeepSpeed's default bucket (5e8 elements) dwarfs the gradients of a small model.
        raw = {**(t.deepspeed_config or {}), "zero_optimization": {**zero, "reduce_bucket_size": _SMALL_BUCKET}}
        options.append((f"train.deepspeed_config.zero_optimization.reduce_bucket_size={_SMALL_BUCKET}",
                        {"deepspeed_config": raw}, None))
    for k in range(stage + 1, 4):
        options.append((f"{switch}train.zero_stage={k}", {**prefix, "zero_stage": k}, None))
    for k in range(max(stage, 1), 4):
        options.append((f"{switch}train.zero_stage={k} train.offload_optimizer=true",
                        {**prefix, "zero_stage": k, "offload_optimizer": True}, None))
    everything = {**prefix, "zero_stage": 3, "offload_optimizer": True, "offload_params": True}
    options.append((f"{switch}train.zero_stage=3 train.offload_optimizer=true train.offload_params=true",
                    everything, None))
    settings = [("", {})] + [(words, update) for words, update, _ in options]
    for micro in [d for d in range(t.batch_size - 1, 0, -1) if t.batch_size % d == 0]:
        accumulation = t.gradient_accumulation_steps * t.batch_size // micro
        for words, update in settings:
            change = f"train.batch_size={micro} train.gradient_accumulation_steps={accumulation} {words}".strip()
            options.append((change, {**update, "batch_size": micro, "gradient_accumulation_steps": accumulation},
                            None))
    if estimate.lora_trainable is None:
        lora = lora_parameters(estimate.shape)
        options += [(f"lora.enabled=true (about {lora:,} trainable parameters) {words}".strip(), update, lora)
                    for words, update in settings]
    return options


def cheapest_fix(estimate: MemoryEstimate, gpu_memory_bytes: int) -> tuple[str, MemoryEstimate] | None:
    """The first change (in the order of `_alternatives`) whose estimate fits, with that estimate; None if none does.

    Cheapest means the least cost to speed or to the training recipe: a smaller gradient
    bucket when DeepSpeed's default one is large (costs nothing measurable), a higher ZeRO stage
    (more communication), optimizer offload, parameter offload (the CPU in the loop), a
    smaller micro-batch with more accumulation (same global batch, less throughput), and
    last LoRA (a different model to train).
    """
    usable = USABLE_FRACTION * gpu_memory_bytes
    for words, update, lora in _alternatives(estimate):
        candidate = estimate_memory(estimate.shape, estimate.train.model_copy(update=update), estimate.seq_len,
                                    estimate.num_gpus, lora if lora is not None else estimate.lora_trainable,
                                    estimate.device)
        if candidate.peak <= usable:
            return words, candidate
    return None


def check_plan(estimate: MemoryEstimate, gpu_memory_bytes: int) -> None:
    """Raise `ConfigError` when the plan's peak exceeds the usable share of one GPU, naming the cheapest fix."""
    from raytune_llm.errors import ConfigError
    from raytune_llm.train.deepspeed_config import engine_words

    usable = USABLE_FRACTION * gpu_memory_bytes
    if estimate.peak <= usable:
        return
    t = estimate.train
    need = (f"train: this plan needs about {_gb(estimate.peak)} per GPU ({engine_words(t)}, micro-batch "
            f"{t.batch_size} × {estimate.seq_len} tokens on {estimate.num_gpus} GPU(s)) but {USABLE_FRACTION:.0%} "
            f"of a {_gb(gpu_memory_bytes)} GPU is {_gb(usable)}")
    fix = cheapest_fix(estimate, gpu_memory_bytes)
    if fix is None:
        raise ConfigError([f"{need}; nothing fits, not even ZeRO-3 with optimizer and parameter offload, "
                           "micro-batch 1 and LoRA: use more GPUs, a smaller model or a shorter data.max_length"])
    words, candidate = fix
    raise ConfigError([f"{need}; the cheapest change that fits: {words} (about {_gb(candidate.peak)} per GPU). "
                       "Tried in order: a smaller gradient bucket, a higher ZeRO stage, optimizer offload, "
                       "parameter offload, a smaller "
                       "micro-batch with more accumulation (same global batch), LoRA"])


def gpu_memory_bytes(train: TrainConfig) -> int | None:
    """Memory of one worker's GPU: `train.gpu_memory_gb`, else the driver's GPU 0, else None (unknown).

    Ray reports GPU counts, not their memory; the driver's GPU is the best guess on a
    homogeneous cluster, and `train.gpu_memory_gb` covers the rest.
    """
    if train.gpu_memory_gb is not None:
        return int(train.gpu_memory_gb * 1e9)
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    return None


def plan_training(cfg: RunConfig, model_path: str, num_labels: int, train_rows: int, gpu: bool,
                  sweep: bool = False) -> MemoryEstimate | None:
    """Before Ray Train starts: print the batch plan and the memory table; refuse what cannot run.

    Checks that one global batch fits the training rows, that `train.deepspeed_config`
    agrees with the schema (step counts included), and on GPU runs that the estimated peak
    fits the GPU memory (`check_plan`). `sweep` notes the values a
    Tune search space changes per trial.
    """
    from raytune_llm.train.deepspeed_config import build_deepspeed_config, describe_plan, optimizer_steps

    train = cfg.train
    print(f"[plan] {describe_plan(train, train_rows)}")
    varied = sorted(k for k in cfg.tune.search_space if k.startswith(("train.", "lora."))) if sweep else []
    if varied:
        print(f"[plan] (the sweep varies {', '.join(varied)}: planned with the base values)")
    if train.strategy == "deepspeed":
        build_deepspeed_config(train, optimizer_steps(train_rows, train))
    try:
        shape = shape_of_pretrained(model_path, num_labels, cfg.model.trust_remote_code, cfg.data.task)
    except Exception as exc:  # advisory: a model that cannot be built on the meta device still trains
        print(f"[memory] no estimate: building {model_path} on the meta device failed ({exc})")
        return None
    lora = None
    if cfg.lora.enabled:
        from raytune_llm.models.lora import trainable_of_pretrained

        lora, total = trainable_of_pretrained(model_path, num_labels, cfg.lora, cfg.model.trust_remote_code,
                                              cfg.data.task)
        print(f"[plan] LoRA r={cfg.lora.r}: trainable parameters: {lora:,} of {total:,} "
              f"({100 * lora / max(total, 1):.4g} %)")
    estimate = estimate_memory(shape, train, cfg.data.max_length, train.num_workers, lora_trainable=lora,
                               device="cuda" if gpu else "cpu")
    print(format_estimate(estimate))
    if gpu:
        memory = gpu_memory_bytes(train)
        if memory is None:
            print("[memory] not checked: the driver has no GPU to read the size from; set train.gpu_memory_gb")
        else:
            check_plan(estimate, memory)
            print(f"[memory] fits: peak {_gb(estimate.peak)} of {_gb(memory)} per GPU")
    return estimate
