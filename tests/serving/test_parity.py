"""Parity of the JVM-free scorer (sparkship.serving) with Spark's own transform().

One shared dataset (5,000 rows with NaN, nulls and categories unseen at fit time), one prep PipelineModel
fitted once, every model fitted once on its output; each saved model is loaded by the scorer and compared with
Spark's transform() of the same rows: max abs diff <= 1e-9 on probability/rawPrediction, equal predictions,
identical dropped rows. Vectors are flattened to one column per element for chispa's approximate comparison.
"""
from __future__ import annotations

import math
import random

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException

from sparkship.serving import InvalidRecordError, UnsupportedModelError, load
from tests.helpers.parity import assert_close, assert_row_path_matches, flatten_scorer, flatten_spark, vector_sizes

# A failed Spark job: an error the JVM raised (captured by pyspark, or not).
SPARK_FAILURE = (Py4JJavaError, PySparkException)

pytestmark = [pytest.mark.timeout(600), pytest.mark.seconds(136)]

N = 5000
TOL = 1e-9
SCHEMA = (
    "id long, x1 double, x2 double, x3 int, cat1 string, cat2 string, numcat double, flag boolean, "
    "x4 double, label int, label3 int, y double"
)


def rows() -> list[tuple]:
    rnd = random.Random(7)

    def maybe(v, p_null=0.05, p_nan=0.0):
        u = rnd.random()
        return None if u < p_null else (math.nan if u < p_null + p_nan else v)

    rows = []
    for i in range(N):
        scoring_only = i % 10 == 0  # rows the models never see: unseen categories live here
        c1 = rnd.choices("abcdef", weights=[30, 25, 20, 12, 8, 5])[0]
        c2 = rnd.choice(["p", "q", "r"])
        nc = rnd.choice([1.0, 2.5, 1e7, 1e-4, -3.0, math.nan])
        if scoring_only:
            c1 = rnd.choice([c1, "zz", "yy"])
            c2 = rnd.choice([c2, "unseen"])
            nc = rnd.choice([nc, 7.0, 1e-9])
        x1 = rnd.gauss(0, 1)
        x2 = rnd.uniform(0, 10)
        x3 = rnd.randint(0, 5)
        x4 = rnd.uniform(-5, 15)
        flag = rnd.random() < 0.4
        score = 0.9 * x1 - 0.2 * x2 + 0.4 * x3 + (1.2 if c1 in "ab" else -0.5) + (0.7 if flag else 0) + rnd.gauss(0, 1)
        label3 = 0 if score < -0.5 else (1 if score < 1.5 else 2)
        x3v = maybe(x3, 0.04)
        if x3v is not None and rnd.random() < 0.04:
            x3v = -1  # the Imputer's missingValue for x3
        rows.append((
            i, maybe(x1, 0.05, 0.05), maybe(x2, 0.05), x3v, maybe(c1, 0.05), c2, maybe(nc, 0.03), flag,
            maybe(x4, 0.0, 0.03), int(score > 0.5), label3, score * 2.0 + rnd.gauss(0, 0.5),
        ))
    return rows


@pytest.fixture(scope="module")
def prep(data):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import (
        Bucketizer,
        Imputer,
        MinMaxScaler,
        OneHotEncoder,
        StandardScaler,
        StringIndexer,
        VectorAssembler,
    )

    stages = [
        Imputer(inputCols=["x1"], outputCols=["x1_i"], strategy="mean"),
        Imputer(inputCols=["x2"], outputCols=["x2_i"], strategy="median"),
        Imputer(inputCols=["x3"], outputCols=["x3_i"], strategy="mode", missingValue=-1.0),
        StringIndexer(inputCols=["cat1", "cat2", "numcat", "x3"],
                      outputCols=["cat1_ix", "cat2_ix", "numcat_ix", "x3_ix"], handleInvalid="keep"),
        OneHotEncoder(inputCols=["cat1_ix", "cat2_ix"], outputCols=["cat1_oh", "cat2_oh"], handleInvalid="keep"),
        OneHotEncoder(inputCols=["numcat_ix"], outputCols=["numcat_oh"], dropLast=False),
        Bucketizer(inputCol="x4", outputCol="x4_b", splits=[-math.inf, 0.0, 5.0, 10.0, math.inf],
                   handleInvalid="keep"),
        VectorAssembler(inputCols=["x1_i", "x2_i", "x3_i", "cat1_oh", "cat2_oh", "numcat_oh", "cat1_ix", "flag",
                                   "x4_b", "x3_ix", "x2"], outputCol="f", handleInvalid="keep"),
        MinMaxScaler(inputCol="f", outputCol="f_mm"),
        StandardScaler(inputCol="f", outputCol="f_std", withMean=True, withStd=True),
    ]
    # Fitted on rows where the raw x2 (assembled with handleInvalid='keep') is present and x4 is not NaN (the
    # Bucketizer's extra 'keep' bucket is outside its nominal range for trees), so fitting sees no NaN; the scored
    # rows keep them (NaN features: NaN scores in LR, right branches in trees).
    train = data.where("id % 10 != 0 and x2 is not null and not isnan(x4)")
    model = Pipeline(stages=stages).fit(train)
    prepared = model.transform(train).cache()
    prepared.count()
    yield model, prepared
    prepared.unpersist()


