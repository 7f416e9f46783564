"""Register a Spark ML model fitted outside sparkship (a notebook, a job, an MLflow run) as a model version.

The model is a fitted ``PipelineModel``, a single fitted stage (wrapped in a PipelineModel), a
``CrossValidatorModel`` / ``TrainValidationSplitModel`` (its ``bestModel``), or a folder holding one of these or an
MLflow model directory with the ``spark`` flavor. Its inputs are the columns its stages read that no earlier stage
produces, typed by the table; the task comes from its last classifier, regressor or clustering stage. Metrics
(with ``label``) and the monitoring reference profile are computed on the table, and the artifact is registered as
the model's next version, like a trained one.

    >>> mv = register_fitted(spark, settings, "/dbfs/models/churn_lr", "churn",
    ...                      table=parse_table("/data/churn@3"), label="churned")              # doctest: +SKIP
    >>> mv.version, mv.task, sorted(mv.metrics)                                                # doctest: +SKIP
    (1, 'classification', ['accuracy', 'areaUnderPR', 'areaUnderROC', 'f1', 'logLoss'])
"""
from __future__ import annotations

import glob
import importlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import yaml

from sparkship import artifacts, tables
from sparkship.errors import NotFoundError, SchemaMismatchError, SparkshipError, UsageError
from sparkship.metrics import PREDICTION, PROBABILITY, RAW_PREDICTION, clustering_metrics, evaluate_predictions
from sparkship.names import validate_name
from sparkship.profiles import class_profile, compute_profile, prediction_profile
from sparkship.refs import TableRef
from sparkship.registering import register_staged, runtime_versions
from sparkship.serving.pipeline import PIPELINE_CLASSES, derive_signature, load, load_stages
from sparkship.spark import cached, uncached

# pyspark is an optional dependency (the `local` extra; Databricks ships its own): functions import it where used.
if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel, Transformer
    from pyspark.sql import DataFrame, SparkSession

    from sparkship.config import Settings
    from sparkship.registry_tables import ModelVersion

log = logging.getLogger(__name__)

TASKS = ("classification", "regression", "clustering")
_TASK_MODULES = {"pyspark.ml.classification": "classification", "pyspark.ml.regression": "regression",
                 "pyspark.ml.clustering": "clustering"}
# Models fitted by xgboost's Spark estimators (the `xgboost` extra), told by class name without importing xgboost.
_XGBOOST_TASKS = {"SparkXGBClassifierModel": "classification", "SparkXGBRegressorModel": "regression"}
MLMODEL = "MLmodel"
_SCALAR_NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double")
# Params naming the columns a stage reads, and those naming the columns it adds.
_INPUT_PARAMS = ("inputCol", "inputCols", "featuresCol", "features_cols")
# Stages whose columns are in an expression (RFormula's featuresCol is what it writes, not what it reads).
_EXPRESSION_STAGES = ("RFormulaModel", "SQLTransformer")
_OUTPUT_PARAMS = ("outputCol", "outputCols", "predictionCol", "probabilityCol", "rawPredictionCol", "leafCol",
                  "varianceCol", "topicDistributionCol")


@dataclass(frozen=True)
class FittedModel:
    """A fitted model as a PipelineModel, with where it came from (``source``) and what it was (``kind``)."""

    pipeline: PipelineModel
    source: str
    kind: str


# --- reading the model ------------------------------------------------------------------------------------------


def _saved_class(path: str) -> str | None:
    """The class a Spark ML writer recorded in ``<path>/metadata/part-*``, or None when there is none."""
    parts = sorted(p for p in glob.glob(os.path.join(path, "metadata", "part-*")) if not p.endswith(".crc"))
    if not parts:
        return None
    with open(parts[0], encoding="utf-8") as fh:
        line = fh.readline()
    try:
        return str(json.loads(line)["class"])
    except (ValueError, KeyError, TypeError):
        return None


