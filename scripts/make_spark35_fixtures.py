"""Fit and save small models with pyspark 3.5 (Databricks Runtime 13-16) for tests/serving/test_spark35_models.py.

Run with a pyspark 3.5 environment, outside the project's own venv (which has pyspark 4):

    python3 -m venv /tmp/venv35 && /tmp/venv35/bin/pip install 'pyspark==3.5.*' 'pandas<3' pyarrow numpy
    /tmp/venv35/bin/python scripts/make_spark35_fixtures.py [--out tests/fixtures/spark35] [--only NAME ...]

Each fixture folder ``<out>/<name>/`` holds ``model/`` (as Spark 3.5 saved it; .crc files removed),
``input.parquet`` (the rows scored; vectors as lists of doubles), ``expected.parquet`` (Spark 3.5's
``transform()`` of them: ``id`` plus the compared output columns, vectors as lists) and ``fixture.json``
(Spark version, output columns, the input signature).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
from collections.abc import Callable
from typing import Any

N_FIT = 300
N_SCORE = 120


def _rows(n: int, seed: int) -> list[tuple]:
    """id, x1 (nulls/NaN), x2, x3 (int), cat (string, nulls, unseen), text, label, y."""
    rnd = random.Random(seed)
    words = ["spark", "delta", "model", "score", "table", "vector", "tree", "forest", "linear", "pipeline"]
    out = []
    for i in range(n):
        x1 = rnd.gauss(0, 1)
        x2 = rnd.uniform(0, 10)
        x3 = rnd.randint(0, 5)
        cat = rnd.choice(["a", "b", "c", "d"])
        if seed and i % 7 == 0:
            cat = rnd.choice([None, "unseen"])
        x1v = None if seed and i % 11 == 0 else x1
        text = " ".join(rnd.choice(words) for _ in range(rnd.randint(2, 8)))
        score = 0.9 * x1 - 0.2 * x2 + 0.4 * x3 + (1.0 if cat in ("a", "b") else -0.5) + rnd.gauss(0, 0.7)
        out.append((i, x1v, x2, x3, cat, text, int(score > 0.0), float(score * 2 + 5 + rnd.gauss(0, 0.3))))
    return out


SCHEMA = "id long, x1 double, x2 double, x3 int, cat string, text string, label int, y double"


def _prep():
    from pyspark.ml.feature import Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

    return [
        Imputer(inputCols=["x1"], outputCols=["x1_i"], strategy="median"),
        StringIndexer(inputCol="cat", outputCol="cat_ix", handleInvalid="keep"),
        OneHotEncoder(inputCols=["cat_ix"], outputCols=["cat_oh"], handleInvalid="keep"),
        VectorAssembler(inputCols=["x1_i", "x2", "x3", "cat_oh"], outputCol="raw"),
        StandardScaler(inputCol="raw", outputCol="features", withMean=True),
    ]


def _numeric():
    """Prep without nulls/categories, for models that need non-negative or plain features."""
    from pyspark.ml.feature import Imputer, VectorAssembler

    return [Imputer(inputCols=["x1"], outputCols=["x1_i"]),
            VectorAssembler(inputCols=["x1_i", "x2", "x3"], outputCol="features")]


def _fixtures() -> dict[str, tuple[Callable[[], list], list[str]]]:
    """name -> (stages factory, output columns to compare)."""
    from pyspark.ml import classification as C
    from pyspark.ml import clustering as K
    from pyspark.ml import feature as F
    from pyspark.ml import regression as R

    clf = ["rawPrediction", "probability", "prediction"]
    return {
        "prep_logistic": (lambda: _prep() + [C.LogisticRegression(regParam=0.01)], ["features"] + clf),
        "prep_logistic_multinomial": (lambda: _prep() + [C.LogisticRegression(labelCol="x3", family="multinomial")],
                                      clf),
        "prep_linear_regression": (lambda: _prep() + [R.LinearRegression(labelCol="y", regParam=0.1)],
                                   ["prediction"]),
        "prep_decision_tree": (lambda: _prep() + [C.DecisionTreeClassifier(maxDepth=4, seed=1)], clf),
        "prep_random_forest": (lambda: _prep() + [C.RandomForestClassifier(numTrees=8, maxDepth=4, seed=1)], clf),
        "prep_gbt_classifier": (lambda: _prep() + [C.GBTClassifier(maxIter=8, maxDepth=3, seed=1)], clf),
        "prep_dt_regressor": (lambda: _prep() + [R.DecisionTreeRegressor(labelCol="y", maxDepth=4)], ["prediction"]),
        "prep_rf_regressor": (lambda: _prep() + [R.RandomForestRegressor(labelCol="y", numTrees=8, maxDepth=4,
                                                                         seed=1)], ["prediction"]),
        "prep_gbt_regressor": (lambda: _prep() + [R.GBTRegressor(labelCol="y", maxIter=8, maxDepth=3, seed=1)],
                               ["prediction"]),
        "minmax_bucketizer": (lambda: [F.Bucketizer(inputCol="x2", outputCol="x2_b",
                                                    splits=[-math.inf, 2, 5, math.inf]),
                                       F.VectorAssembler(inputCols=["x2", "x3", "x2_b"], outputCol="v"),
                                       F.MinMaxScaler(inputCol="v", outputCol="scaled")], ["x2_b", "scaled"]),
        "size_hint_assembler": (lambda: _numeric()[:1] + [
            F.VectorAssembler(inputCols=["x2", "x3"], outputCol="v0"),
            F.VectorSizeHint(inputCol="v0", size=2),
            F.VectorAssembler(inputCols=["x1_i", "v0"], outputCol="features"),
            C.LogisticRegression()], ["features"] + clf),
        "naive_bayes": (lambda: [F.VectorAssembler(inputCols=["x2", "x3"], outputCol="features"),
                                 C.NaiveBayes()], clf),
        "linear_svc": (lambda: _prep() + [C.LinearSVC(maxIter=20)], ["rawPrediction", "prediction"]),
        "mlp": (lambda: _prep() + [C.MultilayerPerceptronClassifier(layers=[8, 5, 2], maxIter=30, seed=1)], clf),
        "glr_poisson": (lambda: _prep() + [R.GeneralizedLinearRegression(labelCol="x3", family="poisson")],
                        ["prediction"]),
        "kmeans": (lambda: _numeric() + [K.KMeans(k=3, seed=1)], ["prediction"]),
        "gaussian_mixture": (lambda: _numeric() + [K.GaussianMixture(k=2, seed=1)], ["probability", "prediction"]),
        "pca": (lambda: _numeric() + [F.PCA(k=2, inputCol="features", outputCol="pca")], ["pca"]),
        "hashing_tf_idf": (lambda: [F.Tokenizer(inputCol="text", outputCol="words"),
                                    F.HashingTF(inputCol="words", outputCol="tf", numFeatures=32),
                                    F.IDF(inputCol="tf", outputCol="tfidf")], ["tfidf"]),
        "count_vectorizer": (lambda: [F.RegexTokenizer(inputCol="text", outputCol="words", pattern="\\s+"),
                                      F.CountVectorizer(inputCol="words", outputCol="counts", vocabSize=8)],
                             ["counts"]),
        "word2vec": (lambda: [F.Tokenizer(inputCol="text", outputCol="words"),
                              F.Word2Vec(inputCol="words", outputCol="w2v", vectorSize=4, minCount=1, seed=1,
                                         maxIter=1)], ["w2v"]),
        "rformula": (lambda: [F.RFormula(formula="label ~ x2 + x3 + cat", handleInvalid="keep"),
                              C.LogisticRegression()], ["features"] + clf),
        "sql_transformer": (lambda: [F.SQLTransformer(statement="SELECT *, x2 * 2 + x3 AS z FROM __THIS__"),
                                     F.VectorAssembler(inputCols=["z", "x2"], outputCol="features"),
                                     R.LinearRegression(labelCol="y")], ["z", "prediction"]),
        "cross_validator": (lambda: [_cross_validator()], clf),
    }


def _cross_validator():
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    lr = LogisticRegression()
    pipe = Pipeline(stages=_prep() + [lr])
    grid = ParamGridBuilder().addGrid(lr.regParam, [0.01, 0.1]).build()
    return CrossValidator(estimator=pipe, estimatorParamMaps=grid, evaluator=BinaryClassificationEvaluator(),
                          numFolds=2, seed=1)


def _to_arrays(df, cols: list[str]):
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as Fn

    out = []
    for c in cols:
        if isinstance(df.schema[c].dataType, VectorUDT):
            out.append(Fn.when(Fn.col(c).isNull(), None).otherwise(vector_to_array(c)).alias(c))
        else:
            out.append(Fn.col(c))
    return df.select(*out)


def _strip(folder: str) -> None:
    """Drop Spark's .crc and _SUCCESS files: the readers never need them and they double the file count."""
    for root, _, files in os.walk(folder):
        for f in files:
            if f.endswith(".crc") or f == "_SUCCESS":
                os.remove(os.path.join(root, f))


