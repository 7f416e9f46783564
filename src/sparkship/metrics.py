"""Held-out metrics of a fitted model, with the definitions of Spark's evaluators, in as few Spark jobs as possible.

A classifier's predictions are grouped once, by (label, prediction) and, for two classes, by the score; accuracy,
weighted F1 (and, for more than two classes, weighted precision and recall), log loss, the areas under the ROC
and precision-recall curves and the row count per predicted class
all come from that one grouping. Above ``max_score_groups`` groups the areas come from
``BinaryClassificationEvaluator`` instead. The definitions, and how the areas compare with Spark's:
docs/DESIGN.md.

    >>> evaluation = evaluate_predictions(model.transform(test_df), "classification", "label", 2)  # doctest: +SKIP
    >>> sorted(evaluation.metrics)                                                            # doctest: +SKIP
    ['accuracy', 'areaUnderPR', 'areaUnderROC', 'f1', 'logLoss']
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkship.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml.evaluation import Evaluator
    from pyspark.sql import DataFrame

PREDICTION = "prediction"
PROBABILITY = "probability"
RAW_PREDICTION = "rawPrediction"
LOG_LOSS_EPS = 1e-15  # MulticlassClassificationEvaluator's default
MAX_SCORE_GROUPS = 1_000_000  # (label, prediction, score) groups brought to the driver for the exact areas
AREAS = ("areaUnderROC", "areaUnderPR")
WEIGHTED = ("weightedPrecision", "weightedRecall")
SILHOUETTE = "silhouette"


@dataclass(frozen=True)
class Evaluation:
    """A model's metrics on labelled predictions; ``predicted``: rows per predicted class (classifiers only)."""

    metrics: dict[str, float]
    predicted: dict[float, int] = field(default_factory=dict)


def metric_names(task: str, num_classes: int) -> list[str]:
    """The metrics reported for a task: binary classification adds the two areas under curves, multiclass the
    weighted precision and recall; a clustering model reports its silhouette.

        >>> metric_names("classification", 3)
        ['accuracy', 'f1', 'weightedPrecision', 'weightedRecall', 'logLoss']
    """
    if task == "regression":
        return ["rmse", "mae", "r2"]
    if task == "clustering":
        return [SILHOUETTE]
    if num_classes == 2:
        return [*AREAS, "accuracy", "f1", "logLoss"]
    return ["accuracy", "f1", *WEIGHTED, "logLoss"]


def evaluator(metric: str, label_col: str) -> Evaluator:
    """Spark's evaluator for one of :func:`metric_names` (what cross-validation ranks candidates with)."""
    from pyspark.ml.evaluation import (
        BinaryClassificationEvaluator,
        MulticlassClassificationEvaluator,
        RegressionEvaluator,
    )

    if metric in AREAS:
        return BinaryClassificationEvaluator(labelCol=label_col, rawPredictionCol=RAW_PREDICTION, metricName=metric)
    if metric in ("accuracy", "f1", "logLoss", *WEIGHTED):
        return MulticlassClassificationEvaluator(
            labelCol=label_col, predictionCol=PREDICTION, probabilityCol=PROBABILITY, metricName=metric
        )
    return RegressionEvaluator(labelCol=label_col, predictionCol=PREDICTION, metricName=metric)


def evaluate_predictions(
    predictions: DataFrame, task: str, label_col: str, num_classes: int, *,
    max_score_groups: int = MAX_SCORE_GROUPS,
) -> Evaluation:
    """The metrics of :func:`metric_names` on ``predictions`` (a model's output with the label column).

    Cache ``predictions`` first when the model is costly: a fallback to Spark's evaluator reads them again.
    A classifier without a probability column (LinearSVC, OneVsRest) has no logLoss. Raises :class:`UsageError`
    when there are no rows.
    """
    if task == "regression":
        return Evaluation(_regression_metrics(predictions, label_col))
    if task == "clustering":
        raise UsageError("a clustering model is measured by clustering_metrics (no label)")
    binary = num_classes == 2 and RAW_PREDICTION in predictions.columns
    groups = _grouped(predictions, label_col, with_score=binary, limit=max_score_groups) if binary else None
    if groups is None:
        groups = _grouped(predictions, label_col, with_score=False, limit=None)
    if not groups["n"].sum():
        raise UsageError("the evaluation data has no labelled rows")
    metrics = _multiclass_metrics(groups)
    if binary:
        metrics.update(_areas(groups) if "score" in groups else
                       {m: float(evaluator(m, label_col).evaluate(predictions)) for m in AREAS})
    predicted = _sums(groups["prediction"], groups["n"])
    return Evaluation({m: metrics[m] for m in metric_names(task, num_classes) if m in metrics},
                      {float(k): int(v) for k, v in predicted.items()})


def clustering_metrics(predictions: DataFrame, features_col: str,
                       prediction_col: str = PREDICTION) -> dict[str, float]:
    """The silhouette (squared Euclidean, Spark's ``ClusteringEvaluator``) of a clustering model's output.

    Raises :class:`UsageError` when there are no rows or a single cluster (the silhouette needs two).
    """
    from pyspark.ml.evaluation import ClusteringEvaluator

    clusters = predictions.select(prediction_col).distinct().limit(2).count()
    if clusters < 2:
        raise UsageError(f"the evaluation data falls in {clusters} cluster(s): the silhouette needs at least two")
    ev = ClusteringEvaluator(featuresCol=features_col, predictionCol=prediction_col, metricName=SILHOUETTE)
    return {SILHOUETTE: float(ev.evaluate(predictions))}