def _mlflow_model_dir(path: str) -> str | None:
    """The Spark model folder of an MLflow model directory with the ``spark`` flavor, or None."""
    mlmodel = os.path.join(path, MLMODEL)
    if not os.path.isfile(mlmodel):
        return None
    with open(mlmodel, encoding="utf-8") as fh:
        try:
            flavors = (yaml.safe_load(fh) or {}).get("flavors") or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"--path {path}: its {MLMODEL} file is not valid YAML ({exc})") from None
    spark_flavor = flavors.get("spark")
    if not isinstance(spark_flavor, dict):
        raise UsageError(f"--path {path} is an MLflow model without the 'spark' flavor (it has: "
                         f"{', '.join(sorted(flavors)) or 'none'}): save it with mlflow.spark.save_model")
    return os.path.join(path, str(spark_flavor.get("model_data") or "sparkml"))


def _python_class(java_class: str, path: str) -> type:
    """The pyspark class for a class name a Spark writer recorded (``org.apache.spark.ml.X`` -> ``pyspark.ml.X``)."""
    name = "pyspark.ml." + java_class[len("org.apache.spark.ml."):] if java_class.startswith(
        "org.apache.spark.ml.") else java_class
    module, _, cls = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError, ValueError):
        raise UsageError(f"--path {path} holds a {java_class}, which pyspark cannot load") from None


def saved_model(path: str) -> tuple[str, str, str | None]:
    """Where the Spark model under ``path`` is saved, the class its writer recorded, and ``"mlflow"`` for an MLflow
    model directory (None otherwise). Reads files only (no Spark); :class:`UsageError` when it holds no model."""
    if not os.path.isdir(path):
        raise NotFoundError(f"--path {path}: no such folder")
    inner = _mlflow_model_dir(path)
    saved = _saved_class(inner or path)
    if saved is None:
        raise UsageError(f"--path {path} is not a saved Spark ML model (no metadata/part-* with a class, no "
                         f"{MLMODEL}): give the folder that model.write().save() or mlflow.spark.save_model wrote")
    return inner or path, saved, "mlflow" if inner else None


def read_model(path: str) -> FittedModel:
    """Load the fitted model saved at ``path`` (see the module docstring for what it may hold).

    Raises :class:`UsageError` for a folder that holds no Spark ML model, or an unfitted estimator.
    """
    from pyspark.ml import PipelineModel

    where, saved, kind = saved_model(path)
    loaded = PipelineModel.load(where) if saved in PIPELINE_CLASSES else _python_class(saved, path).load(where)
    return FittedModel(as_pipeline(loaded, f"--path {path}"), path, kind or saved.rsplit(".", 1)[-1])


def as_pipeline(model: Any, where: str = "the model") -> PipelineModel:
    """``model`` as a PipelineModel: tuning models give their ``bestModel``, a single fitted stage is wrapped.

    Raises :class:`UsageError` for an unfitted ``Pipeline`` or estimator, or anything that is not a transformer.
    """
    from pyspark.ml import Estimator, PipelineModel, Transformer
    from pyspark.ml.tuning import CrossValidatorModel, TrainValidationSplitModel

    while isinstance(model, (CrossValidatorModel, TrainValidationSplitModel)):
        model = model.bestModel
    if isinstance(model, PipelineModel):
        return model
    if isinstance(model, Estimator):
        raise UsageError(f"{where} is an unfitted {type(model).__name__}: fit it first and register the model "
                         "that fit() returns")
    if isinstance(model, Transformer):
        return PipelineModel([model])
    raise UsageError(f"{where} is a {type(model).__name__}, not a fitted Spark ML model or pipeline")


