"""`sparkship register` and the Python API on models fitted by plain pyspark, outside the spec path: each is
registered, scored with `sparkship score` (equal to its own transform), predicted without a JVM where servable;
a binary one is also validated, promoted and monitored; refusals go through the CLI (in-process)."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from chispa import assert_approx_df_equality

import sparkship
from sparkship import artifacts, tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import UsageError
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from sparkship.serving import UnsupportedModelError
from tests.helpers.cli import CliRun, run_cli
from tests.helpers.registering import BINARY, MULTICLASS, SCHEMA, loose, make_rows

pytestmark = pytest.mark.seconds(175)


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("register")
    table, holdout = str(root / "table"), str(root / "holdout")
    tables.write(spark.createDataFrame(make_rows(160, 1), SCHEMA), table, mode="overwrite")
    tables.write(spark.createDataFrame(make_rows(60, 5), SCHEMA), holdout, mode="overwrite")
    df = tables.read(spark, table).cache()  # fitted on and transformed several times per case
    yield {"root": root, "df": df, "table": table, "holdout": holdout}
    df.unpersist()


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings.resolve(home=str(tmp_path_factory.mktemp("register-home")))


def _cli(settings: Settings, *args: str) -> int:
    return main(["--home", settings.home, *args])


# --- the models ---------------------------------------------------------------------------------------------


def _assembled(*stages: Any, cols: tuple[str, ...] = ("x1", "x2")) -> list[Any]:
    from pyspark.ml.feature import VectorAssembler

    return [VectorAssembler(inputCols=list(cols), outputCol="features"), *stages]


def pipeline_with_feature_stages(df):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

    return Pipeline(stages=[
        StringIndexer(inputCol="c", outputCol="c_idx", handleInvalid="keep"),
        OneHotEncoder(inputCol="c_idx", outputCol="c_ohe"),
        VectorAssembler(inputCols=["x1", "x2", "c_ohe"], outputCol="raw"),
        StandardScaler(inputCol="raw", outputCol="features"),
        LogisticRegression(labelCol="y", maxIter=30),
    ]).fit(df)


def bare_isotonic_regression(df):
    """A single saved model, not a pipeline (one that reads a scalar column: a Delta table with a vector column
    cannot be read by sparkship's tables layer)."""
    from pyspark.ml.regression import IsotonicRegression

    return IsotonicRegression(featuresCol="x1", labelCol="r").fit(df)


def cross_validator(df):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    lr = LogisticRegression(labelCol="y", maxIter=20)
    grid = ParamGridBuilder().addGrid(lr.regParam, [0.0, 0.1]).build()
    return CrossValidator(estimator=Pipeline(stages=_assembled(lr)), estimatorParamMaps=grid, numFolds=2, seed=3,
                          evaluator=BinaryClassificationEvaluator(labelCol="y")).fit(df)


def train_validation_split(df):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import DecisionTreeClassifier
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import ParamGridBuilder, TrainValidationSplit

    tree = DecisionTreeClassifier(labelCol="y", seed=1)
    grid = ParamGridBuilder().addGrid(tree.maxDepth, [2, 4]).build()
    return TrainValidationSplit(estimator=Pipeline(stages=_assembled(tree)), estimatorParamMaps=grid, seed=3,
                                evaluator=MulticlassClassificationEvaluator(labelCol="y")).fit(df)


def multiclass_forest(df):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import RandomForestClassifier

    return Pipeline(stages=_assembled(RandomForestClassifier(labelCol="k", numTrees=5, maxDepth=4, seed=2))).fit(df)


def regressor(df):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import OneHotEncoder, StringIndexer
    from pyspark.ml.regression import GBTRegressor

    return Pipeline(stages=[
        StringIndexer(inputCol="c", outputCol="c_idx", handleInvalid="keep"),
        OneHotEncoder(inputCol="c_idx", outputCol="c_ohe"),
        *_assembled(GBTRegressor(labelCol="r", maxIter=5, maxDepth=3, seed=4), cols=("x1", "x2", "c_ohe")),
    ]).fit(df)


def clustering(df):
    from pyspark.ml import Pipeline
    from pyspark.ml.clustering import KMeans

    return Pipeline(stages=_assembled(KMeans(k=3, seed=5, maxIter=10))).fit(df)


def not_servable(df):
    """A stage the JVM-free scorer refuses (an LSH model) before the classifier."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import BucketedRandomProjectionLSH

    lsh = BucketedRandomProjectionLSH(inputCol="features", outputCol="hashes", bucketLength=1.0, seed=6)
    return Pipeline(stages=_assembled(lsh, LogisticRegression(labelCol="y", maxIter=20))).fit(df)


@dataclass(frozen=True)
class Case:
    name: str
    fit: Callable[[Any], Any]
    via: str  # "cli" (saved folder), "api-object", "api-path", "mlflow" (MLflow dir through the CLI)
    label: str | None
    task: str
    metrics: list[str]
    kind: str  # what the manifest records the saved model or object as
    servable: bool = True
    gated: bool = False  # also validated on a holdout and monitored (the binary case: its own test below)


REGRESSION = ["mae", "r2", "rmse"]
CASES = [
    Case("features", pipeline_with_feature_stages, "cli", "y", "classification", BINARY, "PipelineModel"),
    Case("bare_model", bare_isotonic_regression, "cli", "r", "regression", REGRESSION, "IsotonicRegressionModel"),
    Case("cv", cross_validator, "api-path", "y", "classification", BINARY, "CrossValidatorModel"),
    Case("tvs", train_validation_split, "api-object", "y", "classification", BINARY, "TrainValidationSplitModel"),
    Case("mlflow_forest", multiclass_forest, "mlflow", "k", "classification", MULTICLASS, "mlflow", gated=True),
    Case("gbt_regressor", regressor, "api-object", "r", "regression", REGRESSION, "PipelineModel", gated=True),
    Case("kmeans", clustering, "cli", None, "clustering", ["silhouette"], "PipelineModel", gated=True),
    Case("lsh", not_servable, "cli", "y", "classification", BINARY, "PipelineModel", servable=False),
]


def _register(case: Case, model: Any, table: str, settings: Settings, folder: str, capsys) -> dict[str, Any]:
    """Register ``model`` the case's way; return the CLI's JSON (or the same keys from the API's version)."""
    if case.via == "api-object":
        mv = sparkship.register_model(model, case.name, table=table, label=case.label, settings=settings)
        return {"name": mv.name, "version": mv.version, "artifact": mv.artifact, "task": mv.task,
                "metrics": mv.metrics}
    if case.via == "mlflow":
        import mlflow.spark

        mlflow.spark.save_model(model, folder, pip_requirements=["pyspark"])  # no inference: a subprocess
    else:
        model.write().save(folder)
    if case.via == "api-path":
        mv = sparkship.register_model(folder, case.name, table=table, label=case.label, settings=settings)
        return {"name": mv.name, "version": mv.version, "artifact": mv.artifact, "task": mv.task,
                "metrics": mv.metrics}
    capsys.readouterr()
    label = ["--label", case.label] if case.label else []
    assert _cli(settings, "register", "--name", case.name, "--path", folder, "--table", table, *label,
                "--run-id", f"run-{case.name}", "--json") == 0
    return json.loads(capsys.readouterr().out)


def _expected(spark, model, df, task: str):
    """What scoring must write: the pipeline's own transform, vectors as arrays; transformed once, then held on the
    driver (the frame is compared twice)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    cols = [F.col("id"), F.col("prediction").cast("double").alias("prediction")]
    if task == "classification":
        cols.append(vector_to_array("probability").alias("probability"))
    expected = model.transform(df).select(*cols).orderBy("id")
    return spark.createDataFrame(expected.collect(), expected.schema)


def _jvm_free_parity(spark, scorer, expected, df, inputs: list[str]) -> float:
    """Largest difference between the JVM-free scorer's outputs and transform's, over every row."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    typed = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    select = [vector_to_array(c).alias(c) if typed[c] == "vector" else F.col(c) for c in inputs]
    records = [r.asDict() for r in df.orderBy("id").select(*select).collect()]
    got = scorer.score(records).records()
    want = [r.asDict() for r in expected.collect()]
    assert len(got) == len(want) and all(g is not None for g in got)
    worst = 0.0
    for g, w in zip(got, want):
        worst = max(worst, abs(g["prediction"] - w["prediction"]))
        if "probability" in w:
            worst = max(worst, *(abs(a - b) for a, b in zip(g["probability"], w["probability"])))
    return worst


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_model_fitted_elsewhere_registers_scores_and_serves(case, spark, data, settings, capsys):
    table, df = data["table"], data["df"]
    model = case.fit(df)
    out = _register(case, model, table, settings, str(data["root"] / f"saved_{case.name}"), capsys)

    assert (out["name"], out["task"], sorted(out["metrics"])) == (case.name, case.task, case.metrics)
    assert all(math.isfinite(v) for v in out["metrics"].values())
    mv, manifest = Registry(settings).manifest(parse_ref(f"{case.name}/{out['version']}"))
    assert mv.artifact == out["artifact"] and manifest["training"]["table"] == table
    assert (manifest["servable"], manifest["registered"]["kind"]) == (case.servable, case.kind)
    fitted = model.bestModel if hasattr(model, "bestModel") else model

    scores = str(data["root"] / f"scores_{case.name}")
    assert _cli(settings, "score", "--model", mv.ref, "--input", table, "--output", scores, "--keys", "id",
                "--include-features") == 0
    expected = _expected(spark, fitted, df, case.task)
    got = tables.read(spark, scores).select(*expected.columns).orderBy("id")
    assert_approx_df_equality(loose(got), loose(expected), 1e-9)

    inputs = [f["name"] for f in manifest["signature"]["inputs"]]
    if case.gated:
        _validate_and_monitor(settings, mv.ref, case, data["holdout"], scores, inputs, capsys)
    if case.servable:
        assert _jvm_free_parity(spark, sparkship.scorer(mv.ref, settings=settings), expected, df, inputs) <= 1e-9
    else:
        with pytest.raises(UnsupportedModelError, match="BucketedRandomProjectionLSHModel"):
            sparkship.scorer(mv.ref, settings=settings)
        assert "BucketedRandomProjectionLSHModel" in manifest["unservable_reason"]
        rows = str(data["root"] / "rows.csv")
        df.select(*inputs).toPandas().to_csv(rows, index=False)
        for command in (["predict", "--model", mv.ref, "--input", rows, "--output", rows + ".out.csv"],
                        ["export", "--model", mv.ref, "--format", "mlflow", "--out", str(data["root"] / "export")]):
            capsys.readouterr()
            assert _cli(settings, *command) != 0
            errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sparkship: error:")]
            assert len(errors) == 1 and "BucketedRandomProjectionLSHModel" in errors[0], errors
            assert not os.path.exists(command[-1])


def _validate_and_monitor(settings: Settings, ref: str, case: Case, holdout: str, scores: str, inputs: list[str],
                          capsys) -> None:
    """Validation on a holdout (clustering: by its silhouette, over every row), and drift monitoring of its
    scores."""
    capsys.readouterr()
    code = _cli(settings, "validate", "--model", ref, "--table", holdout, "--policy", "permissive", "--json")
    validated = json.loads(capsys.readouterr().out)
    assert (code, validated["status"], validated["rows"]) == (0, "PASS", 60)
    assert set(validated["candidate_metrics"]) == set(case.metrics)
    assert _cli(settings, "monitor", "--model", ref, "--scores", scores, "--no-write", "--on-drift", "report",
                "--json") == 0
    assert {*inputs, "prediction"} <= set(json.loads(capsys.readouterr().out)["features"])


def test_a_registered_binary_model_is_validated_promoted_and_monitored(spark, data, settings, capsys, tmp_path):
    model = pipeline_with_feature_stages(data["df"])
    folder = str(tmp_path / "saved")
    model.write().save(folder)
    name = "gated"
    capsys.readouterr()
    assert _cli(settings, "register", "--name", name, "--path", folder, "--table", data["table"] + "@0",
                "--label", "y", "--json") == 0
    registered = json.loads(capsys.readouterr().out)
    holdout = str(tmp_path / "holdout")
    tables.write(spark.createDataFrame(make_rows(80, 9), SCHEMA), holdout, mode="overwrite")

    assert _cli(settings, "validate", "--model", f"{name}/1", "--table", holdout, "--policy", "accuracy>=0.6",
                "--json") == 0
    validated = json.loads(capsys.readouterr().out)
    assert validated["status"] == "PASS" and validated["rows"] == 80
    assert set(BINARY) <= set(validated["candidate_metrics"])
    assert _cli(settings, "promote", "--model", f"{name}/1", "--json") == 0
    assert Registry(settings).alias_version(name, "champion") == registered["version"]

    scores = str(tmp_path / "scores")
    assert _cli(settings, "score", "--model", f"{name}@champion", "--input", holdout, "--output", scores,
                "--keys", "id", "--include-features") == 0
    capsys.readouterr()
    assert _cli(settings, "monitor", "--model", f"{name}@champion", "--scores", scores, "--no-write",
                "--on-drift", "report", "--json") == 0
    monitored = json.loads(capsys.readouterr().out)
    assert {"x1", "x2", "c", "prediction"} <= set(monitored["features"])
    report = str(tmp_path / "report.html")
    assert _cli(settings, "report", "--model", f"{name}@champion", "--out", report, "--table", holdout) == 0
    assert os.path.getsize(report) > 0


def test_api_round_trip(spark, data, settings):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.functions import vector_to_array

    model = Pipeline(stages=_assembled(LogisticRegression(labelCol="y", maxIter=20))).fit(data["df"])
    mv = sparkship.register_model(model, "api_round_trip", table=data["table"], label="y", run_id="nb-1",
                                  settings=settings)
    assert (mv.version, mv.run_id, sorted(mv.metrics)) == (1, "nb-1", BINARY)
    assert artifacts.verify(mv.artifact)["registered"]["kind"] == "PipelineModel"
    loaded = sparkship.load_model("api_round_trip/run:nb-1", settings=settings)
    assert_approx_df_equality(
        loose(loaded.transform(data["df"]).select("id", vector_to_array("probability").alias("p")).orderBy("id")),
        loose(model.transform(data["df"]).select("id", vector_to_array("probability").alias("p")).orderBy("id")),
        1e-12)
    one = data["df"].orderBy("id").first()
    want = model.transform(data["df"].where(f"id = {one['id']}")).first()
    got = sparkship.scorer("api_round_trip", settings=settings).score_one({"x1": one["x1"], "x2": one["x2"]})
    assert abs(got["probability"][1] - want["probability"][1]) <= 1e-9 and got["prediction"] == want["prediction"]
    with pytest.raises(UsageError, match="unfitted"):
        sparkship.register_model(LogisticRegression(), "unfitted", table=data["table"], settings=settings)


# --- refusals through the CLI ------------------------------------------------------------------------------


def _refused(out: CliRun, *words: str) -> None:
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("sparkship: error:")]
    assert len(lines) == 1, out.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]


