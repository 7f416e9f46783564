"""Held-out metrics from one grouping (sparkship.metrics) against scikit-learn and Spark's own evaluators."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sparkship.errors import UsageError
from sparkship.metrics import evaluate_predictions, evaluator
from sparkship.profiles import class_profile, prediction_profile

pytestmark = pytest.mark.seconds(8)


def _data(spark, rows: int, classes: int, seed: int):  # noqa: ANN202 - a pyspark DataFrame
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    margin = x @ np.array([1.5, -1.0, 0.5]) + rng.normal(scale=1.0, size=rows)
    label = np.digitize(margin, np.quantile(margin, np.linspace(0, 1, classes + 1)[1:-1]))
    return spark.createDataFrame(pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": label.astype(float)}))


def _predictions(spark, estimator, rows: int, classes: int):  # noqa: ANN001, ANN202
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler

    train, test = _data(spark, rows, classes, seed=1), _data(spark, rows, classes, seed=2)
    model = Pipeline(stages=[VectorAssembler(inputCols=["a", "b", "c"], outputCol="features"), estimator]).fit(train)
    return model.transform(test).select("y", "prediction", "probability", "rawPrediction").cache()


def _arrays(predictions):  # noqa: ANN001, ANN202
    from pyspark.ml.functions import vector_to_array

    rows = predictions.select("y", "prediction", vector_to_array("probability").alias("p"),
                              vector_to_array("rawPrediction").alias("raw")).collect()
    return (np.array([r["y"] for r in rows]), np.array([r["prediction"] for r in rows]),
            np.array([r["p"] for r in rows]), np.array([r["raw"][1] for r in rows]))


def test_binary_areas_are_exact_over_thousands_of_distinct_scores(spark):
    """5,000 rows of logistic scores, all distinct: Spark's evaluator would bin its curves; ours are exact."""
    from pyspark.ml.classification import LogisticRegression
    from sklearn import metrics as skm

    predictions = _predictions(spark, LogisticRegression(labelCol="y"), 5000, 2)
    y, pred, prob, raw = _arrays(predictions)
    assert len(np.unique(raw)) > 4000

    got = evaluate_predictions(predictions, "classification", "y", 2)

    precision, recall, _ = skm.precision_recall_curve(y, raw)
    assert got.metrics["areaUnderROC"] == pytest.approx(skm.roc_auc_score(y, raw), abs=1e-12)
    # Spark's PR curve starts at (recall 0, precision of the top score); scikit-learn's at (0, 1)
    spark_pr = skm.auc(np.r_[0.0, recall[:-1][::-1]], np.r_[precision[-2], precision[:-1][::-1]])
    assert got.metrics["areaUnderPR"] == pytest.approx(spark_pr, abs=1e-12)
    assert got.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert got.metrics["f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"), abs=1e-12)
    p_true = np.clip(prob[np.arange(len(y)), y.astype(int)], 1e-15, 1 - 1e-15)
    assert got.metrics["logLoss"] == pytest.approx(float(np.mean(-np.log(p_true))), rel=1e-9)
    assert got.predicted == {c: int(np.sum(pred == c)) for c in np.unique(pred)}

    # Past the grouping limit, the areas come from Spark's evaluator (its binned curves: close, not equal, and
    # not even the same from one call to the next) and the rest from a grouping without the score (equal)
    fallback = evaluate_predictions(predictions, "classification", "y", 2, max_score_groups=100)
    for m in ("areaUnderROC", "areaUnderPR"):
        assert fallback.metrics[m] == pytest.approx(got.metrics[m], abs=2e-3)
    for m in ("accuracy", "f1", "logLoss"):
        assert fallback.metrics[m] == pytest.approx(got.metrics[m], rel=1e-12)
    predictions.unpersist()


def test_tied_scores_give_spark_evaluators_areas(spark):
    """A shallow tree has a handful of distinct scores, many rows each: Spark's curves are exact there, and the
    areas (ties included) must be Spark's to the last bits."""
    from pyspark.ml.classification import DecisionTreeClassifier

    predictions = _predictions(spark, DecisionTreeClassifier(labelCol="y", maxDepth=3), 3000, 2)
    assert predictions.select("rawPrediction").distinct().count() <= 8
    got = evaluate_predictions(predictions, "classification", "y", 2)
    for m in ("areaUnderROC", "areaUnderPR"):
        assert got.metrics[m] == pytest.approx(evaluator(m, "y").evaluate(predictions), abs=1e-12)
    predictions.unpersist()


def test_multiclass_metrics_and_class_shares_match_spark(spark):
    from pyspark.ml.classification import LogisticRegression

    predictions = _predictions(spark, LogisticRegression(labelCol="y"), 3000, 3)
    got = evaluate_predictions(predictions, "classification", "y", 3)
    assert set(got.metrics) == {"accuracy", "f1", "weightedPrecision", "weightedRecall", "logLoss"}
    for m in ("accuracy", "f1", "weightedPrecision", "weightedRecall", "logLoss"):
        assert math.isclose(got.metrics[m], evaluator(m, "y").evaluate(predictions), rel_tol=1e-9), m
    # the reference profile's prediction shares, from these counts and from a Spark pass of their own
    assert class_profile(got.predicted) == prediction_profile(predictions, "classification")
    predictions.unpersist()


def test_no_labelled_rows_is_a_usage_error(spark):
    from pyspark.ml.classification import LogisticRegression

    predictions = _predictions(spark, LogisticRegression(labelCol="y"), 500, 2)
    with pytest.raises(UsageError, match="no labelled rows"):
        evaluate_predictions(predictions.limit(0), "classification", "y", 2)
    predictions.unpersist()
