"""The checks of the registration zoo (tests/registry/test_zoo_*.py): a plain-pyspark model registered (through
the API or the in-process CLI), scored with ``sparkship score`` (equal to its own ``transform``), predicted without
a JVM (parity <= 1e-9, classes exact) or refused, validated (its metric equal to Spark's evaluator) and monitored;
one case of each kind of output (zoo_models.EACH_OUTPUT_KIND) also fails a bound just missed and is reported."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import pytest
from chispa import assert_approx_df_equality
from pyspark.ml.evaluation import ClusteringEvaluator, MulticlassClassificationEvaluator, RegressionEvaluator
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

import sparkship
from sparkship import tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from sparkship.serving import UnsupportedModelError
from tests.helpers.registering import loose
from tests.helpers.zoo_models import EACH_OUTPUT_KIND, Case


def cli(settings: Settings, *args: str) -> int:
    """``sparkship --home HOME ARGS`` in this process; its output goes to pytest's capsys."""
    return main(["--home", settings.home, *args])


@dataclass(frozen=True)
class Registered:
    out: dict[str, Any]  # what the CLI printed (or the API's version as the same keys)
    ref: str
    manifest: dict[str, Any]
    scores: str  # the table `sparkship score` wrote


def _register(case: Case, model: Any, settings: Settings, folder: str, table: str, capsys) -> dict[str, Any]:
    """Register ``model`` the case's way; the CLI's JSON, or the same keys from the API's ModelVersion."""
    if case.via == "api":
        mv = sparkship.register_model(model, case.name, table=table, label=case.label, settings=settings)
        return {"name": mv.name, "version": mv.version, "artifact": mv.artifact, "task": mv.task,
                "metrics": mv.metrics}
    model.write().save(folder)
    capsys.readouterr()
    label = ["--label", case.label] if case.label else []
    assert cli(settings, "register", "--name", case.name, "--path", folder, "--table", table, *label,
               "--json") == 0
    return json.loads(capsys.readouterr().out)


def register_and_score(case: Case, model: Any, settings: Settings, data: dict[str, Any], capsys) -> Registered:
    """``model`` registered the case's way, then its version scored over the training table."""
    out = _register(case, model, settings, str(data["root"] / f"saved_{case.name}"), data["table"], capsys)
    mv, manifest = Registry(settings).manifest(parse_ref(f"{case.name}/{out['version']}"))
    scores = str(data["root"] / f"scores_{case.name}")
    capsys.readouterr()
    assert cli(settings, "score", "--model", mv.ref, "--input", data["table"], "--output", scores, "--keys", "id",
               "--include-features") == 0
    return Registered(out, mv.ref, manifest, scores)


def best(model: Any) -> Any:
    return model.bestModel if hasattr(model, "bestModel") else model


def _expected(model: Any, df: Any, task: str) -> Any:
    """What scoring must write: the model's own transform, the prediction as a double, probabilities as arrays;
    transformed once, then held on the driver (the frame is compared twice)."""
    out = best(model).transform(df)
    cols = [F.col("id"), F.col("prediction").cast("double").alias("prediction")]
    if task == "classification" and "probability" in out.columns:
        cols.append(vector_to_array("probability").alias("probability"))
    expected = out.select(*cols).orderBy("id")
    return df.sparkSession.createDataFrame(expected.collect(), expected.schema)


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


def check_registered_scored_and_served(case: Case, model: Any, done: Registered, spark, data: dict[str, Any],
                                       settings: Settings, capsys) -> None:
    """The registered version's task and metrics, its scores equal to ``transform``, and JVM-free predictions
    equal to them too (or, for an unservable model, refused in one line naming the stage)."""
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
    assert cli(settings, "predict", "--model", done.ref, "--input", rows, "--output", rows + ".out.csv") != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sparkship: error:")]
    assert len(errors) == 1 and "MinHashLSH" in errors[0], errors
    assert not os.path.exists(rows + ".out.csv")


