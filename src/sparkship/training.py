"""Training: a :class:`~sparkship.spec.TrainingSpec` becomes a fitted Spark ML ``PipelineModel`` with metrics.

The Pipeline imputes numeric columns, indexes and one-hot encodes categoricals, assembles ``features`` and ends in
the estimator (``prediction``, ``probability``, ``rawPrediction``); the stages: docs/DESIGN.md. String class
labels are indexed outside the PipelineModel (``labels[i]`` is class ``i``); :func:`evaluate` takes the same
``labels``. Nothing is written by :func:`train`; :func:`train_and_register` stages the artifact and registers it.

    >>> from sparkship.spec import load_spec
    >>> result = train(spark, load_spec("specs/churn.yml"))                         # doctest: +SKIP
    >>> result.metrics["areaUnderROC"], result.table_version                        # doctest: +SKIP
    (0.91, 3)
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sparkship import artifacts, tables
from sparkship.errors import SchemaMismatchError, UsageError
from sparkship.metrics import PREDICTION, PROBABILITY, RAW_PREDICTION, evaluate_predictions, evaluator, metric_names
from sparkship.profiles import class_profile, compute_profile, prediction_profile
from sparkship.registering import register_staged, runtime_versions
from sparkship.spark import cached, is_connect, uncached
from sparkship.spec import TrainingSpec, estimator_class
from sparkship.training_checks import (
    SPLIT,
    check_data,
    check_schema,
    index_labels,
    label_column,
    labelled,
    pin_version,
)

# pyspark is imported inside the functions that use it: `import sparkship` loads no pyspark (serving, bundle).
if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from sparkship.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

FEATURES = "features"
RAW_FEATURES = "features__raw"
# Linear models are sensitive to feature scale; trees are not.
SCALED_ALGORITHMS = frozenset({"logistic_regression", "linear_regression"})
SPLIT_BUCKETS = 1_000_000
_JOB_GROUP = "spark.jobGroup.id"


@dataclass
class TrainingResult:
    """What :func:`train` produced: the fitted model, held-out metrics and the lineage needed for a manifest."""

    model: PipelineModel
    metrics: dict[str, float]
    table: str
    table_version: int
    rows_train: int
    rows_test: int
    signature: dict[str, list[dict[str, str]]]
    labels: list[str] | None
    reference_profile: dict[str, Any]
    spec: TrainingSpec
    tuning: dict[str, Any] | None = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # where the time went: see StepRecorder


class StepRecorder:
    """Wall time and the number of Spark jobs of each named step (``steps[name] = {"seconds", "jobs"}``; a name
    used again adds to its step).

    Jobs are counted through a job group set for the step (None under Spark Connect, which has no
    ``sparkContext`` and so no status tracker). Used for the log and for benchmarks/train_overhead.py's breakdown.
    Steps may run on several threads at once (the job group is per thread): their seconds then overlap.
    """

    def __init__(self, spark: SparkSession) -> None:
        self._sc = None if is_connect(spark) else spark.sparkContext
        self.steps: dict[str, dict[str, Any]] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        group = f"sparkship-train-{name}-{uuid.uuid4().hex[:8]}"
        previous = self._sc.getLocalProperty(_JOB_GROUP) if self._sc is not None else None
        if self._sc is not None:
            self._sc.setLocalProperty(_JOB_GROUP, group)
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            jobs = None
            if self._sc is not None:
                self._sc.setLocalProperty(_JOB_GROUP, previous)  # type: ignore[arg-type]  # None clears it
                jobs = len(self._sc.statusTracker().getJobIdsForGroup(group))
            before = self.steps.get(name, {"seconds": 0.0, "jobs": 0 if jobs is not None else None})
            self.steps[name] = {"seconds": round(before["seconds"] + seconds, 3),  # a step may come in parts
                                "jobs": None if jobs is None else before["jobs"] + jobs}


def build_pipeline(spec: TrainingSpec, label_is_string: bool = False) -> Pipeline:
    """The unfitted Pipeline for ``spec`` (see the module docstring for its stages).

    >>> [type(s).__name__ for s in build_pipeline(spec).getStages()]               # doctest: +SKIP
    ['Imputer', 'StringIndexer', 'OneHotEncoder', 'VectorAssembler', 'RandomForestClassifier']
    """
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

    numeric, categorical = list(spec.features.numeric), list(spec.features.categorical)
    stages: list[Any] = []
    assembled: list[str] = []
    if numeric:
        imputed = [f"{c}__imputed" for c in numeric]
        stages.append(Imputer(inputCols=numeric, outputCols=imputed, strategy=spec.features.impute))
        assembled += imputed
    if categorical:
        indexed = [f"{c}__idx" for c in categorical]
        encoded = [f"{c}__ohe" for c in categorical]
        # keep: unseen categories and nulls get their own index at scoring time instead of failing the job;
        # the encoder's dropLast then turns that index into an all-zero vector.
        stages.append(StringIndexer(inputCols=categorical, outputCols=indexed, handleInvalid="keep"))
        stages.append(OneHotEncoder(inputCols=indexed, outputCols=encoded))
        assembled += encoded
    scaled = spec.model.algorithm in SCALED_ALGORITHMS
    stages.append(VectorAssembler(inputCols=assembled, outputCol=RAW_FEATURES if scaled else FEATURES))
    if scaled:
        # withMean=False keeps one-hot vectors sparse.
        stages.append(StandardScaler(inputCol=RAW_FEATURES, outputCol=FEATURES, withMean=False, withStd=True))
    estimator = estimator_class(spec.model.estimator_class)(
        featuresCol=FEATURES, labelCol=label_column(spec, label_is_string), predictionCol=PREDICTION
    )
    estimator.setParams(**spec.model.params)
    stages.append(estimator)
    return Pipeline(stages=stages)


# --- metrics ---------------------------------------------------------------------------------------------------


def _num_classes(model: PipelineModel) -> int:
    return int(getattr(model.stages[-1], "numClasses", 0) or 0)


def evaluate(
    model: PipelineModel, df: DataFrame, spec: TrainingSpec, labels: Sequence[str] | None = None
) -> dict[str, float]:
    """Metrics of ``model`` on the labelled rows of ``df`` (any table snapshot with the spec's columns).

    ``labels``: the class labels of a model trained on string labels (``TrainingResult.labels``, the
    manifest's ``labels``); a label value outside them raises :class:`SchemaMismatchError`.

    >>> evaluate(model, tables.read(spark, "/data/churn", version=4), spec, labels=["no", "yes"])  # doctest: +SKIP
    {'areaUnderROC': 0.90, 'areaUnderPR': 0.71, 'accuracy': 0.86, 'f1': 0.85, 'logLoss': 0.33}
    """
    from pyspark.sql import functions as F

    label_is_string = check_schema(df.schema, spec, "the evaluation data")
    if label_is_string and not labels:
        raise UsageError(f"label '{spec.label}' holds strings: pass the model's class labels to evaluate it")
    data = labelled(df, spec, label_is_string)
    if label_is_string:
        unseen = data.where(~F.col(f"`{spec.label}`").isin(list(labels or []))).select(spec.label).distinct()
        found = [r[0] for r in unseen.limit(5).collect()]
        if found:
            raise SchemaMismatchError(
                f"label '{spec.label}' has values the model was not trained on: {found} (known: {list(labels or [])})"
            )
        data = index_labels(data, spec, labels or [], "error")
    label_col = label_column(spec, label_is_string)
    predictions = cached(model.transform(data))
    try:
        return evaluate_predictions(predictions, spec.task, label_col, _num_classes(model)).metrics
    finally:
        uncached(predictions)


# --- training -------------------------------------------------------------------------------------------------


def _signature(schema: StructType, spec: TrainingSpec) -> dict[str, list[dict[str, str]]]:
    types = {f.name: f.dataType.simpleString() for f in schema.fields}
    outputs = [{"name": PREDICTION, "type": "double"}]
    if spec.task == "classification":
        outputs.append({"name": PROBABILITY, "type": "array<double>"})
    return {"inputs": [{"name": c, "type": types[c]} for c in spec.features.columns], "outputs": outputs}


def _tuning_metric(spec: TrainingSpec, num_classes: int) -> str:
    assert spec.tuning is not None
    if spec.tuning.metric:
        return spec.tuning.metric
    if spec.task == "regression":
        return "rmse"
    return "areaUnderROC" if num_classes == 2 else "f1"


def _cross_validate(
    pipeline: Pipeline, spec: TrainingSpec, train_df: DataFrame, label_col: str, num_classes: int
) -> tuple[PipelineModel, dict[str, Any]]:
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    assert spec.tuning is not None
    if spec.tuning.metric in ("areaUnderROC", "areaUnderPR") and num_classes != 2:
        raise UsageError(f"spec key 'tuning.metric': {spec.tuning.metric} needs a binary label ({num_classes} classes)")
    estimator = pipeline.getStages()[-1]
    builder = ParamGridBuilder()
    for name, values in spec.tuning.grid.items():
        builder = builder.addGrid(estimator.getParam(name), values)
    grid = builder.build()
    metric = _tuning_metric(spec, num_classes)
    cv = CrossValidator(
        estimator=pipeline,
        estimatorParamMaps=grid,
        evaluator=evaluator(metric, label_col),
        numFolds=spec.tuning.folds,
        seed=spec.tuning.seed,
    )
    log.info("cross-validating %d candidates x %d folds on %s", len(grid), spec.tuning.folds, metric)
    cv_model = cv.fit(train_df)
    candidates = [
        {"params": {p.name: v for p, v in params.items()}, metric: float(score)}
        for params, score in zip(grid, cv_model.avgMetrics)
    ]
    sign = 1.0 if cv.getEvaluator().isLargerBetter() else -1.0
    best_index = max(range(len(candidates)), key=lambda i: sign * cv_model.avgMetrics[i])
    info: dict[str, Any] = {"metric": metric, "folds": spec.tuning.folds, "candidates": candidates,
            "best_params": candidates[best_index]["params"]}
    return cast("PipelineModel", cv_model.bestModel), info  # the estimator tuned is a Pipeline


def split_flag(spec: TrainingSpec) -> Column:
    """True for held-out (test) rows.

    A hash of the row's values and the seed, not ``rand(seed)``: the same rows land in the same split however the
    table is partitioned, read or distributed (local mode and a cluster agree), and the report can rebuild it.
    """
    from pyspark.sql import functions as F

    values = [F.col(f"`{c}`") for c in (*spec.features.columns, spec.label)]
    bucket = F.pmod(F.xxhash64(F.lit(spec.split.seed), *values), F.lit(SPLIT_BUCKETS))
    return bucket < F.lit(int(round(spec.split.test_fraction * SPLIT_BUCKETS)))


def labelled_rows(
    df: DataFrame, spec: TrainingSpec, labels: Sequence[str] | None, where: str
) -> tuple[DataFrame, bool]:
    """Rows of ``df`` with a label, string labels indexed with ``labels``; and whether the label was a string."""
    label_is_string = check_schema(df.schema, spec, where)
    data = labelled(df, spec, label_is_string)
    if label_is_string:
        data = index_labels(data, spec, labels or [], "error")
    return data, label_is_string


def held_out_rows(
    spark: SparkSession, spec: TrainingSpec, version: int, labels: Sequence[str] | None
) -> DataFrame:
    """The test split that :func:`train` held out of ``spec.table`` at ``version``."""
    from pyspark.sql import functions as F

    source = tables.read(spark, spec.table, version=version)
    selected = source.select(*[F.col(f"`{c}`") for c in (*spec.features.columns, spec.label)])
    return labelled_rows(selected.where(split_flag(spec)), spec, labels, f"table {spec.table}@{version}")[0]


def _recorded(recorder: StepRecorder, step: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` as a step of ``recorder`` (its own job group, on whatever thread runs it)."""
    with recorder.step(step):
        return fn(*args)


@dataclass(frozen=True)
class _Source:
    """The pinned, checked and cached input of a training run."""

    version: int
    where: str
    label_is_string: bool
    signature: dict[str, list[dict[str, str]]]
    selected: DataFrame  # the spec's columns and the split flag, cached


def _read(spark: SparkSession, spec: TrainingSpec) -> _Source:
    from pyspark.sql import functions as F

    version = pin_version(spark, spec)
    where = f"table {spec.table}@{version}"
    log.info("training %s (%s, %s) on %s", spec.name, spec.task, spec.model.algorithm, where)
    source = tables.read(spark, spec.table, version=version)
    label_is_string = check_schema(source.schema, spec, where)
    signature = _signature(source.schema, spec)
    columns = [F.col(f"`{c}`") for c in (*spec.features.columns, spec.label)]
    selected = cached(source.select(*columns, split_flag(spec).alias(SPLIT)))
    return _Source(version, where, label_is_string, signature, selected)


def _split(source: _Source, spec: TrainingSpec, labels: Sequence[str] | None) -> tuple[DataFrame, DataFrame]:
    """The labelled training and held-out rows, string labels indexed, without the split flag."""
    from pyspark.sql import functions as F

    data = labelled(source.selected, spec, source.label_is_string)
    if labels is not None:
        data = index_labels(data, spec, labels, "error")
    return data.where(~F.col(SPLIT)).drop(SPLIT), data.where(F.col(SPLIT)).drop(SPLIT)


def _fit(spec: TrainingSpec, label_is_string: bool, train_df: DataFrame,
         num_classes: int) -> tuple[PipelineModel, dict[str, Any] | None]:
    """The fitted pipeline (the best of the grid when the spec tunes) and the tuning record."""
    pipeline = build_pipeline(spec, label_is_string)
    if spec.tuning is not None:
        return _cross_validate(pipeline, spec, train_df, label_column(spec, label_is_string), num_classes)
    return pipeline.fit(train_df), None


def _measure(recorder: StepRecorder, spec: TrainingSpec, model: PipelineModel, train_df: DataFrame,
             test_df: DataFrame, label_col: str, num_classes: int,
             cached_frames: list[DataFrame]) -> tuple[dict[str, float], dict[str, Any]]:
    """Held-out metrics and the reference profile (the inputs' on the training rows, and the predictions')."""
    # The inputs' reference profile runs alongside the held-out metrics: both are a few short Spark jobs
    # whose scheduling and collecting overlap well, even on two cores.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reference-profile") as pool:
        inputs_profile = pool.submit(_recorded, recorder, "reference profile", compute_profile, train_df,
                                     spec.features.numeric, spec.features.categorical)
        with recorder.step("held-out metrics"):
            predictions = cached(model.transform(test_df).select(label_col, PREDICTION, *(
                [PROBABILITY, RAW_PREDICTION] if spec.task == "classification" else []
            )))
            cached_frames.append(predictions)
            evaluation = evaluate_predictions(predictions, spec.task, label_col, num_classes or _num_classes(model))
            metrics = evaluation.metrics
        log.info("held-out metrics %s", {k: round(v, 4) for k, v in metrics.items()})
        profile = inputs_profile.result()
    with recorder.step("reference profile"):
        # a classifier's class shares come with its metrics' grouping; a regressor's bins need a pass
        profile["prediction"] = (class_profile(evaluation.predicted) if spec.task == "classification"
                                 else prediction_profile(predictions, spec.task))
    return metrics, profile


def train(spark: SparkSession, spec: TrainingSpec) -> TrainingResult:
    """Read the spec's table (the pinned version, or the latest at start), check it, fit, and measure.

    Raises a :class:`~sparkship.errors.SparkshipError` naming the problem (missing columns, wrong label type,
    one class, empty table...) before any fitting. Writes nothing.

    >>> result = train(spark, spec)                                                  # doctest: +SKIP
    >>> sorted(result.metrics)                                                       # doctest: +SKIP
    ['accuracy', 'areaUnderPR', 'areaUnderROC', 'f1', 'logLoss']
    """
    started = time.perf_counter()
    recorder = StepRecorder(spark)
    with recorder.step("read and check"):
        source = _read(spark, spec)
    cached_frames = [source.selected]
    try:
        with recorder.step("read and check"):
            facts = check_data(source.selected, spec, source.label_is_string, source.where)
        train_df, test_df = _split(source, spec, facts.labels)
        log.info("split %d train / %d test rows (%.1f s)", facts.rows_train, facts.rows_test,
                 time.perf_counter() - started)
        with recorder.step("fit"):
            model, tuning = _fit(spec, source.label_is_string, train_df, facts.num_classes)
        log.info("fitted %s (%.1f s)", spec.model.estimator_class, time.perf_counter() - started)
        metrics, profile = _measure(recorder, spec, model, train_df, test_df,
                                    label_column(spec, source.label_is_string), facts.num_classes, cached_frames)
    finally:
        for df in cached_frames:
            uncached(df)
    log.info("trained %s in %.1f s: %s", spec.name, time.perf_counter() - started, recorder.steps)
    return TrainingResult(
        model=model,
        metrics=metrics,
        table=spec.table,
        table_version=source.version,
        rows_train=facts.rows_train,
        rows_test=facts.rows_test,
        signature=source.signature,
        labels=facts.labels,
        reference_profile=profile,
        spec=spec,
        tuning=tuning,
        steps=recorder.steps,
    )


# --- manifest and registration ----------------------------------------------------------------------------------


def manifest_for(result: TrainingResult, run_id: str | None = None) -> dict[str, Any]:
    """The artifact manifest of ``result`` (docs/DESIGN.md), less ``format`` and ``files`` that artifacts adds.

    >>> manifest_for(result, run_id="123")["training"]["table_version"]             # doctest: +SKIP
    3
    """
    spec = result.spec
    training: dict[str, Any] = {
        "table": result.table,
        "table_version": result.table_version,
        "rows_train": result.rows_train,
        "rows_test": result.rows_test,
        "run_id": run_id,
    }
    if result.tuning is not None:
        training["tuning"] = result.tuning
    return {
        "name": spec.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": spec.task,
        "label": spec.label,
        "labels": result.labels,
        "algorithm": spec.model.algorithm,
        "spec": spec.to_dict(),
        "metrics": dict(result.metrics),
        "signature": result.signature,
        "training": training,
        "versions": runtime_versions(),
        "reference_profile": result.reference_profile,
    }


def register_result(settings: Settings, result: TrainingResult, run_id: str | None = None) -> dict[str, Any]:
    """Stage ``result``'s artifact under the models root and register it as the next version."""
    manifest = manifest_for(result, run_id)
    staged = artifacts.stage(result.model, manifest, settings.models_root)
    mv = register_staged(settings, result.spec.name, staged, manifest, run_id=run_id)
    return {
        "name": mv.name,
        "version": mv.version,
        "metrics": dict(result.metrics),
        "artifact": mv.artifact,
        "table_version": result.table_version,
    }


def train_and_register(
    spark: SparkSession, settings: Settings, spec: TrainingSpec, run_id: str | None = None
) -> dict[str, Any]:
    """Train ``spec`` and register the model: ``{"name", "version", "metrics", "artifact", "table_version"}``.

    >>> from sparkship.config import Settings
    >>> train_and_register(spark, Settings.resolve(), load_spec("churn.yml"))      # doctest: +SKIP
    {'name': 'churn', 'version': 1, 'metrics': {...}, 'artifact': '.../models/churn/1', 'table_version': 0}
    """
    return register_result(settings, train(spark, spec), run_id=run_id)


__all__ = [
    "StepRecorder",
    "TrainingResult",
    "build_pipeline",
    "evaluate",
    "held_out_rows",
    "label_column",
    "labelled_rows",
    "manifest_for",
    "metric_names",
    "register_result",
    "split_flag",
    "train",
    "train_and_register",
]
