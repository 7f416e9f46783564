"""The zoo of plain-pyspark models (tests/registry/test_zoo_*.py): rows, one estimator per case and the cases,
in three groups, one test module each (pytest-xdist runs a module on one worker)."""
from __future__ import annotations

import importlib
import inspect
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.ml import Estimator, Pipeline
from pyspark.ml.classification import OneVsRest
from pyspark.ml.evaluation import BinaryClassificationEvaluator, RegressionEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.linalg import Vectors
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit

SCHEMA = ("id long, x1 double, x2 double, x3 double, c string, txt string, y int, k int, ks string, r double, "
          "t double, cens double, b1 double, b2 double")
WORDS = ["spark", "model", "deploy", "the", "a", "fast", "slow", "table", "score", "of", "and", "data"]
CENTERS = [(0.0, 0.0), (8.0, 8.0), (-8.0, 8.0)]


def make_rows(n: int, seed: int) -> list[tuple]:
    """Learnable rows: binary y, classes k (and the same as strings, ks), a target r, a survival time t with
    censoring, text, and well-separated blobs (b1, b2) for the clustering models."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        x1, x2, x3, c = rnd.gauss(0, 1), rnd.gauss(0, 1), rnd.uniform(0, 2), rnd.choice(["a", "b", "c"])
        y = int(x1 + (c == "a") - 0.5 * x2 + rnd.gauss(0, 0.3) > 0.3)
        k = 0 if x1 < -0.4 else (1 if x1 < 0.4 else 2)
        r = 2.0 * x1 - x2 + 0.5 * x3 + (c == "b") * 1.5 + rnd.gauss(0, 0.1)
        words = [rnd.choice(WORDS) for _ in range(rnd.randint(2, 6))] + (["deploy"] if y else ["slow"])
        cx, cy = CENTERS[i % 3]
        rows.append((i, x1, x2, x3, c, " ".join(words), y, k, ["low", "mid", "high"][k], r,
                     math.exp(0.5 * x1 + rnd.gauss(0, 0.2)), float(rnd.random() < 0.8),
                     cx + rnd.gauss(0, 0.5), cy + rnd.gauss(0, 0.5)))
    return rows


def _va(*cols: str, out: str = "features") -> Any:
    return VectorAssembler(inputCols=list(cols), outputCol=out)


def _pipe(*stages: Any) -> Any:
    return Pipeline(stages=list(stages))


def _est(module: str, name: str, **params: Any) -> Any:
    return getattr(importlib.import_module(f"pyspark.ml.{module}"), name)(**params)


def _xs(est: Any, *cols: str) -> Any:
    return _pipe(_va(*(cols or ("x1", "x2", "x3"))), est)


def _feature(name: str, **params: Any) -> Any:
    return _est("feature", name, **params)


def _text(*stages: Any) -> Any:
    return _pipe(_feature("Tokenizer", inputCol="txt", outputCol="words"), *stages)


def _tuned(kind: str) -> Any:
    if kind == "cv":
        lr = _est("classification", "LogisticRegression", labelCol="y", maxIter=20)
        grid = ParamGridBuilder().addGrid(lr.regParam, [0.0, 0.1]).build()
        return CrossValidator(estimator=_xs(lr), estimatorParamMaps=grid, numFolds=2, seed=3,
                              evaluator=BinaryClassificationEvaluator(labelCol="y"))
    tree = _est("regression", "DecisionTreeRegressor", labelCol="r", seed=1)
    grid = ParamGridBuilder().addGrid(tree.maxDepth, [2, 4]).build()
    return TrainValidationSplit(estimator=_xs(tree), estimatorParamMaps=grid, seed=3,
                                evaluator=RegressionEvaluator(labelCol="r"))


def _cls(name: str, **params: Any) -> Any:
    return _xs(_est("classification", name, **params))


def _reg(name: str, **params: Any) -> Any:
    return _xs(_est("regression", name, labelCol="r", **params))


def clusterer(name: str, **params: Any) -> Any:
    return _xs(_est("clustering", name, seed=5, **params), "b1", "b2")


ESTIMATORS: dict[str, Callable[[], Any]] = {
    "lr_binary": lambda: _cls("LogisticRegression", labelCol="y", maxIter=30),
    "lr_multinomial": lambda: _cls("LogisticRegression", labelCol="k", family="multinomial", maxIter=30),
    "decision_tree_classifier": lambda: _cls("DecisionTreeClassifier", labelCol="k", maxDepth=4, seed=1),
    "random_forest_classifier": lambda: _cls("RandomForestClassifier", labelCol="y", numTrees=5, maxDepth=4, seed=2),
    "gbt_classifier": lambda: _cls("GBTClassifier", labelCol="y", maxIter=5, maxDepth=3, seed=3),
    "linear_svc": lambda: _cls("LinearSVC", labelCol="y", maxIter=20),
    # Bucket indices: non-negative for any row (a MinMaxScaler can go below 0 out of its fitted range, and
    # NaiveBayes then fails the job).
    "naive_bayes": lambda: _pipe(_feature("QuantileDiscretizer", inputCols=["x1", "x2", "x3"], numBuckets=4,
                                          outputCols=["x1_q", "x2_q", "x3_q"]),
                                 _va("x1_q", "x2_q", "x3_q"), _est("classification", "NaiveBayes", labelCol="k")),
    "mlp": lambda: _cls("MultilayerPerceptronClassifier", labelCol="k", layers=[3, 5, 3], maxIter=50, seed=4),
    "fm_classifier": lambda: _cls("FMClassifier", labelCol="y", maxIter=20, seed=5),
    "one_vs_rest": lambda: _xs(_est("classification", "OneVsRest", labelCol="k",
                                    classifier=_est("classification", "LogisticRegression", maxIter=20))),
    "linear_regression": lambda: _reg("LinearRegression"),
    "glr": lambda: _reg("GeneralizedLinearRegression", family="gaussian", link="identity"),
    "decision_tree_regressor": lambda: _reg("DecisionTreeRegressor", maxDepth=4, seed=1),
    "random_forest_regressor": lambda: _reg("RandomForestRegressor", numTrees=5, maxDepth=4, seed=2),
    "gbt_regressor": lambda: _reg("GBTRegressor", maxIter=5, maxDepth=3, seed=3),
    "aft_survival": lambda: _xs(_est("regression", "AFTSurvivalRegression", labelCol="t", censorCol="cens")),
    "isotonic": lambda: _xs(_est("regression", "IsotonicRegression", labelCol="r", featureIndex=0)),
    "fm_regressor": lambda: _reg("FMRegressor", maxIter=20, seed=5),
    "kmeans": lambda: clusterer("KMeans", k=3, maxIter=10),
    "bisecting_kmeans": lambda: clusterer("BisectingKMeans", k=3, maxIter=10),
    "gaussian_mixture": lambda: clusterer("GaussianMixture", k=3, maxIter=30, tol=1e-3),
    "buckets_onehot": lambda: _pipe(
        _feature("Bucketizer", inputCol="x1", outputCol="x1_b", splits=[-math.inf, -0.5, 0.0, 0.5, math.inf]),
        _feature("QuantileDiscretizer", inputCol="x2", outputCol="x2_q", numBuckets=4),
        _feature("OneHotEncoder", inputCols=["x1_b", "x2_q"], outputCols=["x1_o", "x2_o"]),
        _va("x1_o", "x2_o", "x3"), _est("classification", "LogisticRegression", labelCol="y", maxIter=30)),
    "minmax_pca": lambda: _pipe(_va("x1", "x2", "x3", out="raw"),
                                _feature("MinMaxScaler", inputCol="raw", outputCol="scaled"),
                                _feature("PCA", inputCol="scaled", outputCol="features", k=2),
                                _est("regression", "LinearRegression", labelCol="r")),
    "polynomial": lambda: _pipe(_va("x1", "x2", out="raw"),
                                _feature("PolynomialExpansion", inputCol="raw", outputCol="features", degree=2),
                                _est("regression", "LinearRegression", labelCol="r")),
    "selector": lambda: _pipe(
        _feature("StringIndexer", inputCol="c", outputCol="c_idx", handleInvalid="keep"),
        _va("x1", "x2", "x3", "c_idx", out="raw"),
        _feature("UnivariateFeatureSelector", featuresCol="raw", outputCol="features", labelCol="r",
                 selectionMode="numTopFeatures").setFeatureType("continuous").setLabelType("continuous")
        .setSelectionThreshold(2),
        _est("regression", "LinearRegression", labelCol="r")),
    "chisq_selector": lambda: _pipe(
        _feature("QuantileDiscretizer", inputCols=["x1", "x2"], outputCols=["x1_q", "x2_q"], numBuckets=4),
        _va("x1_q", "x2_q", out="raw"),
        _feature("ChiSqSelector", featuresCol="raw", outputCol="features", labelCol="y", numTopFeatures=1),
        _est("classification", "NaiveBayes", labelCol="y")),
    "interaction_product": lambda: _pipe(
        _va("x1", "x2", out="v12"), _va("x3", out="v3"),
        _feature("Interaction", inputCols=["v12", "v3"], outputCol="inter"),
        _feature("ElementwiseProduct", inputCol="inter", outputCol="features", scalingVec=_dense([2.0, 0.5])),
        _est("regression", "LinearRegression", labelCol="r")),
    "sql_transformer": lambda: _pipe(
        _feature("SQLTransformer", statement="SELECT *, x1 * x2 AS x12, CASE WHEN x3 > 1.0 THEN 1.0 ELSE 0.0 END "
                                             "AS x3_hi FROM __THIS__"),
        _va("x1", "x2", "x12", "x3_hi"), _est("regression", "DecisionTreeRegressor", labelCol="r", maxDepth=4)),
    "feature_hasher": lambda: _pipe(_feature("FeatureHasher", inputCols=["x1", "c"], outputCol="features",
                                             numFeatures=16),
                                    _est("classification", "LogisticRegression", labelCol="y", maxIter=30)),
    "rformula": lambda: _pipe(_feature("RFormula", formula="y ~ x1 + x2 + c", handleInvalid="keep"),
                              _est("classification", "LogisticRegression", maxIter=30)),
    "text_tfidf": lambda: _text(_feature("StopWordsRemover", inputCol="words", outputCol="kept"),
                                _feature("HashingTF", inputCol="kept", outputCol="tf", numFeatures=64),
                                _feature("IDF", inputCol="tf", outputCol="features"),
                                _est("classification", "LogisticRegression", labelCol="y", maxIter=30)),
    "text_ngram_counts": lambda: _text(_feature("NGram", inputCol="words", outputCol="grams", n=2),
                                       _feature("CountVectorizer", inputCol="grams", outputCol="features",
                                                vocabSize=50),
                                       _est("classification", "NaiveBayes", labelCol="y")),
    "cross_validator": lambda: _tuned("cv"),
    "train_validation_split": lambda: _tuned("tvs"),
    "string_label_multiclass": lambda: _pipe(
        _feature("StringIndexer", inputCol="ks", outputCol="ks_idx"),
        _va("x1", "x2", "x3"), _est("classification", "RandomForestClassifier", labelCol="ks_idx", numTrees=5,
                                    maxDepth=4, seed=6)),
    "lsh_not_servable": lambda: _text(_feature("HashingTF", inputCol="words", outputCol="tf", numFeatures=64),
                                      _feature("MinHashLSH", inputCol="tf", outputCol="hashes", seed=6),
                                      _est("classification", "LogisticRegression", labelCol="y",
                                           featuresCol="tf", maxIter=20)),
}


def _dense(values: list[float]) -> Any:
    return Vectors.dense(values)


@dataclass(frozen=True)
class Case:
    name: str
    label: str | None
    task: str
    via: str = "api"  # "api": register_model(model object); "cli": saved folder through `sparkship register`
    servable: bool = True


def _c(name: str, label: str | None, task: str, **kw: Any) -> Case:
    return Case(name, label, task, **kw)


CASES = [
    _c("lr_binary", "y", "classification"), _c("lr_multinomial", "k", "classification", via="cli"),
    _c("decision_tree_classifier", "k", "classification"), _c("random_forest_classifier", "y", "classification",
                                                              via="cli"),
    _c("gbt_classifier", "y", "classification"), _c("linear_svc", "y", "classification", via="cli"),
    _c("naive_bayes", "k", "classification"), _c("mlp", "k", "classification", via="cli"),
    _c("fm_classifier", "y", "classification"), _c("one_vs_rest", "k", "classification", via="cli"),
    _c("linear_regression", "r", "regression"), _c("glr", "r", "regression", via="cli"),
    _c("decision_tree_regressor", "r", "regression"), _c("random_forest_regressor", "r", "regression", via="cli"),
    _c("gbt_regressor", "r", "regression"), _c("aft_survival", "t", "regression", via="cli"),
    _c("isotonic", "r", "regression"), _c("fm_regressor", "r", "regression", via="cli"),
    _c("kmeans", None, "clustering"), _c("bisecting_kmeans", None, "clustering", via="cli"),
    _c("gaussian_mixture", None, "clustering"),
    _c("buckets_onehot", "y", "classification", via="cli"), _c("minmax_pca", "r", "regression"),
    _c("polynomial", "r", "regression", via="cli"), _c("selector", "r", "regression"),
    _c("chisq_selector", "y", "classification", via="cli"), _c("interaction_product", "r", "regression"),
    _c("sql_transformer", "r", "regression", via="cli"), _c("feature_hasher", "y", "classification"),
    _c("rformula", "y", "classification", via="cli"), _c("text_tfidf", "y", "classification"),
    _c("text_ngram_counts", "y", "classification", via="cli"), _c("cross_validator", "y", "classification"),
    _c("train_validation_split", "r", "regression", via="cli"),
    _c("string_label_multiclass", "ks", "classification", via="cli"),
    _c("lsh_not_servable", "y", "classification", servable=False),
]


# One case per kind of output that validation and the report handle differently: binary, multiclass and
# string-labelled classes, with and without probabilities; each task's metric (accuracy, weightedPrecision,
# weightedRecall, rmse, silhouette); censored survival times; a tuning wrapper; a model scored only by Spark. A
# bound just missed and the HTML report are checked for these; every case is validated on a bound just met (its
# metric equal to Spark's evaluator) and monitored.
EACH_OUTPUT_KIND = frozenset({
    "lr_binary", "lr_multinomial", "linear_svc", "one_vs_rest", "string_label_multiclass", "linear_regression",
    "aft_survival", "kmeans", "gaussian_mixture", "cross_validator", "lsh_not_servable",
})


# LDA is a topic model: it writes topicDistribution and no prediction, so registering it is refused
# (test_zoo_regressors_and_clusterers.py).
NOT_DEPLOYABLE = {"LDA"}


def estimator_classes() -> set[str]:
    """The concrete estimator classes of pyspark.ml's classification, regression and clustering modules."""
    found = {}
    for name in ("classification", "regression", "clustering"):
        module = importlib.import_module(f"pyspark.ml.{name}")
        found.update({n: c for n, c in vars(module).items() if inspect.isclass(c) and issubclass(c, Estimator)
                      and c.__module__ == module.__name__ and not n.startswith("_")})
    bases = {n for n, c in found.items() if any(o is not c and issubclass(o, c) for o in found.values())}
    return set(found) - bases


