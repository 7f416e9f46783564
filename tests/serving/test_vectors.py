"""VectorAssembler over vector columns (and mixes of vectors and numbers) and VectorSizeHint in the JVM-free
scorer, compared with Spark's own transform(): nulls, NaN, handleInvalid keep/skip/error (VectorAssembler) and
error/skip/optimistic (VectorSizeHint); vector inputs on the row path (lists), from pandas (lists, numpy arrays)
and from Arrow (list<double>, fixed_size_list<double>).
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
from chispa import assert_approx_df_equality, assert_df_equality

from sparkship.serving import InvalidRecordError, load

pytestmark = [pytest.mark.timeout(600), pytest.mark.seconds(34)]

N = 300
SCHEMA = "id long, x double, k int, flag boolean, v vector, w vector, label int"


def _schema(ddl: str):
    """A StructType from a DDL string where ``vector`` means Spark ML's VectorUDT (DDL has no name for it)."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import BooleanType, DoubleType, IntegerType, LongType, StructField, StructType

    types = {"long": LongType(), "double": DoubleType(), "int": IntegerType(), "boolean": BooleanType(),
             "vector": VectorUDT()}
    return StructType([StructField(n, types[t]) for n, t in (f.split() for f in ddl.split(", "))])


def _rows(bad: bool) -> list[tuple]:
    """``bad`` adds null/NaN numbers, null vectors and NaN inside vectors."""
    from pyspark.ml.linalg import Vectors

    rnd = random.Random(11)
    rows = []
    for i in range(N):
        x = rnd.gauss(0, 1)
        v = [rnd.gauss(0, 1), rnd.uniform(-2, 2), 0.0 if i % 3 == 0 else rnd.random()]
        w = [rnd.random(), rnd.gauss(1, 1)]
        if bad:
            u = rnd.random()
            x = None if u < 0.05 else math.nan if u < 0.1 else x
            if rnd.random() < 0.05:
                v[1] = math.nan
            v = None if rnd.random() < 0.06 else v
        label = int(x is not None and x == x and x + (v[0] if v else 0) > 0)
        rows.append((i, x, rnd.randint(-3, 3), rnd.random() < 0.5, None if v is None else Vectors.dense(v),
                     Vectors.dense(w), label))
    return rows


@pytest.fixture(scope="module")
def clean(spark):
    return spark.createDataFrame(_rows(False), _schema(SCHEMA)).cache()


@pytest.fixture(scope="module")
def dirty(spark):
    return spark.createDataFrame(_rows(True), _schema(SCHEMA)).cache()


def _arrow(df):
    """The DataFrame as Arrow with its vectors as list<double> (how a caller hands vectors over)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    # vector_to_array refuses a null vector: keep it null
    cols = [F.when(F.col(c).isNull(), None).otherwise(vector_to_array(c)).alias(c) if c in ("v", "w") else F.col(c)
            for c in df.columns]
    return df.select(*cols).orderBy("id").toArrow()


def _save(stages, df, path: str) -> str:
    from pyspark.ml import Pipeline

    Pipeline(stages=stages).fit(df).write().overwrite().save(path)
    return path


def _expected(spark_model, df, out: str, size: int):
    """Spark's output vector as one column per element (NaN compared as equal), keyed by id."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    arr = vector_to_array(out)
    return spark_model.transform(df).select(F.col("id"), *[arr[i].alias(f"o{i}") for i in range(size)]).orderBy("id")


def _ours(spark, result, ids, out: str, size: int):
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    vals = result.columns[out]
    rows = [(int(ids[r]), *[float(x) for x in vals[j]]) for j, r in enumerate(result.rows.tolist())]
    schema = StructType([StructField("id", LongType())] + [StructField(f"o{i}", DoubleType()) for i in range(size)])
    return spark.createDataFrame(rows, schema).orderBy("id")


def _row_path(scorer, table, out: str):
    """score_one over every record: (ids scored, their output lists)."""
    kept, values = [], []
    for rec in table.to_pylist():
        one = scorer.score_one(rec)
        if one is not None:
            kept.append(rec["id"])
            values.append(one[out] if out in one else scorer.score_one(rec, columns=[out])[out])
    return kept, values


def _assert_matches_spark(spark, scorer, spark_model, df, out: str, size: int, tol: float = 0.0) -> None:
    """Batch (Arrow and pandas) and row paths against Spark: exact for assembled vectors, ``tol`` for models."""
    table = _arrow(df)
    ids = np.asarray(table.column("id").to_pylist())
    theirs = _expected(spark_model, df, out, size)
    for data in (table, table.to_pandas()):
        ours = _ours(spark, scorer.score(data, columns=[out]), ids, out, size)
        if tol:
            assert_approx_df_equality(ours, theirs, tol, ignore_nullable=True, allow_nan_equality=True)
        else:
            assert_df_equality(ours, theirs, ignore_nullable=True, allow_nan_equality=True)
    kept, values = _row_path(scorer, table, out)
    expected = theirs.toPandas()
    assert kept == expected["id"].tolist()
    np.testing.assert_allclose(np.asarray(values).reshape(len(kept), size), expected.drop(columns="id").to_numpy(),
                               rtol=0, atol=tol)


