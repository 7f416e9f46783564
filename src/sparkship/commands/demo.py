"""``sparkship demo``: the whole flow on the embedded dataset."""
from __future__ import annotations

import argparse
from typing import Any

from sparkship.commands import CommandResult, Context, add_command
from sparkship.demo import default_workdir, run_demo
from sparkship.errors import UsageError


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        subparsers, common, "demo", run, "run train -> validate -> promote -> score -> monitor -> report -> serve on "
        "the embedded churn dataset, and print a timed summary",
    )
    p.add_argument("--workdir", default=None, help="where the demo's tables, registry and report go "
                   "(emptied first; default <home>/demo)")
    p.add_argument("--train-rows", type=int, default=20_000, help="training rows to generate (default 20,000)")
    p.add_argument("--batch-rows", type=int, default=5_000, help="rows in each new scoring batch (default 5,000)")


def run(ctx: Context, args: argparse.Namespace) -> CommandResult:
    if args.train_rows < 1000 or args.batch_rows < 1:
        raise UsageError("--train-rows must be at least 1000 and --batch-rows at least 1")
    summary = run_demo(ctx.spark, args.workdir or default_workdir(ctx.settings), args.train_rows, args.batch_rows)
    return CommandResult(summary.to_dict(), text=summary.render())
