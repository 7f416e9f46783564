"""Training a :class:`~sparkship.spec_pipeline.PipelineSpec`: fit the declared Spark ML pipeline on the pinned table,
measure it on the held-out split and register it the way ``sparkship register`` registers a model fitted elsewhere.

The split is training's: a hash of each row's input columns and label with the spec's seed
(:func:`split_flag`), so ``validate`` and ``report`` can rebuild the held-out rows. String class labels are indexed
alphabetically before fitting (``labels[i]`` is class ``i``, recorded in the manifest as trained models record
them); the label column keeps its name and holds the class index. The estimators' ``labelCol`` is set to the spec's
label unless a stage sets it itself. The manifest is :func:`sparkship.fitted.manifest`'s, with the spec, the tuning
and the training row counts under ``training``.

    >>> from sparkship.spec_pipeline import load_any_spec
    >>> train_pipeline_and_register(spark, settings, load_any_spec("reviews.yml"))   # doctest: +SKIP
    {'name': 'reviews', 'version': 1, 'metrics': {...}, 'artifact': '...', 'table_version': 2, 'task': ...}
"""
from __future__ import annotations

import importlib
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparkship import artifacts, tables
from sparkship.errors import NotFoundError, SchemaMismatchError, UsageError
from sparkship.fitted import (
    FittedModel,
    as_pipeline,
    flat_stages,
    infer_task,
    input_columns,
    manifest,
    measure,
    predictor,
    read_columns,
    servability,
    signature,
)
from sparkship.metrics import PREDICTION, PROBABILITY, RAW_PREDICTION
from sparkship.registering import register_staged
from sparkship.spark import cached, uncached
from sparkship.spec_pipeline import PipelineSpec, check_task, load_factory, resolve_grid
from sparkship.training import SPLIT_BUCKETS
from sparkship.training_checks import MAX_CLASSES

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import Estimator, Pipeline, PipelineModel
    from pyspark.ml.evaluation import Evaluator
    from pyspark.sql import Column, DataFrame, SparkSession

    from sparkship.config import Settings

log = logging.getLogger(__name__)

SPLIT = "__test"
_NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double")
# Stages whose labelCol names a column they write, not the one they read.
_LABEL_WRITERS = frozenset({"RFormula"})


@dataclass
class PipelineResult:
    """What :func:`train_pipeline` fitted, and what registering it needs."""

    model: PipelineModel
    spec: PipelineSpec
    table_version: int
    types: dict[str, str]
    split_columns: list[str]
    train: DataFrame
    test: DataFrame
    rows_train: int
    labels: list[str] | None
    tuning: dict[str, Any] | None


# --- the pipeline --------------------------------------------------------------------------------------------


def _leaves(stage: Any) -> list[Any]:
    from pyspark.ml import Pipeline

    if isinstance(stage, Pipeline):
        return [leaf for s in stage.getStages() for leaf in _leaves(s)]
    return [stage]


def build_pipeline(spec: PipelineSpec) -> Pipeline:
    """The unfitted Pipeline: the spec's stages with their params, or what its factory returns (an estimator is
    wrapped in a one-stage Pipeline). A factory that returns anything else is refused in one line."""
    from pyspark.ml import Estimator, Model, Pipeline

    if spec.factory is None:
        stages = []
        for stage in spec.stages or ():
            module, _, name = stage.class_path.rpartition(".")
            stages.append(getattr(importlib.import_module(module), name)(**stage.params))
        return Pipeline(stages=stages)
    try:
        built = load_factory(spec.factory)()
    except UsageError:
        raise
    except Exception as exc:  # the user's code: its failure is reported in one line, not as our traceback
        raise UsageError(f"spec key 'pipeline.factory': {spec.factory} raised {type(exc).__name__}: {exc}") from None
    if isinstance(built, Pipeline):
        return built
    if isinstance(built, Estimator) and not isinstance(built, Model):
        return Pipeline(stages=[built])
    raise UsageError(f"spec key 'pipeline.factory': {spec.factory} returned a {type(built).__name__}, not an "
                     "unfitted pyspark.ml Pipeline or estimator")