@pytest.fixture(scope="module")
def saved(prep, tmp_path_factory):
    """Every model, fitted once on the prepared rows and saved as PipelineModel([prep, model])."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import (
        DecisionTreeClassifier,
        GBTClassifier,
        LogisticRegression,
        RandomForestClassifier,
    )
    from pyspark.ml.regression import (
        DecisionTreeRegressor,
        GBTRegressor,
        LinearRegression,
        RandomForestRegressor,
    )

    prep_model, prepared = prep
    root = tmp_path_factory.mktemp("parity-models")
    lr_bin = LogisticRegression(featuresCol="f_std", labelCol="label", regParam=0.01, maxIter=25).fit(prepared)
    lr_multi = LogisticRegression(featuresCol="f_std", labelCol="label3", family="multinomial",
                                  regParam=0.01, maxIter=25).fit(prepared)
    models = {
        "lr_binomial": lr_bin,
        "lr_binomial_threshold": lr_bin.copy({lr_bin.threshold: 0.3}),
        "lr_binomial_thresholds": lr_bin.copy({lr_bin.thresholds: [0.7, 0.3]}),
        "lr_multinomial": lr_multi,
        "lr_multinomial_thresholds": lr_multi.copy({lr_multi.thresholds: [0.5, 0.3, 0.2]}),
        "lr_l1_sparse": LogisticRegression(featuresCol="f_std", labelCol="label3", regParam=0.08,
                                           elasticNetParam=1.0, maxIter=25).fit(prepared),
        "linear_regression": LinearRegression(featuresCol="f_mm", labelCol="y", regParam=0.01).fit(prepared),
        "dt_classifier": DecisionTreeClassifier(featuresCol="f", labelCol="label3", maxDepth=5).fit(prepared),
        "rf_classifier": RandomForestClassifier(featuresCol="f", labelCol="label", numTrees=10, maxDepth=5,
                                                seed=3).fit(prepared),
        "gbt_classifier": GBTClassifier(featuresCol="f", labelCol="label", maxIter=10, maxDepth=4,
                                        seed=3).fit(prepared),
        "dt_regressor": DecisionTreeRegressor(featuresCol="f", labelCol="y", maxDepth=5).fit(prepared),
        "rf_regressor": RandomForestRegressor(featuresCol="f", labelCol="y", numTrees=10, maxDepth=5,
                                              seed=3).fit(prepared),
        "gbt_regressor": GBTRegressor(featuresCol="f", labelCol="y", maxIter=10, maxDepth=4,
                                      seed=3).fit(prepared),
    }
    out = {}
    for name, model in models.items():
        path = str(root / name)
        # Nested: the prep PipelineModel is itself a stage (the scorer flattens it).
        PipelineModel(stages=[prep_model, model]).write().save(path)
        out[name] = (path, PipelineModel.load(path))
    return out


def test_prep_stages_match_spark(spark, data, arrow_data, signature, prep, tmp_path):
    """Imputer (mean/median/mode, missingValue), multi-column StringIndexer on string/double/int/boolean
    inputs, OneHotEncoder (dropLast, keep), Bucketizer (keep), VectorAssembler (keep), MinMax and Standard
    scalers: every output column equals Spark's."""
    prep_model, _ = prep
    path = str(tmp_path / "prep")
    prep_model.write().save(path)
    scorer = load(path, signature=signature)
    columns = ["x1_i", "x2_i", "x3_i", "cat1_ix", "cat2_ix", "numcat_ix", "x3_ix", "x4_b",
               "cat1_oh", "numcat_oh", "f", "f_mm", "f_std"]
    result = scorer.score(arrow_data, columns=columns)
    assert len(result.dropped) == 0
    vectors, scalars = vector_sizes(scorer, columns)
    theirs = flatten_spark(prep_model.transform(data), vectors, scalars)
    ours = flatten_scorer(spark, result, arrow_data["id"].to_numpy(), vectors, scalars)
    assert_approx_df_equality(ours, theirs, TOL, ignore_nullable=True, allow_nan_equality=True)
    assert_row_path_matches(scorer, arrow_data, result, columns)