def make(spark: Any, name: str, stages: list, outputs: list[str], out_dir: str) -> None:
    import pyarrow.parquet as pq
    from pyspark.ml import Pipeline

    train = spark.createDataFrame(_rows(N_FIT, 0), SCHEMA)
    score = spark.createDataFrame(_rows(N_SCORE, 1), SCHEMA)
    model = Pipeline(stages=stages).fit(train)
    folder = os.path.join(out_dir, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    model_dir = os.path.join(folder, "model")
    model.write().overwrite().save(model_dir)
    _strip(model_dir)
    pq.write_table(_arrow(score), os.path.join(folder, "input.parquet"))
    result = _to_arrays(model.transform(score), ["id"] + outputs).orderBy("id")
    pq.write_table(_arrow(result), os.path.join(folder, "expected.parquet"))
    meta = {"spark_version": spark.version, "outputs": outputs,
            "signature": [{"name": f.name, "type": f.dataType.simpleString()} for f in score.schema.fields]}
    with open(os.path.join(folder, "fixture.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    print(f"{name}: {len(stages)} stage(s), {result.count()} rows", flush=True)


def _arrow(df):
    import pyarrow as pa

    return pa.Table.from_pandas(df.toPandas(), preserve_index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "spark35"))
    parser.add_argument("--only", nargs="*", help="fixture names to (re)make")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    if not spark.version.startswith("3.5"):
        print(f"needs pyspark 3.5, got {spark.version}", file=sys.stderr)
        return 2
    failed = []
    for name, (factory, outputs) in _fixtures().items():
        if args.only and name not in args.only:
            continue
        try:
            make(spark, name, factory(), outputs, os.path.abspath(args.out))
        except Exception as exc:  # keep going: one family failing should not block the others
            failed.append(name)
            print(f"{name}: FAILED {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr, flush=True)
    spark.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
