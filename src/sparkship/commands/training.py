"""``sparkship train --spec FILE [--table PATH[@V]] [--run-id ID]``."""
from __future__ import annotations

import argparse
from typing import Any

from sparkship import pipeline_training, training
from sparkship.commands import Context, add_command
from sparkship.spec_pipeline import PipelineSpec, load_any_spec


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        subparsers,
        common,
        "train",
        train_command,
        "train a model from a YAML spec and register it as the next version",
        description="Fit the spec's Spark ML Pipeline on a Delta table, measure it on a held-out split, save the "
        "artifact and register it. The spec gives features + model (the template pipeline) or pipeline (any Spark "
        "ML stages, or a factory function). Prints name, version, metrics, artifact and the table version read.",
    )
    p.add_argument("--spec", required=True, help="training spec (YAML)")
    p.add_argument("--table", default=None, help="train on this Delta table instead of the spec's (PATH[@VERSION])")
    p.add_argument("--run-id", default=None, help="job run id recorded with the version (lineage: NAME/run:ID)")


def train_command(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    spec = load_any_spec(args.spec)  # checked before Spark starts
    spec = spec.with_table(args.table) if args.table else spec
    if isinstance(spec, PipelineSpec):
        return pipeline_training.train_pipeline_and_register(ctx.spark, ctx.settings, spec, run_id=args.run_id)
    return training.train_and_register(ctx.spark, ctx.settings, spec, run_id=args.run_id)
