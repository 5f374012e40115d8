"""`raytune-llm` command line: parse, load the config, call one function."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from raytune_llm.errors import RaytuneLLMError


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
    validate = sub.add_parser("validate", help="check config files and report every problem")
    validate.add_argument("configs", nargs="+", help="YAML config files")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override applied to every file (repeatable)")
    return parser


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
        if args.command == "validate":
            return _validate(args.configs, args.overrides)
        from raytune_llm import app

        runner = {"tune": app.run_tune, "train": app.run_train, "prepare": app.run_prepare}[args.command]
        runner(args.config, list(args.overrides), args.address)
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
