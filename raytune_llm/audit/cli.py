"""`raytune-llm audit` arguments (kept here so the main CLI only wires it in)."""

from __future__ import annotations

import argparse
from typing import Any

COMMAND = "audit"


def add_parser(sub: Any) -> None:
    """Add `audit CONFIG [overrides] [--folds K] [--out DIR]` to the main CLI's subparsers."""
    text = "k-fold out-of-sample predictions, then flag likely label errors (confident learning)"
    cmd = sub.add_parser(COMMAND, help=text, description=text)
    cmd.add_argument("config", help="YAML config file (the data and training settings of each fold)")
    cmd.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. train.epochs=2")
    cmd.add_argument("--folds", type=int, default=5, help="number of folds over the training rows (default 5)")
    cmd.add_argument("--out", default=None, help="output folder (default: runs/NAME/audit)")
    cmd.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    cmd.add_argument("--strict", action="store_true", help="fail on any quarantined row (data.strict=true)")


def run(args: argparse.Namespace) -> int:
    """Run the audit; the flags, summary and Label Studio tasks land in --out."""
    from raytune_llm.audit.run import run_audit

    overrides = list(args.overrides) + (["data.strict=true"] if args.strict else [])
    run_audit(args.config, overrides, folds=args.folds, out_dir=args.out, address=args.address)
    return 0
