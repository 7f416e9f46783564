"""``sparkship register``: register a Spark ML model fitted elsewhere (see :mod:`sparkship.fitted`)."""
from __future__ import annotations

import argparse
from typing import Any

from sparkship import fitted
from sparkship.commands import CommandResult, Context, add_command, render_text
from sparkship.errors import UsageError
from sparkship.fitted import TASKS
from sparkship.names import validate_name
from sparkship.refs import parse_table


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        subparsers, common, "register", register_command,
        "register a Spark ML model fitted elsewhere (a notebook, a job, MLflow) as the next version",
        description=(
            "Load the model saved at --path (a PipelineModel, a single fitted model, a CrossValidatorModel or "
            "TrainValidationSplitModel, or an MLflow model directory with the spark flavor), type its inputs from "
            "--table, measure it there (with --label; silhouette for clustering), profile the table for "
            "monitoring, and register it as the next version of --name. Prints name, version, artifact, task "
            "and metrics."
        ),
    )
    p.add_argument("--name", required=True, help="model name in the registry")
    p.add_argument("--path", required=True, help="folder of the saved model")
    p.add_argument("--table", required=True, help="Delta table the model reads, PATH or PATH@VERSION (default latest)")
    p.add_argument("--label", default=None, help="label column to measure the model against")
    p.add_argument("--task", default=None, metavar="TASK",
                   help=f"{'|'.join(TASKS)}: inferred from the model's last predictor stage; needed only where it "
                        "cannot be")
    p.add_argument("--run-id", default=None, help="job run id recorded with the version (lineage: NAME/run:ID)")


def register_command(ctx: Context, args: argparse.Namespace) -> CommandResult:
    # Refused before Spark starts: the name, the task, the table reference, a folder that holds no model.
    validate_name(args.name)
    if args.task is not None and args.task not in TASKS:
        raise UsageError(f"--task {args.task!r}: expected one of {', '.join(TASKS)}")
    table = parse_table(args.table, what="--table")
    fitted.saved_model(args.path)
    mv = fitted.register_fitted(ctx.spark, ctx.settings, args.path, args.name, table=table, label=args.label,
                                task=args.task, run_id=args.run_id)
    payload = {"name": mv.name, "version": mv.version, "artifact": mv.artifact, "task": mv.task,
               "metrics": dict(mv.metrics)}
    return CommandResult(payload, text=render_text(payload))
