"""``sparkship score``: batch-score a Delta table with a registered model (see :mod:`sparkship.scoring`)."""
from __future__ import annotations

import argparse
from typing import Any

from sparkship import scoring
from sparkship.commands import CommandResult, Context, add_command, render_text
from sparkship.errors import UsageError
from sparkship.refs import parse_ref, parse_table
from sparkship.scoring.request import make_request
from sparkship.scoring.stream import parse_trigger

SUMMARY_KEYS = ("model", "model_version", "scorer", "mode", "rows_in", "scored", "quarantined", "deleted",
                "output_version", "input_version")


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
    p.add_argument("--auto-full", action="store_true",
                   help="when an input without the Change Data Feed was changed by more than appends (DELETE, "
                        "UPDATE, MERGE, overwrite), rescore it in full instead of refusing")
    p.add_argument("--no-auto-full", dest="auto_full", action="store_false",
                   help="refuse (the default) when an input without the Change Data Feed was changed by more than "
                        "appends")
    p.add_argument("--scorer", choices=("auto", "spark", "jvm-free"), default="auto",
                   help="what scores the rows: jvm-free (sparkship's scorer inside Spark, via mapInArrow), spark "
                        "(PipelineModel.transform) or auto (default: jvm-free when it supports every stage)")
    p.add_argument("--stream", action="store_true",
                   help="score with Structured Streaming from the input (its Change Data Feed where it is on), "
                        "upserting each micro-batch into --output; needs --checkpoint")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="the stream's checkpoint location (with --stream; keep it for the life of the output)")
    p.add_argument("--trigger", default="available-now", metavar="TRIGGER",
                   help="with --stream: available-now (default: score what is there, then stop) or "
                        "processing-time=INTERVAL (e.g. processing-time=1 minute; runs until stopped)")


def score_command(ctx: Context, args: argparse.Namespace) -> CommandResult:
    # Parsed once, here: a bad reference, table or key list is refused before Spark starts.
    model = parse_ref(args.model)
    source = parse_table(args.input, what="--input")
    target = parse_table(args.output, what="--output")
    make_request(source, target, args.keys, run_id=args.run_id, full=args.full,
                 include_features=args.include_features, replace_output=args.replace_output)
    if args.stream:
        if not args.checkpoint:
            raise UsageError("--stream needs --checkpoint PATH: where the stream keeps its progress")
        if args.full or args.replace_output or args.auto_full:
            raise UsageError("--full, --replace-output and --auto-full are for batch runs, not --stream")
        parse_trigger(args.trigger)
        streamed = scoring.score_stream(
            ctx.spark, ctx.settings, model, source, target, args.keys, checkpoint=args.checkpoint,
            trigger=args.trigger, include_features=args.include_features, run_id=args.run_id, wait_s=args.wait,
            scorer=args.scorer,
        ).to_dict()
        keys = ("model", "model_version", "scorer", "batches", "rows_in", "scored", "quarantined", "deleted",
                "output_version")
        return CommandResult(streamed, text=render_text({k: streamed[k] for k in keys}))
    if args.checkpoint:
        raise UsageError("--checkpoint is for --stream runs")
    result = scoring.score(
        ctx.spark, ctx.settings, model, source, target, args.keys,
        full=args.full, include_features=args.include_features, run_id=args.run_id,
        replace_output=args.replace_output, wait_s=args.wait, auto_full=args.auto_full, scorer=args.scorer,
    ).to_dict()
    payload = {k: result[k] for k in SUMMARY_KEYS} | {k: v for k, v in result.items() if k not in SUMMARY_KEYS}
    return CommandResult(payload, text=render_text({k: payload[k] for k in SUMMARY_KEYS}))
