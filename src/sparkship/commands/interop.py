"""``sparkship export`` (an MLflow model directory) and ``sparkship publish`` (MLflow run + model registry).

Both need the ``mlflow`` extra (``pip install 'sparkship[mlflow]'``); without it they say so and exit 2.
Neither starts Spark.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from sparkship.commands import CommandResult, Context, add_command

FORMATS = ("mlflow",)


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        subparsers, common, "export", export_command,
        "write a model as an MLflow model directory (JVM-free pyfunc + spark flavor)",
        description="Write a registered model version as an MLflow model directory. Its python_function "
                    "flavor scores with sparkship's JVM-free scorer (no pyspark, no Java; Spark files checked "
                    "against the manifest's sha256 at load); its spark flavor gives the PipelineModel to "
                    "mlflow.spark.load_model. Needs: pip install 'sparkship[mlflow]'.",
    )
    p.add_argument("--model", required=True, metavar="REF", help="NAME, NAME/VERSION or NAME@ALIAS")
    p.add_argument("--format", default="mlflow", choices=FORMATS, help="output format (default mlflow)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder to write")

    p = add_command(
        subparsers, common, "publish", publish_command,
        "log a model version in an MLflow run and register it (Unity Catalog on Databricks)",
        description="Log a registered model version in an MLflow run (spec and lineage as params and tags, "
                    "held-out metrics as metrics, the exported model as artifact) and register it in the MLflow "
                    "model registry, carrying over the sparkship aliases that point at it. A three-part name "
                    "catalog.schema.model goes to Unity Catalog (registry URI databricks-uc). "
                    "Needs: pip install 'sparkship[mlflow]'.",
    )
    p.add_argument("--model", required=True, metavar="REF", help="NAME, NAME/VERSION or NAME@ALIAS")
    p.add_argument("--to", default="mlflow", choices=FORMATS, help="target (default mlflow)")
    p.add_argument("--registered-model", default=None, metavar="NAME",
                   help="MLflow registered model name (default: the sparkship name; catalog.schema.model for UC)")
    p.add_argument("--alias", action="append", default=[], metavar="ALIAS",
                   help="also set this MLflow alias (repeatable); sparkship aliases of the version are carried over")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: env MLFLOW_TRACKING_URI)")
    p.add_argument("--registry-uri", default=None,
                   help="MLflow registry URI (default: databricks-uc for catalog.schema.model, else the tracking URI)")
    p.add_argument("--experiment", default=None,
                   help="experiment name (default sparkship-NAME; /Shared/sparkship-NAME on Databricks)")
    p.add_argument("--run-id", default=None, help="job run id recorded with the MLflow run (e.g. {{job.run_id}})")


def export_command(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from sparkship.interop.mlflow_export import check_out_dir, export_model, require_mlflow
    from sparkship.registry import Registry

    require_mlflow()
    out = os.path.abspath(args.out)
    check_out_dir(out)
    mv = Registry(ctx.settings).get(args.model)
    result = {"ref": mv.ref, **export_model(mv.artifact, out)}
    return CommandResult(result, text=f"exported {mv.ref} to {out} (flavors: {', '.join(result['flavors'])})")


def publish_command(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from sparkship.interop.mlflow_export import require_mlflow
    from sparkship.interop.mlflow_publish import PublishTarget, publish

    require_mlflow()
    target = PublishTarget(registered_model=args.registered_model, aliases=tuple(args.alias),
                           tracking_uri=args.tracking_uri, registry_uri=args.registry_uri,
                           experiment=args.experiment, job_run_id=args.run_id)
    result = publish(ctx.settings, args.model, target)
    aliases = f" aliases {', '.join(result['aliases'])}" if result["aliases"] else ""
    return CommandResult(result, text=f"published {result['model']} as {result['model_uri']}{aliases} "
                                      f"(run {result['run_id']})")