def _set_label(stages: Sequence[Any], label: str) -> None:
    """Point every stage that reads a label at the spec's label column, unless the stage names one itself."""
    for stage in stages:
        if stage.hasParam("labelCol") and not stage.isSet("labelCol") and type(stage).__name__ not in _LABEL_WRITERS:
            stage.set(stage.getParam("labelCol"), label)


# --- the data ------------------------------------------------------------------------------------------------


def _pin_version(spark: SparkSession, spec: PipelineSpec) -> int:
    latest = tables.version(spark, spec.table)
    if latest is None:
        raise NotFoundError(f"spec key 'table': no Delta table at {spec.table}")
    if spec.table_version is not None and spec.table_version > latest:
        raise NotFoundError(f"spec key 'table': {spec.table} has no version {spec.table_version} (latest is {latest})")
    return latest if spec.table_version is None else spec.table_version


def _check_label(types: dict[str, str], spec: PipelineSpec, where: str) -> None:
    label = spec.label
    if label is None:
        return
    if label not in types:
        raise SchemaMismatchError(f"spec key 'label': {where} has no column '{label}'; its columns are {sorted(types)}")
    numeric = types[label] in _NUMERIC or types[label].startswith("decimal")
    if spec.task == "regression" and not numeric:
        raise SchemaMismatchError(f"spec key 'label': column '{label}' is {types[label]}; regression needs a numeric "
                                  "label (use task: classification for classes)")
    if spec.task == "classification" and not (numeric or types[label] in ("string", "boolean")):
        raise SchemaMismatchError(f"spec key 'label': column '{label}' is {types[label]}; use a string, boolean or "
                                  "integer class label")


def split_columns(stages: Sequence[Any], types: dict[str, str], spec: PipelineSpec, where: str) -> list[str]:
    """The columns the split hashes (with the label): the pipeline's inputs as ``validate`` and ``report`` rebuild
    them from the manifest (numeric ones first, then strings), or every other column of the table where the
    stages' params do not tell (a SQL statement or a formula reads them)."""
    read = read_columns(list(stages))
    walked = all(any(s.hasParam(p) for p in ("inputCol", "inputCols", "featuresCol")) for s in stages)
    walked = walked and not any(type(s).__name__ in _LABEL_WRITERS for s in stages)
    if walked:
        missing = [c for c in read if c not in types]
        if missing:
            raise SchemaMismatchError(f"{where} lacks column(s) {', '.join(missing)} that the pipeline reads; its "
                                      f"columns are {', '.join(sorted(types))}")
    else:
        read = [c for c in types if c != spec.label]
    return [c for c in read if types[c] != "string"] + [c for c in read if types[c] == "string"]


def split_flag(columns: Sequence[str], label: str | None, spec: PipelineSpec) -> Column:
    """True for held-out rows: :func:`sparkship.training.split_flag` over ``columns`` and the label."""
    from pyspark.sql import functions as F

    values = [F.col(f"`{c}`") for c in (*columns, *([label] if label else []))]
    bucket = F.pmod(F.xxhash64(F.lit(spec.split.seed), *values), F.lit(SPLIT_BUCKETS))
    return bucket < F.lit(int(round(spec.split.test_fraction * SPLIT_BUCKETS)))


def _counts(data: DataFrame, by: Column | None) -> list[Any]:
    """Train and test rows, per value of ``by`` (at most MAX_CLASSES + 2 groups), or in all (one group)."""
    from pyspark.sql import functions as F

    sums = [F.sum((~F.col(SPLIT)).cast("long")).alias("train"), F.sum(F.col(SPLIT).cast("long")).alias("test")]
    if by is None:
        return data.agg(*sums).collect()
    return data.groupBy(by.alias("__label")).agg(*sums).limit(MAX_CLASSES + 2).collect()