def flat_stages(pipeline: PipelineModel) -> list[Transformer]:
    """The stages in transform order, nested PipelineModels (and tuning models' best models) flattened."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.tuning import CrossValidatorModel, TrainValidationSplitModel

    out: list[Any] = []
    for stage in pipeline.stages:
        if isinstance(stage, (PipelineModel, CrossValidatorModel, TrainValidationSplitModel)):
            out.extend(flat_stages(as_pipeline(stage)))
        else:
            out.append(stage)
    return out


# --- what the model is -----------------------------------------------------------------------------------------


def predictor(stages: list[Transformer]) -> Transformer | None:
    """The last classifier, regressor or clustering stage (a pipeline may convert its predictions after it)."""
    return next((s for s in reversed(stages) if _task_of(s) is not None), None)


def _task_of(stage: Any) -> str | None:
    """The task a predictor stage makes (Spark ML's by module, xgboost.spark's by class), None for others."""
    if type(stage).__module__.startswith("xgboost.spark"):
        return _XGBOOST_TASKS.get(type(stage).__name__)
    return _TASK_MODULES.get(type(stage).__module__)


def _num_classes(found: Any) -> int:
    """A classifier's number of classes: ``numClasses``, or an xgboost.spark model's from its booster."""
    if hasattr(found, "numClasses"):
        return int(found.numClasses or 0)
    if not hasattr(found, "get_booster"):
        return 0  # OneVsRest does not say: measured as multiclass
    config = json.loads(found.get_booster().save_config())
    return max(int(config["learner"]["learner_model_param"]["num_class"]), 2)  # 0 for a binary objective


def infer_task(stages: list[Transformer], task: str | None) -> str:
    """The task of the model, from its predictor stage; ``task`` must agree with it, or name it where it cannot
    be told. Raises :class:`UsageError` otherwise."""
    if task is not None and task not in TASKS:
        raise UsageError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    found = predictor(stages)
    inferred = _task_of(found) if found is not None else None
    if inferred is None and task is None:
        last = type(stages[-1]).__name__ if stages else "nothing"
        raise UsageError(f"cannot tell the task of the model: it has no classifier, regressor or clustering stage "
                         f"(its last stage is {last}); pass --task {'|'.join(TASKS)}")
    if inferred is not None and task is not None and task != inferred:
        raise UsageError(f"--task {task} contradicts the model: its {type(found).__name__} stage makes it a "
                         f"{inferred} model")
    return inferred or str(task)


def _param(stage: Any, name: str) -> Any:
    return stage.getOrDefault(name) if stage.hasParam(name) and stage.isDefined(stage.getParam(name)) else None


def _as_list(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def read_columns(stages: list[Transformer]) -> list[str]:
    """Columns the stages read from their input (not produced by an earlier stage), from their column params.

    The walk stops at a stage whose columns are in an expression (SQLTransformer, RFormula): :func:`input_columns`
    asks the saved files first.
    """
    produced: set[str] = set()
    found: list[str] = []
    for stage in stages:
        if type(stage).__name__ in _EXPRESSION_STAGES or not any(stage.hasParam(p) for p in _INPUT_PARAMS):
            break  # what a SQL statement or a formula reads and adds is not in params: later stages are unknown
        for name in _INPUT_PARAMS:
            if name == "featuresCol" and _as_list(_param(stage, "features_cols")):
                continue  # an xgboost.spark model given features_cols reads those scalar columns instead
            found += [c for c in _as_list(_param(stage, name)) if c not in produced and c not in found]
        for name in _OUTPUT_PARAMS:
            produced.update(c for c in _as_list(_param(stage, name)) if c)
    return found


def input_columns(stages: list[Transformer], model_dir: str) -> list[str]:
    """The model's input columns: the JVM-free reader's reading of the saved stages (which knows SQL and formulas),
    else :func:`read_columns`."""
    try:
        return [f.name for f in derive_signature(load_stages(model_dir)).inputs]
    except SparkshipError as exc:
        log.info("the JVM-free reader cannot read every stage (%s): inputs from the stages' column params", exc)
        return read_columns(stages)


def servability(model_dir: str, inputs: list[dict[str, str]]) -> str | None:
    """None when the JVM-free scorer can serve the saved model, else why not (naming the stage)."""
    try:
        load(model_dir, signature=inputs)
    except SparkshipError as exc:
        return str(exc)
    return None


# --- measuring it on the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    """The predictor's output columns in the transformed frame (None when it has no such column)."""

    prediction: str
    probability: str | None
    raw: str | None
    features: str | None


