"""Parity of the JVM-free SQLTransformer, TargetEncoderModel and RFormulaModel with Spark's transform().

The SQL statement exercises the documented subset (arithmetic, integer vs double, CASE, CAST/TRY_CAST,
COALESCE, NaN comparisons, string and math functions, WHERE) on rows with nulls, NaN and zeros; Spark 4.0's
default ANSI mode is matched, errors included; unsupported constructs are refused at load, named.
"""
from __future__ import annotations

import math
import random

import pytest
from chispa import assert_approx_df_equality
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException

from sparkship.serving import InvalidRecordError, UnsupportedModelError, load
from tests.helpers.parity import assert_close, assert_row_path_matches, flatten_scorer, flatten_spark, vector_sizes

# A failed Spark job: an error the JVM raised (captured by pyspark, or not).
SPARK_FAILURE = (Py4JJavaError, PySparkException)

pytestmark = [pytest.mark.timeout(600), pytest.mark.seconds(32)]

SCHEMA = "id long, x double, n int, big bigint, s string, flag boolean, label int"
STATEMENT = (
    "SELECT *, x * 2.5D + n AS a, n / 4 AS b, n div 3 AS c, n % 3 AS d, -x AS e, big * 3 - n AS bb, "
    "CASE WHEN x IS NULL THEN -1.0D WHEN x > 1 THEN sqrt(x) ELSE ln(x + 10) END AS f, "
    "coalesce(x, n, 0) AS g, CAST(x AS STRING) AS h, CAST(n AS DOUBLE) + 0.5 AS i, TRY_CAST(x * 1e9 AS INT) AS j, "
    "upper(trim(s)) AS k, length(s) AS l, concat(s, '-', CAST(n AS STRING)) AS m, x = x AS o, x > 100 AS p, "
    "greatest(x, n) AS q, least(x, 0.5D) AS q2, round(x, 1) AS r, if(flag, 1, 0) AS t, flag AND x > 0 AS u, "
    "flag OR x > 0 AS v, n IN (1, 2, NULL) AS w, x BETWEEN -1 AND 1 AS y, "
    "CASE WHEN n <> 0 THEN 100 / n ELSE 0 END AS z, isnan(x) AS nn, nanvl(x, -9.0D) AS nv, pow(x, 2) AS pw, "
    "log10(abs(x)) AS lg, exp(x / 10) AS ex, x <=> NULL AS ns, nullif(n, 1) AS nf, CAST(flag AS INT) AS fi, "
    "TRY_CAST(x AS BIGINT) AS xb, lower(s) AS lo "
    "FROM __THIS__ WHERE n IS NULL OR n < 1000"
)


def rows() -> list[tuple]:
    rnd = random.Random(5)
    rows = []
    for i in range(200):
        x = rnd.choice([None, math.nan, 0.0, -0.0, -2.5, 0.25, 1.5, 2.25, 12.0, -1.0, 1e5, 0.05, 0.15])
        n = rnd.choice([None, 0, 1, 2, 3, -7, 5000, 999])
        s = rnd.choice([None, "", " ab ", "Straße", "é", "x y", "  "])
        rows.append((i, x, n, rnd.choice([None, 0, 10**12, -3]), s, rnd.choice([None, True, False]),
                     rnd.randint(0, 1)))
    return rows


def _save(stages, path):
    from pyspark.ml import PipelineModel

    PipelineModel(stages=stages).write().save(path)
    return PipelineModel.load(path)


def _ours_as_spark(spark, theirs, scorer, records, columns):
    """Score ``records`` on the row path and the batch path; both as DataFrames (id + ``columns``) with Spark's
    schema, ``id`` taken from the records."""
    import pyarrow as pa

    schema = theirs.select("id", *columns).schema
    one = [(r["id"], scorer.score_one(r, columns=columns)) for r in records]
    row_path = [(i, *(o[c] for c in columns)) for i, o in one if o is not None]
    batch = scorer.score(pa.Table.from_pylist(records), columns=columns)
    batch_path = [(records[j]["id"], *(r[c] for c in columns)) for j, r in enumerate(batch.records()) if r is not None]
    return (spark.createDataFrame(row_path, schema).orderBy("id"),
            spark.createDataFrame(batch_path, schema).orderBy("id"), batch)