def _check_classes(groups: list[Any], spec: PipelineSpec, label_type: str, where: str) -> None:
    classes = [g["__label"] for g in groups]
    if len(classes) < 2:
        raise UsageError(f"spec key 'label': column '{spec.label}' has {len(classes)} class(es) in {where}; "
                         "classification needs at least two")
    if len(classes) > MAX_CLASSES:
        raise UsageError(f"spec key 'label': column '{spec.label}' has more than {MAX_CLASSES} classes; is this a "
                         "regression?")
    if label_type not in ("string", "boolean"):
        bad = sorted(c for c in classes if c < 0 or c != int(c))
        if bad:
            raise UsageError(f"spec key 'label': numeric class labels must be whole numbers 0, 1, 2...; column "
                             f"'{spec.label}' has {bad[:5]}")


def _labelled(source: DataFrame, spec: PipelineSpec, types: dict[str, str], where: str,
              ) -> tuple[DataFrame, list[str] | None, dict[str, int]]:
    """Rows with a label, the label a double (string classes indexed in place); the class labels; row counts."""
    from pyspark.ml.feature import StringIndexerModel
    from pyspark.sql import functions as F

    label = spec.label
    if label is None:
        total = _counts(source, None)[0]
        return source, None, {"train": int(total["train"] or 0), "test": int(total["test"] or 0), "classes": 0}
    col = F.col(f"`{label}`")
    is_string = types[label] == "string"
    data = source.where(col.isNotNull() if is_string else col.isNotNull() & ~F.isnan(col.cast("double")))
    classify = spec.task == "classification"
    groups = _counts(data, col if classify else None)
    if classify:
        _check_classes(groups, spec, types[label], where)
    counts = {"train": sum(int(g["train"] or 0) for g in groups), "test": sum(int(g["test"] or 0) for g in groups),
              "classes": len(groups) if classify else 0}
    if not is_string:
        return data.withColumn(label, col.cast("double")), None, counts
    if not classify:  # a clustering spec's label is only carried along
        return data, None, counts
    labels = sorted(str(g["__label"]) for g in groups)
    indexed = StringIndexerModel.from_labels(labels, inputCol=label, outputCol="__label_index", handleInvalid="error")
    data = indexed.transform(data).drop(label).withColumnRenamed("__label_index", label)
    return data, labels, counts


# --- tuning --------------------------------------------------------------------------------------------------


def _evaluator(spec: PipelineSpec, stages: Sequence[Any], num_classes: int) -> tuple[Evaluator, str]:
    """Spark's evaluator for the tuning metric, reading the predictor stage's own output columns."""
    from pyspark.ml.evaluation import (
        BinaryClassificationEvaluator,
        ClusteringEvaluator,
        MulticlassClassificationEvaluator,
        RegressionEvaluator,
    )

    assert spec.tuning is not None
    found = predictor(list(stages))

    def col(name: str, default: str) -> str:
        return str(found.getOrDefault(name)) if found is not None and found.hasParam(name) else default

    default = {"classification": "areaUnderROC" if num_classes == 2 else "f1", "regression": "rmse",
               "clustering": "silhouette"}[spec.task]
    metric = spec.tuning.metric or default
    if metric in ("areaUnderROC", "areaUnderPR"):
        if num_classes != 2:
            raise UsageError(f"spec key 'tuning.metric': {metric} needs a binary label ({num_classes} classes)")
        return BinaryClassificationEvaluator(labelCol=spec.label, rawPredictionCol=col("rawPredictionCol",
                                             RAW_PREDICTION), metricName=metric), metric
    if spec.task == "classification":
        return MulticlassClassificationEvaluator(labelCol=spec.label, predictionCol=col("predictionCol", PREDICTION),
                                                 probabilityCol=col("probabilityCol", PROBABILITY),
                                                 metricName=metric), metric
    if spec.task == "clustering":
        return ClusteringEvaluator(featuresCol=col("featuresCol", "features"),
                                   predictionCol=col("predictionCol", PREDICTION), metricName=metric), metric
    return RegressionEvaluator(labelCol=spec.label, predictionCol=col("predictionCol", PREDICTION),
                               metricName=metric), metric