def _columns(found: Any, transformed: DataFrame) -> _Columns:
    names = set(transformed.columns)

    def col(param: str, default: str | None) -> str | None:
        value = _param(found, param) if found is not None else default
        return value if value in names else None

    prediction = col("predictionCol", PREDICTION)
    if prediction is None:
        raise UsageError(f"the model writes no prediction column (its output has {sorted(names)})")
    return _Columns(prediction, col("probabilityCol", PROBABILITY), col("rawPredictionCol", RAW_PREDICTION),
                    col("featuresCol", None))


def _classification_metrics(predictions: DataFrame, label: str, cols: _Columns,
                            num_classes: int) -> tuple[dict[str, float], dict[float, int] | None]:
    """The metrics training reports (:func:`~sparkship.metrics.metric_names`: binary with a raw prediction adds
    the areas, multiclass the weighted precision and recall, logLoss where there are probabilities), and rows per
    predicted class. A classifier that does not say its number of classes (OneVsRest) is measured as multiclass."""
    evaluation = evaluate_predictions(predictions, "classification", label, num_classes if cols.raw else 0)
    return evaluation.metrics, evaluation.predicted


def _metrics(predictions: DataFrame, task: str, label: str | None, cols: _Columns,
             num_classes: int) -> tuple[dict[str, float], dict[float, int] | None]:
    """The model's metrics on ``predictions`` (its output renamed to the standard column names)."""
    if task == "clustering":
        if cols.features is None:
            return {}, None
        return clustering_metrics(predictions, cols.features), None
    if label is None:
        return {}, None
    if task == "regression":
        return evaluate_predictions(predictions, "regression", label, 0).metrics, None
    return _classification_metrics(predictions, label, cols, num_classes)


def _predictions(transformed: DataFrame, label: str | None, cols: _Columns) -> DataFrame:
    """The rows with a label (all rows without one), the predictor's outputs under the standard names."""
    from pyspark.sql import functions as F

    keep = [F.col(f"`{cols.prediction}`").alias(PREDICTION)]
    keep += [F.col(f"`{cols.probability}`").alias(PROBABILITY)] if cols.probability else []
    keep += [F.col(f"`{cols.raw}`").alias(RAW_PREDICTION)] if cols.raw else []
    keep += [F.col(f"`{cols.features}`")] if cols.features else []
    if label is None:
        return transformed.select(*keep)
    labelled = transformed.where(F.col(f"`{label}`").isNotNull() & ~F.isnan(F.col(f"`{label}`").cast("double")))
    return labelled.select(F.col(f"`{label}`").cast("double").alias(label), *keep)


def measure(pipeline: PipelineModel, data: DataFrame, task: str, label: str | None,
            inputs: list[dict[str, str]], *,
            profile_rows: DataFrame | None = None) -> tuple[dict[str, float], dict[str, Any], int]:
    """Metrics, the reference profile (inputs and predictions, as training computes it) and the rows measured.

    The inputs are profiled on ``profile_rows`` (default ``data``): a trained model's on its training rows."""
    stages = flat_stages(pipeline)
    found = predictor(stages)
    num_classes = _num_classes(found) if task == "classification" and found is not None else 0
    transformed = pipeline.transform(data)
    cols = _columns(found, transformed)
    predictions = cached(_predictions(transformed, label, cols))
    try:
        metrics, predicted = _metrics(predictions, task, label, cols, num_classes)
        numeric = [f["name"] for f in inputs if f["type"] in _SCALAR_NUMERIC or f["type"].startswith("decimal")]
        categorical = [f["name"] for f in inputs if f["type"] == "string"]
        profile = compute_profile(data if profile_rows is None else profile_rows, numeric, categorical)
        profile["prediction"] = (class_profile(predicted) if predicted is not None else prediction_profile(
            predictions, "regression" if task == "regression" else "classification"))
        rows = int(profile["prediction"]["rows"])
    finally:
        uncached(predictions)
    return metrics, profile, rows


