"""Parity of the JVM-free scorer's text and hashing stages with Spark's transform().

Tokenizer, RegexTokenizer, StopWordsRemover (multi column, case sensitive or not), NGram, HashingTF (counts and
binary), CountVectorizerModel (fractional and count minTF, binary), IDFModel, Word2VecModel and FeatureHasher
(numeric, string, boolean and categorical columns with nulls and NaN) are fitted in one Pipeline ending with a
LogisticRegression, saved, loaded by ``sparkship.serving.load`` and scored on rows holding words and categories
never seen at fit time; every output equals Spark's (token lists exactly, numbers within 1e-9) on the batch path
(Arrow and pandas) and on the row path.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
from chispa import assert_df_equality
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException

from sparkship.serving import InvalidRecordError, UnsupportedModelError, load
from tests.helpers.parity import assert_close, flatten_scorer, flatten_spark, vector_sizes

# A failed Spark job: an error the JVM raised (captured by pyspark, or not).
SPARK_FAILURE = (Py4JJavaError, PySparkException)

pytestmark = [pytest.mark.timeout(600), pytest.mark.seconds(16)]

N = 300
SCHEMA = "id long, text string, text2 string, x double, cat string, n int, flag boolean, label int"
WORDS = ["the", "The", "a", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Spark", "ML", "is", "fun",
         "and", "fast", "café", "straße", "naïve", "😀ok", "x", "AND", "data,", "pipeline.", "I", "it's"]
UNSEEN = ["zebra", "Quokka", "ünseen", "🦄", "q"]
SEPARATORS = [" ", " ", " ", "  ", "\t", " , "]


def _sentence(rnd: random.Random, unseen: bool) -> str:
    words = rnd.choices(WORDS + (UNSEEN if unseen else []), k=rnd.randint(0, 9))
    text = ""
    for w in words:
        text += w + rnd.choice(SEPARATORS)
    return rnd.choice(["", " ", "\t"]) + text.rstrip() if rnd.random() < 0.3 else text


def rows() -> list[tuple]:
    rnd = random.Random(11)
    rows = []
    for i in range(N):
        scoring_only = i % 5 == 0
        u = rnd.random()
        x = None if u < 0.08 else (math.nan if u < 0.14 else rnd.choice([0.0, -1.5, 2.25, 1e7, 3.0]))
        cat = rnd.choice(["red", "green", "blue", None] + (["violet"] if scoring_only else []))
        n = rnd.choice([1, 2, 3, None] + ([9] if scoring_only else []))
        flag = rnd.choice([True, False, None])
        text = _sentence(rnd, scoring_only)
        rows.append((i, text, _sentence(rnd, scoring_only), x, cat, n, flag,
                     int(("fox" in text) or ("fast" in text) or rnd.random() < 0.2)))
    return rows


TOKEN_COLS = ["tok", "rt", "rt2", "sw", "sw2", "sw3", "ng"]
NUMERIC_COLS = ["tf", "tfb", "tfidf", "cv", "cvb", "w2v", "fh", "probability", "prediction"]


@pytest.fixture(scope="module")
def text_model(data, tmp_path_factory):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import (
        IDF,
        CountVectorizer,
        FeatureHasher,
        HashingTF,
        NGram,
        RegexTokenizer,
        StopWordsRemover,
        Tokenizer,
        VectorAssembler,
        Word2Vec,
    )

    stages = [
        Tokenizer(inputCol="text", outputCol="tok"),
        RegexTokenizer(inputCol="text", outputCol="rt", pattern="\\w+|[^\\w\\s]", gaps=False, minTokenLength=2),
        RegexTokenizer(inputCol="text2", outputCol="rt2", pattern="[\\s,.]+", toLowercase=False),
        StopWordsRemover(inputCols=["tok", "rt"], outputCols=["sw", "sw2"]),
        StopWordsRemover(inputCol="rt2", outputCol="sw3", caseSensitive=True, stopWords=["The", "a", "AND", "x"]),
        NGram(inputCol="sw", outputCol="ng", n=2),
        HashingTF(inputCol="sw", outputCol="tf", numFeatures=32),
        HashingTF(inputCol="ng", outputCol="tfb", numFeatures=32, binary=True),
        IDF(inputCol="tf", outputCol="tfidf", minDocFreq=2),
        CountVectorizer(inputCol="tok", outputCol="cv", minTF=0.2),
        CountVectorizer(inputCol="sw3", outputCol="cvb", minTF=2.0, binary=True, minDF=2.0),
        Word2Vec(inputCol="sw", outputCol="w2v", vectorSize=5, minCount=1, seed=7, maxIter=1),
        FeatureHasher(inputCols=["x", "cat", "n", "flag"], outputCol="fh", numFeatures=32, categoricalCols=["n"]),
        VectorAssembler(inputCols=["tfidf", "cv", "cvb", "w2v", "fh", "tfb"], outputCol="features",
                        handleInvalid="keep"),
        LogisticRegression(labelCol="label", regParam=0.05, maxIter=10),
    ]
    train = data.where("id % 5 != 0 and not isnan(coalesce(x, 0.0))").cache()
    path = str(tmp_path_factory.mktemp("text") / "model")
    Pipeline(stages=stages).fit(train).write().save(path)
    return path, PipelineModel.load(path)


def _token_frames(spark, theirs_df, result, ids, columns):
    from pyspark.sql.types import ArrayType, LongType, StringType, StructField, StructType

    schema = StructType([StructField("id", LongType())] + [StructField(c, ArrayType(StringType())) for c in columns])
    rows = [(int(ids[r]), *[result.columns[c][j] for c in columns]) for j, r in enumerate(result.rows)]
    ours = spark.createDataFrame(rows, schema).orderBy("id")
    return ours, theirs_df.select(theirs_df["id"].cast("long"), *columns).orderBy("id")


def _assert_row_path(scorer, records, result, columns):
    scored = result.records()
    for i, rec in enumerate(records):
        one = scorer.score_one(rec, columns=columns)
        for c in columns:
            a, b = one[c], scored[i][c]
            if c in TOKEN_COLS:
                assert a == b, (i, c, a, b)
            else:
                assert np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=0, atol=1e-12,
                                   equal_nan=True), (i, c, a, b)


def test_text_stages_match_spark(spark, data, signature, text_model):
    path, spark_model = text_model
    scorer = load(path, signature=signature)
    arrow = data.toArrow()
    ids = arrow["id"].to_numpy()
    theirs_df = spark_model.transform(data).cache()
    columns = TOKEN_COLS + NUMERIC_COLS
    result = scorer.score(arrow, columns=columns)
    assert len(result.dropped) == 0 and result.num_input_rows == N
    ours_tok, theirs_tok = _token_frames(spark, theirs_df, result, ids, TOKEN_COLS)
    assert_df_equality(ours_tok, theirs_tok, ignore_nullable=True)
    vectors, scalars = vector_sizes(scorer, NUMERIC_COLS)
    assert_close(flatten_scorer(spark, result, ids, vectors, scalars), flatten_spark(theirs_df, vectors, scalars))
    # Unseen words and categories really were scored, and hashing collided somewhere (summed entries).
    assert {w.lower() for w in UNSEEN} & {t for toks in result.columns["tok"] for t in toks}
    assert (result.columns["fh"] > 1.0).any() or (result.columns["tf"] >= 2.0).any()
    _assert_row_path(scorer, arrow.to_pylist(), result, columns)
    # pandas: the same scores, except where x is NaN (pandas hands NaN over as null, which FeatureHasher skips).
    from_pandas = scorer.score(arrow.to_pandas(), columns=columns)
    same = ~np.isnan(arrow["x"].to_numpy(zero_copy_only=False).astype(float))
    for c in columns:
        a, b = from_pandas.columns[c][same], result.columns[c][same]
        if c in TOKEN_COLS:
            assert a.tolist() == b.tolist(), c
        else:
            assert np.allclose(a.astype(float), b.astype(float), rtol=0, atol=0, equal_nan=True), c
    theirs_df.unpersist()


def test_null_text_fails_like_spark(spark, data, signature, text_model):
    path, spark_model = text_model
    scorer = load(path, signature=signature)
    bad = {**data.limit(1).collect()[0].asDict(), "text": None}
    with pytest.raises(InvalidRecordError) as err:
        scorer.score_one(bad)
    assert err.value.field == "text"
    with pytest.raises(InvalidRecordError):
        scorer.score([bad, {**bad, "text": "fine"}])
    with pytest.raises(SPARK_FAILURE):
        spark_model.transform(spark.createDataFrame([bad], SCHEMA)).collect()


def test_token_array_inputs(spark, tmp_path):
    """A pipeline whose input is already an array<string> column (nulls inside the arrays included)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import HashingTF, NGram, StopWordsRemover

    df = spark.createDataFrame(
        [(0, ["a", "The", None, "b"]), (1, []), (2, ["the"]), (3, [None, None, "c", "the", "d", "e"])],
        "id long, words array<string>")
    model = Pipeline(stages=[
        StopWordsRemover(inputCol="words", outputCol="sw"),
        NGram(inputCol="words", outputCol="ng", n=3),
        HashingTF(inputCol="words", outputCol="tf", numFeatures=16),
    ]).fit(df)
    path = str(tmp_path / "tokens")
    model.write().save(path)
    scorer = load(path)
    assert scorer.signature.types == {"words": "array<string>"}
    theirs = {r["id"]: r for r in model.transform(df).collect()}
    for rec in df.collect():
        one = scorer.score_one(rec.asDict(), columns=["sw", "ng", "tf"])
        assert one["sw"] == theirs[rec["id"]]["sw"] and one["ng"] == theirs[rec["id"]]["ng"]
        assert one["tf"] == theirs[rec["id"]]["tf"].toArray().tolist()
    result = scorer.score(df.toArrow(), columns=["sw", "ng", "tf"])
    assert [list(v) for v in result.columns["sw"]] == [theirs[i]["sw"] for i in range(4)]


