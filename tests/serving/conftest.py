"""A registry holding two churn model versions, the first of them champion."""
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

