"""The general spec form (`pipeline:`): parsing and one-line refusals without Spark; training any Spark ML pipeline
from a spec on a real Delta table, registered through `sparkship register`'s path, then scored by `sparkship score`
equal to Spark's own transform of the registered model."""
from __future__ import annotations

import json
import math
import random

import pytest
import yaml
from chispa import assert_approx_df_equality

from sparkship import artifacts, tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import UsageError
from sparkship.pipeline_training import train_pipeline_and_register
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from sparkship.spec import TrainingSpec, parse_spec
from sparkship.spec_pipeline import PipelineSpec, parse_any_spec
from tests.helpers.registering import loose

pytestmark = pytest.mark.seconds(300)

SCHEMA = "id long, x1 double, x2 double, c string, text string, y int, ks string, r double, t double, cens double, " \
         "g1 double, g2 double"
WORDS = {"a": ["good", "great", "fine"], "b": ["bad", "awful", "poor"], "c": ["meh", "okay", "so"]}


def make_rows(n: int, seed: int) -> list[tuple]:
    """Learnable rows: binary y, string classes ks (told by the words of text), a regression target r, a survival
    time t with a censor flag, and two well-separated clusters in (g1, g2)."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        x1, x2, c = rnd.gauss(0, 1), rnd.gauss(0, 1), rnd.choice("abc")
        y = int(x1 - 0.5 * x2 + rnd.gauss(0, 0.3) > 0)
        text = " ".join(rnd.choice(WORDS[c]) for _ in range(4))
        r = 2.0 * x1 - x2 + rnd.gauss(0, 0.1)
        t = math.exp(0.5 * x1 + rnd.gauss(0, 0.2))
        centre = 5.0 if i % 2 else -5.0
        rows.append((i, x1, x2, c, text, y, {"a": "pos", "b": "neg", "c": "mid"}[c], r, t, float(i % 4 != 0),
                     centre + rnd.gauss(0, 0.3), centre + rnd.gauss(0, 0.3)))
    return rows


def stage(cls: str, **params) -> dict:
    return {"class": f"pyspark.ml.{cls}", "params": params}


def assembled(*stages: dict, cols: tuple[str, ...] = ("x1", "x2")) -> list[dict]:
    return [stage("feature.VectorAssembler", inputCols=list(cols), outputCol="features"), *stages]


TEXT = [stage("feature.Tokenizer", inputCol="text", outputCol="words"),
        stage("feature.HashingTF", inputCol="words", outputCol="tf", numFeatures=64),
        stage("feature.IDF", inputCol="tf", outputCol="features")]
FACTORY = '''
from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression, OneVsRest
from pyspark.ml.feature import VectorAssembler


def one_vs_rest():
    return Pipeline(stages=[VectorAssembler(inputCols=["x1", "x2"], outputCol="features"),
                            OneVsRest(classifier=LogisticRegression(maxIter=10))])


def not_a_pipeline():
    return "a string"


def broken():
    raise RuntimeError("the feature list is missing")
'''

# name -> (task, label, pipeline, tuning)
CASES: dict[str, tuple] = {
    "linear_svc": ("classification", "y", assembled(stage("classification.LinearSVC", maxIter=20)), None),
    "text_naive_bayes": ("classification", "ks", [*TEXT, stage("classification.NaiveBayes")], None),
    "mlp": ("classification", "y", assembled(stage("classification.MultilayerPerceptronClassifier", layers=[2, 4, 2],
                                                   maxIter=30, seed=1)), None),
    "fm_classifier": ("classification", "y", assembled(stage("classification.FMClassifier", maxIter=20, seed=1)),
                      None),
    "one_vs_rest": ("classification", "y", {"factory": "spec_factories:one_vs_rest"}, None),
    "glr": ("regression", "r", assembled(stage("regression.GeneralizedLinearRegression", family="gaussian")), None),
    "isotonic": ("regression", "r", assembled(stage("regression.IsotonicRegression"), cols=("x1",)), None),
    "fm_regressor": ("regression", "r", assembled(stage("regression.FMRegressor", maxIter=20, seed=1)), None),
    "aft": ("regression", "t", assembled(stage("regression.AFTSurvivalRegression", censorCol="cens")), None),
    "kmeans": ("clustering", None, assembled(stage("clustering.KMeans", k=2, seed=1), cols=("g1", "g2")), None),
    "bisecting_kmeans": ("clustering", None, assembled(stage("clustering.BisectingKMeans", k=2, seed=1),
                                                       cols=("g1", "g2")), None),
    "gaussian_mixture": ("clustering", None, assembled(stage("clustering.GaussianMixture", k=2, seed=1, maxIter=10),
                                                       cols=("g1", "g2")), None),
    "cross_validated": ("classification", "y", assembled(stage("classification.LogisticRegression")),
                        {"method": "cross_validation", "folds": 2, "grid": {"1.regParam": [0.0, 0.5]}}),
    "train_validation_split": ("regression", "r", assembled(stage("regression.LinearRegression")),
                               {"method": "train_validation_split", "train_ratio": 0.7,
                                "grid": {"LinearRegression.regParam": [0.0, 1.0]}}),
}
# A split other than the default: validate and report must rebuild it from the manifest.
SPLITS = {"glr": {"test_fraction": 0.3, "seed": 7}}
# A spec's own validation rules, which `validate` applies on top of the policy (a silhouette is at most 1).
RULES = {"kmeans": {"thresholds": {"silhouette": {"min": 1.5}}}}
# Trained through `sparkship train --spec` (the rest through the module's API).
VIA_CLI = {"text_naive_bayes", "kmeans"}
# One metric per task, recomputed here with Spark's evaluator on the held-out rows.
CHECKED_METRIC = {"classification": "accuracy", "regression": "rmse", "clustering": "silhouette"}

def raw_spec(name: str, table: str = "/data/t") -> dict:
    task, label, pipeline, tuning = CASES[name]
    raw = {"name": name, "task": task, "table": table, "pipeline": pipeline}
    raw.update({"label": label} if label else {})
    raw.update({"tuning": tuning} if tuning else {})
    raw.update({"split": SPLITS[name]} if name in SPLITS else {})
    raw.update({"validation": RULES[name]} if name in RULES else {})
    return raw


# --- parsing, no Spark -----------------------------------------------------------------------------------------


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """A module in the user's code that holds pipeline factories."""
    (tmp_path / "spec_factories.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_every_case_parses_and_round_trips_through_to_dict(factories):
    for name in CASES:
        spec = parse_any_spec(raw_spec(name))
        assert isinstance(spec, PipelineSpec) and parse_any_spec(spec.to_dict()) == spec, name
    short = {"name": "m", "task": "regression", "table": "/t", "label": "r", "features": {"numeric": ["x1"]},
             "model": {"algorithm": "linear_regression"}}
    assert isinstance(parse_any_spec(short), TrainingSpec)
    with pytest.raises(UsageError, match="parse_any_spec"):
        parse_spec(raw_spec("kmeans"))  # the short form's parser points at the general one


def test_params_and_grid_values_go_through_spark_s_converters():
    spec = parse_any_spec({**raw_spec("mlp"), "tuning": {"grid": {"MultilayerPerceptronClassifier.maxIter": [5]}}})
    assert spec.stages[1].params["layers"] == [2, 4, 2] and spec.tuning.axes[0].stage == 1
    assert spec.tuning.method == "cross_validation" and spec.tuning.folds == 3


def _refusal(raw: dict) -> str:
    with pytest.raises(UsageError) as err:
        parse_any_spec(raw)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("changes, words", [
    ({"pipeline": [{"class": "sklearn.linear_model.LogisticRegression"}]}, ["'pipeline[0].class'", "pyspark.ml"]),
    ({"pipeline": assembled(stage("classification.NoSuchThing"))}, ["'pipeline[1].class'", "no class"]),
    ({"pipeline": [stage("feature.VectorAssembler", inputCols="x1")] + [stage("classification.LinearSVC")]},
     ["'pipeline[0].params.inputCols'", "bad value"]),
    ({"pipeline": assembled(stage("classification.LinearSVC", numTrees=3))},
     ["'pipeline[1].params.numTrees'", "known:", "regParam"]),
    ({"pipeline": assembled(stage("regression.LinearRegression"))}, ["'task'", "LinearRegression", "regression"]),
    ({"pipeline": [stage("feature.Tokenizer", inputCol="text", outputCol="w")]}, ["'pipeline'", "no stage"]),
    ({"pipeline": assembled(stage("classification.LinearSVCModel"))}, ["fitted model class"]),
    ({"tuning": {"grid": {"LinearSVC.numTrees": [1]}}}, ["'tuning.grid.LinearSVC.numTrees'", "unknown parameter"]),
    ({"tuning": {"grid": {"RandomForest.maxDepth": [1]}}}, ["'tuning.grid.RandomForest.maxDepth'", "names no stage"]),
    ({"tuning": {"grid": {"7.regParam": [1]}}}, ["stage 7 does not exist"]),
    ({"tuning": {"method": "train_validation_split", "folds": 2, "grid": {"1.regParam": [1]}}}, ["'tuning.folds'"]),
    ({"tuning": {"grid": {"1.regParam": [0.1]}, "metric": "rmse"}}, ["'tuning.metric'", "unknown metric"]),
    ({"pipeline": {"factory": "no_such_package.mod:fn"}}, ["'pipeline.factory'", "cannot import"]),
    ({"pipeline": {"factory": "json:no_such_function"}}, ["'pipeline.factory'", "has no"]),
    ({"pipeline": {"factory": "not a reference"}}, ["'pipeline.factory'", "package.module:function"]),
    ({"label": None}, ["'label'", "required"]),
    ({"task": "ranking"}, ["'task'", "clustering"]),
])
def test_a_bad_pipeline_spec_is_refused_in_one_line_naming_the_key(changes, words):
    raw = {**raw_spec("linear_svc"), **changes}
    raw = {k: v for k, v in raw.items() if v is not None}
    message = _refusal(raw)
    assert all(w in message for w in words), message


def test_a_factory_may_be_left_unimported_where_the_user_code_is_not_installed():
    raw = {**raw_spec("linear_svc"), "pipeline": {"factory": "not_installed_here.models:build"}}
    assert parse_any_spec(raw, import_factory=False).factory == "not_installed_here.models:build"
    assert "cannot import" in _refusal(raw)


def test_clustering_needs_no_label_and_has_silhouette_thresholds():
    spec = parse_any_spec({**raw_spec("kmeans"), "validation": {"thresholds": {"silhouette": {"min": 0.5}}}})
    assert spec.label is None and spec.validation.thresholds == {"silhouette": {"min": 0.5}}


# --- training on Delta tables --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("spec-pipelines")
    table = str(root / "table")
    tables.write(spark.createDataFrame(make_rows(200, 3), SCHEMA), table, mode="overwrite")
    df = tables.read(spark, table).cache()  # counted, split and transformed by every case
    yield {"root": root, "table": table, "df": df}
    df.unpersist()


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings.resolve(home=str(tmp_path_factory.mktemp("spec-pipelines-home")))


def _cli(settings: Settings, *args: str) -> int:
    return main(["--home", settings.home, *args])


def _scores_equal_transform(spark, settings: Settings, ref: str, model, data: dict, out: str) -> None:
    """`sparkship score` of ``ref`` writes what Spark's transform of the registered model (``model``, loaded from
    its artifact) gives."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    mv, _ = Registry(settings).manifest(parse_ref(ref))
    assert _cli(settings, "score", "--model", ref, "--input", data["table"], "--output", out, "--keys", "id") == 0
    scored = tables.read(spark, out)
    transformed = model.transform(data["df"])
    cols = [F.col("id"), F.col("prediction").cast("double").alias("prediction")]
    if mv.task == "classification" and "probability" in transformed.columns:
        assert "probability" in scored.columns
        cols.append(vector_to_array("probability").alias("probability"))
    expected = transformed.select(*cols).orderBy("id")
    got = scored.select(*expected.columns).orderBy("id")
    assert_approx_df_equality(loose(got), loose(expected), 1e-9)


def _held_out_metric(spark, manifest: dict, model, data: dict) -> tuple[int, float]:
    """The held-out rows as `validate` and `report` rebuild them from the manifest (training's split over the
    signature's inputs and the label), and the task's checked metric of the registered model on them."""
    from pyspark.ml.evaluation import ClusteringEvaluator, MulticlassClassificationEvaluator, RegressionEvaluator

    from sparkship import training
    from sparkship.registering import spec_of
    from sparkship.spec import FeatureSpec, ModelSpec

    task, labels = manifest["task"], manifest["labels"]
    if task == "clustering":  # split on the inputs alone: a stand-in spec, its last input as the label
        inputs = [f["name"] for f in manifest["signature"]["inputs"]]
        spec = TrainingSpec(name="m", task=task, table=data["table"], label=inputs[-1],
                            features=FeatureSpec(numeric=tuple(inputs[:-1])), model=ModelSpec("m", "m"))
        rows = data["df"].where(training.split_flag(spec))
        predictions = model.transform(rows)
        return rows.count(), ClusteringEvaluator(metricName="silhouette").evaluate(predictions)
    spec = spec_of(manifest, "m")
    rows = training.held_out_rows(spark, spec, 0, labels)
    label_col = training.label_column(spec, labels is not None)
    predictions = model.transform(rows)
    if task == "regression":
        return rows.count(), RegressionEvaluator(labelCol=label_col, metricName="rmse").evaluate(predictions)
    return rows.count(), MulticlassClassificationEvaluator(labelCol=label_col, metricName="accuracy").evaluate(
        predictions)


def _train(name: str, raw: dict, spark, settings: Settings, folder, capsys) -> dict:
    """Train ``raw`` through `sparkship train --spec` for the cases in VIA_CLI, else through the module's API."""
    if name not in VIA_CLI:
        return train_pipeline_and_register(spark, settings, parse_any_spec(raw), run_id=f"run-{name}")
    spec_file = folder / f"{name}.yml"
    spec_file.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert _cli(settings, "train", "--spec", str(spec_file), "--run-id", f"run-{name}", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert {"name", "version", "metrics", "artifact", "table_version"} <= set(out)  # the short form's keys
    return out


def _validated_on_held_out_rows(settings: Settings, ref: str, table: str, manifest: dict, capsys) -> None:
    """Validated on its own training table, the version is judged on the rows its training held out."""
    capsys.readouterr()
    assert _cli(settings, "validate", "--model", ref, "--table", table, "--policy", "permissive", "--json") == 0
    validated = json.loads(capsys.readouterr().out)
    assert (validated["status"], validated["rows"]) == ("PASS", manifest["training"]["rows_test"])
    assert validated["candidate_metrics"]["accuracy"] == pytest.approx(manifest["metrics"]["accuracy"], abs=1e-9)


@pytest.mark.parametrize("name", list(CASES))
def test_a_spec_pipeline_trains_registers_and_scores_like_its_transform(name, spark, data, settings, factories,
                                                                         tmp_path, capsys):
    raw = raw_spec(name, data["table"])
    out = _train(name, raw, spark, settings, tmp_path, capsys)

    task, label, _, tuning = CASES[name]
    assert (out["name"], out["task"], out["table_version"]) == (name, task, 0)
    assert all(math.isfinite(v) for v in out["metrics"].values())
    mv, manifest = Registry(settings).manifest(parse_ref(f"{name}/{out['version']}"))
    lineage = manifest["training"]
    assert lineage["spec"] == parse_any_spec(raw).to_dict() and lineage["run_id"] == f"run-{name}"
    assert lineage["rows_train"] + lineage["rows_test"] == data["df"].count() and lineage["rows_test"] > 0
    profile = manifest["reference_profile"]  # inputs: the training rows; predictions: the held-out ones
    assert (profile["rows"], profile["prediction"]["rows"]) == (lineage["rows_train"], lineage["rows_test"])
    assert set(profile["features"]) == {f["name"] for f in manifest["signature"]["inputs"]}
    model = artifacts.load(mv.artifact)  # loaded once: the held-out metric and the scores are checked against it
    rows, metric = _held_out_metric(spark, manifest, model, data)
    assert rows == lineage["rows_test"]
    assert out["metrics"][CHECKED_METRIC[task]] == pytest.approx(metric, abs=1e-9)
    if tuning:
        assert lineage["tuning"]["method"] == tuning["method"] and len(lineage["tuning"]["candidates"]) == 2
        assert lineage["tuning"]["best_params"].keys() == tuning["grid"].keys()
    classes = sorted(r[0] for r in data["df"].select(label).distinct().collect()) if label == "ks" else None
    assert manifest["labels"] == classes
    _scores_equal_transform(spark, settings, mv.ref, model, data, str(tmp_path / "scores"))
    if name in VIA_CLI and task == "classification":
        _validated_on_held_out_rows(settings, mv.ref, data["table"], manifest, capsys)
    if name in RULES:
        _fails_its_spec_rules(settings, mv.ref, data["table"], capsys)


def _fails_its_spec_rules(settings: Settings, ref: str, table: str, capsys) -> None:
    """A permissive policy, but the spec's own `validation` thresholds fail the version."""
    capsys.readouterr()
    assert _cli(settings, "validate", "--model", ref, "--table", table, "--policy", "permissive", "--json") == 1
    validated = json.loads(capsys.readouterr().out)
    assert validated["status"] == "FAIL" and "silhouette" in validated["reasons"][0], validated


@pytest.mark.parametrize("changes, words", [
    ({"pipeline": [stage("feature.Tokenizer", inputCol="text", outputCol="w"), "not-a-stage"]}, ["'pipeline[1]'"]),
    ({"pipeline": {"factory": "spec_factories:not_a_pipeline"}}, ["'pipeline.factory'", "returned a str"]),
    ({"pipeline": {"factory": "spec_factories:broken"}},
     ["'pipeline.factory'", "RuntimeError: the feature list is missing"]),
    ({"pipeline": assembled(stage("classification.LinearSVC"), cols=("x1", "nope"))}, ["lacks column", "nope"]),
    ({"label": "r"}, ["'label'", "whole numbers"]),
    ({"task": "regression", "label": "r",
      "pipeline": assembled(stage("regression.GeneralizedLinearRegression", family="gaussian", link="logit"))},
     ["fitting the pipeline of spec 'refused' failed", "logit"]),
    # A failed Spark job inside the fit (the input layer does not match the features): its innermost cause.
    ({"pipeline": assembled(stage("classification.MultilayerPerceptronClassifier", layers=[7, 3, 2], maxIter=2))},
     ["fitting the pipeline of spec 'refused' failed", "Exception"]),
    ({"label": "text", "task": "regression", "pipeline": assembled(stage("regression.LinearRegression"))},
     ["'label'", "numeric label"]),
])
def test_cli_refusals_are_one_line_and_register_nothing(spark, data, settings, tmp_path, capsys, factories,
                                                        changes, words):
    spec_file = tmp_path / "bad.yml"
    spec_file.write_text(yaml.safe_dump({**raw_spec("linear_svc", data["table"]), "name": "refused", **changes}))
    capsys.readouterr()
    assert _cli(settings, "train", "--spec", str(spec_file)) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sparkship: error:") and all(w in err[0] for w in words), err
    assert "refused" not in [m["name"] for m in Registry(settings).list_models()]