# --- registering -----------------------------------------------------------------------------------------------


def _pin(spark: SparkSession, table: TableRef) -> tuple[str, int]:
    path, version = table.location, table.version
    latest = tables.version(spark, path)
    if latest is None:
        raise NotFoundError(f"--table {table}: no Delta table at {path}")
    if version is not None and version > latest:
        raise NotFoundError(f"--table {table}: {path} has no version {version} (latest is {latest})")
    return path, latest if version is None else version


@dataclass(frozen=True)
class LabelClasses:
    """A string label as the model's own StringIndexer indexes it: ``labels[i]`` is class ``i``; ``indexed`` is
    the column that stage writes (what the classifier was fitted on and the metrics compare with)."""

    labels: list[str]
    indexed: str


def label_classes(stages: list[Transformer], label: str) -> LabelClasses | None:
    """The classes of the first StringIndexer among ``stages`` that reads ``label`` (None when none does).

        >>> indexer = StringIndexerModel.from_labels(["no", "yes"], inputCol="churn",
        ...                                          outputCol="churn_idx")             # doctest: +SKIP
        >>> label_classes([indexer], "churn")                                           # doctest: +SKIP
        LabelClasses(labels=['no', 'yes'], indexed='churn_idx')
    """
    from pyspark.ml.feature import StringIndexerModel

    for stage in stages:
        if not isinstance(stage, StringIndexerModel):
            continue
        inputs = _as_list(_param(stage, "inputCol")) or _as_list(_param(stage, "inputCols"))
        outputs = _as_list(_param(stage, "outputCol")) or _as_list(_param(stage, "outputCols"))
        if label in inputs and len(outputs) == len(inputs):
            at = inputs.index(label)
            return LabelClasses([str(v) for v in stage.labelsArray[at]], outputs[at])
    return None


def without_label_indexer(pipeline: PipelineModel, label: str) -> PipelineModel:
    """``pipeline`` less the StringIndexer stages that read ``label`` alone, nested pipelines included: a
    training-time stage (trained models index their label outside the pipeline too), which would otherwise make
    the label an input of scoring. The manifest's ``labels`` keep its classes."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import StringIndexerModel

    kept = []
    for stage in pipeline.stages:
        if isinstance(stage, StringIndexerModel) and _as_list(_param(stage, "inputCol")) == [label]:
            continue
        kept.append(without_label_indexer(stage, label) if isinstance(stage, PipelineModel) else stage)
    return PipelineModel(kept)


def _check_label(types: dict[str, str], label: str | None, task: str, where: str,
                 stages: list[Transformer]) -> LabelClasses | None:
    """Refuse a label the model cannot be measured against; the classes of a string label (None otherwise)."""
    if label is None:
        return None
    if label not in types:
        raise SchemaMismatchError(f"{where} has no label column '{label}'; its columns are {sorted(types)}")
    if types[label] == "string" and task == "classification":
        found = label_classes(stages, label)
        if found is None:
            raise SchemaMismatchError(
                f"label column '{label}' of {where} holds strings and no StringIndexer of the model indexes it: "
                f"fit the pipeline with StringIndexer(inputCol='{label}') feeding the classifier's labelCol, or "
                "register with a numeric (class index) label")
        return found
    if not (types[label] in _SCALAR_NUMERIC or types[label].startswith("decimal") or types[label] == "boolean"):
        raise SchemaMismatchError(
            f"label column '{label}' of {where} is {types[label]}: a {task} model is measured against a numeric "
            "label (the class index for a classifier; a string label needs the model's own StringIndexer)")
    return None


def signature(types: dict[str, str], columns: list[str], task: str, where: str,
              probability: bool = True) -> dict[str, list[dict[str, str]]]:
    """The manifest's signature: the input columns typed by the table, and the outputs scoring writes (a
    classifier's probability only where it has one: LinearSVC and OneVsRest have none)."""
    missing = [c for c in columns if c not in types]
    if missing:
        raise SchemaMismatchError(f"{where} lacks column(s) {', '.join(missing)} that the model reads; its columns "
                                  f"are {', '.join(sorted(types))}")
    outputs = [{"name": PREDICTION, "type": "double"}]
    if task == "classification" and probability:
        outputs.append({"name": PROBABILITY, "type": "array<double>"})
    return {"inputs": [{"name": c, "type": types[c]} for c in columns], "outputs": outputs}