def test_sql_transformer_matches_spark(spark, data, signature, tmp_path):
    from pyspark.ml.feature import SQLTransformer

    model = _save([SQLTransformer(statement=STATEMENT)], str(tmp_path / "sql"))
    scorer = load(str(tmp_path / "sql"), signature=signature)
    theirs = model.transform(data)
    columns = [c for c in theirs.columns if c in scorer.schema]  # SELECT * passes on the inputs the SQL reads
    assert set(theirs.columns) - set(columns) == {"id", "label"}
    records = [r.asDict() for r in data.collect()]
    by_row, by_batch, batch = _ours_as_spark(spark, theirs, scorer, records, columns)
    expected = theirs.select("id", *columns).orderBy("id")
    for ours in (by_row, by_batch):
        assert_approx_df_equality(ours, expected, 1e-9, ignore_nullable=True, allow_nan_equality=True)
    assert 0 < len(batch.dropped) < len(records)  # the WHERE dropped the n >= 1000 rows, as Spark did


# Literals with a point are decimals in Spark: types, exact values and rounding follow Spark's decimal rules.
DECIMAL_STATEMENT = (
    "SELECT *, CASE WHEN x > 1 THEN 1.0 ELSE 0.0 END AS d1, n * 2.5 AS d2, n / 3.0 AS d3, 1.5 / nullif(n, 0) AS d4, "
    "0.1 + 0.2 AS d5, n + 0.05 - 1 AS d6, x * 0.3 AS d7, coalesce(n, 0.125) AS d8, -0.5 * abs(n) AS d9, "
    "CAST(n * 1.75 AS INT) AS d10, CASE WHEN n > 2 THEN n ELSE 0.5 END AS d11, n > 2.5 AS d12, "
    "n IN (1.0, 2.50) AS d13, big * 0.001 AS d14, 2 / 3.000 AS d15, sqrt(n * 0.5) AS d16 "
    "FROM __THIS__ WHERE n IS NULL OR n < 1000"
)


def test_decimal_literals_follow_spark(spark, data, signature, tmp_path):
    from pyspark.ml.feature import SQLTransformer
    from pyspark.sql import functions as F

    model = _save([SQLTransformer(statement=DECIMAL_STATEMENT)], str(tmp_path / "sql"))
    scorer = load(str(tmp_path / "sql"), signature=signature)
    theirs = model.transform(data)
    columns = [c for c in theirs.columns if c.startswith("d")]
    spark_types = {f.name: f.dataType.simpleString() for f in theirs.schema.fields if f.name in columns}
    assert "decimal(2,1)" == spark_types["d1"] and spark_types["d3"].startswith("decimal")
    stage = scorer.stages[0]
    assert {c: stage.item_types[c] for c in columns} == spark_types
    # Compared as doubles: the scorer hands decimals on as doubles (Spark's cast of the exact decimal).
    expected = theirs.select("id", *[F.col(c).cast("double" if spark_types[c].startswith("decimal") else
                                                   spark_types[c]).alias(c) for c in columns]).orderBy("id")
    records = [r.asDict() for r in data.collect()]
    for ours in _ours_as_spark(spark, expected, scorer, records, columns)[:2]:
        assert_approx_df_equality(ours, expected, 0.0, ignore_nullable=True, allow_nan_equality=True)