def _tune(pipeline: Pipeline, stages: Sequence[Any], spec: PipelineSpec, train_df: DataFrame,
          num_classes: int) -> tuple[PipelineModel, dict[str, Any]]:
    """Fit ``pipeline`` through CrossValidator or TrainValidationSplit over the spec's grid; the best model."""
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit

    tuning = spec.tuning
    assert tuning is not None
    axes = tuning.axes or resolve_grid(tuning.grid, [type(s) for s in stages])
    builder = ParamGridBuilder()
    keys = {}
    for axis in axes:
        param = stages[axis.stage].getParam(axis.param)
        keys[param] = axis.key
        builder = builder.addGrid(param, axis.values)
    grid = builder.build()
    evaluator, metric = _evaluator(spec, stages, num_classes)
    common: dict[str, Any] = {"estimator": pipeline, "estimatorParamMaps": grid, "evaluator": evaluator,
                              "seed": tuning.seed}
    if tuning.method == "cross_validation":
        tuner: Estimator = CrossValidator(numFolds=tuning.folds, **common)
    else:
        tuner = TrainValidationSplit(trainRatio=tuning.train_ratio, **common)
    log.info("tuning %d candidates with %s on %s", len(grid), tuning.method, metric)
    fitted = tuner.fit(train_df)
    scores = fitted.avgMetrics if tuning.method == "cross_validation" else fitted.validationMetrics
    candidates = [{"params": {keys[p]: v for p, v in params.items()}, metric: float(score)}
                  for params, score in zip(grid, scores)]
    sign = 1.0 if evaluator.isLargerBetter() else -1.0
    best = max(range(len(candidates)), key=lambda i: sign * scores[i])
    info = {"method": tuning.method, "metric": metric, "candidates": candidates,
            "best_params": candidates[best]["params"],
            **({"folds": tuning.folds} if tuning.method == "cross_validation" else {"train_ratio": tuning.train_ratio})}
    return as_pipeline(fitted.bestModel), info


# --- training and registering -------------------------------------------------------------------------------


def train_pipeline(spark: SparkSession, spec: PipelineSpec) -> PipelineResult:
    """Read the spec's table (the pinned version, or the latest at start), split it, and fit the pipeline (through
    the tuning wrapper when the spec tunes). Writes nothing; the caller uncaches ``result.train`` and
    ``result.test`` (both cached).

    Raises a :class:`~sparkship.errors.SparkshipError` naming the problem before anything is fitted.
    """
    from pyspark.sql import functions as F

    pipeline = build_pipeline(spec)
    stages = [leaf for s in pipeline.getStages() for leaf in _leaves(s)]
    if not stages:
        raise UsageError("spec key 'pipeline': the pipeline has no stages")
    if spec.factory is not None:
        check_task([type(s) for s in stages], spec.task, "pipeline.factory")
        if spec.tuning is not None:
            resolve_grid(spec.tuning.grid, [type(s) for s in stages])  # refused before any Spark job
    version = _pin_version(spark, spec)
    where = f"table {spec.table}@{version}"
    source = tables.read(spark, spec.table, version=version)
    types = {f.name: f.dataType.simpleString() for f in source.schema.fields}
    _check_label(types, spec, where)
    columns = split_columns(stages, types, spec, where)
    data, labels, counts = _labelled(source.withColumn(SPLIT, split_flag(columns, spec.label, spec)), spec,
                                     types, where)
    if counts["train"] == 0 or counts["test"] == 0:
        raise UsageError(f"{where}: {counts['train'] + counts['test']} rows are too few to split with "
                         f"split.test_fraction={spec.split.test_fraction} ({counts['train']} train, "
                         f"{counts['test']} test)")
    if spec.label is not None:
        _set_label(stages, spec.label)
    train_df = cached(data.where(~F.col(SPLIT)).drop(SPLIT))
    test_df = cached(data.where(F.col(SPLIT)).drop(SPLIT))  # measured, then profiled: read once
    log.info("training %s (%s) on %s: %d train / %d test rows", spec.name, spec.task, where, counts["train"],
             counts["test"])
    try:
        if spec.tuning is not None:
            num_classes = len(labels) if labels else counts["classes"]
            model, tuning = _tune(pipeline, stages, spec, train_df, num_classes)
        else:
            model, tuning = as_pipeline(pipeline.fit(train_df)), None
    except BaseException as exc:
        uncached(train_df)
        uncached(test_df)
        reason = _fit_failure(exc)
        if reason is not None:
            raise UsageError(f"fitting the pipeline of spec '{spec.name}' failed: {reason}") from None
        raise
    return PipelineResult(model, spec, version, types, columns, train_df, test_df, counts["train"], labels, tuning)