def _reference(case: Case, model: Any, holdout: Any) -> tuple[str, float, bool]:
    """(metric, Spark's own evaluator's value on the holdout, smaller is better) for the case's task."""
    out = best(model).transform(holdout)
    if case.task == "clustering":
        return "silhouette", ClusteringEvaluator(featuresCol="features").evaluate(out), False
    if case.task == "regression":
        return "rmse", RegressionEvaluator(labelCol=case.label).evaluate(out), True
    label = "ks_idx" if case.label == "ks" else case.label  # a string label: the model's own indexed column
    metric = "accuracy" if case.label == "y" else "weightedRecall" if case.name == "one_vs_rest" else \
        "weightedPrecision"
    ev = MulticlassClassificationEvaluator(labelCol=label, metricName=metric)
    return metric, ev.evaluate(out.withColumn(label, out[label].cast("double"))), False


def validate(settings: Settings, ref: str, holdout: str, rules: str, capsys) -> tuple[int, dict[str, Any]]:
    """`sparkship validate --json` of ``ref`` on ``holdout`` under ``rules``: its exit code and document."""
    capsys.readouterr()
    code = cli(settings, "validate", "--model", ref, "--table", holdout, "--policy", rules, "--json")
    return code, json.loads(capsys.readouterr().out)


def check_validated_monitored_reported(case: Case, model: Any, done: Registered, data: dict[str, Any],
                                       settings: Settings, capsys) -> None:
    """Validation passes a bound just met (its metric equal to Spark's evaluator); monitoring covers every input and
    the prediction. For one case of each kind of output (EACH_OUTPUT_KIND), validation also fails a bound just
    missed and the report has the task's sections and plots."""
    metric, want, smaller = _reference(case, model, data["holdout_df"])
    op, passing, failing = ("<=", want + 0.01, want - 0.01) if smaller else (">=", want - 0.01, want + 0.01)

    code, passed = validate(settings, done.ref, data["holdout"], f"{metric}{op}{passing}", capsys)
    assert (code, passed["status"], passed["rows"]) == (0, "PASS", 90), passed
    assert passed["candidate_metrics"][metric] == pytest.approx(want, rel=1e-9, abs=1e-12)

    capsys.readouterr()
    assert cli(settings, "monitor", "--model", done.ref, "--scores", done.scores, "--no-write", "--on-drift",
               "report", "--json") == 0
    inputs = [f["name"] for f in done.manifest["signature"]["inputs"]]
    assert {*inputs, "prediction"} <= set(json.loads(capsys.readouterr().out)["features"])
    if case.name not in EACH_OUTPUT_KIND:
        return

    code, failed = validate(settings, done.ref, data["holdout"], f"{metric}{op}{failing}", capsys)
    assert (code, failed["status"]) == (1, "FAIL") and metric in failed["reasons"][0], failed
    out = str(data["root"] / f"report_{case.name}.html")
    assert cli(settings, "report", "--model", done.ref, "--out", out, "--table", data["holdout"], "--scores",
               done.scores, "--json") == 0
    sections = json.loads(capsys.readouterr().out)["sections"]
    per_task = {"classification": "classes", "regression": "residuals", "clustering": "clusters"}[case.task]
    assert {"model", "metrics", per_task, "validation", "drift"} <= set(sections), sections
    with open(out, encoding="utf-8") as fh:
        page = fh.read()
    assert metric in page and "data:image/png;base64," in page


# The two checks of every case, as tests: each tests/registry/test_zoo_*.py imports them and names its ZOO_GROUP,
# which tests/registry/conftest.py turns into the ``case`` parameter.
def test_a_plain_pyspark_model_registers_scores_and_predicts(case, spark, zoo_data, zoo_settings, zoo_fitted,
                                                             zoo_registered, capsys):
    check_registered_scored_and_served(case, zoo_fitted[case.name], zoo_registered(case, capsys), spark, zoo_data,
                                       zoo_settings, capsys)


def test_a_registered_model_is_validated_monitored_and_reported(case, spark, zoo_data, zoo_settings, zoo_fitted,
                                                                zoo_registered, capsys):
    check_validated_monitored_reported(case, zoo_fitted[case.name], zoo_registered(case, capsys), zoo_data,
                                       zoo_settings, capsys)
