"""``sparkship score``: batch-score a Delta table with a registered model (see :mod:`sparkship.scoring`)."""
from __future__ import annotations

import argparse
from typing import Any

from sparkship.commands import CommandResult, Context, add_command, render_text

SUMMARY_KEYS = ("model", "model_version", "rows_in", "scored", "quarantined", "output_version", "input_version")


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        subparsers, common, "score", score_command,
        "score the new rows of a Delta table into an output table (incremental, idempotent)",
        description=(
            "Score the rows of --input added since the last run into --output (one commit per run). Rows that "
            "cannot be scored go to <output>_quarantine with a reason; progress is kept in <output>_state. "
            "The first run, and every --full run, scores the whole input and replaces the output."
        ),
    )
    p.add_argument("--model", required=True, help="NAME, NAME/VERSION, NAME@ALIAS or NAME/run:RUN_ID")
    p.add_argument("--input", required=True, help="input Delta table, PATH or PATH@VERSION")
    p.add_argument("--output", required=True, help="output Delta table (an inference table)")
    p.add_argument("--keys", required=True, help="comma-separated key columns copied to the output")
    p.add_argument("--full", action="store_true", help="rescore the whole input snapshot and replace the output")
    p.add_argument("--replace-output", action="store_true",
                   help="score the whole input and replace the output even if another model wrote it or its "
                        "columns differ")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS for another run on the same output to finish (default: refuse at once)")
    p.add_argument("--include-features", action="store_true", help="copy the model's input columns to the output")
    p.add_argument("--run-id", default=None, help="job run id recorded with every row (e.g. {{job.run_id}})")


def score_command(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from sparkship import scoring
    from sparkship.names import parse_ref

    parse_ref(args.model)  # a bad reference is refused before Spark starts
    result = scoring.score(
        ctx.spark, ctx.settings, args.model, args.input, args.output, args.keys,
        full=args.full, include_features=args.include_features, run_id=args.run_id,
        replace_output=args.replace_output, wait_s=args.wait,
    ).to_dict()
    payload = {k: result[k] for k in SUMMARY_KEYS} | {k: v for k, v in result.items() if k not in SUMMARY_KEYS}
    return CommandResult(payload, text=render_text({k: payload[k] for k in SUMMARY_KEYS}))