@pytest.mark.parametrize("pattern, construct", [
    ("\\p{L}+", "\\p"), ("\\bword", "\\b"), ("(?i)abc", "(?i"), ("a++", "possessive"), ("[a[b]]", "nested"),
    ("end$", "'$'"),
])
def test_regex_patterns_python_reads_differently_are_refused(spark, pattern, construct, tmp_path):
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import RegexTokenizer

    path = str(tmp_path / "rt")
    PipelineModel(stages=[RegexTokenizer(inputCol="t", outputCol="o", pattern=pattern)]).write().save(path)
    with pytest.raises(UnsupportedModelError, match="pattern") as err:
        load(path)
    assert construct in str(err.value)


def test_feature_hasher_of_a_model_saved_without_a_signature_takes_types_from_the_data(spark, tmp_path):
    """A plain-pyspark model (no manifest) hashing string, integer, double and boolean columns: the scorer
    cannot know those types from the saved files, so it takes them from each request's data."""
    import pyarrow as pa
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import FeatureHasher
    from pyspark.ml.functions import vector_to_array

    rows = [(i, ["a", "b", None, "zz"][i % 4], i % 5 if i % 7 else None, i * 0.25, bool(i % 2)) for i in range(40)]
    df = spark.createDataFrame(rows, "id long, cat string, n int, x double, flag boolean")
    stages = [FeatureHasher(inputCols=["cat", "n", "x", "flag"], outputCol="fh", numFeatures=64, categoricalCols=["n"])]
    path = str(tmp_path / "fh")
    Pipeline(stages=stages).fit(df).write().save(path)
    scorer = load(path)  # no signature: the types are not in the files
    assert {f.name: f.type for f in scorer.signature.inputs} == dict.fromkeys(["cat", "n", "x", "flag"], "any")
    theirs = {r["id"]: r["fh"] for r in spark_fitted_transform(path, df).select("id", vector_to_array("fh").alias(
        "fh")).collect()}
    table = df.toArrow()
    # pandas: integers with nulls kept as integers (a float64 column would be hashed as doubles, "n=1.0").
    for data in (table, table.to_pandas(integer_object_nulls=True), table.to_pylist()):
        got = scorer.score(data)
        assert len(got.dropped) == 0
        ids = table["id"].to_pylist()
        assert all(list(got.columns["fh"][j]) == theirs[ids[j]] for j in range(len(ids))), type(data)
    for record in table.to_pylist()[:8]:
        assert scorer.score_one(record)["fh"] == theirs[record["id"]]
    # An integer column hashed as categorical keeps its digits whether it comes as int64 or int32.
    narrow = table.set_column(2, "n", table["n"].cast(pa.int32()))
    assert scorer.score(narrow).columns["fh"].tolist() == scorer.score(table).columns["fh"].tolist()


def spark_fitted_transform(path, df):
    from pyspark.ml import PipelineModel

    return PipelineModel.load(path).transform(df)
