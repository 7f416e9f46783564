"""Fit and save the GaussianMixture pipeline that tests/serving/test_models.py scores.

The tests load this saved model rather than fitting one: Spark's EM fit on the test rows hung a CI worker
(LAPACK's eigen-decomposition looping on a degenerate covariance) in a few full runs and never on this host, so a
fit at test time is a flaky step that the parity check does not need. Spark's ``transform()`` of the loaded model
is still the reference the tests compare with.

    .venv/bin/python scripts/make_gmm_fixture.py [--out tests/fixtures/spark40/gaussian_mixture]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "spark40", "gaussian_mixture"))
    out = parser.parse_args().out

    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.clustering import GaussianMixture
    from pyspark.ml.feature import Imputer, VectorAssembler
    from pyspark.sql import SparkSession
    from test_serving_models import SCHEMA, _rows

    spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
    data = spark.createDataFrame(_rows(), SCHEMA)
    # The "num" prep of test_serving_models.preps: a and b imputed, raw c kept (NaN passes through).
    prep = Pipeline(stages=[Imputer(inputCols=["a", "b"], outputCols=["ai", "bi"]),
                            VectorAssembler(inputCols=["ai", "bi", "c"], outputCol="f",
                                            handleInvalid="keep")]).fit(data)
    train = prep.transform(data.where("c is not null and not isnan(c)")).coalesce(1)
    gmm = GaussianMixture(featuresCol="f", k=2, seed=1, maxIter=5).fit(train)
    smallest = min(float(np.linalg.eigvalsh(g.cov.toArray()).min()) for g in gmm.gaussiansDF.collect())
    if not smallest > 1e-3:
        sys.exit(f"a near-singular covariance (smallest eigenvalue {smallest}): not a useful fixture")
    shutil.rmtree(out, ignore_errors=True)
    PipelineModel(stages=[prep, gmm]).write().save(out)
    for folder, _, files in os.walk(out):
        for name in files:
            if name.endswith(".crc") or name == "_SUCCESS":
                os.remove(os.path.join(folder, name))
    print(f"saved {out}: weights {gmm.weights}, smallest covariance eigenvalue {smallest:.3g}")
    spark.stop()


if __name__ == "__main__":
    main()