@pytest.mark.parametrize("handle", ["keep", "skip"])
def test_assembler_over_vectors_and_numbers_matches_spark(spark, dirty, tmp_path, handle):
    """VectorSizeHint + VectorAssembler([x, v, k, flag, w]): nulls and NaN as Spark keeps or drops them."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import VectorAssembler, VectorSizeHint

    stages = [VectorSizeHint(inputCol="v", size=3, handleInvalid="optimistic"),
              VectorSizeHint(inputCol="w", size=2, handleInvalid="error"),
              VectorAssembler(inputCols=["x", "v", "k", "flag", "w"], outputCol="out", handleInvalid=handle)]
    path = _save(stages, dirty, str(tmp_path / "m"))
    assert load(path).signature.types == {"v": "vector", "w": "vector", "x": "double", "k": "double",
                                          "flag": "double"}  # derived: a saved model does not know booleans
    scorer = load(path, signature=[{"name": f.name, "type": f.dataType.simpleString()} for f in dirty.schema])
    assert scorer.schema["out"] == ("vector", 8)
    _assert_matches_spark(spark, scorer, PipelineModel.load(path), dirty, "out", 8)


def test_assembler_error_mode_fails_where_spark_fails(spark, clean, dirty, tmp_path):
    """handleInvalid='error': a null vector or a NaN number fails both; NaN inside a vector does not."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import VectorAssembler, VectorSizeHint

    stages = [VectorSizeHint(inputCol="v", size=3, handleInvalid="optimistic"),
              VectorAssembler(inputCols=["v", "x"], outputCol="out")]
    path = _save(stages, clean, str(tmp_path / "m"))
    spark_model, scorer = PipelineModel.load(path), load(path)
    with pytest.raises(Exception, match="null|NaN"):
        spark_model.transform(dirty).collect()
    with pytest.raises(InvalidRecordError, match="null|NaN"):
        scorer.score(_arrow(dirty))
    from pyspark.ml.linalg import Vectors

    nan_inside = spark.createDataFrame([(0, 1.0, 0, True, Vectors.dense([math.nan, 1.0, 2.0]),
                                         Vectors.dense([1.0, 2.0]), 1)], _schema(SCHEMA))
    _assert_matches_spark(spark, scorer, spark_model, nan_inside, "out", 4)
    _assert_matches_spark(spark, scorer, spark_model, clean, "out", 4)