def _fit_failure(exc: BaseException) -> str | None:
    """Spark's word on why the user's pipeline failed to fit (a bad param or column, a failed job: the innermost
    Java cause), or None for any other exception (ours, or an interrupt), which propagates as it is."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    if isinstance(exc, PySparkException):
        return _first_line(exc)
    if isinstance(exc, Py4JJavaError):
        cause = exc.java_exception
        while cause.getCause() is not None:
            cause = cause.getCause()
        return f"{cause.getClass().getSimpleName()}: {cause.getMessage()}"
    return None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _manifest(result: PipelineResult, model_dir: str, task: str, run_id: str | None) -> dict[str, Any]:
    """The manifest ``sparkship register`` writes, measured on the held-out rows, with the spec's lineage."""
    spec = result.spec
    stages = flat_stages(result.model)
    where = f"table {spec.table}@{result.table_version}"
    inputs = input_columns(stages, model_dir)
    # The split's column order, where it names the same columns: validate and report rebuild the split from it.
    ordered = result.split_columns if set(inputs) == set(result.split_columns) else inputs
    found = predictor(stages)
    sig = signature(result.types, ordered, task, where, found is not None and found.hasParam("probabilityCol"))
    unservable = servability(model_dir, sig["inputs"])
    if unservable:
        log.warning("%s registers, but the JVM-free scorer cannot serve it: %s", spec.name, unservable)
    label = spec.label if task != "clustering" else None
    # The inputs' reference profile comes from the training rows, as training.py's does (more rows than held out).
    measured = measure(result.model, result.test, task, label, sig["inputs"], profile_rows=result.train)
    lineage = {"table": spec.table, "table_version": result.table_version, "run_id": run_id}
    fitted = FittedModel(result.model, spec.source or f"spec {spec.name}", "spec")
    full = manifest(spec.name, fitted, task, spec.label, lineage, measured, sig, unservable)
    full["labels"] = result.labels
    full["training"].update({"rows_train": result.rows_train, "spec": spec.to_dict(),
                             "split": {"test_fraction": spec.split.test_fraction, "seed": spec.split.seed}})
    if result.tuning is not None:
        full["training"]["tuning"] = result.tuning
    return full


def register_pipeline(settings: Settings, result: PipelineResult, run_id: str | None = None) -> dict[str, Any]:
    """Register ``result``'s model as the next version of the spec's name, through ``sparkship register``'s path
    (signature, servability, metrics and the predictions' profile on the held-out rows, the inputs' reference
    profile on the training rows, sealed manifest, compare-and-set).

    Returns ``{"name", "version", "metrics", "artifact", "table_version", "task"}``.
    """
    task = infer_task(flat_stages(result.model), result.spec.task)
    staged = artifacts.save_staged(result.model, settings.models_root)
    try:
        full = _manifest(result, os.path.join(staged, artifacts.MODEL_DIR), task, run_id)
        artifacts.seal(staged, full)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    mv = register_staged(settings, result.spec.name, staged, full, run_id=run_id)
    return {"name": mv.name, "version": mv.version, "metrics": dict(full["metrics"]), "artifact": mv.artifact,
            "table_version": result.table_version, "task": task}


def train_pipeline_and_register(spark: SparkSession, settings: Settings, spec: PipelineSpec,
                                run_id: str | None = None) -> dict[str, Any]:
    """Train ``spec`` (:func:`train_pipeline`) and register the model (:func:`register_pipeline`)."""
    result = train_pipeline(spark, spec)
    try:
        return register_pipeline(settings, result, run_id=run_id)
    finally:
        uncached(result.train)
        uncached(result.test)


__all__ = ["PipelineResult", "build_pipeline", "register_pipeline", "split_columns", "split_flag", "train_pipeline",
           "train_pipeline_and_register"]
