"""SmolLM2-135M-Instruct, LoRA-tuned on Financial PhraseBank AllAgree as classification by generation.

Issue #4's real check on this CPU machine: test macro-F1 before tuning (the instruction-tuned
model answering zero-shot) and after LoRA tuning, on the same test split as the MiniLM benchmark.

1. The standard 70/10/20 split of configs/financial_phrasebank.yaml after cleaning (1,581 / 226 /
   452 rows, computed by the prepare step's own functions) is written as JSON lines, so that the
   generation run reads exactly those rows as predefined split files.
2. Training on the 2-core CPU is slow for a 135M model, so the run trains on the first
   `--train-rows` training rows (in the split's seeded id order) and validates on
   `--val-rows`; the test split is used whole.
3. Before: `raytune-llm evaluate` on the base model (the converted `builtin:smollm2` folder).
   After: `raytune-llm train configs/smollm2_phrasebank.yaml` with the split files, LoRA
   adapters only, test scored once for the chosen epoch.

    python benchmarks/bench_smollm2_phrasebank.py --out benchmarks/results/smollm2_phrasebank.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def split_rows(work: Path) -> dict[str, list[dict[str, Any]]]:
    """The standard PhraseBank split's (text, label) rows (configs/financial_phrasebank.yaml).

    The prepare step's own driver-side functions (normalise, drop duplicates and near-duplicates,
    seeded stratified split, leakage check) without its tokenization pass, which does not change
    the split and would need Ray: the same 1,581 / 226 / 452 rows `raytune-llm prepare` keeps.
    """
    import pyarrow.compute as pc

    from raytune_llm.config.loader import load_config
    from raytune_llm.data.cleaning import drop_leaks, pii_kinds, pop_pii_counts, redact_and_normalize
    from raytune_llm.data.pipeline import clean_and_split
    from raytune_llm.data.quarantine import detach
    from raytune_llm.data.readers import read_records

    # near_dup_threshold=null: the split the MiniLM benchmark in benchmarks/README.md scored.
    cfg = load_config(str(REPO / "configs" / "financial_phrasebank.yaml"), ["data.near_dup_threshold=null"])
    raw, _, _ = detach(read_records(cfg.data))
    table, _ = pop_pii_counts(redact_and_normalize(raw, pii_kinds(cfg.data)))
    (work / "split").mkdir(parents=True, exist_ok=True)
    kept, _ = clean_and_split(table, cfg, work / "split")
    kept, _, _ = drop_leaks(kept, cfg.data)
    return {split: kept.filter(pc.equal(kept.column("split"), split)).select(["id", "text", "label"])
            .sort_by("id").to_pylist() for split in ("train", "validation", "test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/smollm2_fpb"))
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--val-rows", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--phase", choices=("all", "before", "after"), default="all",
                        help="'before' needs no Ray (zero-shot scoring only); 'after' reuses a 'before' run's files")
    parser.add_argument("overrides", nargs="*", help="extra a.b=c overrides for the training run")
    args = parser.parse_args()

    from raytune_llm.app import run_train
    from raytune_llm.config.schema import DataConfig
    from raytune_llm.evaluation.generative import evaluate_generative
    from raytune_llm.models.loading import resolve_model

    args.work.mkdir(parents=True, exist_ok=True)
    rows = split_rows(args.work)
    files = {}
    for split, limit in (("train", args.train_rows), ("validation", args.val_rows), ("test", None)):
        files[split] = args.work / f"{split}.jsonl"
        chosen = rows[split][:limit] if limit else rows[split]
        files[split].write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in chosen))

    import torch

    from raytune_llm.config.loader import load_config

    torch.set_num_threads(2)
    config = load_config(str(REPO / "configs" / "smollm2_phrasebank.yaml"), [])
    if args.phase in ("all", "before"):
        started = time.perf_counter()
        # The same instruction and answer budget as training's validation and test scoring.
        before = evaluate_generative(resolve_model("builtin:smollm2"),
                                     DataConfig(path=str(files["test"]), format="jsonl", labels=config.data.labels),
                                     args.work / "before", instruction=config.data.instruction,
                                     max_new_tokens=config.eval.max_new_tokens, batch_size=32)
        before["seconds"] = round(time.perf_counter() - started, 1)
        (args.work / "before.json").write_text(json.dumps(before, indent=2))
    before = json.loads((args.work / "before.json").read_text())
    print(f"[bench] before tuning: test macro-F1 {before['metrics']['f1']['macro']:.4f}, accuracy "
          f"{before['metrics']['accuracy']:.4f}, unparsed {before['metrics']['unparsed']} ({before['seconds']:.0f} s)",
          flush=True)
    if args.phase == "before":
        return
    before_s = before["seconds"]

    started = time.perf_counter()
    out = run_train(str(REPO / "configs" / "smollm2_phrasebank.yaml"),
                    ["data.format=jsonl", "data.encoding=utf-8",
                     f"data.path={files['train']}", f"data.validation_path={files['validation']}",
                     f"data.test_path={files['test']}", f"output.dir={args.work / 'runs'}", *args.overrides])
    train_s = time.perf_counter() - started
    history = out["history"]
    report = {
        "date": time.strftime("%Y-%m-%d"), "model": "builtin:smollm2 (SmolLM2-135M-Instruct, GGUF Q4_1 de-quantized)",
        "rows": {split: len(Path(f).read_text().splitlines()) for split, f in files.items()},
        "before": {"test_macro_f1": before["metrics"]["f1"]["macro"], "test_accuracy": before["metrics"]["accuracy"],
                   "unparsed": before["metrics"]["unparsed"], "per_class": before["metrics"]["per_class"],
                   "seconds": before_s},
        "after": {"test_macro_f1": out["test"]["test_f1"], "test_accuracy": out["test"]["test_accuracy"],
                  "unparsed": out["test"].get("test_unparsed"),
                  "per_class": {k: v for k, v in out["test"].items() if k.startswith("test_f1/")},
                  "seconds": round(train_s, 1)},
        "history": history[[c for c in ("epoch", "train_loss", "val_loss", "val_f1", "val_accuracy", "val_unparsed",
                                        "train_tokens_per_s", "train_seconds") if c in history]].to_dict("records"),
    }
    print(f"[bench] after LoRA tuning: test macro-F1 {report['after']['test_macro_f1']:.4f}, accuracy "
          f"{report['after']['test_accuracy']:.4f} ({train_s:.0f} s)", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