def manifest(name: str, model: FittedModel, task: str, label: str | None, lineage: dict[str, Any],
             measured: tuple[dict[str, float], dict[str, Any], int], sig: dict[str, Any],
             unservable: str | None) -> dict[str, Any]:
    """The artifact manifest of a model fitted elsewhere (the trained one's keys, ``registered`` for ``spec``)."""
    metrics, profile, rows = measured
    stages = flat_stages(model.pipeline)
    found = predictor(stages)
    return {
        "name": name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task, "label": label, "labels": None,
        "algorithm": type(found or stages[-1]).__name__,
        "metrics": metrics,
        "signature": sig,
        "training": {**lineage, "rows_train": None, "rows_test": rows},
        "registered": {"source": model.source, "kind": model.kind, "stages": [type(s).__name__ for s in stages]},
        "servable": unservable is None,
        "unservable_reason": unservable,
        "versions": runtime_versions(),
        "reference_profile": profile,
    }


def register_fitted(spark: SparkSession, settings: Settings, model: Any, name: str, *, table: TableRef,
                    label: str | None = None, task: str | None = None, run_id: str | None = None) -> ModelVersion:
    """Register ``model`` (a fitted model object, or the folder of a saved one) as the next version of ``name``.

    Everything is checked before anything is written: the model, the task (``task`` may only confirm the
    inferred one, or name it where it cannot be inferred), the table's columns. A failure afterwards leaves
    nothing registered.
    """
    validate_name(name)
    fitted = read_model(model) if isinstance(model, (str, os.PathLike)) else FittedModel(
        as_pipeline(model), f"{type(model).__module__}.{type(model).__name__} object", type(model).__name__)
    stages = flat_stages(fitted.pipeline)
    if not stages:
        raise UsageError(f"{fitted.source} has no stages")
    task = infer_task(stages, task)
    path, version = _pin(spark, table)
    where = f"table {path}@{version}"
    data = tables.read(spark, path, version=version)
    types = {f.name: f.dataType.simpleString() for f in data.schema.fields}
    classes = _check_label(types, label, task, where, stages)
    # A StringIndexer on the label is a training-time stage: Spark skips it when scoring rows without the label.
    skip = {label} if classes is not None else set()
    found = predictor(stages)
    probability = found is not None and found.hasParam("probabilityCol")
    # refused before anything is written
    signature(types, [c for c in read_columns(stages) if c not in skip], task, where, probability)
    saved = without_label_indexer(fitted.pipeline, str(label)) if classes is not None else fitted.pipeline
    staged = artifacts.save_staged(saved, settings.models_root)
    try:
        model_dir = os.path.join(staged, artifacts.MODEL_DIR)
        sig = signature(types, [c for c in input_columns(stages, model_dir) if c not in skip], task, where,
                        probability)
        unservable = servability(model_dir, sig["inputs"])
        if unservable:
            log.warning("%s registers, but the JVM-free scorer cannot serve it: %s", name, unservable)
        measured = measure(fitted.pipeline, data, task, classes.indexed if classes else label, sig["inputs"])
        lineage = {"table": path, "table_version": version, "run_id": run_id}
        full = manifest(name, fitted, task, label, lineage, measured, sig, unservable)
        full["labels"] = classes.labels if classes else None
        artifacts.seal(staged, full)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return register_staged(settings, name, staged, full, run_id=run_id)


__all__ = ["FittedModel", "LabelClasses", "TASKS", "as_pipeline", "flat_stages", "infer_task", "input_columns",
           "label_classes", "measure", "predictor", "read_columns", "read_model", "register_fitted", "saved_model",
           "servability", "signature", "without_label_indexer"]
