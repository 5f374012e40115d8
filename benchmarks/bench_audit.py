"""Benchmark: does `raytune-llm audit` find real label errors? Two measurements on Financial PhraseBank.

flip       Sentences_AllAgree.txt (every annotator agreed, so its labels are taken as right): a seeded
           share of the training rows (default 10 %) get a uniformly random *other* label, then the
           audit runs and we score the flags against the flipped set: precision = flipped among
           flagged, recall = flagged among flipped. Target: both >= 0.7. The corpus is cut (seeded)
           into a training file and a validation file so that exactly that share of the audited
           rows is flipped (a hash split would move rows between splits as labels change).
agreement  Sentences_50Agree.txt: a sentence is low-agreement when it is absent from
           Sentences_75Agree.txt (fewer than 75 % of the annotators chose its label). Reports the
           share of low-agreement sentences among the flagged rows against their base rate among
           all audited rows (enrichment = the ratio).

Both call raytune_llm's own audit (`raytune_llm.audit.run.run_audit`) with the PhraseBank config
and the overrides given; run directories go under --out (keep them out of the repository).

    python benchmarks/bench_audit.py flip --out /tmp/audit_bench/flip [--folds 4] [OVERRIDES...]
    python benchmarks/bench_audit.py agreement --out /tmp/audit_bench/agree [--folds 4] [OVERRIDES...]

Writes OUT/bench_audit_KIND.json and appends one line to benchmarks/results/bench_audit.jsonl.
Figures: benchmarks/README.md ("Label-error audit").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHRASEBANK = REPO.parent / "shared" / "data" / "financial_phrasebank"
CONFIG = REPO / "configs" / "financial_phrasebank.yaml"


def _read(path: Path, encoding: str) -> list[dict[str, Any]]:
    """PhraseBank rows through the data step's reader (text, label, _line), quarantine left out."""
    from raytune_llm.config.loader import load_config
    from raytune_llm.data.quarantine import detach
    from raytune_llm.data.readers import read_records

    cfg = load_config(str(CONFIG), [f"data.path={path}", f"data.encoding={encoding}"])
    table, quarantine, _ = detach(read_records(cfg.data))
    if quarantine:
        print(f"[bench] {path.name}: {len(quarantine)} line(s) quarantined by the reader (left out)")
    return table.to_pylist()


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def flip_corpus(rows: list[dict[str, Any]], labels: list[str], share: float, validation: float, seed: int,
                out: Path) -> tuple[Path, Path, set[str]]:
    """Seeded cut into train/validation files; `share` of the train rows get another label. Returns
    the two files and the ids of the flipped rows."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    cut = int(round(validation * len(rows)))
    held, train = order[:cut], order[cut:]
    flipped_at = set(rng.choice(train, size=int(round(share * len(train))), replace=False).tolist())
    train_rows, flipped = [], set()
    for index in train.tolist():
        row = rows[index]
        label, row_id = row["label"], f"L{row['_line']}"
        if index in flipped_at:
            label = str(rng.choice([x for x in labels if x != row["label"]]))
            flipped.add(row_id)
        train_rows.append({"id": row_id, "text": row["text"], "label": label, "original_label": row["label"]})
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "train_flipped.jsonl", train_rows)
    _write_jsonl(out / "validation.jsonl", [{"id": f"L{rows[i]['_line']}", "text": rows[i]["text"],
                                              "label": rows[i]["label"]} for i in held.tolist()])
    return out / "train_flipped.jsonl", out / "validation.jsonl", flipped


def score(flagged: set[str], positives: set[str], audited: set[str]) -> dict[str, Any]:
    """Precision and recall of `flagged` against `positives`, both restricted to the audited rows."""
    positives = positives & audited
    hits = len(flagged & positives)
    return {"audited": len(audited), "positives": len(positives), "flagged": len(flagged), "hits": hits,
            "precision": hits / len(flagged) if flagged else float("nan"),
            "recall": hits / len(positives) if positives else float("nan")}


def _ranked_ids(result: Any) -> list[str]:
    ids = result.rows.column("id").to_pylist()
    return [ids[i] for i in result.issues.ranked.tolist()]


def run_flip(args: argparse.Namespace) -> dict[str, Any]:
    from raytune_llm.audit.run import run_audit

    labels = ["negative", "neutral", "positive"]
    rows = _read(PHRASEBANK / "Sentences_AllAgree.txt", "latin-1")
    train, validation, flipped = flip_corpus(rows, labels, args.share, args.validation, args.seed, args.out)
    print(f"[bench] {len(rows)} AllAgree rows; {len(flipped)} of the training file's labels flipped "
          f"(seed {args.seed}); validation file {validation.name}")
    overrides = [f"data.path={train}", "data.format=jsonl", "data.encoding=utf-8", "data.id_column=id",
                 f"data.validation_path={validation}", f"output.dir={args.out / 'runs'}", "output.name=flip",
                 *args.overrides]
    result = run_audit(str(CONFIG), overrides, folds=args.folds, out_dir=str(args.out / "audit"))
    audited = set(result.rows.column("id").to_pylist())
    ranked = _ranked_ids(result)
    figures = score(set(ranked), flipped, audited)
    top = set(ranked[: figures["positives"]])
    figures["precision_at_positives"] = len(top & flipped) / max(figures["positives"], 1)
    figures.update(flipped_dropped_by_cleaning=len(flipped - audited), share=args.share)
    return {"result": result, "figures": figures}


def run_agreement(args: argparse.Namespace) -> dict[str, Any]:
    from raytune_llm.audit.run import run_audit
    from raytune_llm.data.transforms import normalize_text, stable_id

    high = {stable_id(normalize_text(r["text"])) for r in _read(PHRASEBANK / "Sentences_75Agree.txt", "latin-1")}
    overrides = [f"data.path={PHRASEBANK / 'Sentences_50Agree.txt'}", "data.encoding=utf-8",
                 f"output.dir={args.out / 'runs'}", "output.name=agreement", *args.overrides]
    result = run_audit(str(CONFIG), overrides, folds=args.folds, out_dir=str(args.out / "audit"))
    ids = result.rows.column("id").to_pylist()
    low = {i for i in ids if i not in high}  # ids are stable_id(normalised text) for PhraseBank rows
    ranked = _ranked_ids(result)
    figures = score(set(ranked), low, set(ids))
    figures["base_rate"] = len(low) / len(ids)
    figures["enrichment"] = figures["precision"] / figures["base_rate"]
    top = ranked[:100]
    figures["low_agreement_share_top100"] = sum(i in low for i in top) / max(len(top), 1)
    return {"result": result, "figures": figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["flip", "agreement"])
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides for the audit's config")
    parser.add_argument("--out", type=Path, required=True, help="work folder (outside the repository)")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--share", type=float, default=0.10, help="flip: share of training labels flipped")
    parser.add_argument("--validation", type=float, default=0.10, help="flip: share of rows in the validation file")
    parser.add_argument("--seed", type=int, default=13, help="flip: seed of the cut and of the flips")
    args = parser.parse_intermixed_args()  # overrides may come after the options
    sys.path.insert(0, str(REPO))
    args.out = args.out.expanduser().resolve()
    started = time.perf_counter()
    outcome = (run_flip if args.kind == "flip" else run_agreement)(args)
    result, figures = outcome["result"], outcome["figures"]
    record = {"kind": args.kind, "date": time.strftime("%Y-%m-%d"), "folds": args.folds,
              "overrides": args.overrides, **figures, "rows_flagged_share": figures["flagged"] / figures["audited"],
              "oos_accuracy": float(np.mean(result.pred_probs.argmax(axis=1)
                                            == result.rows.column("label_id").to_numpy())),
              "thresholds": {n: round(float(t), 4) for n, t in zip(result.labels, result.issues.thresholds)},
              "per_fold": result.fold_stats, "audit_seconds": round(result.seconds, 1),
              "wall_seconds": round(time.perf_counter() - started, 1)}
    (args.out / f"bench_audit_{args.kind}.json").write_text(json.dumps(record, indent=2))
    with (REPO / "benchmarks" / "results" / "bench_audit.jsonl").open("a") as log:
        log.write(json.dumps(record) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "per_fold"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
