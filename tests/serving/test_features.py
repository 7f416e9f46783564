"""Parity of the JVM-free scorer's feature stages (serving.features, serving.selection, multi-column and
QuantileDiscretizer Bucketizers) with Spark's own transform().

Each pipeline is fitted with Spark on clean rows, saved, loaded by the scorer and scored on all rows (nulls,
NaN, categories and values unseen at fit time): every output column within 1e-9 of Spark's (after
vector_to_array), identical strings, the same rows dropped; the row path (score_one) agrees with the batch path
(Arrow and pandas).
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
from chispa import assert_approx_df_equality
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException

from sparkship.serving import InvalidRecordError, UnsupportedModelError, load
from tests.helpers.parity import assert_close, flatten_scorer, flatten_spark, vector_sizes

# A failed Spark job: an error the JVM raised (captured by pyspark, or not).
SPARK_FAILURE = (Py4JJavaError, PySparkException)

pytestmark = [pytest.mark.timeout(600), pytest.mark.seconds(26)]

N = 400
TOL = 1e-9
SCHEMA = "id long, x1 double, x2 double, x3 double, x4 double, cat string, label int"


def rows() -> list[tuple]:
    rnd = random.Random(11)
    rows = []
    for i in range(N):
        scoring_only = i % 8 == 0  # unseen categories and values live in rows the models never see
        x1 = rnd.gauss(0, 2)
        u = rnd.random()
        x1v = None if u < 0.06 else (math.nan if u < 0.12 else x1)
        x2 = rnd.uniform(-3, 7)
        x3 = float(rnd.choice([0, 0, 1, 2, 3]))
        x4 = rnd.choice([0.0, rnd.uniform(-1, 1), -2.5])
        cat = rnd.choices("abcd", weights=[40, 30, 20, 10])[0]
        if scoring_only:
            x3 = rnd.choice([x3, 7.0, math.nan])
            cat = rnd.choice([cat, "zz", None])
        label = int(x1 + 0.5 * x2 - x3 + (1.5 if cat in ("a", "c") else 0.0) + rnd.gauss(0, 1) > 1.0)
        rows.append((i, x1v, x2, x3, x4, cat, label))
    return rows


@pytest.fixture(scope="module")
def train(data):
    """Rows the estimators are fitted on: no NaN, no null, no unseen value."""
    return data.where("id % 8 != 0 and x1 is not null and not isnan(x1)")


def _save(model, tmp_path, name: str) -> str:
    path = str(tmp_path / name)
    model.write().save(path)
    return path


def _assert_matches_spark(spark, model, data, scorer, columns: list[str]) -> None:
    """The scorer's batch outputs (Arrow and pandas input) equal Spark's transform(); so does score_one."""
    arrow = data.orderBy("id").toArrow()
    ids = arrow["id"].to_numpy()
    result = scorer.score(arrow, columns=columns)
    theirs_df = model.transform(data)
    kept = sorted(r["id"] for r in theirs_df.select("id").collect())
    assert ids[result.rows].tolist() == kept, "the scorer keeps other rows than Spark"
    strings = [c for c in columns if scorer.schema[c][0] == "string"]
    vectors, scalars = vector_sizes(scorer, [c for c in columns if c not in strings])
    theirs = flatten_spark(theirs_df, vectors, scalars).cache()
    ours = flatten_scorer(spark, result, ids, vectors, scalars).cache()
    assert_close(ours, theirs)
    assert_approx_df_equality(ours, theirs, TOL, ignore_nullable=True, allow_nan_equality=True)
    if strings:
        expected = {r["id"]: [r[c] for c in strings] for r in theirs_df.select("id", *strings).collect()}
        got = {int(ids[i]): [result.columns[c][j] for c in strings] for j, i in enumerate(result.rows)}
        assert got == expected
    from_pandas = scorer.score(arrow.to_pandas(), columns=columns)
    assert from_pandas.rows.tolist() == result.rows.tolist()
    for c in columns:
        _assert_same(from_pandas.columns[c], result.columns[c], c)
    _assert_row_path(scorer, arrow, result, columns)


def _assert_same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.dtype == object or b.dtype == object:
        assert a.tolist() == b.tolist(), what
    else:
        assert np.allclose(a, b, rtol=0, atol=1e-12, equal_nan=True), what


def _assert_row_path(scorer, arrow, result, columns: list[str]) -> None:
    scored = result.records()
    for i, rec in enumerate(arrow.to_pylist()):
        one = scorer.score_one(rec, columns=columns)
        assert (one is None) == (scored[i] is None), f"row {i}: dropped by one path only"
        if one is not None:
            for c in columns:
                _assert_same(np.asarray(one[c], dtype=object if scorer.schema[c][0] == "string" else float),
                             np.asarray(scored[i][c], dtype=object if scorer.schema[c][0] == "string" else float),
                             f"row {i} column {c}")


def test_vector_stages_match_spark(spark, data, train, signature, tmp_path):
    """Binarizer (double and vector, single and multi column, negative threshold), MaxAbsScaler, RobustScaler
    (centering, scaling), Normalizer (p = 1, 3, inf), PCA, PolynomialExpansion (degree 3), ElementwiseProduct,
    DCT and its inverse, then a LogisticRegression on some of them."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import (
        DCT,
        PCA,
        Binarizer,
        ElementwiseProduct,
        MaxAbsScaler,
        Normalizer,
        PolynomialExpansion,
        RobustScaler,
        VectorAssembler,
    )
    from pyspark.ml.linalg import Vectors

    stages = [
        VectorAssembler(inputCols=["x1", "x2", "x3"], outputCol="v", handleInvalid="keep"),
        VectorAssembler(inputCols=["x1", "x4"], outputCol="v2", handleInvalid="keep"),
        VectorAssembler(inputCols=["x4", "x3", "x4", "x1"], outputCol="v4", handleInvalid="keep"),
        Binarizer(inputCol="x1", outputCol="x1_bin", threshold=0.3),
        Binarizer(inputCols=["x2", "v", "v2"], outputCols=["x2_bin", "v_bin", "v2_bin"], thresholds=[1.0, -0.5, 0.0]),
        Binarizer(inputCols=["x4", "v2"], outputCols=["x4_bin", "v2_bin2"], threshold=-0.2),
        MaxAbsScaler(inputCol="v", outputCol="v_maxabs"),
        RobustScaler(inputCol="v", outputCol="v_robust", withCentering=True),
        RobustScaler(inputCol="v2", outputCol="v2_robust", lower=0.1, upper=0.9),
        Normalizer(inputCol="v", outputCol="v_l1", p=1.0),
        Normalizer(inputCol="v", outputCol="v_l3", p=3.0),
        Normalizer(inputCol="v2", outputCol="v_linf", p=float("inf")),
        Normalizer(inputCol="v2", outputCol="v_l2"),
        PCA(inputCol="v", outputCol="v_pca", k=2),
        PolynomialExpansion(inputCol="v", outputCol="v_poly", degree=3),
        PolynomialExpansion(inputCol="v2", outputCol="v2_poly"),
        PolynomialExpansion(inputCol="v4", outputCol="v4_poly"),
        ElementwiseProduct(inputCol="v", outputCol="v_prod", scalingVec=Vectors.dense([2.0, -0.5, 0.0])),
        DCT(inputCol="v", outputCol="v_dct"),
        DCT(inputCol="v_poly", outputCol="v_idct", inverse=True),
        VectorAssembler(inputCols=["x1_bin", "x2_bin", "v_robust", "v_pca", "v_l1"], outputCol="features"),
        LogisticRegression(labelCol="label", regParam=0.05, maxIter=20),
    ]
    model = Pipeline(stages=stages).fit(train)
    scorer = load(_save(model, tmp_path, "vectors"), signature=signature)
    columns = ["x1_bin", "x2_bin", "v_bin", "v2_bin", "x4_bin", "v2_bin2", "v_maxabs", "v_robust", "v2_robust",
               "v_l1", "v_l3", "v_linf", "v_l2", "v_pca", "v_poly", "v2_poly", "v4_poly", "v_prod", "v_dct", "v_idct",
               "probability", "prediction"]
    _assert_matches_spark(spark, model, data, scorer, columns)
    assert scorer.schema["v_poly"] == ("vector", 19) and scorer.schema["v_pca"] == ("vector", 2)
    # v4 = (x4, x3, x4, x1) is stored sparse by the assembler where x4 = x3 = 0; with x1 NaN Spark's sparse
    # expansion then gives 0, not NaN, for the terms with a zero factor. Such rows are in the data.
    assert data.where("x4 = 0 and x3 = 0 and isnan(x1)").count() > 0