def test_refusals_are_one_line_and_register_nothing(spark, data, tmp_path):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression

    home = str(tmp_path / "home")
    saved = str(tmp_path / "model")
    Pipeline(stages=_assembled(LogisticRegression(labelCol="y", maxIter=5))).fit(data["df"]).write().save(saved)
    lacking = str(tmp_path / "lacking")
    tables.write(data["df"].drop("x2"), lacking, mode="overwrite")
    empty = str(tmp_path / "empty")
    os.makedirs(empty)

    base = ["--home", home, "register", "--name", "refused", "--table", data["table"]]
    env = {"SPARKSHIP_HOME": home}
    _refused(run_cli(*base, "--path", empty, env=env), "not a saved Spark ML model")
    _refused(run_cli(*base, "--path", saved, "--task", "forecasting", env=env), "--task", "forecasting")
    _refused(run_cli("--home", home, "register", "--name", "refused", "--path", saved, "--table", lacking, env=env),
             "x2", lacking)
    _refused(run_cli(*base, "--path", saved, "--task", "regression", env=env), "contradicts",
             "LogisticRegressionModel")
    assert Registry(Settings.resolve(home=home)).list_models() == []
    staging = os.path.join(home, "models", artifacts.STAGING_DIR)
    assert not os.path.isdir(staging) or os.listdir(staging) == []