@pytest.mark.parametrize("statement, bad", [
    ("SELECT *, 1 / n AS r FROM __THIS__", {"n": 0}),
    ("SELECT *, 1.5 / n AS r FROM __THIS__", {"n": 0}),
    ("SELECT *, x / (x - 1.0D) AS r FROM __THIS__", {"x": 1.0}),
    ("SELECT *, n % n AS r FROM __THIS__", {"n": 0}),
    ("SELECT *, n * n AS r FROM __THIS__", {"n": 2**31 - 1}),
    ("SELECT *, big * big AS r FROM __THIS__", {"big": 2**40}),
    ("SELECT *, CAST(x AS INT) AS r FROM __THIS__", {"x": 1e10}),
    ("SELECT *, CAST(x AS INT) AS r FROM __THIS__", {"x": math.nan}),
])
def test_ansi_errors_fail_like_spark(spark, signature, tmp_path, statement, bad):
    from pyspark.ml.feature import SQLTransformer

    model = _save([SQLTransformer(statement=statement)], str(tmp_path / "sql"))
    scorer = load(str(tmp_path / "sql"), signature=signature)
    good = {"id": 0, "x": 2.0, "n": 2, "big": 3, "s": "a", "flag": True, "label": 1}
    record = {**good, **bad}
    spark_good = model.transform(spark.createDataFrame([good], SCHEMA)).collect()[0]
    assert scorer.score_one(good)["r"] == spark_good["r"]
    with pytest.raises(SPARK_FAILURE):
        model.transform(spark.createDataFrame([record], SCHEMA)).collect()
    with pytest.raises(InvalidRecordError):
        scorer.score_one(record)
    with pytest.raises(InvalidRecordError) as err:
        scorer.score([good, record])
    assert err.value.row == 1


@pytest.mark.parametrize("statement, construct", [
    ("SELECT a.id FROM __THIS__ a JOIN __THIS__ b ON a.id = b.id", "JOIN"),
    ("SELECT n, count(*) AS c FROM __THIS__ GROUP BY n", "GROUP"),
    ("SELECT *, sum(x) OVER (PARTITION BY n) AS w FROM __THIS__", "window"),
    ("SELECT * FROM (SELECT * FROM __THIS__)", "__THIS__"),
    ("SELECT *, (SELECT max(x) FROM __THIS__) AS m FROM __THIS__", "subquer"),
    ("SELECT *, soundex(s) AS m FROM __THIS__", "SOUNDEX"),
    ("SELECT *, CAST(s AS DOUBLE) AS m FROM __THIS__", "CAST from string"),
    ("SELECT *, n % 2.5 AS m FROM __THIS__", "decimal"),
    ("SELECT * FROM __THIS__ ORDER BY x", "ORDER"),
    ("SELECT *, x + 1 FROM __THIS__", "alias"),
])
def test_unsupported_sql_is_refused_at_load(spark, signature, tmp_path, statement, construct):
    from pyspark.ml.feature import SQLTransformer

    _save([SQLTransformer(statement=statement)], str(tmp_path / "sql"))
    with pytest.raises(UnsupportedModelError) as err:
        load(str(tmp_path / "sql"), signature=signature)
    assert construct.lower() in str(err.value).lower()


def _formula_rows() -> list[tuple]:
    rnd = random.Random(9)
    rows = []
    for i in range(240):
        scoring_only = i % 4 == 0
        s = rnd.choice(["a", "b", "c", None] + (["unseen"] if scoring_only else []))
        k = rnd.choice([0, 1, 2, 3, None] + ([9] if scoring_only else []))
        kd = rnd.choice([0.0, 1.0, 2.0, None] + ([math.nan, 7.0, 1.5] if scoring_only else []))
        x = rnd.gauss(0, 1)
        label = int(x + (s == "a") + 0.3 * (k or 0) + rnd.gauss(0, 1) > 0.8)
        rows.append((i, x, s, k, kd, rnd.random() < 0.5, label, rnd.choice(["yes", "no", "maybe"]),
                     x * 2 + rnd.gauss(0, 0.1)))
    return rows


FORMULA_SCHEMA = "id long, x double, s string, k int, kd double, flag boolean, label int, slabel string, y double"