def test_bucketizers_match_spark(spark, data, train, signature, tmp_path):
    """Multi-column Bucketizer (splitsArray) and QuantileDiscretizer (saved as a Bucketizer), keep and skip."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import Bucketizer, QuantileDiscretizer

    model = Pipeline(stages=[
        Bucketizer(inputCols=["x1", "x2"], outputCols=["x1_b", "x2_b"], handleInvalid="keep",
                   splitsArray=[[-math.inf, -1.0, 0.0, 2.0, math.inf], [-math.inf, 0.0, math.inf]]),
        QuantileDiscretizer(inputCols=["x2", "x4"], outputCols=["x2_q", "x4_q"], numBuckets=4),
        QuantileDiscretizer(inputCol="x1", outputCol="x1_q", numBuckets=3, handleInvalid="skip"),
    ]).fit(train)
    path = _save(model, tmp_path, "buckets")
    assert all(s.meta.short_class == "Bucketizer" for s in load(path).stages)
    scorer = load(path, signature=signature)
    _assert_matches_spark(spark, model, data, scorer, ["x1_b", "x2_b", "x2_q", "x4_q", "x1_q"])
    assert 0 < len(scorer.score(data.toArrow()).dropped) < N  # NaN/null x1 rows dropped by the skip stage


@pytest.fixture(scope="module")
def selection_model(train):
    """StringIndexer -> IndexToString (labels from the indexer), VectorIndexer, VectorSlicer (indices and
    names), the three selectors, Interaction (nominal scalar, numeric, vector with nominal entries), LR."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import (
        ChiSqSelector,
        Imputer,
        IndexToString,
        Interaction,
        StringIndexer,
        UnivariateFeatureSelector,
        VarianceThresholdSelector,
        VectorAssembler,
        VectorIndexer,
        VectorSlicer,
    )

    stages = [
        StringIndexer(inputCol="cat", outputCol="cat_ix", handleInvalid="keep"),
        IndexToString(inputCol="cat_ix", outputCol="cat_back"),
        Imputer(inputCols=["x1"], outputCols=["x1_i"]),
        VectorAssembler(inputCols=["x3", "x2", "cat_ix", "x4"], outputCol="raw", handleInvalid="keep"),
        VectorIndexer(inputCol="raw", outputCol="vi", maxCategories=5, handleInvalid="keep"),
        VectorSlicer(inputCol="raw", outputCol="sliced", indices=[1], names=["x4", "cat_ix"]),
        ChiSqSelector(featuresCol="vi", outputCol="chi", labelCol="label", numTopFeatures=2),
        UnivariateFeatureSelector(featuresCol="raw", outputCol="uni", labelCol="label", selectionMode="numTopFeatures")
        .setSelectionThreshold(2).setFeatureType("continuous").setLabelType("categorical"),
        VarianceThresholdSelector(featuresCol="raw", outputCol="var", varianceThreshold=0.9),
        VectorAssembler(inputCols=["x3", "cat_ix"], outputCol="small", handleInvalid="keep"),
        Interaction(inputCols=["cat_ix", "x1_i", "small"], outputCol="inter"),
        VectorAssembler(inputCols=["sliced", "chi", "uni", "var", "inter"], outputCol="features"),
        LogisticRegression(labelCol="label", regParam=0.05, maxIter=20),
        IndexToString(inputCol="prediction", outputCol="pred_label", labels=["no", "yes"]),
    ]
    return Pipeline(stages=stages).fit(train)


