"""`raytune-llm` command line: parse, load the config, call one function."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from raytune_llm.errors import RaytuneLLMError
from raytune_llm.cluster.cli import COMMANDS as CLUSTER_COMMANDS
from raytune_llm.cluster.cli import add_parsers as add_cluster_parsers
from raytune_llm.cluster.cli import run as run_cluster_command
from raytune_llm.audit import cli as audit_cli
from raytune_llm.evaluation import cli as evaluation_cli
from raytune_llm.quality import cli as quality_cli


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raytune-llm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in [("tune", "sweep hyperparameters, pick by validation F1, test once, export"),
                       ("train", "one training run with the config as is"),
                       ("prepare", "read, check, split and tokenize the data once")]:
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("config", help="YAML config file")
        cmd.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. train.epochs=2")
        cmd.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
        cmd.add_argument("--strict", action="store_true",
                         help="fail on any quarantined row instead of training on the rest (data.strict=true)")
    _bench_parser(sub)
    quality_cli.add_parser(sub)
    add_cluster_parsers(sub)  # cluster validate, submit, jobs
    evaluation_cli.add_parsers(sub)  # evaluate, predict
    audit_cli.add_parser(sub)  # audit
    validate = sub.add_parser("validate", help="check config files and report every problem")
    validate.add_argument("configs", nargs="+", help="YAML config files")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override applied to every file (repeatable)")
    return parser


def _bench_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmark training throughput (tokens/s, MFU) or the data step")
    kinds = bench.add_subparsers(dest="bench_kind", required=True)
    train = kinds.add_parser("train", help="time the real training step at 1..N workers")
    train.add_argument("config", help="YAML config file")
    train.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    train.add_argument("--workers", default=None,
                       help="comma-separated worker counts to run, e.g. 1,2 (default: train.num_workers)")
    train.add_argument("--warmup-steps", type=int, default=3, help="optimizer steps before timing starts")
    train.add_argument("--steps", type=int, default=10, help="optimizer steps timed per run")
    train.add_argument("--peak-tflops", type=float, default=None,
                       help="peak TFLOP/s per device for MFU (default: looked up for A100/H100/H200)")
    train.add_argument("--bare", action="store_true",
                       help="also time the same step in one plain PyTorch process (framework overhead)")
    train.add_argument("--out", default=None, help="results folder (default: runs/NAME/bench)")
    train.add_argument("--address", default=None, help="Ray cluster address")
    data = kinds.add_parser("data", help="time the prepare step against Hugging Face datasets on the same rows")
    data.add_argument("config", help="YAML config file")
    data.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    data.add_argument("--workers", default="1,2", help="comma-separated tokenizer worker counts (default 1,2)")
    data.add_argument("--out", default=None, help="results folder (default: runs/NAME/bench)")
    data.add_argument("--address", default=None, help="Ray cluster address")


def _bench(args: argparse.Namespace) -> int:
    from raytune_llm.bench.run import run_bench_train
    from raytune_llm.errors import ConfigError

    if args.bench_kind == "data":
        from raytune_llm.bench.data import run_bench_data

        run_bench_data(args.config, list(args.overrides), args.address, workers=_worker_counts(args.workers),
                       out_dir=args.out)
        return 0
    if args.steps < 1 or args.warmup_steps < 0:
        raise ConfigError([f"--steps must be >= 1 and --warmup-steps >= 0 (got {args.steps}, {args.warmup_steps})"])
    workers = _worker_counts(args.workers) if args.workers else None
    overrides = list(args.overrides)
    if workers is None:
        from raytune_llm.config.loader import load_config

        workers = [load_config(args.config, overrides).train.num_workers]
    # Size the local Ray (and the fit check) for the largest run.
    overrides.append(f"train.num_workers={max(workers)}")
    run_bench_train(args.config, overrides, args.address, workers=workers, warmup_steps=args.warmup_steps,
                    measure_steps=args.steps, peak_tflops=args.peak_tflops, out_dir=args.out, bare=args.bare)
    return 0


def _worker_counts(text: str) -> list[int]:
    from raytune_llm.errors import ConfigError

    try:
        counts = [int(w) for w in text.split(",")]
    except ValueError:
        raise ConfigError([f"--workers: expected comma-separated integers like 1,2 (got {text!r})"]) from None
    if not counts or min(counts) < 1:
        raise ConfigError([f"--workers: every count must be >= 1 (got {text!r})"])
    return counts


def _validate(paths: Sequence[str], overrides: Sequence[str]) -> int:
    from raytune_llm.config.loader import validate_files

    failed = 0
    for path, problems in validate_files(paths, overrides).items():
        if problems:
            failed += 1
            print(f"FAIL {path}")
            for problem in problems:
                print(f"  - {problem}")
        else:
            print(f"OK   {path}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors exit 2 with a one-line reason, never a traceback."""
    args = _parser().parse_args(argv)
    # Tokenizers' own thread pool fights Ray's workers for the same cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.command in CLUSTER_COMMANDS:
            return run_cluster_command(args)
        if args.command == "validate":
            return _validate(args.configs, args.overrides)
        if args.command == "bench":
            return _bench(args)
        if args.command == "agreement":
            return quality_cli.run(args)
        if args.command in evaluation_cli.COMMANDS:
            return evaluation_cli.run(args)
        if args.command == audit_cli.COMMAND:
            return audit_cli.run(args)
        from raytune_llm import app

        runner = {"tune": app.run_tune, "train": app.run_train, "prepare": app.run_prepare}[args.command]
        overrides = list(args.overrides) + (["data.strict=true"] if args.strict else [])
        runner(args.config, overrides, args.address)
        return 0
    except RaytuneLLMError as exc:
        print(f"raytune-llm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"raytune-llm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, then the details for a bug report
        import traceback

        traceback.print_exc()
        print(f"raytune-llm {args.command}: failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
