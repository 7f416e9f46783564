"""The same saved pipeline through MLflow's spark-flavor pyfunc and through sparkship's exported JVM-free pyfunc.

Pipeline: VectorAssembler + StandardScaler + LogisticRegression on the 30 numeric features of sklearn's
breast-cancer data (569 rows; the batch is those rows repeated with small noise). One PipelineModel is
registered in a temporary sparkship registry, then
  (a) ``mlflow.spark.save_model`` - MLflow's own flavor: its pyfunc runs ``transform()`` in a local Spark;
  (b) ``sparkship export --format mlflow`` - the pyfunc loads the same Spark files with the JVM-free scorer.
Both are loaded with ``mlflow.pyfunc.load_model`` and timed side by side on pandas input:
  * single-row p50 of ``predict`` on a 1-row DataFrame (MLflow's schema check included), and of the flavor's
    own predict (``_model_impl``, without MLflow's per-call schema check);
  * batch rows/s of ``predict`` on the whole batch (best of ``--rounds``).
Predictions of (b) are checked against (a) first (probabilities within 1e-9).

    .venv/bin/python benchmarks/mlflow_pyfunc.py [--rows 50000] [--single-spark 40] [--single 3000]

Goals: single-row p50 ratio >= 5,000x, batch ratio >= 30x.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd


def _data(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training frame with label, batch frame without it); feature names made column-safe."""
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer(as_frame=True).frame
    raw.columns = [c.replace(" ", "_") for c in raw.columns]
    features = raw.drop(columns=["target"]).astype("float64")
    rnd = np.random.default_rng(7)
    picks = rnd.integers(0, len(features), rows)
    noise = 1 + rnd.normal(0, 0.01, (rows, features.shape[1]))
    batch = pd.DataFrame(features.to_numpy()[picks] * noise, columns=features.columns)
    return raw.rename(columns={"target": "label"}), batch


def _train(spark: Any, train: pd.DataFrame) -> Any:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    features = [c for c in train.columns if c != "label"]
    return Pipeline(stages=[
        VectorAssembler(inputCols=features, outputCol="raw"),
        StandardScaler(inputCol="raw", outputCol="features"),
        LogisticRegression(maxIter=100, regParam=0.01),
    ]).fit(spark.createDataFrame(train))


def _export(model: Any, features: list[str], root: str) -> str:
    """Register ``model`` in a sparkship registry under ``root`` and export it as an MLflow model."""
    from sparkship import artifacts
    from sparkship.config import Settings
    from sparkship.interop.mlflow_export import export_model
    from sparkship.registry import Registry

    settings = Settings.resolve(home=os.path.join(root, "home"))
    manifest = {
        "name": "cancer", "task": "classification", "label": "label", "algorithm": "logistic_regression",
        "signature": {"inputs": [{"name": f, "type": "double"} for f in features],
                      "outputs": [{"name": "prediction", "type": "double"},
                                  {"name": "probability", "type": "array<double>"}]},
    }
    mv = Registry(settings).register("cancer", artifacts.stage(model, manifest, settings.models_root))
    out = os.path.join(root, "sparkship-pyfunc")
    export_model(mv.artifact, out)
    return out


def _p50(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 50))


def _rows_per_s(fn: Callable[[], Any], rows: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return rows / best


def _check_same(spark_model: Any, ours: Any, frame: pd.DataFrame) -> float:
    """Largest |probability difference| between (b) and Spark's transform() of the same rows; predictions equal."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    theirs = spark_model.transform(spark.createDataFrame(frame)).select(
        "prediction", vector_to_array("probability").alias("probability")).toPandas()
    got = ours.predict(frame)
    assert (got["prediction"].to_numpy() == theirs["prediction"].to_numpy()).all(), "predictions differ"
    return float(np.abs(np.stack(got["probability"]) - np.stack(theirs["probability"])).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000, help="batch size (default 50,000)")
    ap.add_argument("--single-spark", type=int, default=40, help="single-row calls through the spark flavor")
    ap.add_argument("--single", type=int, default=3000, help="single-row calls through the sparkship pyfunc")
    ap.add_argument("--rounds", type=int, default=3, help="batch rounds (best is kept)")
    args = ap.parse_args()

    import mlflow
    from mlflow.models.utils import _enforce_schema  # what PyFuncModel.predict runs before any flavor
    from pyspark.ml import PipelineModel

    from sparkship.spark import get_spark

    spark = get_spark()
    train, batch = _data(args.rows)
    features = list(batch.columns)
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-") as root:
        ours_dir = _export(_train(spark, train), features, root)
        spark_dir = os.path.join(root, "spark-flavor")
        pipeline = PipelineModel.load(os.path.join(ours_dir, "data", "sparkship", "model"))
        mlflow.spark.save_model(pipeline, spark_dir, signature=mlflow.models.infer_signature(batch.head(5)))
        theirs, ours = mlflow.pyfunc.load_model(spark_dir), mlflow.pyfunc.load_model(ours_dir)
        diff = _check_same(pipeline, ours, batch.head(2000))
        one = batch.head(1)
        theirs.predict(one), ours.predict(one)  # warm-up
        single = {
            "spark": _p50(lambda: theirs.predict(one), args.single_spark),
            "sparkship": _p50(lambda: ours.predict(one), args.single),
            "spark (flavor only)": _p50(lambda: theirs._model_impl.predict(one), args.single_spark),
            "sparkship (flavor only)": _p50(lambda: ours._model_impl.predict(one), args.single),
            "MLflow schema check": _p50(lambda: _enforce_schema(one, ours.metadata.get_input_schema()), args.single),
        }
        rate = {
            "spark": _rows_per_s(lambda: theirs.predict(batch), len(batch), args.rounds),
            "sparkship": _rows_per_s(lambda: ours.predict(batch), len(batch), args.rounds),
        }
    print(f"\nmax |probability - Spark transform()| over 2,000 rows: {diff:.2e}")
    print(f"\n| pyfunc (mlflow.pyfunc.load_model) | single-row p50 | batch rows/s ({len(batch):,} rows) |")
    print("|---|---|---|")
    print(f"| MLflow spark flavor (local Spark) | {single['spark'] * 1e3:.1f} ms | {rate['spark']:,.0f} |")
    print(f"| sparkship export (JVM-free) | {single['sparkship'] * 1e6:.1f} us | {rate['sparkship']:,.0f} |")
    print(f"| ratio | {single['spark'] / single['sparkship']:,.0f}x | {rate['sparkship'] / rate['spark']:,.1f}x |")
    print(f"\nwithout MLflow's per-call schema check (_model_impl.predict): spark "
          f"{single['spark (flavor only)'] * 1e3:.1f} ms, sparkship {single['sparkship (flavor only)'] * 1e6:.1f} us "
          f"-> {single['spark (flavor only)'] / single['sparkship (flavor only)']:,.0f}x")
    check = single["MLflow schema check"]
    print(f"MLflow's own schema check of the 1-row input ({len(features)} named columns), run by every "
          f"pyfunc predict before the flavor: {check * 1e6:.1f} us; with the spark flavor's "
          f"{single['spark'] * 1e3:.1f} ms, no pyfunc can exceed {single['spark'] / check:,.0f}x")


if __name__ == "__main__":
    main()