MODELS = [
    "lr_binomial", "lr_binomial_threshold", "lr_binomial_thresholds", "lr_multinomial",
    "lr_multinomial_thresholds", "lr_l1_sparse", "linear_regression", "dt_classifier", "rf_classifier",
    "gbt_classifier", "dt_regressor", "rf_regressor", "gbt_regressor",
]


@pytest.mark.parametrize("name", MODELS)
def test_model_matches_spark(name, spark, data, arrow_data, signature, saved):
    path, spark_model = saved[name]
    scorer = load(path, signature=signature)
    result = scorer.score(arrow_data)
    assert len(result.dropped) == 0 and result.num_input_rows == N
    vectors, scalars = vector_sizes(scorer, scorer.outputs)
    if name.startswith(("lr", "dt_c", "rf_c", "gbt_c")):
        assert set(vectors) == {"probability", "rawPrediction"} and scalars == ["prediction"]
    theirs = flatten_spark(spark_model.transform(data), vectors, scalars).cache()
    ours = flatten_scorer(spark, result, arrow_data["id"].to_numpy(), vectors, scalars).cache()
    assert_close(ours, theirs)  # a short report of the first differences before chispa's full table
    if vectors:  # classifiers: 0 prediction mismatches, exactly
        assert_df_equality(ours.select("id", "prediction"), theirs.select("id", "prediction"), ignore_nullable=True)
    assert_approx_df_equality(ours, theirs, TOL, ignore_nullable=True, allow_nan_equality=True)
    assert_row_path_matches(scorer, arrow_data, result, scorer.outputs)
    if name == "lr_l1_sparse":
        from sparkship.serving.reader import read_data

        stage_dir = scorer.stages[-1].meta.path
        assert read_data(stage_dir)[0]["coefficientMatrix"]["type"] == 0, "expected sparse (L1) coefficients"
    if name.startswith(("dt_", "rf_", "gbt_")):
        assert scorer.stages[-1].forest.categorical, "expected categorical splits (nominal features)"