def _grouped(
    predictions: DataFrame, label_col: str, *, with_score: bool, limit: int | None
) -> dict[str, np.ndarray] | None:
    """Rows and summed log loss per (label, prediction[, score]) as arrays; None past ``limit`` groups."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    label = F.col(f"`{label_col}`")
    if PROBABILITY in predictions.columns:
        p = vector_to_array(F.col(PROBABILITY))[label.cast("int")]
        loss = (F.when(p < LOG_LOSS_EPS, F.lit(-math.log(LOG_LOSS_EPS)))
                .when(p > 1 - LOG_LOSS_EPS, F.lit(-math.log1p(-LOG_LOSS_EPS)))
                .otherwise(-F.log(p)))
    else:
        loss = F.lit(None).cast("double")  # no probabilities: no log loss (the NaN sum drops it)
    # One select names every output: a label column called "label", "score" or "loss" cannot collide with them.
    keys = [label.cast("double").alias("label"), F.col(PREDICTION).alias("prediction")]
    if with_score:
        keys.append(vector_to_array(F.col(RAW_PREDICTION))[1].alias("score"))
    names = ["label", "prediction", "score"][:len(keys)]
    table = predictions.select(*keys, loss.alias("loss")).groupBy(*names).agg(
        F.count(F.lit(1)).alias("n"), F.sum("loss").alias("loss"))
    if limit is not None:
        table = table.limit(limit + 1)
    frame = table.toPandas()
    if limit is not None and len(frame) > limit:
        return None
    return {c: frame[c].to_numpy(dtype=np.int64 if c == "n" else np.float64) for c in frame.columns}


def _sums(keys: np.ndarray, values: np.ndarray) -> dict[float, Any]:
    unique, inverse = np.unique(keys, return_inverse=True)
    totals = np.bincount(inverse.ravel(), weights=values, minlength=len(unique))
    return dict(zip(unique.tolist(), totals.tolist()))


def _multiclass_metrics(groups: dict[str, np.ndarray]) -> dict[str, float]:
    """accuracy, f1, precision and recall (weighted by label counts) and logLoss as Spark's MulticlassMetrics
    defines them; no logLoss where the groups carry none (a classifier without probabilities)."""
    n, total = groups["n"], float(groups["n"].sum())
    by_label = _sums(groups["label"], n)
    by_prediction = _sums(groups["prediction"], n)
    right = groups["label"] == groups["prediction"]
    hits = _sums(groups["label"][right], n[right])

    def precision(cls: float) -> float:
        return float(hits.get(cls, 0.0) / by_prediction[cls]) if by_prediction.get(cls) else 0.0

    def recall(cls: float) -> float:
        return float(hits.get(cls, 0.0) / by_label[cls])

    def f1(cls: float) -> float:
        p, r = precision(cls), recall(cls)
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    def weighted(fn: Callable[[float], float]) -> float:
        return sum(count / total * fn(cls) for cls, count in sorted(by_label.items()))

    metrics = {"accuracy": sum(hits.values()) / total, "f1": weighted(f1), "weightedPrecision": weighted(precision),
               "weightedRecall": weighted(recall)}
    loss = float(np.sum(groups["loss"]))
    if math.isfinite(loss):
        metrics["logLoss"] = loss / total
    return metrics


def _areas(groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Exact areas under Spark's ROC and PR curves: one point per distinct score, highest first.

    As ``BinaryClassificationMetrics``: a row is positive when its label is above 0.5; the ROC curve runs from
    (0, 0) through (false positive rate, recall) to (1, 1); the PR curve starts at (0, the first point's
    precision); both areas are trapezoid sums. A rate over an empty class is 0.
    """
    scores, inverse = np.unique(groups["score"], return_inverse=True)
    inverse = inverse.ravel()
    positive = groups["label"] > 0.5
    tp = np.cumsum(np.bincount(inverse, weights=np.where(positive, groups["n"], 0), minlength=len(scores))[::-1])
    fp = np.cumsum(np.bincount(inverse, weights=np.where(positive, 0, groups["n"]), minlength=len(scores))[::-1])
    recall = tp / tp[-1] if tp[-1] else np.zeros_like(tp)
    fpr = fp / fp[-1] if fp[-1] else np.zeros_like(fp)
    precision = tp / (tp + fp)
    roc_x, roc_y = np.r_[0.0, fpr, 1.0], np.r_[0.0, recall, 1.0]
    pr_x, pr_y = np.r_[0.0, recall], np.r_[precision[0], precision]
    return {"areaUnderROC": _trapezoids(roc_x, roc_y), "areaUnderPR": _trapezoids(pr_x, pr_y)}


def _trapezoids(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def _regression_metrics(predictions: DataFrame, label_col: str) -> dict[str, float]:
    """rmse, mae and r2 as Spark's RegressionMetrics defines them (r2 = 1 - SSerr/SStot), in one aggregation."""
    from pyspark.sql import functions as F

    y, error = F.col(f"`{label_col}`").cast("double"), F.col(PREDICTION) - F.col(f"`{label_col}`")
    row = predictions.agg(
        F.count(F.lit(1)).alias("__n"), F.sum(error * error).alias("__sse"), F.sum(F.abs(error)).alias("__sae"),
        F.var_samp(y).alias("__var"),
    ).collect()[0]
    n = int(row["__n"])
    if n == 0:
        raise UsageError("the evaluation data has no labelled rows")
    ss_tot = (row["__var"] or 0.0) * (n - 1)
    return {
        "rmse": math.sqrt(row["__sse"] / n),
        "mae": row["__sae"] / n,
        "r2": 1 - row["__sse"] / ss_tot if ss_tot else float("nan"),  # a constant label has no r2
    }
