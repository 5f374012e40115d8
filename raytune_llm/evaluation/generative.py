"""`raytune-llm evaluate` for decoder LLMs (a causal-LM folder or a LoRA adapter over one).

- Labelled classification data (any format the data step reads): classification by
  generation. Each text is asked for with the label list (`generation.classification_messages`),
  answers are parsed back to labels, and the usual scores (accuracy, P/R/F1 macro/micro/
  weighted, per class, confusion matrix) are reported with the count of unparsed answers.
- Instruction data (`data.format: instruct`): exact match and token F1 of the generated answer
  against the reference response.
Writes `evaluation.json`, `evaluation.md`, `predictions.jsonl` and `quarantine.jsonl`; every
row read is scored or quarantined (`read = scored + quarantined`, checked).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.quarantine import kind_counts, write_quarantine
from raytune_llm.errors import DataError
from raytune_llm.evaluation.generation import (
    answer_scores,
    classification_messages,
    generate,
    label_scores,
    load_generator,
    parse_label,
)
from raytune_llm.evaluation.report import FILES, confusion_markdown

__all__ = ["evaluate_generative", "is_causal_lm"]


def is_causal_lm(model_dir: str | Path) -> bool:
    """True when the folder (or an adapter's base model) is a `...ForCausalLM` architecture."""
    from transformers import AutoConfig

    from raytune_llm.evaluation.model import base_model_path, is_adapter

    source = base_model_path(model_dir) if is_adapter(model_dir) else str(model_dir)
    try:
        architectures = AutoConfig.from_pretrained(source).architectures or []
    except (OSError, ValueError):
        return False
    return any(name.endswith("ForCausalLM") for name in architectures)


def _classification_rows(cfg: DataConfig) -> tuple[list[dict[str, Any]], list[Any], int, list[str]]:
    from raytune_llm.data.quarantine import detach
    from raytune_llm.data.readers import read_records

    table, quarantine, _ = detach(read_records(cfg))
    labels = list(cfg.labels) if cfg.labels else sorted({str(x) for x in table.column("label").to_pylist()})
    if len(labels) < 2:
        raise DataError(f"{cfg.path}: classification by generation needs at least 2 labels (found {labels}); "
                        "pass --config with data.labels")
    rows = table.select([c for c in ("source_id", "_source", "_line", "text", "label") if c in table.column_names]).to_pylist()
    return rows, quarantine, table.num_rows + len(quarantine), labels


def _instruction_rows(cfg: DataConfig) -> tuple[list[dict[str, Any]], list[Any], int]:
    from raytune_llm.data.formats.instruct import read_instructions

    result = read_instructions(cfg.path, cfg.encoding)
    rows = result.table.select(["source_id", "messages", "_source", "_line"]).to_pylist()
    return rows, list(result.quarantine), len(rows) + len(result.quarantine)


def evaluate_generative(model_dir: str | Path, cfg: DataConfig, out_dir: str | Path, *,
                        instruction: str | None = None, max_new_tokens: int | None = None, batch_size: int = 16,
                        max_length: int = 512, device: str = "cpu", limit: int | None = None) -> dict[str, Any]:
    """Score a causal LM on `cfg.path` and write the report under `out_dir`; returns the report.

    `limit` scores only the first N usable rows (the rest are counted as `not_scored`), for a
    quick look at a large file.
    """
    started = time.perf_counter()
    model, tokenizer = load_generator(str(model_dir), device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.format == "instruct":
        rows, quarantine, read = _instruction_rows(cfg)
        rows = rows[:limit] if limit else rows
        conversations = [r["messages"][:-1] for r in rows]
        answers = generate(model, tokenizer, conversations, max_new_tokens or 128, batch_size, max_length)
        references = [r["messages"][-1]["content"] for r in rows]
        metrics: dict[str, Any] = {"task": "generation", **answer_scores(answers, references)}
        predictions = [{"source_id": r["source_id"], "answer": a, "reference": ref}
                       for r, a, ref in zip(rows, answers, references)]
    else:
        rows, quarantine, read, labels = _classification_rows(cfg)
        rows = rows[:limit] if limit else rows
        conversations = [classification_messages(r["text"], labels, instruction) for r in rows]
        # A label word is a few tokens; a short budget also stops rambling answers early.
        answers = generate(model, tokenizer, conversations, max_new_tokens or 8, batch_size, max_length)
        parsed = [parse_label(a, labels) for a in answers]
        metrics = {"task": "classification_by_generation", "labels": labels,
                   **label_scores([r["label"] for r in rows], parsed, labels)}
        predictions = [{"source": r.get("_source"), "line": r.get("_line"), "text": r["text"], "label": r["label"], "answer": a, "predicted": p}
                       for r, a, p in zip(rows, answers, parsed)]
    not_scored = read - len(quarantine) - len(rows)  # rows past --limit; read = scored + quarantined + these
    seconds = time.perf_counter() - started
    report = {"model": str(model_dir), "data": cfg.path, "metrics": metrics,
              "rows": {"read": read, "scored": len(rows), "quarantined": len(quarantine), "not_scored": not_scored},
              "quarantine_kinds": kind_counts(quarantine),
              "timing": {"total_s": round(seconds, 2), "rows_per_s": round(len(rows) / max(seconds, 1e-9), 2),
                         "device": device}}
    write_quarantine(out / FILES["quarantine"], quarantine)
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    (out / FILES["json"]).write_text(json.dumps(report, indent=2) + "\n")
    (out / FILES["markdown"]).write_text(_markdown(report))
    return report


def _markdown(report: dict[str, Any]) -> str:
    m, rows = report["metrics"], report["rows"]
    lines = [f"# Evaluation of {report['model']}", "", f"Data: `{report['data']}`; read {rows['read']} = scored "
             f"{rows['scored']} + quarantined {rows['quarantined']} + not scored {rows['not_scored']}.", ""]
    if m["task"] == "generation":
        lines += [f"Exact match **{m['exact_match']:.4f}**, token F1 **{m['token_f1']:.4f}** over {m['n']} answers."]
    else:
        lines += [f"Classification by generation: accuracy **{m['accuracy']:.4f}**, macro-F1 **{m['f1']['macro']:.4f}**"
                  f", {m['unparsed']} answer(s) named no label.", "",
                  "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {c['label']} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |"
                  for c in m["per_class"]]
        lines += ["", *confusion_markdown(m["confusion"], m["labels"])]
    return "\n".join(lines) + "\n"

