"""The ``sparkship`` command: parse, call the library, print text or JSON, turn errors into exit codes.

Exit codes: 0 success; 1 a failed outcome or an error; 2 bad usage / input; 2 from ``monitor`` when drift is
flagged (documented per command).
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from sparkship import __version__
from sparkship.commands import CommandResult, Context, render_text
from sparkship.config import Settings
from sparkship.errors import SparkshipError

# Each module adds its own sub-commands; the order here is the order in --help.
COMMAND_MODULES = [
    "sparkship.commands.tables",
    "sparkship.commands.training",
    "sparkship.commands.register",
    "sparkship.commands.models",
    "sparkship.commands.validation",
    "sparkship.commands.scoring",
    "sparkship.commands.serving",
    "sparkship.commands.interop",
    "sparkship.commands.monitoring",
    "sparkship.commands.bundle",
    "sparkship.commands.demo",
]


def _common_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    parser.add_argument("--home", default=d(None), help="sparkship home (env SPARKSHIP_HOME, default ./.sparkship)")
    parser.add_argument("--registry-root", default=d(None), help="registry tables (default <home>/registry)")
    parser.add_argument("--models-root", default=d(None), help="model artifacts (default <home>/models)")
    parser.add_argument("--master", default=d(None), help="Spark master URL, e.g. spark://host:7077 (env SPARK_MASTER)")
    parser.add_argument("--remote", default=d(None), metavar="URL",
                        help="Spark Connect: sc://host:port, or local[N] for a local Connect server (env SPARK_REMOTE)")
    parser.add_argument("--json", action="store_true", default=d(False), help="print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", default=d(False), help="log warnings only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparkship",
        description="Train, register, validate, score, serve and monitor Spark MLlib models on Delta tables.",
    )
    parser.add_argument("--version", action="version", version=f"sparkship {__version__}")
    _common_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, suppress=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command group not built yet
                continue
            raise
        module.register(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "urllib3", "matplotlib", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        ctx = Context(
            Settings.resolve(home=args.home, registry_root=args.registry_root, models_root=args.models_root,
                             master=args.master, remote=args.remote),
            as_json=args.json,
        )
    except SparkshipError as exc:
        return _fail(Context(None, as_json=args.json), exc, exc.exit_code)  # type: ignore[arg-type]
    try:
        result = args.handler(ctx, args)
    except SparkshipError as exc:
        return _fail(ctx, exc, exc.exit_code)
    except KeyboardInterrupt:
        return _fail(ctx, "interrupted", 130)
    if not isinstance(result, CommandResult):
        result = CommandResult(result)
    if ctx.as_json:
        print(json.dumps(result.payload, default=str, indent=None))
    else:
        print(result.text if result.text is not None else render_text(result.payload))
    return result.exit_code


def _fail(ctx: Context, error: Any, code: int) -> int:
    message = str(error)
    if ctx.as_json:
        print(json.dumps({"error": message, "type": type(error).__name__}))
    print(f"sparkship: error: {message}", file=sys.stderr)
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
