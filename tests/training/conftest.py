"""A training table and the models fitted on it, shared by the validation and policy tests."""
from __future__ import annotations

from typing import Any

import pytest

from sparkship import tables
from tests.helpers.validation import (
    VALIDATION_SCHEMA,
    validation_rows,
)


@pytest.fixture(scope="module")
def table(spark, tmp_path_factory) -> str:
    """A validation table with two versions: 300 rows, then 100 more appended."""
    path = str(tmp_path_factory.mktemp("validation") / "holdout")
    tables.write(spark.createDataFrame(validation_rows(300, seed=1), VALIDATION_SCHEMA), path, mode="overwrite")
    tables.write(spark.createDataFrame(validation_rows(100, seed=2), VALIDATION_SCHEMA), path, mode="append")
    return path


@pytest.fixture(scope="module")
def models(spark) -> dict[str, Any]:
    """Each model trained once: a good and a weak classifier, a regressor."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.regression import LinearRegression

    train = spark.createDataFrame(validation_rows(400, seed=7), VALIDATION_SCHEMA).cache()
    both = VectorAssembler(inputCols=["x1", "x2"], outputCol="features")
    good = Pipeline(stages=[both, LogisticRegression(labelCol="y")]).fit(train)
    weak = Pipeline(stages=[VectorAssembler(inputCols=["x2"], outputCol="features"),
                            LogisticRegression(labelCol="y")]).fit(train)
    linear = Pipeline(stages=[both, LinearRegression(labelCol="t")]).fit(train)
    train.unpersist()
    return {"good": good, "weak": weak, "linear": linear}

