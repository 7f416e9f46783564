"""A zoo of models fitted by plain pyspark, outside the spec path: one per estimator class of
``pyspark.ml.classification``, ``regression`` and ``clustering``, feature-stage combinations, text, tuning wrappers
and a string-label multiclass. Each is registered (through the API or the in-process CLI), scored with
``sparkship score`` (equal to its own ``transform``), predicted without a JVM (parity <= 1e-9, classes exact),
validated (its metric equal to Spark's evaluator), monitored and reported."""
from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from chispa import assert_approx_df_equality

import sparkship
from sparkship import tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from tests.helpers.registering import loose

pytestmark = pytest.mark.seconds(800)

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


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    table, holdout = str(root / "table"), str(root / "holdout")
    tables.write(spark.createDataFrame(make_rows(200, 1), SCHEMA), table, mode="overwrite")
    tables.write(spark.createDataFrame(make_rows(90, 7), SCHEMA), holdout, mode="overwrite")
    return {"root": root, "df": tables.read(spark, table), "table": table, "holdout": holdout,
            "holdout_df": tables.read(spark, holdout)}


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings.resolve(home=str(tmp_path_factory.mktemp("zoo-home")))


def _cli(settings: Settings, *args: str) -> int:
    return main(["--home", settings.home, *args])


# --- the models -------------------------------------------------------------------------------------------------


def _va(*cols: str, out: str = "features") -> Any:
    from pyspark.ml.feature import VectorAssembler

    return VectorAssembler(inputCols=list(cols), outputCol=out)


def _pipe(*stages: Any) -> Any:
    from pyspark.ml import Pipeline

    return Pipeline(stages=list(stages))


def _est(module: str, name: str, **params: Any) -> Any:
    import importlib

    return getattr(importlib.import_module(f"pyspark.ml.{module}"), name)(**params)


def _xs(est: Any, *cols: str) -> Any:
    return _pipe(_va(*(cols or ("x1", "x2", "x3"))), est)


def _feature(name: str, **params: Any) -> Any:
    return _est("feature", name, **params)


def _text(*stages: Any) -> Any:
    return _pipe(_feature("Tokenizer", inputCol="txt", outputCol="words"), *stages)


def _tuned(kind: str) -> Any:
    from pyspark.ml.evaluation import BinaryClassificationEvaluator, RegressionEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit

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


def _clu(name: str, **params: Any) -> Any:
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
    "kmeans": lambda: _clu("KMeans", k=3, maxIter=10),
    "bisecting_kmeans": lambda: _clu("BisectingKMeans", k=3, maxIter=10),
    "gaussian_mixture": lambda: _clu("GaussianMixture", k=3, maxIter=30, tol=1e-3),
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
    from pyspark.ml.linalg import Vectors

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


