"""``sparkship export`` (an MLflow model directory, or an ONNX model) and ``sparkship publish`` (MLflow run +
model registry).

MLflow needs the ``mlflow`` extra, ONNX the ``onnx`` extra (``pip install 'sparkship[onnx]'``); without it they
say so and exit 2. Only the ONNX export starts Spark (to load the pipeline and check the converted graph).
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from sparkship.commands import CommandResult, Context, add_command
from sparkship.errors import UsageError
from sparkship.interop.mlflow_export import check_out_dir, export_model, require_mlflow
from sparkship.interop.mlflow_publish import PublishTarget, publish
from sparkship.interop.onnx_export import MODEL_FILE, export_onnx, require_onnx
from sparkship.refs import ModelRef, parse_ref
from sparkship.registry import Registry

FORMATS = ("mlflow",)
EXPORT_FORMATS = ("mlflow", "onnx")


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        subparsers, common, "export", export_command,
        "write a model as an MLflow model directory (JVM-free pyfunc + spark flavor) or as an ONNX model",
        description="Write a registered model version as an MLflow model directory (--format mlflow, the "
                    "default) or as an ONNX model (--format onnx). MLflow: its python_function "
                    "flavor scores with sparkship's JVM-free scorer (no pyspark, no Java; Spark files checked "
                    "against the manifest's sha256 at load); its spark flavor gives the PipelineModel to "
                    "mlflow.spark.load_model. Needs: pip install 'sparkship[mlflow]'. "
                    "ONNX: DIR gets model.onnx (the whole pipeline, feature stages included, converted by "
                    "onnxmltools) and sparkship-onnx.json (inputs: one [N,1] tensor per input column, float32 "
                    "for numbers with NaN for missing, string for strings, int64 for an integer column a StringIndexer "
                    "reads; outputs; the check). Before writing, "
                    "ONNX Runtime scores a sample (rows of --check-table, else of the training table at the "
                    "trained version, plus rows walking the reference profile) and must give Spark's labels "
                    "exactly and its probabilities and regression values within 1e-5; a stage ONNX cannot "
                    "express is refused, naming it. Starts Spark; needs: pip install 'sparkship[onnx]'.",
    )
    p.add_argument("--model", required=True, metavar="REF", help="NAME, NAME/VERSION or NAME@ALIAS")
    p.add_argument("--format", default="mlflow", choices=EXPORT_FORMATS, help="output format (default mlflow)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder to write")
    p.add_argument("--check-table", default=None, metavar="TABLE",
                   help="onnx: check against rows of this table (default: the training table at the trained version)")
    p.add_argument("--check-rows", type=int, default=1000, metavar="N",
                   help="onnx: at most N table rows in the check (default 1000)")

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
    model = parse_ref(args.model)
    if args.format == "onnx":
        return _export_onnx(ctx, args, model)
    if args.check_table is not None:
        raise UsageError("--check-table is for --format onnx")
    require_mlflow()
    out = os.path.abspath(args.out)
    check_out_dir(out)
    mv = Registry(ctx.settings).get(model)
    result = {"ref": mv.ref, **export_model(mv.artifact, out)}
    return CommandResult(result, text=f"exported {mv.ref} to {out} (flavors: {', '.join(result['flavors'])})")


def _export_onnx(ctx: Context, args: argparse.Namespace, model: ModelRef) -> CommandResult:
    require_onnx()
    if args.check_rows < 1:
        raise UsageError(f"--check-rows must be at least 1, got {args.check_rows}")
    if ctx.settings.remote:
        raise UsageError("--format onnx loads the pipeline in a local Spark session (onnxmltools reads the JVM "
                         "model): unset SPARK_REMOTE / --remote for the export")
    out = os.path.abspath(args.out)
    check_out_dir(out)
    mv = Registry(ctx.settings).get(model)
    result = {"ref": mv.ref, **export_onnx(ctx.spark, mv.artifact, out, args.check_table, args.check_rows)}
    return CommandResult(result, text=f"exported {mv.ref} to {os.path.join(out, MODEL_FILE)} (ONNX Runtime "
                                      f"matched Spark on {result['checked_rows']} rows: {result['sample']})")


def publish_command(ctx: Context, args: argparse.Namespace) -> CommandResult:
    model = parse_ref(args.model)
    require_mlflow()
    target = PublishTarget(registered_model=args.registered_model, aliases=tuple(args.alias),
                           tracking_uri=args.tracking_uri, registry_uri=args.registry_uri,
                           experiment=args.experiment, job_run_id=args.run_id)
    result = publish(ctx.settings, model, target)
    aliases = f" aliases {', '.join(result['aliases'])}" if result["aliases"] else ""
    return CommandResult(result, text=f"published {result['model']} as {result['model_uri']}{aliases} "
                                      f"(run {result['run_id']})")
