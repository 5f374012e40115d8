"""`raytune-llm evaluate` for a token classification (NER) model: entity-level metrics per type.

Read (`conll` or `spans`, the data step's readers and quarantine) -> tokenize words as in
training (`TagAndTokenize`) -> predict -> word tags (first sub-token) -> entity counts per type
-> `evaluation.json`, `evaluation.md`, `predictions.jsonl` (words, gold and predicted tags,
predicted character spans) and `quarantine.jsonl`. Scores are given for seqeval's default
decoding (what training reports as val_f1) and for strict IOB2. No Ray: one process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raytune_llm.config.schema import DataConfig
from raytune_llm.data.quarantine import Quarantined, clip, kind_counts, write_quarantine
from raytune_llm.errors import DataError

__all__ = ["evaluate_tokens", "is_token_classifier"]


def is_token_classifier(model_dir: str | Path) -> bool:
    """True when the folder holds a `...ForTokenClassification` model (or a LoRA adapter of task TOKEN_CLS)."""
    from transformers import AutoConfig

    adapter = Path(model_dir) / "adapter_config.json"
    if adapter.is_file():
        return json.loads(adapter.read_text()).get("task_type") == "TOKEN_CLS"
    try:
        architectures = AutoConfig.from_pretrained(str(model_dir)).architectures or []
    except (OSError, ValueError):
        return False
    return any(name.endswith("ForTokenClassification") for name in architectures)


def _token_format(cfg: DataConfig) -> str:
    if cfg.format in ("conll", "spans"):
        return cfg.format
    if cfg.format != "auto":
        raise DataError(f"a token classification model is scored on data.format conll or spans (got {cfg.format}); "
                        "pass --format conll or --format spans")
    return "spans" if cfg.path.endswith((".jsonl", ".json")) else "conll"


def _read(cfg: DataConfig, labels: list[str]) -> tuple[pa.Table, list[Quarantined], int]:
    """Usable sentences, the quarantine (including sentences with a tag the model does not know), rows read."""
    from raytune_llm.data.tasks import read_task_table
    from raytune_llm.data.tokens import read_token_input

    fmt = _token_format(cfg)
    found = read_token_input(read_task_table(cfg.model_copy(update={"format": fmt, "strict": False})), fmt)
    known, keep, quarantine = set(labels), [], list(found.quarantine)
    for i, row in enumerate(found.table.select(["tags", "_source", "_line", "text"]).to_pylist()):
        unknown = sorted(set(row["tags"]) - known)
        if unknown:
            quarantine.append(Quarantined(row["_source"], row["_line"], "tag", "unknown_tag",
                                          f"tag not among the model's labels {labels}; evaluate on data annotated "
                                          "with the tags the model was trained on", repr(unknown), clip(row["text"])))
        else:
            keep.append(i)
    if cfg.strict and quarantine:
        from raytune_llm.data.quarantine import strict_error

        raise strict_error(quarantine, cfg.path)
    return found.table.take(pa.array(keep, pa.int64())), quarantine, found.read


def _predict(model: Any, torch: Any, encoded: pa.Table, pad_id: int, batch_size: int, device: str) -> list[np.ndarray]:
    from raytune_llm.train.batches import pad_batch

    ids_all = encoded.column("input_ids").to_pylist()
    order = np.argsort([len(r) for r in ids_all], kind="stable")  # length-sorted batches: less padding
    out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(ids_all)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = pad_batch([ids_all[r] for r in rows], pad_id)
            logits = model(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device)).logits
            best = logits.argmax(dim=-1).cpu().numpy()
            for i, r in enumerate(rows):
                out[r] = best[i, : len(ids_all[r])]
    return out


def evaluate_tokens(model_dir: str | Path, cfg: DataConfig, out_dir: str | Path, batch_size: int = 64,
                    max_length: int | None = None, device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Score the tagger in `model_dir` on `cfg.path`; write the report under `out_dir` and return it."""
    import torch

    from raytune_llm.data.tag_tokenize import TagAndTokenize
    from raytune_llm.data.tokens import entity_types, word_predictions, word_spans
    from raytune_llm.evaluation.model import model_metadata
    from raytune_llm.train.entities import entity_counts, entity_metrics
    from raytune_llm.train.token_eval import load_tagger

    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    model, _, labels, tokenizer_source = load_tagger(str(model_dir), device)
    trained = model_metadata(model_dir).get("config", {}).get("data", {})
    length = int(max_length or trained.get("max_length") or cfg.max_length)
    table, quarantine, read = _read(cfg, labels)
    tokenizer = TagAndTokenize(tokenizer_source, length, labels)
    encoded = tokenizer(table)
    predictions = _predict(model, torch, encoded, tokenizer.tokenizer.pad_token_id, batch_size, device)
    outside = labels.index("O") if "O" in labels else 0
    rows = encoded.to_pylist()
    gold = [row["tags"] for row in rows]
    predicted = [[labels[t] for t in word_predictions(p, row["word_ids"], len(row["tokens"]), outside)]
                 for p, row in zip(predictions, rows)]
    types = entity_types(labels)
    report: dict[str, Any] = {
        "model": str(model_dir), "data": cfg.path, "task": "token_classification", "max_length": length,
        "rows": {"read": read, "scored": len(rows), "quarantined": len(quarantine)},
        "quarantine_kinds": kind_counts(quarantine), "labels": labels,
        "truncation": {"rows_truncated": sum(1 for r in rows if r["truncated_words"]),
                       "words_truncated": sum(r["truncated_words"] for r in rows)},
        "metrics": {mode: entity_metrics(entity_counts(gold, predicted, types, mode), types, prefix="")  # type: ignore[arg-type]
                    for mode in ("default", "strict")},
    }
    if report["rows"]["scored"] + len(quarantine) != read:
        raise RuntimeError(f"row accounting broke: {report['rows']}")
    report["timing"] = {"total_s": round(time.perf_counter() - started, 3), "device": device}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_quarantine(out / "quarantine.jsonl", quarantine)
    with (out / "predictions.jsonl").open("w") as file:
        for row, tags in zip(rows, predicted):
            spans = word_spans(row["text"], row["tokens"], row["word_starts"], tags)
            file.write(json.dumps({"id": row["id"], "_source": row["_source"], "_line": row["_line"],
                                   "tokens": row["tokens"], "gold": row["tags"], "predicted": tags,
                                   "predicted_spans": [list(s) for s in spans]}, ensure_ascii=False) + "\n")
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    (out / "evaluation.md").write_text(_markdown(report, types) + "\n")
    return report


def _markdown(report: dict[str, Any], types: list[str]) -> str:
    rows = report["rows"]
    lines = [f"# Evaluation of `{report['model']}` (named entities)", "",
             f"Data `{report['data']}`: read {rows['read']} sentences = scored {rows['scored']} + quarantined "
             f"{rows['quarantined']}. Truncation at {report['max_length']} tokens cut "
             f"{report['truncation']['words_truncated']} words (scored as O).", "",
             "Entity level, exact span and type (seqeval; `default` decoding is what training reports as val_f1).",
             "", "| decoding | type | precision | recall | F1 | gold entities |", "|---|---|---|---|---|---|"]
    for mode, m in report["metrics"].items():
        lines.append(f"| {mode} | **micro** | {m['precision']:.4f} | {m['recall']:.4f} | **{m['f1']:.4f}** | "
                     f"{int(m['entities'])} |")
        lines += [f"| {mode} | {t} | {m[f'precision/{t}']:.4f} | {m[f'recall/{t}']:.4f} | {m[f'f1/{t}']:.4f} | "
                  f"{int(m[f'support/{t}'])} |" for t in types]
    return "\n".join(lines)
