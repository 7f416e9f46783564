"""The JVM-free scorer's tree models against Spark's transform(), on both tree kernels and both paths.

Each DecisionTree, RandomForest and GBT model (classifiers, multiclass included, and regressors) is fitted once by
real Spark behind StringIndexer + VectorAssembler + VectorIndexer, so the trees split on categorical features
(a small and a larger category set, unseen categories at scoring) as well as continuous ones, some of which are
NaN at scoring. Pipelines without the categorical column cover the perfect-tree layout. Every model is loaded
with ``SPARKSHIP_TREE_KERNEL=numba`` and ``=numpy`` and scored in batch (Arrow) and row by row (``score_one``):
rawPrediction, probability and prediction within 1e-9 of Spark's, predictions exact. A batch large enough to be
split over threads gives exactly the single-threaded result.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
import pytest

from sparkship.errors import UsageError
from sparkship.serving import load, threads, tree_kernels

pytestmark = [pytest.mark.timeout(600), pytest.mark.seconds(90)]

N = 300
TOL = 1e-9
SCHEMA = "id long, a double, b double, c double, small string, large string, label int, label3 int, y double"
INPUTS = ["a", "b", "c", "small", "large"]
KERNELS = ("numba", "numpy")


def _rows(n: int, seed: int, nan: bool) -> list[tuple]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, c = rnd.gauss(0, 1), rnd.uniform(-2, 3), rnd.gauss(1, 0.7)
        small = rnd.choice(["x", "y", "z"] + (["unseen"] if nan else []))
        large = rnd.choice("abcdefgh" + ("q" if nan else ""))
        s = 0.9 * a - 0.6 * b + 0.5 * c + (0.8 if small == "y" else 0) + (0.7 if large in "aceg" else -0.4)
        s += rnd.gauss(0, 0.5)
        if nan and rnd.random() < 0.15:
            c = math.nan
        rows.append((i, a, b, c, small, large, int(s > 0.2), 0 if s < -0.5 else (1 if s < 0.8 else 2), s))
    return rows


def _prep():
    """One prep for every model: ``cont`` (a, b, c) and ``cat`` (a, b, c and the two indexed categories, marked
    categorical by VectorIndexer)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StringIndexer, VectorAssembler, VectorIndexer

    return Pipeline(stages=[
        StringIndexer(inputCols=["small", "large"], outputCols=["small_i", "large_i"], handleInvalid="keep"),
        VectorAssembler(inputCols=["a", "b", "c"], outputCol="cont", handleInvalid="keep"),
        VectorAssembler(inputCols=["a", "b", "c", "small_i", "large_i"], outputCol="raw", handleInvalid="keep"),
        VectorIndexer(inputCol="raw", outputCol="cat", maxCategories=10, handleInvalid="keep"),
    ])


def _models():
    from pyspark.ml import classification as c
    from pyspark.ml import regression as r

    return {
        "dt_classifier": c.DecisionTreeClassifier(maxDepth=5, maxBins=16),
        "dt_classifier_multiclass": c.DecisionTreeClassifier(labelCol="label3", maxDepth=4, maxBins=16),
        "rf_classifier": c.RandomForestClassifier(numTrees=12, maxDepth=5, maxBins=16, seed=3),
        "rf_classifier_multiclass": c.RandomForestClassifier(labelCol="label3", numTrees=10, maxDepth=4, seed=4),
        "gbt_classifier": c.GBTClassifier(maxIter=10, maxDepth=3, maxBins=16, seed=5),
        "dt_regressor": r.DecisionTreeRegressor(labelCol="y", maxDepth=5, maxBins=16),
        "rf_regressor": r.RandomForestRegressor(labelCol="y", numTrees=10, maxDepth=4, seed=6),
        "gbt_regressor": r.GBTRegressor(labelCol="y", maxIter=10, maxDepth=3, seed=7),
    }


NAMES = ["dt_classifier", "dt_classifier_multiclass", "rf_classifier", "rf_classifier_multiclass", "gbt_classifier",
         "dt_regressor", "rf_regressor", "gbt_regressor"]
CASES = [(name, cat) for name in NAMES for cat in (True, False)]


@pytest.fixture(scope="module")
def frames(spark):
    train = spark.createDataFrame(_rows(N, 1, nan=False), SCHEMA)
    score = spark.createDataFrame(_rows(N, 2, nan=True), SCHEMA).cache()
    score.count()
    yield train, score
    score.unpersist()


@pytest.fixture(scope="module")
def fitted(frames, tmp_path_factory):
    """(name, categorical) -> (saved PipelineModel([prep, model]) folder, Spark's outputs by column)."""
    from pyspark.ml import PipelineModel

    train, score = frames
    prep = _prep().fit(train)
    train_p, score_p = prep.transform(train).cache(), prep.transform(score).cache()
    root = tmp_path_factory.mktemp("trees")
    out = {}
    models = _models()
    assert sorted(models) == sorted(NAMES)
    for name, est in models.items():
        for cat in (True, False):
            model = est.copy().setFeaturesCol("cat" if cat else "cont").fit(train_p)
            path = str(root / f"{name}_{cat}")
            PipelineModel([prep, model]).save(path)
            out[(name, cat)] = (path, _spark_outputs(model, score_p))
    train_p.unpersist()
    score_p.unpersist()
    return out


