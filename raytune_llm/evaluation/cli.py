"""`raytune-llm evaluate MODEL DATA` and `raytune-llm predict MODEL DATA --out PATH`.

`add_parsers` registers both on the main parser's subparsers and `run` executes a parsed
command (the main CLI turns a `RaytuneLLMError` into one line and exit code 2). Importing
this module imports nothing heavy; torch, transformers and Ray load when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("evaluate", "predict")
_EVALUATE_HELP = ("score a model on a labelled dataset: P/R/F1, confusion matrix, calibration, per-slice "
                  "metrics (evaluation.json + evaluation.md)")
_PREDICT_HELP = "batch inference with a Ray Data actor pool, written to Parquet or JSON lines"
_DATA_OPTIONS = ("format", "text_column", "label_column", "id_column", "delimiter", "encoding")


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 (got {value})")
    return value


def _add_common(cmd: argparse.ArgumentParser, label_help: str) -> None:
    cmd.add_argument("model", help="exported model folder (runs/NAME/best_model), checkpoint folder or LoRA adapter")
    cmd.add_argument("data", help="file, folder or glob in any format the data step reads")
    cmd.add_argument("--config", default=None, metavar="CFG",
                     help="take the data settings (format, columns, encoding, labels...) from this run config")
    cmd.add_argument("--format", default=None, help="data.format (default: by extension, or from --config)")
    cmd.add_argument("--text-column", default=None, help="column holding the text (default: text)")
    cmd.add_argument("--label-column", default=None, help=label_help)
    cmd.add_argument("--id-column", default=None, help="column holding a row id (default: a hash of the text)")
    cmd.add_argument("--delimiter", default=None, help="CSV/TSV separator (default: by extension)")
    cmd.add_argument("--encoding", default=None, help="text encoding of the files (default: utf-8)")
    cmd.add_argument("--strict", action="store_true", help="fail on any quarantined row instead of setting it aside")
    cmd.add_argument("--max-length", type=_positive, default=None,
                     help="truncate texts to this many tokens (default: what the model was trained with, else 128)")
    cmd.add_argument("--batch-size", type=_positive, default=64, help="rows per forward pass (default: 64)")


def add_parsers(subparsers: Any) -> None:
    """Add `evaluate` and `predict` to the main parser's subparsers."""
    evaluate = subparsers.add_parser("evaluate", help=_EVALUATE_HELP, description=_EVALUATE_HELP)
    _add_common(evaluate, "column holding the gold label (default: label)")
    evaluate.add_argument("--out", default=None, metavar="DIR",
                          help="report folder (default: an `evaluation` folder beside the model folder)")
    evaluate.add_argument("--slice-by", nargs="+", default=None, metavar="COL",
                          help="metadata columns to slice by, e.g. _source agreement length_bucket "
                               "(default: length_bucket, plus _source/agreement/vote_share when they vary)")
    evaluate.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    evaluate.add_argument("--threads", type=_positive, default=None,
                          help="torch CPU threads (default: one per core)")
    evaluate.add_argument("--instruction", default=None,
                          help="decoder LLMs, classification by generation: the instruction before each text, "
                               "with {labels} for the label list (default: 'Classify the text as one of: {labels}. "
                               "Answer with the label only.')")
    evaluate.add_argument("--max-new-tokens", type=_positive, default=None,
                          help="decoder LLMs: tokens generated per answer (default: 8 for labels, 128 for instructions)")
    evaluate.add_argument("--limit", type=_positive, default=None,
                          help="decoder LLMs: score only the first N usable rows (the rest are counted as not scored)")
    predict = subparsers.add_parser("predict", help=_PREDICT_HELP, description=_PREDICT_HELP)
    _add_common(predict, "also read, check and output this gold-label column (default: labels are not read)")
    predict.add_argument("--out", required=True, metavar="PATH",
                         help="PATH.parquet, PATH.jsonl, or a folder (Parquet parts); quarantined rows go to "
                              "PATH.quarantine.jsonl")
    predict.add_argument("--workers", type=_positive, default=None,
                         help="predictor actors, one model each (default: one per GPU, else up to 4 CPUs)")
    predict.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")


def _data_config(args: argparse.Namespace) -> Any:
    from raytune_llm.evaluation.inputs import data_config

    options = {name: getattr(args, name) for name in _DATA_OPTIONS}
    options["strict"] = True if args.strict else None
    return data_config(args.data, args.config, options)


def run(args: argparse.Namespace) -> int:
    """Execute a parsed `evaluate` or `predict` command; returns the exit code."""
    if args.command == "evaluate":
        return _evaluate(args)
    return _predict(args)