def test_assembler_over_vector_without_hint_types_it_from_the_model(spark, clean, tmp_path):
    """No VectorSizeHint on ``v``: the derived signature still types it as a vector, since the size the scaler
    was fitted on leaves room for only that (``v`` is the assembler's one input of open width: ``w`` has a
    hint, ``x_i``/``k_i`` come from the Imputer), and scoring matches."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import Imputer, StandardScaler, VectorAssembler, VectorSizeHint

    stages = [VectorSizeHint(inputCol="w", size=2),
              Imputer(inputCols=["x", "k"], outputCols=["x_i", "k_i"]),
              VectorAssembler(inputCols=["x_i", "w", "k_i", "v"], outputCol="raw"),
              StandardScaler(inputCol="raw", outputCol="features", withMean=True),
              LogisticRegression(maxIter=20)]
    path = _save(stages, clean, str(tmp_path / "m"))
    scorer = load(path)
    assert scorer.signature.types == {"w": "vector", "x": "double", "k": "double", "v": "vector"}
    with pytest.raises(InvalidRecordError, match="expects 3"):
        scorer.score_one({"w": [1.0, 2.0], "x": 1.0, "k": 2, "v": [1.0, 2.0]})
    assert scorer.schema["raw"] == ("vector", 7)
    _assert_matches_spark(spark, scorer, PipelineModel.load(path), clean, "probability", 2, tol=1e-9)


def test_vector_inputs_from_pandas_arrays_and_fixed_size_lists(spark, clean, tmp_path):
    """A pandas column of numpy arrays and an Arrow fixed_size_list column score like list<double>."""
    import pyarrow as pa
    from pyspark.ml.feature import VectorAssembler, VectorSizeHint

    stages = [VectorSizeHint(inputCol="v", size=3), VectorAssembler(inputCols=["v", "x"], outputCol="out")]
    scorer = load(_save(stages, clean, str(tmp_path / "m")))
    table = _arrow(clean).select(["id", "x", "v"])
    expected = scorer.score(table).columns["out"]
    frame = table.to_pandas()
    frame["v"] = [np.asarray(v, dtype=np.float64) for v in frame["v"]]
    np.testing.assert_array_equal(scorer.score(frame).columns["out"], expected)
    fixed = table.set_column(2, "v", pa.array(table.column("v").to_pylist(), pa.list_(pa.float64(), 3)))
    np.testing.assert_array_equal(scorer.score(fixed).columns["out"], expected)
    np.testing.assert_array_equal(np.asarray(expected[:, :3]), np.stack(frame["v"].to_list()))
    with pytest.raises(InvalidRecordError, match="'v'.*vector"):
        scorer.score(table.set_column(2, "v", pa.array(["a"] * table.num_rows)))
    with pytest.raises(InvalidRecordError, match="'v'"):
        scorer.score_one({"x": 1.0, "v": 3.0})


@pytest.mark.parametrize("handle", ["error", "skip", "optimistic"])
def test_vector_size_hint_matches_spark(spark, tmp_path, handle):
    """Null vectors and vectors of the wrong size, per handleInvalid (row path: one record at a time)."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import VectorSizeHint
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import functions as F

    rows = [(0, Vectors.dense([1.0, 2.0])), (1, None), (2, Vectors.dense([1.0, 2.0, 3.0])),
            (3, Vectors.dense([math.nan, 5.0]))]
    df = spark.createDataFrame(rows, _schema("id long, v vector"))
    path = _save([VectorSizeHint(inputCol="v", size=2, handleInvalid=handle)], df, str(tmp_path / "m"))
    spark_model, scorer = PipelineModel.load(path), load(path)
    for i, vec in rows:
        one = spark.createDataFrame([(i, vec)], _schema("id long, v vector"))
        record = {"id": i, "v": None if vec is None else vec.toArray().tolist()}
        try:
            got = spark_model.transform(one).select(
                F.when(F.col("v").isNull(), None).otherwise(vector_to_array("v")).alias("v")).collect()
        except Exception:  # Spark fails the job: so must the scorer
            with pytest.raises(InvalidRecordError, match="VectorSizeHint"):
                scorer.score_one(record)
            continue
        ours = scorer.score_one(record, columns=["v"])
        if not got:
            assert ours is None, f"row {i}: Spark drops it"
        else:
            np.testing.assert_array_equal(np.asarray(ours["v"] if ours["v"] is not None else [], dtype=float),
                                          np.asarray(got[0]["v"] or [], dtype=float))
    # the batch path on the rows of the right size (and the null one): same rows dropped as Spark
    batch_rows = [rows[0], rows[1], rows[3]]
    table = _arrow_of(batch_rows)
    batch_df = spark.createDataFrame(batch_rows, _schema("id long, v vector"))
    expected = spark_model.transform(batch_df).select("id").collect()
    if handle == "error":
        with pytest.raises(InvalidRecordError, match="null"):
            scorer.score(table)
    else:
        assert [batch_rows[i][0] for i in scorer.score(table).rows] == [r["id"] for r in expected]


def _arrow_of(rows):
    import pyarrow as pa

    return pa.table({"id": [r[0] for r in rows],
                     "v": pa.array([None if v is None else v.toArray().tolist() for _, v in rows],
                                   pa.list_(pa.float64()))})


@pytest.mark.parametrize("model", ["binomial", "multinomial", "linear"])
def test_numeric_assembler_scaler_linear_model_matches_spark(spark, clean, dirty, tmp_path, model):
    """VectorAssembler(numbers) + StandardScaler + a linear model: the batch path computes the margins in one
    blocked product (serving.fused); it matches Spark, the stage-by-stage path and the row path, and a null or
    NaN input still fails as in Spark."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, VectorAssembler
    from pyspark.ml.regression import LinearRegression

    last = {"binomial": LogisticRegression(regParam=0.01),
            "multinomial": LogisticRegression(labelCol="k_label", family="multinomial"),
            "linear": LinearRegression(labelCol="x", regParam=0.1)}[model]
    data = clean.selectExpr("*", "CAST(k + 3 AS INT) % 3 AS k_label")
    stages = [VectorAssembler(inputCols=["x", "k"], outputCol="raw"),
              StandardScaler(inputCol="raw", outputCol="features", withMean=True, withStd=True), last]
    path = _save(stages, data, str(tmp_path / "m"))
    scorer = load(path)
    assert scorer._fused is not None and scorer._fused.start == 0
    out, size = ("prediction", None) if model == "linear" else ("probability", 3 if model == "multinomial" else 2)
    spark_model = PipelineModel.load(path)
    if size:
        _assert_matches_spark(spark, scorer, spark_model, clean, out, size, tol=1e-9)
    table = _arrow(clean)
    fused = scorer.score(table)
    staged = scorer.score(table, columns=scorer.outputs + ["features"])  # asks for a vector the fusion skips
    for c in scorer.outputs:
        np.testing.assert_allclose(fused.columns[c], staged.columns[c], rtol=0, atol=1e-12)
    spark_pred = spark_model.transform(clean).orderBy("id").select("prediction").toPandas()["prediction"].to_numpy()
    np.testing.assert_allclose(fused.columns["prediction"], spark_pred, rtol=0, atol=1e-9)
    with pytest.raises(InvalidRecordError, match="'x'.*(null|NaN)"):
        scorer.score(_arrow(dirty))
    with pytest.raises(InvalidRecordError, match="'x'.*(null|NaN)"):
        scorer.score(_arrow(dirty).to_pandas())
