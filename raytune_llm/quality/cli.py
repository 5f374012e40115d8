"""`raytune-llm agreement FILE`: annotation quality of a long-format table, as JSON and Markdown.

`add_parser` registers the subcommand on the main parser; `run` reads the file, runs
`raytune_llm.quality.report.analyse` and writes, under `--out DIR`:

- `agreement.json`: the report dict (`quality_report`);
- `agreement.md`: the same as tables;
- `labels.tsv`: one row per item with its aggregated label (empty when removed),
  status, agreement, number of ratings and confidence.

Without `--out` the Markdown goes to stdout. Bad input raises `DataError`, which the main
CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

__all__ = ["add_parser", "run"]

# Kept literal so that registering the command imports nothing heavy; a test checks them
# against `aggregate.TIE_POLICIES` and `report.METHODS`.
_METHODS = ("majority", "dawid_skene")
_TIES = ("random", "first", "drop")
_HELP = "agreement metrics and aggregated labels for a table of (item, annotator, label) rows"


def _share(text: str) -> float:
    """argparse type for --min-agreement: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (got {text!r})") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, e.g. 0.7 (got {text})")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `agreement` subcommand on the main parser's subparsers."""
    cmd = subparsers.add_parser("agreement", help=_HELP, description=_HELP)
    cmd.add_argument("file", help="TSV, CSV, JSON lines or Parquet file, one row per judgement")
    cmd.add_argument("--item-column", default="item_id", help="column with the item id (default: item_id)")
    cmd.add_argument("--annotator-column", default="annotator_id",
                     help="column with the annotator id (default: annotator_id)")
    cmd.add_argument("--label-column", default="label", help="column with the label (default: label)")
    cmd.add_argument("--gold-column", default=None, help="optional column with an expert/gold label per item")
    cmd.add_argument("--method", choices=_METHODS, default="dawid_skene",
                     help="how the final labels are chosen (default: dawid_skene); the report shows both")
    cmd.add_argument("--tie", choices=_TIES, default="random",
                     help="majority-vote ties: seeded random pick, lowest label, or drop the item (default: random)")
    cmd.add_argument("--seed", type=int, default=0, help="seed of --tie random (default: 0)")
    cmd.add_argument("--min-agreement", type=_share, default=None, metavar="SHARE",
                     help="remove items where fewer than this share of annotators gave the majority label")
    cmd.add_argument("--min-shared", type=int, default=10,
                     help="annotator pairs need this many shared items for pairwise kappa (default: 10)")
    cmd.add_argument("--delimiter", default=None, help="CSV/TSV separator (default: by extension)")
    cmd.add_argument("--encoding", default="utf-8", help="text encoding (default: utf-8)")
    cmd.add_argument("--out", default=None, metavar="DIR",
                     help="write agreement.json, agreement.md and labels.tsv here (default: Markdown to stdout)")


def run(args: argparse.Namespace) -> int:
    """Run the `agreement` command; returns the exit code."""
    from raytune_llm.quality.markdown import render_markdown
    from raytune_llm.quality.plots import write_plots
    from raytune_llm.quality.reader import read_long_annotations
    from raytune_llm.quality.report import analyse, item_rows, report_of

    data = read_long_annotations(args.file, args.item_column, args.annotator_column, args.label_column,
                                 args.gold_column, args.delimiter, args.encoding)
    analysis = analyse(data, method=args.method, tie=args.tie, seed=args.seed,
                       min_agreement=args.min_agreement, min_shared=args.min_shared)
    report = report_of(analysis)
    markdown = render_markdown(report)
    if args.out is None:
        print(markdown, end="")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: undefined metrics are already None; a NaN here would be a bug, not JSON.
    (out / "agreement.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    rows = item_rows(analysis)
    plots = write_plots(report, [float(r["agreement"]) for r in rows if r["agreement"] is not None], out)
    markdown += "".join(f"\n![{name}]({path.name})\n" for name, path in plots.items())
    (out / "agreement.md").write_text(markdown)
    _write_labels(out / "labels.tsv", rows)
    final = report["aggregated"]
    print(f"[agreement] {report['n_items']} items, {report['n_annotators']} annotators; "
          f"alpha={_short(report['agreement']['krippendorff_alpha_nominal'])}; "
          f"kept {final['kept']} of {final['items']} ({final['method']})")
    if report["gold"] is not None:
        gold = report["gold"]
        print(f"[agreement] accuracy vs gold: majority {_short(gold['majority_vote']['accuracy'])}, "
              f"dawid_skene {_short(gold['dawid_skene']['accuracy'])}")
    print(f"[agreement] wrote {out / 'agreement.json'}, {out / 'agreement.md'}, {out / 'labels.tsv'}")
    return 0


def _short(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _write_labels(path: Path, rows: list[dict[str, object]]) -> None:
    """One TSV row per item; a removed item has an empty label and its reason as status."""
    columns = ["item_id", "label", "status", "agreement", "n_ratings", "confidence"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: "" if row[key] is None else row[key] for key in columns} for row in rows)
