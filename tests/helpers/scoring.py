"""The scoring tests' world: churn rows, the churn pipeline (which cannot take a null tenure or an unseen
region), its manifest and registration, input writes and a loose comparison of score frames."""
from __future__ import annotations

from typing import Any

import numpy as np
from chispa import assert_approx_df_equality

from sparkship import artifacts, tables
from sparkship.config import Settings
from sparkship.registry import Registry

MODEL = "churn"


INPUT_SCHEMA = "id long, age double, tenure double, plan string, region string"


PLANS = ["basic", "plus", "pro"]


REGIONS = ["north", "south"]


def make_rows(n: int, seed: int, first_id: int = 0) -> list[tuple[Any, ...]]:
    """Clean rows: every value finite and every category seen in training."""
    rng = np.random.default_rng(seed)
    return [
        (
            first_id + i,
            float(rng.normal(40, 10)),
            float(rng.uniform(0, 60)),
            PLANS[int(rng.integers(0, 3))],
            REGIONS[int(rng.integers(0, 2))],
        )
        for i in range(n)
    ]


def fit_model(spark):
    """Imputer(age) + StringIndexer(plan keep, region error) + OneHotEncoder + VectorAssembler + LR.

    ``tenure`` is assembled raw (no Imputer) and ``region`` is indexed with handleInvalid="error": the model
    cannot take a null tenure or an unseen region, which the quarantine rules must catch.
    """
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import Imputer, OneHotEncoder, StringIndexer, VectorAssembler
    from pyspark.sql import functions as F

    rows = make_rows(300, seed=1)
    train = spark.createDataFrame(rows, INPUT_SCHEMA).withColumn(
        "label",
        ((F.col("age") + F.col("tenure") / 2 + F.when(F.col("plan") == "pro", 10).otherwise(0)) > 58).cast("double"),
    )
    pipeline = Pipeline(stages=[
        Imputer(inputCols=["age"], outputCols=["age__imputed"]),
        StringIndexer(inputCols=["plan", "region"], outputCols=["plan__idx", "region__idx"], handleInvalid="keep"),
        StringIndexer(inputCol="region", outputCol="region__strict", handleInvalid="error"),
        OneHotEncoder(inputCols=["plan__idx", "region__strict"], outputCols=["plan__ohe", "region__ohe"]),
        VectorAssembler(inputCols=["age__imputed", "tenure", "plan__ohe", "region__ohe"], outputCol="features"),
        LogisticRegression(maxIter=20),
    ])
    return pipeline.fit(train)


def manifest_for(spark) -> dict[str, Any]:
    types = dict((f.name, f.dataType.simpleString()) for f in spark.createDataFrame([], INPUT_SCHEMA).schema.fields)
    return {
        "name": MODEL,
        "task": "classification",
        "label": "label",
        "algorithm": "logistic_regression",
        "signature": {
            "inputs": [{"name": c, "type": types[c]} for c in ("age", "tenure", "plan", "region")],
            "outputs": [{"name": "prediction", "type": "double"}, {"name": "probability", "type": "array<double>"}],
        },
        "training": {"table": None, "table_version": None, "rows_train": 300, "rows_test": 0, "run_id": None},
        "metrics": {},
    }


def register(spark, model, settings: Settings) -> int:
    staged = artifacts.stage(model, manifest_for(spark), settings.models_root)
    return Registry(settings).register(MODEL, staged).version


def assert_same_scores(got, expected) -> None:
    """chispa on two small frames, nullability (also of array elements) set aside; the probability element-wise
    (chispa compares arrays exactly, and the JVM-free scorer may sum in another order than Spark)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, StructField, StructType

    def loose(df):
        if "probability" in df.columns:
            df = df.select(*[F.col(c) for c in df.columns if c != "probability"], F.size("probability").alias("k"),
                           *[F.col("probability")[i].alias(f"probability_{i}") for i in range(2)])
        fields = [
            StructField(f.name,
                        ArrayType(f.dataType.elementType, True) if isinstance(f.dataType, ArrayType) else f.dataType,
                        True)
            for f in df.schema.fields
        ]
        return df.sparkSession.createDataFrame(df.collect(), StructType(fields))

    assert_approx_df_equality(loose(got), loose(expected), 1e-9)


def write_input(spark, path: str, rows, mode: str = "append", schema: str = INPUT_SCHEMA) -> int:
    return tables.write(spark.createDataFrame(rows, schema), path, mode=mode)