def used_classes(est: Any) -> set[str]:
    """The estimator classes ``est`` fits: itself, a pipeline's stages, a tuning or OneVsRest's inner estimator."""
    inner = (est.getStages() if isinstance(est, Pipeline) else [est.getClassifier()] if isinstance(est, OneVsRest)
             else [est.getEstimator()] if isinstance(est, (CrossValidator, TrainValidationSplit)) else [])
    return {type(est).__name__}.union(*(used_classes(i) for i in inner))


# The three test modules' cases: the estimators of pyspark.ml.classification; those of regression and clustering;
# feature-stage pipelines, text, tuning wrappers, a string label and an unservable stage.
_FIRST_REGRESSOR, _FIRST_PIPELINE = 10, 21
GROUPS = {
    "classifiers": CASES[:_FIRST_REGRESSOR],
    "regressors_and_clusterers": CASES[_FIRST_REGRESSOR:_FIRST_PIPELINE],
    "feature_pipelines": CASES[_FIRST_PIPELINE:],
}


def cases_of(group: str) -> list[Case]:
    """The cases one test module runs."""
    return GROUPS[group]


def unindexed_string_label_classifier() -> Any:
    """A classifier of ``k`` with no StringIndexer: registering it with the string label ``ks`` is refused."""
    return _cls("LogisticRegression", labelCol="k", maxIter=5)


def lda_topic_model() -> Any:
    """A topic model (LDA writes topicDistribution and no prediction): registering it is refused."""
    return _text(_feature("CountVectorizer", inputCol="words", outputCol="features"),
                 _est("clustering", "LDA", k=2, maxIter=2, seed=1))