@pytest.fixture(scope="module")
def arrow_rows(frames) -> pa.Table:
    return frames[1].select("id", *INPUTS).toArrow().sort_by("id")


def _spark_outputs(model, df) -> dict[str, np.ndarray]:
    from pyspark.ml.functions import vector_to_array

    out = model.transform(df)
    cols = [c for c in ("rawPrediction", "probability") if c in out.columns]
    pdf = out.select("id", "prediction", *[vector_to_array(c).alias(c) for c in cols]).toPandas()
    pdf = pdf.sort_values("id", ignore_index=True)
    res = {"prediction": pdf["prediction"].to_numpy(dtype=np.float64)}
    for c in cols:
        res[c] = np.array([list(v) for v in pdf[c]], dtype=np.float64)
    return res


def _load(path: str, kernel: str, monkeypatch):
    monkeypatch.setenv(tree_kernels.ENV, kernel)
    scorer = load(path)
    assert scorer.stages[-1].forest.kernel.name == kernel
    return scorer


def _assert_matches(ours: dict[str, np.ndarray], spark: dict[str, np.ndarray], what: str) -> None:
    for col, theirs in spark.items():
        mine = np.asarray(ours[col], dtype=np.float64)
        assert mine.shape == theirs.shape, f"{what} {col}: shape {mine.shape} vs Spark {theirs.shape}"
        if col == "prediction":
            assert np.array_equal(mine, theirs), f"{what}: predictions differ from Spark's"
        else:
            diff = np.abs(mine - theirs).max()
            assert diff <= TOL, f"{what} {col}: max difference {diff} from Spark's"


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name, categorical", CASES)
def test_batch_and_rows_match_spark(name, categorical, kernel, fitted, arrow_rows, monkeypatch):
    path, spark_out = fitted[(name, categorical)]
    scorer = _load(path, kernel, monkeypatch)
    assert scorer.stages[-1].forest.walk.perfect is not categorical
    cols = list(spark_out)
    batch = scorer.score(arrow_rows.drop(["id"]), columns=cols)
    _assert_matches(batch.columns, spark_out, f"{name} batch ({kernel})")
    records = arrow_rows.drop(["id"]).to_pylist()
    rows = [scorer.score_one(r, columns=cols) for r in records]
    _assert_matches({c: np.array([r[c] for r in rows]) for c in cols}, spark_out, f"{name} rows ({kernel})")


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name, categorical", [("rf_classifier", True), ("rf_classifier_multiclass", False),
                                               ("gbt_regressor", False)])
def test_threaded_split_equals_one_thread(name, categorical, kernel, fitted, arrow_rows, monkeypatch):
    path, spark_out = fitted[(name, categorical)]
    scorer = _load(path, kernel, monkeypatch)
    repeats = 2 * threads.MIN_BLOCK // arrow_rows.num_rows + 2  # enough rows for two blocks
    big = pa.concat_tables([arrow_rows.drop(["id"])] * repeats)
    cols = list(spark_out)
    monkeypatch.setenv(threads.ENV, "1")
    one = scorer.score(big, columns=cols).columns
    monkeypatch.setenv(threads.ENV, "2")
    two = scorer.score(big, columns=cols).columns
    for c in cols:
        assert np.array_equal(one[c], two[c]), f"{name} {c}: the threaded result differs"
    _assert_matches({c: v[: arrow_rows.num_rows] for c, v in two.items()}, spark_out, f"{name} threaded")


def test_kernels_give_identical_results(fitted, arrow_rows, monkeypatch):
    path, spark_out = fitted[("gbt_classifier", False)]
    data = arrow_rows.drop(["id"])
    numba_out = _load(path, "numba", monkeypatch).score(data, columns=list(spark_out)).columns
    numpy_out = _load(path, "numpy", monkeypatch).score(data, columns=list(spark_out)).columns
    for c in spark_out:
        assert np.array_equal(numba_out[c], numpy_out[c]), f"{c}: the numba and numpy kernels differ"


@pytest.mark.parametrize("env, value, message", [
    (tree_kernels.ENV, "gpu", "SPARKSHIP_TREE_KERNEL='gpu' is not one of auto, numba, numpy"),
    (threads.ENV, "zero", "SPARKSHIP_THREADS='zero' is not a positive number of threads"),
])
def test_bad_environment_values_are_refused_in_one_line(env, value, message, fitted, arrow_rows, monkeypatch):
    path, _ = fitted[("rf_classifier", False)]
    monkeypatch.setenv(env, value)
    with pytest.raises(UsageError) as info:
        scorer = load(path)
        scorer.score(pa.concat_tables([arrow_rows.drop(["id"])] * 60))
    assert str(info.value) == message