class _Fitted:
    """Models fitted on first use (one failure does not cascade), on the module's table."""

    def __init__(self, df: Any) -> None:
        self.df, self.cache = df, {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.cache:
            self.cache[name] = ESTIMATORS[name]().fit(self.df)
        return self.cache[name]


@pytest.fixture(scope="module")
def fitted(data):
    return _Fitted(data["df"])


# LDA is a topic model: it writes topicDistribution and no prediction, so registering it is refused (tested below).
NOT_DEPLOYABLE = {"LDA"}


def _estimator_classes() -> set[str]:
    """The concrete estimator classes of pyspark.ml's classification, regression and clustering modules."""
    import importlib
    import inspect

    from pyspark.ml import Estimator

    found = {}
    for name in ("classification", "regression", "clustering"):
        module = importlib.import_module(f"pyspark.ml.{name}")
        found.update({n: c for n, c in vars(module).items() if inspect.isclass(c) and issubclass(c, Estimator)
                      and c.__module__ == module.__name__ and not n.startswith("_")})
    bases = {n for n, c in found.items() if any(o is not c and issubclass(o, c) for o in found.values())}
    return set(found) - bases


def _used_classes(est: Any) -> set[str]:
    """The estimator classes ``est`` fits: itself, a pipeline's stages, a tuning or OneVsRest's inner estimator."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import OneVsRest
    from pyspark.ml.tuning import CrossValidator, TrainValidationSplit

    inner = (est.getStages() if isinstance(est, Pipeline) else [est.getClassifier()] if isinstance(est, OneVsRest)
             else [est.getEstimator()] if isinstance(est, (CrossValidator, TrainValidationSplit)) else [])
    return {type(est).__name__}.union(*(_used_classes(i) for i in inner))


def test_every_case_has_an_estimator_and_every_estimator_class_is_covered(spark):
    assert [c.name for c in CASES] == list(ESTIMATORS) and len(CASES) >= 30
    used = set().union(*(_used_classes(make()) for make in ESTIMATORS.values()))
    missing = _estimator_classes() - NOT_DEPLOYABLE - used
    assert not missing, f"estimator classes no case fits: {sorted(missing)}"


# --- register, score, predict -------------------------------------------------------------------------------------


def _register(case: Case, model: Any, settings: Settings, folder: str, table: str, capsys) -> dict[str, Any]:
    """Register ``model`` the case's way; the CLI's JSON, or the same keys from the API's ModelVersion."""
    if case.via == "api":
        mv = sparkship.register_model(model, case.name, table=table, label=case.label, settings=settings)
        return {"name": mv.name, "version": mv.version, "artifact": mv.artifact, "task": mv.task,
                "metrics": mv.metrics}
    model.write().save(folder)
    capsys.readouterr()
    label = ["--label", case.label] if case.label else []
    assert _cli(settings, "register", "--name", case.name, "--path", folder, "--table", table, *label,
                "--json") == 0
    return json.loads(capsys.readouterr().out)


def _best(model: Any) -> Any:
    return model.bestModel if hasattr(model, "bestModel") else model


def _expected(model: Any, df: Any, task: str) -> Any:
    """What scoring must write: the model's own transform, the prediction as a double, probabilities as arrays."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    out = _best(model).transform(df)
    cols = [F.col("id"), F.col("prediction").cast("double").alias("prediction")]
    if task == "classification" and "probability" in out.columns:
        cols.append(vector_to_array("probability").alias("probability"))
    return out.select(*cols).orderBy("id")


def _jvm_free_worst(scorer: Any, expected: Any, df: Any, inputs: list[str], exact: bool) -> float:
    """Largest difference between the JVM-free scorer's outputs and transform's over every row; with ``exact``
    (classes, clusters) the predictions must be equal."""
    records = [r.asDict() for r in df.orderBy("id").select(*inputs).collect()]
    got = scorer.score(records).records()
    want = [r.asDict() for r in expected.collect()]
    assert len(got) == len(want) and all(g is not None for g in got)
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        if exact:
            assert g["prediction"] == w["prediction"], (g, w)
        worst = max(worst, abs(g["prediction"] - w["prediction"]))
        if "probability" in w:
            worst = max(worst, *(abs(a - b) for a, b in zip(g["probability"], w["probability"], strict=True)))
    return worst


@dataclass(frozen=True)
class _Registered:
    out: dict[str, Any]  # what the CLI printed (or the API's version as the same keys)
    ref: str
    manifest: dict[str, Any]
    scores: str  # the table `sparkship score` wrote


@pytest.fixture(scope="module")
def registered(spark, data, settings, fitted):
    """case name -> its registered and scored version, made on first use (the gate test reuses it)."""
    cache: dict[str, _Registered] = {}

    def get(case: Case, capsys) -> _Registered:
        if case.name not in cache:
            folder = str(data["root"] / f"saved_{case.name}")
            out = _register(case, fitted[case.name], settings, folder, data["table"], capsys)
            mv, manifest = Registry(settings).manifest(parse_ref(f"{case.name}/{out['version']}"))
            scores = str(data["root"] / f"scores_{case.name}")
            capsys.readouterr()
            assert _cli(settings, "score", "--model", mv.ref, "--input", data["table"], "--output", scores,
                        "--keys", "id", "--include-features") == 0
            cache[case.name] = _Registered(out, mv.ref, manifest, scores)
        return cache[case.name]

    return get


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_plain_pyspark_model_registers_scores_and_predicts(case, spark, data, settings, fitted, registered,
                                                             capsys):
    from sparkship.serving import UnsupportedModelError

    model, done = fitted[case.name], registered(case, capsys)
    assert (done.out["name"], done.out["task"]) == (case.name, case.task)
    assert done.out["metrics"] and all(math.isfinite(v) for v in done.out["metrics"].values()), done.out
    assert done.manifest["servable"] is case.servable, done.manifest["unservable_reason"]

    expected = _expected(model, data["df"], case.task)
    got = tables.read(spark, done.scores).select(*expected.columns).orderBy("id")
    assert_approx_df_equality(loose(got), loose(expected), 1e-9)

    inputs = [f["name"] for f in done.manifest["signature"]["inputs"]]
    if case.servable:
        scorer = sparkship.scorer(done.ref, settings=settings)
        assert _jvm_free_worst(scorer, expected, data["df"], inputs, case.task != "regression") <= 1e-9
        return
    with pytest.raises(UnsupportedModelError, match="MinHashLSH"):
        sparkship.scorer(done.ref, settings=settings)
    rows = str(data["root"] / f"rows_{case.name}.csv")
    data["df"].select(*inputs).toPandas().to_csv(rows, index=False)
    capsys.readouterr()
    assert _cli(settings, "predict", "--model", done.ref, "--input", rows, "--output", rows + ".out.csv") != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sparkship: error:")]
    assert len(errors) == 1 and "MinHashLSH" in errors[0], errors
    assert not os.path.exists(rows + ".out.csv")


# --- validated, monitored, reported -------------------------------------------------------------------------------

def _reference(case: Case, model: Any, holdout: Any) -> tuple[str, float, bool]:
    """(metric, Spark's own evaluator's value on the holdout, smaller is better) for the case's task."""
    from pyspark.ml.evaluation import ClusteringEvaluator, MulticlassClassificationEvaluator, RegressionEvaluator

    out = _best(model).transform(holdout)
    if case.task == "clustering":
        return "silhouette", ClusteringEvaluator(featuresCol="features").evaluate(out), False
    if case.task == "regression":
        return "rmse", RegressionEvaluator(labelCol=case.label).evaluate(out), True
    label = "ks_idx" if case.label == "ks" else case.label  # a string label: the model's own indexed column
    metric = "accuracy" if case.label == "y" else "weightedRecall" if case.name == "one_vs_rest" else \
        "weightedPrecision"
    ev = MulticlassClassificationEvaluator(labelCol=label, metricName=metric)
    return metric, ev.evaluate(out.withColumn(label, out[label].cast("double"))), False


def _validate(settings: Settings, ref: str, holdout: str, rules: str, capsys) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = _cli(settings, "validate", "--model", ref, "--table", holdout, "--policy", rules, "--json")
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_registered_model_is_validated_monitored_and_reported(case, spark, data, settings, fitted, registered,
                                                                capsys):
    done = registered(case, capsys)
    metric, want, smaller = _reference(case, fitted[case.name], data["holdout_df"])
    op, passing, failing = ("<=", want + 0.01, want - 0.01) if smaller else (">=", want - 0.01, want + 0.01)

    code, passed = _validate(settings, done.ref, data["holdout"], f"{metric}{op}{passing}", capsys)
    assert (code, passed["status"], passed["rows"]) == (0, "PASS", 90), passed
    assert passed["candidate_metrics"][metric] == pytest.approx(want, rel=1e-9, abs=1e-12)
    code, failed = _validate(settings, done.ref, data["holdout"], f"{metric}{op}{failing}", capsys)
    assert (code, failed["status"]) == (1, "FAIL") and metric in failed["reasons"][0], failed

    capsys.readouterr()
    assert _cli(settings, "monitor", "--model", done.ref, "--scores", done.scores, "--no-write", "--on-drift",
                "report", "--json") == 0
    inputs = [f["name"] for f in done.manifest["signature"]["inputs"]]
    assert {*inputs, "prediction"} <= set(json.loads(capsys.readouterr().out)["features"])

    out = str(data["root"] / f"report_{case.name}.html")
    assert _cli(settings, "report", "--model", done.ref, "--out", out, "--table", data["holdout"], "--scores",
                done.scores, "--json") == 0
    sections = json.loads(capsys.readouterr().out)["sections"]
    per_task = {"classification": "classes", "regression": "residuals", "clustering": "clusters"}[case.task]
    assert {"model", "metrics", per_task, "validation", "drift"} <= set(sections), sections
    with open(out, encoding="utf-8") as fh:
        page = fh.read()
    assert metric in page and "data:image/png;base64," in page


def test_the_clustering_gate_compares_silhouettes_with_the_champion(spark, data, settings, capsys):
    """A champion's silhouette is the bar: more clusters than the blobs is a regression (larger is better)."""
    from pyspark.ml.evaluation import ClusteringEvaluator

    three, six = _clu("KMeans", k=3, maxIter=10).fit(data["df"]), _clu("KMeans", k=6, maxIter=10).fit(data["df"])
    for model in (three, six):
        sparkship.register_model(model, "blobs", table=data["table"], settings=settings)
    scores = {k: ClusteringEvaluator().evaluate(m.transform(data["holdout_df"])) for k, m in ((3, three), (6, six))}
    assert scores[6] < scores[3] - 0.02  # the premise: six clusters fit three blobs worse
    code, first = _validate(settings, "blobs/1", data["holdout"], "max_regression=0.01", capsys)
    assert (code, first["status"], first["champion_version"]) == (0, "PASS", None)
    assert _cli(settings, "promote", "--model", "blobs/1", "--json") == 0
    code, second = _validate(settings, "blobs/2", data["holdout"], "max_regression=0.01", capsys)
    assert (code, second["status"], second["champion_version"]) == (1, "FAIL", 1)
    assert second["champion_metrics"]["silhouette"] == pytest.approx(scores[3], rel=1e-9)
    assert second["candidate_metrics"]["silhouette"] == pytest.approx(scores[6], rel=1e-9)
    assert "silhouette" in second["reasons"][0] and "champion" in second["reasons"][0]


def test_refusals_name_the_remedy_in_one_line(spark, data, settings, fitted, capsys):
    """A string label that no stage of the model indexes; a topic model (LDA: no prediction); a clustering policy
    bounding a classifier's metric."""
    folder = str(data["root"] / "string_label_unindexed")
    _cls("LogisticRegression", labelCol="k", maxIter=5).fit(data["df"]).write().save(folder)
    capsys.readouterr()
    code = _cli(settings, "register", "--name", "unindexed", "--path", folder, "--table", data["table"],
                "--label", "ks")
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "StringIndexer" in err[0] and "'ks'" in err[0], err
    assert "unindexed" not in [m["name"] for m in Registry(settings).list_models()]

    lda = _pipe(_feature("Tokenizer", inputCol="txt", outputCol="words"),
                _feature("CountVectorizer", inputCol="words", outputCol="features"),
                _est("clustering", "LDA", k=2, maxIter=2, seed=1)).fit(data["df"])
    lda_folder = str(data["root"] / "lda")
    lda.write().save(lda_folder)
    capsys.readouterr()
    code = _cli(settings, "register", "--name", "topics", "--path", lda_folder, "--table", data["table"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "prediction" in err[0], err
    assert "topics" not in [m["name"] for m in Registry(settings).list_models()]

    sparkship.register_model(fitted["kmeans"], "blobs_policy", table=data["table"], settings=settings)
    capsys.readouterr()
    code = _cli(settings, "validate", "--model", "blobs_policy/1", "--table", data["holdout"], "--policy", "f1>=0.5")
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "clustering" in err[0] and "silhouette" in err[0], err