def _evaluate_generative(args: argparse.Namespace, out: Path) -> int:
    from raytune_llm.evaluation.generative import evaluate_generative

    report = evaluate_generative(args.model, _data_config(args), out, instruction=args.instruction,
                                 max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                 max_length=args.max_length or 512, device=args.device or "cpu", limit=args.limit)
    rows, m = report["rows"], report["metrics"]
    print(f"[evaluate] read {rows['read']} rows = scored {rows['scored']} + quarantined {rows['quarantined']} "
          f"+ not scored {rows['not_scored']}")
    if m["task"] == "generation":
        print(f"[evaluate] exact match {m['exact_match']:.4f}, token F1 {m['token_f1']:.4f} ({m['n']} answers)")
    else:
        print(f"[evaluate] classification by generation: accuracy {m['accuracy']:.4f}, macro-F1 "
              f"{m['f1']['macro']:.4f}, {m['unparsed']} answer(s) named no label")
    print(f"[evaluate] wrote {out / 'evaluation.md'} (and evaluation.json, predictions.jsonl)")
    return 0


def _evaluate_tokens(args: argparse.Namespace, out: Path) -> int:
    from raytune_llm.evaluation.tokens import evaluate_tokens

    report = evaluate_tokens(args.model, _data_config(args), out, batch_size=args.batch_size,
                             max_length=args.max_length, device=args.device or "cpu", threads=args.threads)
    rows, m = report["rows"], report["metrics"]["default"]
    print(f"[evaluate] read {rows['read']} sentences = scored {rows['scored']} + quarantined {rows['quarantined']}")
    per_type = ", ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in m.items() if k.startswith("f1/"))
    print(f"[evaluate] entity micro P {m['precision']:.4f} R {m['recall']:.4f} F1 {m['f1']:.4f} "
          f"(strict IOB2 F1 {report['metrics']['strict']['f1']:.4f}); F1 per type: {per_type}")
    print(f"[evaluate] wrote {out / 'evaluation.md'} (and evaluation.json, predictions.jsonl)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from raytune_llm.evaluation.evaluate import evaluate
    from raytune_llm.evaluation.generative import is_causal_lm
    from raytune_llm.evaluation.tokens import is_token_classifier

    out = Path(args.out) if args.out else Path(args.model).expanduser().resolve().parent / "evaluation"
    if is_causal_lm(args.model):
        return _evaluate_generative(args, out)
    if is_token_classifier(args.model):
        return _evaluate_tokens(args, out)
    result = evaluate(args.model, _data_config(args), out, slice_by=args.slice_by, batch_size=args.batch_size,
                      max_length=args.max_length, device=args.device, threads=args.threads)
    report, rows = result.report, result.report["rows"]
    m, c = report["metrics"], report["calibration"]
    kinds = ", ".join(f"{k} {v}" for k, v in report["quarantine_kinds"].items())
    print(f"[evaluate] read {rows['read']} rows = scored {rows['scored']} + quarantined {rows['quarantined']}"
          + (f" ({kinds}): {result.paths['quarantine']}" if rows["quarantined"] else ""))
    print(f"[evaluate] accuracy {m['accuracy']:.4f}, macro-F1 {m['f1']['macro']:.4f}, "
          f"weighted-F1 {m['f1']['weighted']:.4f}, ECE {c['ece']:.4f} ({c['n_bins']} bins)")
    for column, groups in report["slices"].items():
        cells = ", ".join(f"{key} {g['f1']['macro']:.3f} (n={g['n']})" for key, g in groups.items())
        print(f"[evaluate] macro-F1 by {column}: {cells}")
    print(f"[evaluate] wrote {result.paths['markdown']} (and {result.paths['json'].name}, "
          f"{result.paths['confusion_png'].name}, {result.paths['reliability_png'].name})")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from raytune_llm.evaluation.predict import predict

    result = predict(args.model, _data_config(args), args.out, batch_size=args.batch_size, workers=args.workers,
                     address=args.address, labelled=args.label_column is not None, max_length=args.max_length)
    print(f"[predict] read {result.read} rows = predicted {result.written} + quarantined {result.quarantined} "
          f"({result.quarantine_file})")
    print(f"[predict] {result.written} rows in {result.seconds:.1f} s: {result.rows_per_s:.1f} rows/s "
          f"({result.workers} {result.device} actor(s), batch {args.batch_size})")
    print(f"[predict] wrote {result.output}")
    return 0