@pytest.fixture(scope="module")
def skip_model(data, tmp_path_factory):
    """StringIndexer, Bucketizer and VectorAssembler in 'skip' mode: Spark drops rows; so must we."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import Bucketizer, StringIndexer, VectorAssembler

    pipeline = Pipeline(stages=[
        StringIndexer(inputCols=["cat1", "numcat"], outputCols=["c1", "nc"], handleInvalid="skip"),
        Bucketizer(inputCol="x4", outputCol="x4_b", splits=[-math.inf, 0.0, 5.0, math.inf], handleInvalid="skip"),
        VectorAssembler(inputCols=["c1", "nc", "x4_b", "x1", "x2"], outputCol="features", handleInvalid="skip"),
        LogisticRegression(labelCol="label", regParam=0.01, maxIter=20),
    ])
    path = str(tmp_path_factory.mktemp("skip") / "model")
    pipeline.fit(data.where("id % 10 != 0")).write().save(path)
    return path, PipelineModel.load(path)


def test_skip_modes_drop_the_same_rows(spark, data, arrow_data, signature, skip_model):
    path, spark_model = skip_model
    scorer = load(path, signature=signature)
    result = scorer.score(arrow_data)
    ids = arrow_data["id"].to_numpy()
    theirs_df = spark_model.transform(data)
    spark_kept = {r["id"] for r in theirs_df.select("id").collect()}
    assert set(ids[result.rows].tolist()) == spark_kept
    assert set(ids[result.dropped].tolist()) == set(ids.tolist()) - spark_kept
    assert 0 < len(result.dropped) < N
    # Each stage drops its share: unseen/null labels, NaN buckets, NaN/null assembler inputs.
    droppers = {scorer.stages[i].uid for i in range(3)}
    assert set(result.dropped_by.values()) == droppers
    vectors, scalars = vector_sizes(scorer, scorer.outputs)
    theirs = flatten_spark(theirs_df, vectors, scalars)
    ours = flatten_scorer(spark, result, ids, vectors, scalars)
    assert_approx_df_equality(ours, theirs, TOL, ignore_nullable=True)
    assert_row_path_matches(scorer, arrow_data, result, scorer.outputs)


def test_error_modes_fail_where_spark_fails(spark, data, arrow_data, signature, tmp_path):
    """handleInvalid='error': an unseen label or a NaN is refused by both, naming the column."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StringIndexer, VectorAssembler

    train = data.where("id % 10 != 0 and cat1 is not null and x1 is not null and not isnan(x1)")
    model = Pipeline(stages=[
        StringIndexer(inputCol="cat1", outputCol="c1"),
        VectorAssembler(inputCols=["c1", "x1"], outputCol="features"),
    ]).fit(train)
    path = str(tmp_path / "strict")
    model.write().save(path)
    scorer = load(path, signature=signature)
    good = {"cat1": "a", "x1": 0.5}
    assert scorer.score_one(good, columns=["features"]) == {"features": [model.stages[0].labels.index("a"), 0.5]}
    for bad, field in (({"cat1": "zz", "x1": 0.5}, "cat1"), ({"cat1": None, "x1": 0.5}, "cat1"),
                       ({"cat1": "a", "x1": math.nan}, "x1"), ({"cat1": "a", "x1": None}, "x1")):
        with pytest.raises(InvalidRecordError) as err:
            scorer.score_one(bad)
        assert err.value.field == field
        with pytest.raises(SPARK_FAILURE):
            model.transform(spark.createDataFrame([bad], "cat1 string, x1 double")).collect()
    with pytest.raises(InvalidRecordError) as err:
        scorer.score(arrow_data)  # the table holds unseen labels, nulls and NaN
    assert err.value.field in ("cat1", "x1") and err.value.row is not None


def test_signature_derived_without_manifest(saved, arrow_data):
    """Without a manifest the input types come from the stages: the scores are the same."""
    path, _ = saved["rf_classifier"]
    derived = load(path)
    types = derived.signature.types
    assert types["cat1"] == "string" and types["numcat"] == "double" and types["x3"] == "bigint"
    assert types["x1"] == "double" and "label" not in types and "id" not in types
    assert types["flag"] == "double"  # a VectorAssembler input: booleans are given as 0/1
    typed = load(path, signature=[{"name": "x3", "type": "int"}, {"name": "flag", "type": "boolean"},
                                  *({"name": n, "type": t} for n, t in types.items() if n not in ("x3", "flag"))])
    for rec in arrow_data.slice(0, 300).to_pylist():
        a = typed.score_one(rec)
        assert derived.score_one({**rec, "flag": float(rec["flag"])}) == a


def test_unsupported_stage_and_param_are_refused_at_load(spark, saved, tmp_path):
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import MinHashLSH
    from pyspark.ml.linalg import Vectors

    _, rf_pipeline = saved["dt_regressor"]
    dt = rf_pipeline.stages[-1]
    path = str(tmp_path / "leaf")
    PipelineModel(stages=[dt.copy({dt.leafCol: "leaf"})]).write().save(path)
    with pytest.raises(UnsupportedModelError, match="leafCol"):
        load(path)
    path = str(tmp_path / "minhash")
    lsh = MinHashLSH(inputCol="v", outputCol="h").fit(spark.createDataFrame([(Vectors.dense([1.0, 0.0]),)], ["v"]))
    PipelineModel(stages=[lsh]).write().save(path)
    with pytest.raises(UnsupportedModelError, match="org.apache.spark.ml.feature.MinHashLSHModel"):
        load(path)


def test_scorer_never_imports_pyspark(saved, arrow_data):
    import subprocess
    import sys

    path, _ = saved["gbt_classifier"]
    code = (
        "import sys, json; from sparkship.serving import load; s = load(sys.argv[1]); "
        "r = s.score_one({'x1': 0.1, 'x2': None, 'x3': 2, 'cat1': 'zz', 'cat2': 'p', 'numcat': 2.5, "
        "'flag': 1.0, 'x4': 3.0}); "
        "assert not [m for m in sys.modules if m.startswith(('pyspark', 'py4j'))], 'pyspark imported'; "
        "print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '"prediction"' in out.stdout