@pytest.fixture(scope="module")
def formula_data(spark):
    df = spark.createDataFrame(_formula_rows(), FORMULA_SCHEMA).cache()
    df.count()
    yield df
    df.unpersist()


def _compare_models(spark, spark_model, scorer, scoring_df, columns):
    """Batch path vs Spark (vectors flattened, 1e-9), then the row path vs the batch path."""
    arrow = scoring_df.toArrow()
    result = scorer.score(arrow, columns=columns)
    assert len(result.dropped) == 0
    vectors, scalars = vector_sizes(scorer, columns)
    ids = arrow["id"].to_numpy()
    assert_close(flatten_scorer(spark, result, ids, vectors, scalars),
                  flatten_spark(spark_model.transform(scoring_df), vectors, scalars))
    assert_row_path_matches(scorer, arrow, result, columns, sample=arrow.num_rows)
    return result


def test_rformula_matches_spark(spark, formula_data, tmp_path):
    """RFormula (numeric, string with unseen/null values under handleInvalid='keep', boolean terms) feeding a
    LogisticRegression; and a string label indexed at fit time but absent when scoring."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import RFormula

    for name, formula, label in (("numeric_label", "label ~ x + s + flag", "label"),
                                 ("string_label", "slabel ~ x + s", "slabel")):
        # The string label is indexed into RFormula's labelCol ("label"), so that column must not exist yet.
        data = formula_data if label == "label" else formula_data.drop("label")
        train = data.where("id % 4 != 0 and s is not null")
        pipeline = Pipeline(stages=[
            RFormula(formula=formula, handleInvalid="keep"),
            LogisticRegression(regParam=0.01, maxIter=10),
        ])
        path = str(tmp_path / name)
        pipeline.fit(train).write().save(path)
        from pyspark.ml import PipelineModel

        spark_model = PipelineModel.load(path)
        scorer = load(path, signature=[{"name": f.name, "type": f.dataType.simpleString()}
                                       for f in data.schema.fields])
        assert label not in scorer.input_names
        scoring = data.drop(label)  # the label is not there when scoring
        _compare_models(spark, spark_model, scorer, scoring, ["features", "probability", "prediction"])


def test_target_encoder_matches_spark(spark, formula_data, tmp_path):
    """TargetEncoder (binary with smoothing and handleInvalid='keep' over int and double indices with nulls,
    unseen values and NaN; continuous) feeding a LogisticRegression."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import TargetEncoder, VectorAssembler

    pipeline = Pipeline(stages=[
        TargetEncoder(inputCols=["k", "kd"], outputCols=["k_te", "kd_te"], labelCol="label", targetType="binary",
                      handleInvalid="keep", smoothing=2.0),
        TargetEncoder(inputCol="k", outputCol="k_y", labelCol="y", targetType="continuous", handleInvalid="keep"),
        VectorAssembler(inputCols=["k_te", "kd_te", "k_y", "x"], outputCol="features"),
        LogisticRegression(regParam=0.01, maxIter=20),
    ])
    path = str(tmp_path / "te")
    pipeline.fit(formula_data.where("id % 4 != 0")).write().save(path)
    spark_model = PipelineModel.load(path)
    signature = [{"name": f.name, "type": f.dataType.simpleString()} for f in formula_data.schema.fields]
    scorer = load(path, signature=signature)
    _compare_models(spark, spark_model, scorer, formula_data, ["k_te", "kd_te", "k_y", "probability"])
    # handleInvalid='error': an unseen index fails in both.
    strict = TargetEncoder(inputCol="k", outputCol="k_te", labelCol="label").fit(formula_data.where("id % 4 != 0"))
    strict_path = str(tmp_path / "te_strict")
    _save([strict], strict_path)
    strict_scorer = load(strict_path, signature=signature)
    with pytest.raises(InvalidRecordError):
        strict_scorer.score_one({"k": 9})
    with pytest.raises(SPARK_FAILURE):
        strict.transform(formula_data.where("k = 9")).collect()