def test_selection_stages_match_spark(spark, data, signature, selection_model, tmp_path):
    scorer = load(_save(selection_model, tmp_path, "selection"), signature=signature)
    columns = ["cat_ix", "cat_back", "vi", "sliced", "chi", "uni", "var", "inter", "probability", "prediction",
               "pred_label"]
    _assert_matches_spark(spark, selection_model, data, scorer, columns)
    vi = selection_model.stages[4]
    assert 0 in vi.categoryMaps and 2 in vi.categoryMaps  # x3 and cat_ix indexed as categorical
    # The Interaction's 'small' vector is sparse in Spark where x3 and cat_ix are both 0: its nominal entry
    # at 0 then adds nothing, where a dense one one-hot encodes it. Both cases occur in the data.
    rows = data.select("x3", "cat").collect()
    labels = selection_model.stages[0].labels
    zero_cat = [r["x3"] == 0 and r["cat"] == labels[0] for r in rows]
    assert any(zero_cat) and not all(zero_cat)


def test_vector_indexer_skip_and_error(spark, data, train, signature, tmp_path):
    """handleInvalid='skip' drops the rows Spark drops (unseen and NaN categorical values); 'error' fails where
    Spark fails."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler, VectorIndexer

    def fit(handle: str):
        return Pipeline(stages=[
            VectorAssembler(inputCols=["x3", "x2"], outputCol="raw", handleInvalid="keep"),
            VectorIndexer(inputCol="raw", outputCol="vi", maxCategories=5, handleInvalid=handle),
        ]).fit(train)

    skip = fit("skip")
    scorer = load(_save(skip, tmp_path, "vi_skip"), signature=signature)
    _assert_matches_spark(spark, skip, data, scorer, ["vi"])
    assert 0 < len(scorer.score(data.toArrow()).dropped) < N
    strict = fit("error")
    scorer = load(_save(strict, tmp_path, "vi_error"), signature=signature)
    ok = data.where("x3 in (0, 1, 2, 3)")
    _assert_matches_spark(spark, strict, ok, scorer, ["vi"])
    for x3 in (7.0, math.nan):
        bad = spark.createDataFrame([(0, 1.0, 1.0, x3, 0.0, "a", 0)], SCHEMA)
        with pytest.raises(Exception, match="VectorIndexer"):
            strict.transform(bad).collect()
        with pytest.raises(InvalidRecordError, match="VectorIndexer"):
            scorer.score_one(bad.collect()[0].asDict())
        with pytest.raises(InvalidRecordError) as err:
            scorer.score(bad.toArrow())
        assert err.value.row == 0


def test_failures_match_spark(spark, train, tmp_path):
    """A null vector fails Spark's vector stages and the scorer's; an index outside IndexToString's labels
    too; a model whose ML attributes the scorer cannot derive is refused at load."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import IndexToString, Interaction, MaxAbsScaler, StandardScaler, VectorSlicer
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([StructField("v", VectorUDT()), StructField("i", DoubleType())])
    fit_df = spark.createDataFrame([(Vectors.dense([1.0, -2.0]), 0.0), (Vectors.dense([3.0, 4.0]), 1.0)], schema)
    model = Pipeline(stages=[MaxAbsScaler(inputCol="v", outputCol="m"),
                             IndexToString(inputCol="i", outputCol="s", labels=["a", "b"])]).fit(fit_df)
    scorer = load(_save(model, tmp_path, "nulls"), signature=[{"name": "v", "type": "vector"},
                                                               {"name": "i", "type": "double"}])
    for bad, field in (({"v": None, "i": 0.0}, "v"), ({"v": [1.0, 1.0], "i": 2.0}, "i"),
                       ({"v": [1.0, 1.0], "i": -1.0}, "i")):
        with pytest.raises(SPARK_FAILURE):
            model.transform(spark.createDataFrame([(bad["v"] and Vectors.dense(bad["v"]), bad["i"])], schema)).collect()
        with pytest.raises(InvalidRecordError) as err:
            scorer.score_one(bad)
        assert err.value.field == field
    assert scorer.score_one({"v": [1.0, 1.0], "i": math.nan})["s"] == "a"  # Spark: NaN.toInt == 0

    scaled = Pipeline(stages=[StandardScaler(inputCol="v", outputCol="z")]).fit(fit_df)
    for stage, needs in ((VectorSlicer(inputCol="z", outputCol="o", names=["v_0"]), "ML attributes"),
                         (Interaction(inputCols=["i", "z"], outputCol="o"), "attributes"),
                         (IndexToString(inputCol="i", outputCol="o"), "labels")):
        path = _save(PipelineModel(stages=[*scaled.stages, stage]), tmp_path, stage.uid)
        with pytest.raises(SPARK_FAILURE):
            PipelineModel.load(path).transform(fit_df).collect()
        with pytest.raises(UnsupportedModelError, match=needs):
            load(path, signature=[{"name": "v", "type": "vector"}, {"name": "i", "type": "double"}])
