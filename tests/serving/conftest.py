"""Fixtures of the serving tests: a test module's rows as a DataFrame (its ``rows()`` and ``SCHEMA``), their Arrow
table and signature, and a registry holding two churn model versions, the first of them champion."""
from __future__ import annotations

import pytest

from sparkship import artifacts
from sparkship.config import Settings
from sparkship.registry import Registry
from tests.helpers.server import NAME, SIGNATURE, server_rows


@pytest.fixture(scope="module")
def registry_setup(spark, tmp_path_factory):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import Imputer, StringIndexer, VectorAssembler

    settings = Settings.resolve(home=str(tmp_path_factory.mktemp("serve-home")))
    reg = Registry(settings)
    models = []
    for flip in (False, True):
        df = spark.createDataFrame(server_rows(flip), "age double, plan string, income double, label int")
        model = Pipeline(stages=[
            Imputer(inputCols=["age"], outputCols=["age_i"]),
            StringIndexer(inputCol="plan", outputCol="plan_ix", handleInvalid="keep"),
            VectorAssembler(inputCols=["age_i", "plan_ix", "income"], outputCol="features"),
            LogisticRegression(maxIter=30, regParam=0.01),
        ]).fit(df)
        manifest = {"name": NAME, "task": "classification", "label": "label", "algorithm": "logistic_regression",
                    "signature": SIGNATURE}
        staged = artifacts.stage(model, manifest, settings.models_root)
        mv = reg.register(NAME, staged, artifacts.read_manifest(staged))
        models.append((mv, model))
    reg.set_alias(NAME, "champion", models[0][0].version)
    return settings, models



@pytest.fixture(scope="module")
def data(spark, request):
    """The module's ``rows()`` with its ``SCHEMA``, cached for the module's tests."""
    df = spark.createDataFrame(request.module.rows(), request.module.SCHEMA).cache()
    df.count()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def arrow_data(data):
    return data.toArrow()


@pytest.fixture(scope="module")
def signature(data):
    """What a sparkship manifest records: the training table's column types."""
    return [{"name": f.name, "type": f.dataType.simpleString()} for f in data.schema.fields]
