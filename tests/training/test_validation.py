"""The validation gate, its policies, promotion and rollback, on real Spark models, Delta tables and registry
tables."""
from __future__ import annotations

import json
import math
import os
import re
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sparkship import artifacts, tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import NotFoundError, SchemaMismatchError, SparkshipError, UsageError
from sparkship.policy import NoPolicyError, Rules, parse_rules, set_policy
from sparkship.policy import current as current_policy
from sparkship.policy import history as policy_history
from sparkship.promotion import PromotionRefusedError, promote, rollback
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from sparkship.validation import check_rules, effective_rules, primary_metric, validate
from tests.helpers.cli import run_cli
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.seconds(170)

@pytest.fixture(autouse=True)
def _on_both_engines(engine):
    """Every test here runs on delta-spark and on the delta-rs data source (conftest.engine)."""


SCHEMA = "x1 double, x2 double, y double, y_str string, t double"


def _rows(n: int, seed: int) -> list[tuple[float, float, float, str, float]]:
    """y depends mostly on x1 (so a model on x2 alone is weak but better than chance); t is linear + noise."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = (2.0 * x1 + 0.7 * x2 + rng.normal(scale=0.8, size=n) > 0).astype(float)
    t = 3.0 * x1 - 2.0 * x2 + rng.normal(scale=0.5, size=n)
    return [(float(a), float(b), float(c), "yes" if c else "no", float(d)) for a, b, c, d in zip(x1, x2, y, t)]


@pytest.fixture(scope="module")
def table(spark, tmp_path_factory) -> str:
    """A validation table with two versions: 300 rows, then 100 more appended."""
    path = str(tmp_path_factory.mktemp("validation") / "holdout")
    tables.write(spark.createDataFrame(_rows(300, seed=1), SCHEMA), path, mode="overwrite")
    tables.write(spark.createDataFrame(_rows(100, seed=2), SCHEMA), path, mode="append")
    return path


@pytest.fixture(scope="module")
def models(spark) -> dict[str, Any]:
    """Each model trained once: a good and a weak classifier, a regressor."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.regression import LinearRegression

    train = spark.createDataFrame(_rows(400, seed=7), SCHEMA).cache()
    both = VectorAssembler(inputCols=["x1", "x2"], outputCol="features")
    good = Pipeline(stages=[both, LogisticRegression(labelCol="y")]).fit(train)
    weak = Pipeline(stages=[VectorAssembler(inputCols=["x2"], outputCol="features"),
                            LogisticRegression(labelCol="y")]).fit(train)
    linear = Pipeline(stages=[both, LinearRegression(labelCol="t")]).fit(train)
    train.unpersist()
    return {"good": good, "weak": weak, "linear": linear}


def _manifest(name: str, task: str, label: str, inputs: list[str], thresholds: dict[str, Any] | None = None,
              max_regression: float | None = None, **extra: Any) -> dict[str, Any]:
    """A manifest as training writes it (docs/DESIGN.md), its spec carrying the validation rules."""
    outputs = [{"name": "prediction", "type": "double"}]
    if task == "classification":
        outputs.append({"name": "probability", "type": "array<double>"})
    algorithm = "logistic_regression" if task == "classification" else "linear_regression"
    spec = {"name": name, "task": task, "table": "/data/train@0", "label": label, "features": {"numeric": inputs},
            "model": {"algorithm": algorithm, "params": {}},
            "validation": {"thresholds": thresholds or {}, "max_regression": max_regression}}
    return {
        "name": name, "task": task, "label": label, "algorithm": algorithm, "spec": spec, "metrics": {},
        "signature": {"inputs": [{"name": c, "type": "double"} for c in inputs], "outputs": outputs},
        **extra,
    }


def _register(settings: Settings, model: Any, manifest: dict[str, Any], run_id: str | None = None) -> int:
    staged = artifacts.stage(model, manifest, settings.models_root)
    return Registry(settings).register(manifest["name"], staged, run_id=run_id).version


def _policy(settings: Settings, name: str, rules: str) -> int:
    """Set ``name``'s gate policy from the rules' text; its version."""
    return set_policy(settings, name, parse_rules(rules), source="test")[0].version


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


def _scored(spark, model: Any, path: str, version: int | None) -> pd.DataFrame:
    from pyspark.ml.functions import vector_to_array

    out = model.transform(tables.read(spark, path, version=version))
    cols = [c for c in ("y", "y_str", "t", "prediction") if c in out.columns]
    if "probability" in out.columns:
        out = out.withColumn("p1", vector_to_array("probability")[1])
        cols.append("p1")
    return out.select(*cols).toPandas()


def _auc(label: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC, ties counted half."""
    ranks = pd.Series(score).rank(method="average").to_numpy()
    pos = label == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _weighted_f1(label: np.ndarray, pred: np.ndarray) -> float:
    total = 0.0
    for c in np.unique(label):
        tp = np.sum((pred == c) & (label == c))
        precision = tp / max(np.sum(pred == c), 1)
        recall = tp / np.sum(label == c)
        f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
        total += f1 * np.mean(label == c)
    return float(total)


def _classification_metrics(label: np.ndarray, pred: np.ndarray, p1: np.ndarray) -> dict[str, float]:
    p_true = np.where(label == 1, p1, 1 - p1)
    return {
        "areaUnderROC": _auc(label, p1),
        "accuracy": float(np.mean(pred == label)),
        "f1": _weighted_f1(label, pred),
        "logLoss": float(np.mean(-np.log(np.maximum(p_true, 1e-15)))),
    }


# --- the rules, without Spark --------------------------------------------------------------------------


def test_rules_bounds_are_inclusive_and_regression_direction_follows_the_metric() -> None:
    assert [c.passed for c in check_rules({"accuracy": 0.8}, {"accuracy": {"min": 0.8}})] == [True]
    assert [c.passed for c in check_rules({"accuracy": 0.7999}, {"accuracy": {"min": 0.8}})] == [False]
    assert [c.passed for c in check_rules({"rmse": 30.0}, {"rmse": {"max": 30}})] == [True]
    both = check_rules({"r2": 1.2}, {"r2": {"min": 0.5, "max": 1.0}})
    assert [(c.kind, c.passed) for c in both] == [("min", True), ("max", False)]
    assert "above the maximum 1" in both[1].reason

    def regression(metric: str, candidate: float, champion: float, limit: float) -> bool:
        checks = check_rules({metric: candidate}, {metric: {"min": -1e9}}, {metric: champion}, limit)
        (reg,) = [c for c in checks if c.kind == "regression"]
        return reg.passed

    # smaller is better: a higher rmse/mae/logLoss is the worse one
    assert not regression("rmse", 30.5, 30.0, 0.4)
    assert regression("rmse", 30.3, 30.0, 0.4)
    assert regression("mae", 10.0, 12.0, 0.0)
    assert not regression("logLoss", 0.40, 0.35, 0.02)
    # larger is better: a lower AUC/f1/r2 is the worse one; exactly max_regression worse still passes
    assert not regression("areaUnderROC", 0.85, 0.90, 0.02)
    assert regression("f1", 0.875, 0.9, 0.025)
    assert regression("r2", 0.95, 0.90, 0.0)

    # without thresholds the primary metric is the one compared; without a champion nothing is compared
    checks = check_rules({"areaUnderROC": 0.7, "f1": 0.9}, {}, {"areaUnderROC": 0.8, "f1": 0.5}, 0.02,
                         primary_metric("classification", {"areaUnderROC": 0.7}))
    assert [(c.metric, c.passed) for c in checks] == [("areaUnderROC", False)]
    assert primary_metric("classification", {"f1": 0.5}) == "f1"
    assert primary_metric("regression", {}) == "rmse"
    assert check_rules({"rmse": 1.0}, {}, None, 0.0, "rmse") == []
    # a thresholded metric that could not be computed fails
    (missing,) = check_rules({"areaUnderROC": None}, {"areaUnderROC": {"min": 0.5}})
    assert not missing.passed and "could not be computed" in missing.reason


# --- validate ---------------------------------------------------------------------------------------------


def test_pass_on_a_pinned_snapshot_with_metrics_computed_over_all_its_rows(spark, home, table, models) -> None:
    settings = Settings.resolve(home=home)
    _policy(settings, "churn", "areaUnderROC>=0.8, max_regression=0.02")
    v = _register(settings, models["good"], _manifest("churn", "classification", "y", ["x1", "x2"]))
    result = validate(spark, settings, f"churn/{v}", f"{table}@0", run_id="r-1")

    assert result.passed and result.reasons == []
    # a table the model was not trained on is used whole
    assert (result.table, result.table_version, result.rows) == (table, 0, tables.read(spark, table, 0).count())
    assert (result.rows_kind, result.held_out_by) == ("all", [])
    assert (result.thresholds, result.max_regression) == ({"areaUnderROC": {"min": 0.8}}, 0.02)
    assert result.policy["version"] == 1 and result.spec_rules is None
    assert result.champion_metrics is None and result.champion_version is None
    expected = _scored(spark, models["good"], table, 0)
    want = _classification_metrics(expected["y"].to_numpy(), expected["prediction"].to_numpy(),
                                   expected["p1"].to_numpy())
    for metric, value in want.items():
        assert result.candidate_metrics[metric] == pytest.approx(value, abs=1e-9), metric
    assert 0 < result.candidate_metrics["areaUnderPR"] <= 1

    (event,) = Registry(settings).events("churn", event="validated")
    assert event["version"] == v and event["run_id"] == "r-1"
    assert event["details"]["passed"] is True and event["details"]["status"] == "PASS"
    assert event["details"]["table_version"] == 0 and event["details"]["rows_kind"] == "all"
    assert event["details"]["policy"]["rules"] == "areaUnderROC>=0.8, max_regression=0.02"
    assert event["details"]["candidate_metrics"] == pytest.approx(result.candidate_metrics)


def test_cli_validates_and_promotes_the_version_a_job_run_registered(spark, home, table, models, capsys) -> None:
    settings = Settings.resolve(home=home)
    _register(settings, models["weak"], _manifest("churn", "classification", "y", ["x2"]))
    v = _register(settings, models["good"], _manifest("churn", "classification", "y", ["x1", "x2"]), run_id="987")
    assert v == 2

    # the bundle's way: validate --policy records the model's policy, then judges by it
    code, out = _cli(capsys, "validate", "--model", "churn/run:987", "--table", table, "--run-id", "987",
                     "--policy", "accuracy>=0.7")
    assert code == 0 and out["status"] == "PASS" and out["version"] == v
    assert out["table_version"] == tables.version(spark, table) == 1  # the latest version, pinned at start
    assert out["rows"] == tables.read(spark, table, 1).count() and out["rows_kind"] == "all"
    assert out["thresholds"] == {"accuracy": {"min": 0.7}}
    recorded = out["policy"]
    assert (recorded["version"], recorded["source"], recorded["run_id"]) == (1, "validate --policy", "987")
    code, shown = _cli(capsys, "policy", "show", "churn")
    assert code == 0 and shown["rules"] == "accuracy>=0.7" and shown["version"] == 1

    code, out = _cli(capsys, "promote", "--model", "churn/run:987", "--run-id", "987")
    assert code == 0
    assert (out["version"], out["previous_version"], out["forced"], out["changed"]) == (v, None, False, True)
    assert Registry(settings).get(parse_ref("churn@champion")).version == v

    # the champion validated against itself: nothing to compare, still gated by its thresholds
    result = validate(spark, settings, "churn@champion", table)
    assert result.passed and result.champion_version == v and result.champion_metrics is None
    # promoting the holder again changes nothing
    again = promote(settings, "churn/run:987")
    assert not again.changed and len(Registry(settings).alias_history("churn")) == 1


def test_fail_on_threshold_refuses_promotion_then_force_and_rollback_are_recorded(
    spark, home, table, models, capsys
) -> None:
    settings = Settings.resolve(home=home)
    _policy(settings, "churn", "areaUnderROC>=0.8")
    good = _register(settings, models["good"], _manifest("churn", "classification", "y", ["x1", "x2"]))
    weak = _register(settings, models["weak"], _manifest("churn", "classification", "y", ["x2"]))
    assert validate(spark, settings, f"churn/{good}", table).passed
    assert promote(settings, f"churn/{good}").previous_version is None

    code, out = _cli(capsys, "validate", "--model", f"churn/{weak}", "--table", table)
    assert code == 1 and out["status"] == "FAIL" and out["passed"] is False
    assert out["candidate_metrics"]["areaUnderROC"] < 0.8
    assert out["champion_version"] == good
    assert out["champion_metrics"]["areaUnderROC"] >= 0.8
    assert len(out["reasons"]) == 1 and "areaUnderROC" in out["reasons"][0] and "0.8" in out["reasons"][0]

    code, out = _cli(capsys, "promote", "--model", f"churn/{weak}")
    assert code == 1 and "failed its latest validation" in out["error"]
    with pytest.raises(PromotionRefusedError, match="areaUnderROC"):
        promote(settings, f"churn/{weak}")
    assert Registry(settings).alias_version("churn", "champion") == good

    code, out = _cli(capsys, "promote", "--model", f"churn/{weak}", "--force")
    assert code == 2 and "--reason" in out["error"]
    code, out = _cli(capsys, "promote", "--model", f"churn/{weak}", "--force", "--reason", "incident 42 hotfix")
    assert code == 0 and (out["version"], out["previous_version"], out["forced"]) == (weak, good, True)

    code, out = _cli(capsys, "rollback", "churn", "--reason", "hotfix made it worse")
    assert code == 0 and (out["version"], out["previous_version"]) == (good, weak)
    assert Registry(settings).alias_version("churn", "champion") == good

    code, history = _cli(capsys, "models", "history", "churn")
    assert code == 0
    moves = [(m["version"], m["previous_version"], m["action"], m["forced"], m["reason"])
             for m in history["alias_history"]]
    assert moves == [
        (good, None, "promote", False, None),
        (weak, good, "promote", True, "incident 42 hotfix"),
        (good, weak, "rollback", False, "hotfix made it worse"),
    ]
    events = [(e["event"], e["version"]) for e in history["events"] if e["event"] != "alias_moved"]
    assert events == [("registered", good), ("registered", weak), ("validated", good), ("promoted", good),
                      ("validated", weak), ("promoted", weak), ("rolled_back", good)]
    forced = [e for e in history["events"] if e["event"] == "promoted"][1]["details"]
    assert forced["forced"] is True and forced["reason"] == "incident 42 hotfix" and forced["previous_version"] == good
    assert forced["validation"]["passed"] is False


def test_fail_on_regression_against_the_champion_and_stale_validation(spark, home, table, models) -> None:
    settings = Settings.resolve(home=home)
    reg = Registry(settings)
    champion = _register(settings, models["good"], _manifest("churn", "classification", "y", ["x1", "x2"]))
    reg.set_alias("churn", "champion", champion)
    # weak clears the policy's (low) bar but is far more than 0.02 worse than the champion
    _policy(settings, "churn", "areaUnderROC>=0.55, max_regression=0.02")
    weak = _register(settings, models["weak"], _manifest("churn", "classification", "y", ["x2"]))
    result = validate(spark, settings, f"churn/{weak}", table)
    assert not result.passed
    assert result.candidate_metrics["areaUnderROC"] >= 0.55  # the threshold alone would pass
    assert result.champion_version == champion
    assert result.champion_metrics["areaUnderROC"] - result.candidate_metrics["areaUnderROC"] > 0.02
    assert [(c.metric, c.kind, c.passed) for c in result.checks] == [
        ("areaUnderROC", "min", True), ("areaUnderROC", "regression", False)]
    assert len(result.reasons) == 1 and "worse" in result.reasons[0] and "champion" in result.reasons[0]
    details = reg.events("churn", event="validated", version=weak)[-1]["details"]
    assert set(details["champion_metrics"]) == set(details["candidate_metrics"]) >= {"areaUnderROC", "logLoss"}

    # the same model as a new version is not worse than the champion: PASS (its spec tightens the bar to 0.8)
    same = _register(settings, models["good"], _manifest("churn", "classification", "y", ["x1", "x2"],
                                                         {"areaUnderROC": {"min": 0.8}}, 0.05))
    result = validate(spark, settings, f"churn/{same}", table)
    assert result.passed
    assert (result.thresholds, result.max_regression) == ({"areaUnderROC": {"min": 0.8}}, 0.02)
    assert result.spec_rules == {"thresholds": {"areaUnderROC": {"min": 0.8}}, "max_regression": 0.05}
    assert result.candidate_metrics == pytest.approx(result.champion_metrics, abs=1e-12)

    # once the champion moves, that PASS no longer says anything about the new champion
    reg.set_alias("churn", "champion", weak, forced=True, reason="test setup")
    with pytest.raises(PromotionRefusedError, match="validate it again"):
        promote(settings, f"churn/{same}")
    assert reg.alias_version("churn", "champion") == weak
    # another alias does not depend on the champion it was compared with
    assert promote(settings, f"churn/{same}", alias="staging").version == same


def test_promote_refused_without_validation_and_force_needs_a_reason(home, models) -> None:
    settings = Settings.resolve(home=home)
    v = _register(settings, models["good"], _manifest("churn", "classification", "y", ["x1", "x2"]))
    with pytest.raises(PromotionRefusedError, match="has not been validated"):
        promote(settings, f"churn/{v}")
    with pytest.raises(UsageError, match="--reason"):
        promote(settings, f"churn/{v}", force=True, reason="  ")
    assert Registry(settings).alias_history("churn") == []
    assert Registry(settings).events("churn", event="promoted") == []
    with pytest.raises(NotFoundError):
        promote(settings, "churn/run:nope")
    with pytest.raises(NotFoundError, match="no alias 'champion' to roll back"):
        rollback(settings, "churn")


def test_regression_model_metrics_and_a_max_threshold(spark, home, table, models) -> None:
    settings = Settings.resolve(home=home)
    _policy(settings, "price", "r2>=0.5, rmse<=0")
    v = _register(settings, models["linear"], _manifest("price", "regression", "t", ["x1", "x2"]))
    result = validate(spark, settings, f"price/{v}", table)

    scored = _scored(spark, models["linear"], table, None)
    err = scored["prediction"].to_numpy() - scored["t"].to_numpy()
    t = scored["t"].to_numpy()
    assert result.candidate_metrics["rmse"] == pytest.approx(math.sqrt(np.mean(err**2)), abs=1e-9)
    assert result.candidate_metrics["mae"] == pytest.approx(np.mean(np.abs(err)), abs=1e-9)
    assert result.candidate_metrics["r2"] == pytest.approx(1 - np.sum(err**2) / np.sum((t - t.mean()) ** 2), abs=1e-9)
    assert not result.passed
    assert [(c.metric, c.kind, c.passed) for c in result.checks] == [("r2", "min", True), ("rmse", "max", False)]
    assert "rmse" in result.reasons[0] and "above the maximum" in result.reasons[0]


def test_string_labels_map_through_the_manifest_labels(spark, home, table, models) -> None:
    # Training indexes string labels outside the PipelineModel, sorted: "no" is class 0, "yes" class 1 - the
    # same classes as the numeric y the good model was fitted on.
    settings = Settings.resolve(home=home)
    _policy(settings, "churn", "accuracy>=0.5")
    v = _register(settings, models["good"], _manifest("churn", "classification", "y_str", ["x1", "x2"],
                                                      labels=["no", "yes"]))
    result = validate(spark, settings, f"churn/{v}", f"{table}@0")

    scored = _scored(spark, models["good"], table, 0)
    label = scored["y_str"].map({"no": 0.0, "yes": 1.0}).to_numpy()
    want = _classification_metrics(label, scored["prediction"].to_numpy(), scored["p1"].to_numpy())
    for metric, value in want.items():
        assert result.candidate_metrics[metric] == pytest.approx(value, abs=1e-9), metric

    # a string label without `labels` in the manifest is refused before any Spark job
    bare = _register(settings, models["good"], _manifest("churn", "classification", "y_str", ["x1", "x2"]))
    with pytest.raises(SchemaMismatchError, match="lists no class 'labels'"):
        validate(spark, settings, f"churn/{bare}", table)
    assert [e["version"] for e in Registry(settings).events("churn", event="validated")] == [v]


def test_bad_input_is_refused_before_anything_is_recorded(spark, home, table, models, tmp_path) -> None:
    settings = Settings.resolve(home=home)
    v = _register(settings, models["good"], _manifest("churn", "classification", "y", ["x1", "x2"]))
    narrow = str(tmp_path / "narrow")
    tables.write(spark.createDataFrame([(0.5, 1.0)], "x1 double, y double"), narrow, mode="overwrite")
    # rules given with a bad table are not recorded: the table is checked first
    with pytest.raises(SchemaMismatchError, match=r"lacks columns \['x2'\]"):
        validate(spark, settings, f"churn/{v}", narrow, rules=parse_rules("f1>=0.5"))
    with pytest.raises(UsageError, match=r"--policy bounds rmse, which a classification model does not report"):
        validate(spark, settings, f"churn/{v}", table, rules=parse_rules("rmse<=1"))
    assert current_policy(settings, "churn") is None
    _policy(settings, "churn", "rmse<=1")
    with pytest.raises(UsageError, match=r"policy of churn \(version 1\) bounds rmse.*`sparkship policy set churn`"):
        validate(spark, settings, f"churn/{v}", table)
    _policy(settings, "churn", "f1>=0.5")
    with pytest.raises(SchemaMismatchError, match=r"lacks columns \['x2'\]"):
        validate(spark, settings, f"churn/{v}", narrow)
    with pytest.raises(NotFoundError, match="no version 9"):
        validate(spark, settings, f"churn/{v}", f"{table}@9")
    with pytest.raises(NotFoundError, match="no Delta table"):
        validate(spark, settings, f"churn/{v}", str(tmp_path / "missing"))
    with pytest.raises(NotFoundError, match="version 5"):
        validate(spark, settings, "churn/5", table)
    with pytest.raises(UsageError):
        validate(spark, settings, "../etc", table)
    assert Registry(settings).events("churn", event="validated") == []


@pytest.mark.parametrize("command", ["validate", "promote", "rollback", "policy set", "policy show"])
def test_every_command_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--help"])
    assert exit_info.value.code == 0
    assert "--json" in capsys.readouterr().out


def test_a_manifest_with_bad_validation_rules_is_refused_naming_the_key(spark, home, table, models) -> None:
    settings = Settings.resolve(home=home)
    v = _register(settings, models["good"], _manifest("churn", "classification", "y", ["x1", "x2"],
                                                      {"rmse": {"max": 1.0}}))
    with pytest.raises(UsageError, match=r"validation\.thresholds\.rmse"):
        validate(spark, settings, f"churn/{v}", table)
    assert Registry(settings).events("churn", event="validated") == []


# --- the rows judged ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory) -> dict[str, Any]:
    """Three models trained by sparkship on one table (version 0), two sharing a split; then rows are appended."""
    from sparkship.spec import parse_spec
    from sparkship.training import train

    path = str(tmp_path_factory.mktemp("trained") / "customers")
    tables.write(spark.createDataFrame(_rows(600, seed=3), SCHEMA), path, mode="overwrite")

    def spec(algorithm: str, params: dict[str, Any], seed: int):  # noqa: ANN202
        return parse_spec({"name": "churn", "task": "classification", "table": path, "label": "y",
                           "features": {"numeric": ["x1", "x2"]}, "model": {"algorithm": algorithm, "params": params},
                           "split": {"test_fraction": 0.3, "seed": seed}})

    results = {
        "a": train(spark, spec("logistic_regression", {"maxIter": 20}, 11)),
        "b": train(spark, spec("logistic_regression", {"regParam": 0.3}, 11)),
        "c": train(spark, spec("decision_tree", {"maxDepth": 3, "seed": 1}, 99)),
    }
    tables.write(spark.createDataFrame(_rows(200, seed=4), SCHEMA), path, mode="append")
    return {"table": path, **results}


def _held_out(spark, path: str, version: int, *results: Any) -> int:
    """Labelled rows of ``path@version`` that every one of ``results``' training splits holds out."""
    from pyspark.sql import functions as F

    from sparkship.training import split_flag

    df = tables.read(spark, path, version=version).where(F.col("y").isNotNull())
    for result in results:
        df = df.where(split_flag(result.spec))
    return df.count()


def test_on_its_training_table_a_candidate_is_judged_on_its_held_out_rows_only(spark, home, trained, tmp_path):
    from sparkship.training import register_result

    settings = Settings.resolve(home=home)
    _policy(settings, "churn", "areaUnderROC>=0.5")
    a, path = trained["a"], trained["table"]
    v = register_result(settings, a)["version"]

    result = validate(spark, settings, f"churn/{v}", f"{path}@0")
    assert (result.rows_kind, result.held_out_by, result.rows) == ("held-out", [f"churn/{v}"], a.rows_test)
    assert a.rows_test < tables.read(spark, path, 0).count()  # the training rows were left out
    # exactly the rows training measured itself on: the same metrics
    assert result.candidate_metrics == pytest.approx(a.metrics, abs=1e-9)
    details = Registry(settings).events("churn", event="validated")[-1]["details"]
    assert (details["rows_kind"], details["rows"], details["held_out_by"]) == ("held-out", a.rows_test, [f"churn/{v}"])

    # a later version, through another path to the same folder: still only rows the split holds out, new ones too
    link = str(tmp_path / "same-table")
    os.symlink(path, link)
    later = validate(spark, settings, f"churn/{v}", link)
    assert (later.rows_kind, later.table_version) == ("held-out", 1)
    assert a.rows_test < later.rows == _held_out(spark, path, 1, a) < tables.read(spark, path, 1).count()


def test_the_champion_is_judged_on_the_same_rows_as_the_candidate(spark, home, trained, tmp_path) -> None:
    from sparkship.training import register_result

    settings = Settings.resolve(home=home)
    reg = Registry(settings)
    _policy(settings, "churn", "areaUnderROC>=0.5, max_regression=1")
    a, b, c, path = trained["a"], trained["b"], trained["c"], trained["table"]
    vb = register_result(settings, b)["version"]
    vc = register_result(settings, c)["version"]
    va = register_result(settings, a)["version"]

    # a champion with the same split: both judged on the rows both held out, each metric its own held-out one
    reg.set_alias("churn", "champion", vb)
    result = validate(spark, settings, f"churn/{va}", f"{path}@0")
    assert result.held_out_by == [f"churn/{va}", f"churn/{vb}"] and result.rows == a.rows_test == b.rows_test
    assert result.candidate_metrics == pytest.approx(a.metrics, abs=1e-9)
    assert result.champion_metrics == pytest.approx(b.metrics, abs=1e-9)
    assert result.candidate_metrics != pytest.approx(result.champion_metrics, abs=1e-6)  # two different models

    # a champion split another way: neither model is judged on rows it was fitted on, and both on the same ones
    reg.set_alias("churn", "champion", vc)
    result = validate(spark, settings, f"churn/{va}", f"{path}@0")
    assert result.held_out_by == [f"churn/{va}", f"churn/{vc}"]
    assert 0 < result.rows == _held_out(spark, path, 0, a, c) < min(a.rows_test, c.rows_test)
    champion_alone = validate(spark, settings, f"churn/{vc}", f"{path}@0")  # the champion against itself
    assert champion_alone.rows == c.rows_test and champion_alone.candidate_metrics == pytest.approx(c.metrics, abs=1e-9)

    # a separate table is used whole, for both
    holdout = str(tmp_path / "holdout")
    tables.write(spark.createDataFrame(_rows(250, seed=5), SCHEMA), holdout, mode="overwrite")
    result = validate(spark, settings, f"churn/{va}", holdout)
    assert (result.rows_kind, result.held_out_by, result.rows) == ("all", [], 250)
    assert result.champion_version == vc and result.champion_metrics is not None


def test_no_held_out_row_is_an_error_naming_a_separate_table(spark, home, trained, tmp_path) -> None:
    from dataclasses import replace

    from sparkship.training import register_result, split_flag

    settings = Settings.resolve(home=home)
    a = trained["a"]
    # a model whose training table holds only the rows its split trains on
    only_train = str(tmp_path / "only-train")
    tables.write(tables.read(spark, trained["table"], 0).where(~split_flag(a.spec)), only_train, mode="overwrite")
    v = register_result(settings, replace(a, table=only_train))["version"]
    with pytest.raises(UsageError, match=re.escape(f"{only_train}@0 has no labelled rows that the training of "
                                                   f"churn/{v} held out: validate on a separate table")):
        validate(spark, settings, f"churn/{v}", only_train, rules=parse_rules("f1>=0.1"))
    assert current_policy(settings, "churn") is None  # refused before the rules were recorded
    assert Registry(settings).events("churn", event="validated") == []


# --- the policy ----------------------------------------------------------------------------------------------


def test_without_a_policy_the_gate_fails_in_one_line_and_the_spec_alone_is_not_one(
    spark, home, table, models, capsys
) -> None:
    settings = Settings.resolve(home=home)
    # the candidate's own rules are not a policy: it would otherwise choose its own gate
    v = _register(settings, models["good"], _manifest("churn", "classification", "y", ["x1", "x2"],
                                                       {"areaUnderROC": {"min": 0.5}}, 0.02))
    with pytest.raises(NoPolicyError, match="churn has no gate policy"):
        validate(spark, settings, f"churn/{v}", table)
    capsys.readouterr()
    code = main(["validate", "--model", f"churn/{v}", "--table", table, "-q"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("sparkship: error: churn has no gate policy")
    assert "`sparkship policy set churn" in lines[0]
    assert Registry(settings).events("churn", event="validated") == []
    with pytest.raises(PromotionRefusedError, match="has not been validated"):
        promote(settings, f"churn/{v}")


def test_a_permissive_policy_is_only_ever_chosen_explicitly_and_is_recorded(spark, home, table, models, capsys):
    settings = Settings.resolve(home=home)
    code, out = _cli(capsys, "policy", "set", "churn")
    assert code == 2 and "no rules given" in out["error"] and "permissive" in out["error"]
    code, out = _cli(capsys, "policy", "set", "churn", "--permissive", "--min", "f1=0.5")
    assert code == 2 and "'permissive' gates nothing" in out["error"]
    assert current_policy(settings, "churn") is None

    code, out = _cli(capsys, "policy", "set", "churn", "--permissive", "--reason", "exploration phase")
    assert code == 0
    assert (out["version"], out["permissive"], out["rules"], out["changed"]) == (1, True, "permissive", True)
    assert (out["reason"], out["source"]) == ("exploration phase", "cli")
    weak = _register(settings, models["weak"], _manifest("churn", "classification", "y", ["x2"]))
    result = validate(spark, settings, f"churn/{weak}", table)
    assert result.passed and result.checks == [] and (result.thresholds, result.max_regression) == ({}, None)
    details = Registry(settings).events("churn", event="validated")[-1]["details"]
    assert details["policy"]["permissive"] is True and details["policy"]["reason"] == "exploration phase"
    # a permissive policy adds no rules, but the candidate's own still hold
    strict = _register(settings, models["weak"], _manifest("churn", "classification", "y", ["x2"],
                                                          {"areaUnderROC": {"min": 0.8}}))
    assert not validate(spark, settings, f"churn/{strict}", table).passed


def test_the_cli_sets_and_shows_the_policy_that_the_gate_applies(spark, home, table, models) -> None:
    settings = Settings.resolve(home=home)
    v = _register(settings, models["weak"], _manifest("churn", "classification", "y", ["x2"]))

    refused = run_cli("validate", "--model", f"churn/{v}", "--table", table)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("sparkship: error:")]
    assert len(errors) == 1 and "sparkship policy set churn" in errors[0], refused.stderr[-2000:]

    done = run_cli("policy", "set", "churn", "--min", "areaUnderROC=0.8", "--max-regression", "0.02", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["rules"] == "areaUnderROC>=0.8, max_regression=0.02"
    shown = run_cli("policy", "show", "churn")
    assert shown.returncode == 0
    assert "churn: gate policy version 1: areaUnderROC>=0.8, max_regression=0.02" in shown.stdout
    bad = run_cli("policy", "set", "churn", "--min", "areaUnderRoc=0.8")
    assert bad.returncode == 2 and "did you mean 'areaUnderROC'" in bad.stderr and "Traceback" not in bad.stderr

    result = validate(spark, settings, f"churn/{v}", table)  # the weak model, under the policy the CLI set
    assert not result.passed and result.policy["version"] == 1 and result.policy["source"] == "cli"
    assert "areaUnderROC" in result.reasons[0] and "0.8" in result.reasons[0]


def test_policy_changes_are_compare_and_set_versioned_and_ordered_by_commit(home) -> None:
    from sparkship import policy as policies
    from sparkship.tables import metadata

    settings = Settings.resolve(home=home)
    first, changed = set_policy(settings, "churn", parse_rules("f1>=0.7"), source="test")
    assert (first.version, changed) == (1, True)
    again, changed = set_policy(settings, "churn", parse_rules("f1 >= 0.7"), source="test")
    assert (again.version, changed) == (1, False)  # the rules in force: nothing committed
    with pytest.raises(SparkshipError, match="at version 1, not the expected 0; nothing changed"):
        set_policy(settings, "churn", parse_rules("f1>=0.9"), expect_version=0)
    assert set_policy(settings, "churn", parse_rules("f1>=0.8"), expect_version=1)[0].version == 2
    set_policy(settings, "other", Rules(permissive=True))

    # Concurrent writers each land once, numbered in commit order; none overwrites another.
    rules = [parse_rules(f"accuracy>=0.{n}") for n in range(1, 5)]
    threads = [threading.Thread(target=set_policy, args=(settings, "churn", r)) for r in rules]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found = policy_history(settings, "churn")
    assert [p.version for p in found] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.rules.to_text() for p in found[2:]) == sorted(r.to_text() for r in rules)
    assert [p.seq for p in found] == sorted(p.seq for p in found)

    # A writer whose clock runs an hour behind: its change is still the latest, because it committed last.
    path = policies.policies_path(settings)
    version = metadata.table_version(path)
    last_seq = max(p.seq for name in ("churn", "other") for p in policy_history(settings, name))
    row = {"seq": last_seq + 1, "name": "churn", "version": 7,
           "thresholds_json": json.dumps({"f1": {"min": 0.1}}), "max_regression": None, "permissive": False,
           "set_at": datetime.now(timezone.utc) - timedelta(hours=1), "source": "skewed", "reason": None,
           "run_id": None}
    import pyarrow as pa

    metadata.append_arrow(path, pa.Table.from_pylist([row], schema=policies.SCHEMA), expected_version=version)
    latest = current_policy(settings, "churn")
    assert (latest.version, latest.source, latest.rules.to_text()) == (7, "skewed", "f1>=0.1")
    assert latest.set_at < found[-1].set_at


def test_a_pass_under_a_superseded_policy_does_not_promote(spark, home, table, models) -> None:
    settings = Settings.resolve(home=home)
    v = _register(settings, models["good"], _manifest("churn", "classification", "y", ["x1", "x2"]))
    _policy(settings, "churn", "areaUnderROC>=0.6")
    assert validate(spark, settings, f"churn/{v}", table).passed
    _policy(settings, "churn", "areaUnderROC>=0.99")  # raised after the PASS
    with pytest.raises(PromotionRefusedError, match=r"validated under gate policy version 1, but the gate policy of "
                                                    r"churn is now version 2: validate it again"):
        promote(settings, f"churn/{v}")
    assert Registry(settings).alias_version("churn", "champion") is None
    assert not validate(spark, settings, f"churn/{v}", table).passed  # judged again, by the new bar


def test_the_bundle_passes_its_gate_policy_variable_to_the_validate_task() -> None:
    from sparkship.bundle import load_bundle
    from sparkship.cli import build_parser

    bundle = load_bundle(ROOT)
    task = {t["task_key"]: t for t in bundle.jobs["training"].config["tasks"]}["validate"]
    params = task["python_wheel_task"]["parameters"]
    assert params[params.index("--policy") + 1] == "${var.gate_policy}"
    for target in ("dev", "staging", "prod"):
        resolved = [bundle.resolve(p, target) for p in params]
        args = build_parser().parse_args(["validate", *resolved])
        assert args.policy == parse_rules(bundle.resolve("${var.gate_policy}", target)) != Rules()
    assert build_parser().parse_args(["validate", "--model", "m", "--table", "t", "--policy", ""]).policy is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["validate", "--model", "m", "--table", "t", "--policy", "auc>0.8"])


def test_the_spec_can_only_tighten_the_policy() -> None:
    from sparkship.spec import ValidationSpec

    policy_rules = Rules({"f1": {"min": 0.7, "max": 0.99}, "accuracy": {"min": 0.6}}, 0.02)
    looser = ValidationSpec({"f1": {"min": 0.5, "max": 1.0}}, 0.5)
    assert effective_rules(policy_rules, looser) == (policy_rules.thresholds, 0.02)
    tighter = ValidationSpec({"f1": {"min": 0.8}, "logLoss": {"max": 0.4}}, 0.01)
    assert effective_rules(policy_rules, tighter) == (
        {"f1": {"min": 0.8, "max": 0.99}, "accuracy": {"min": 0.6}, "logLoss": {"max": 0.4}}, 0.01)
    assert effective_rules(Rules(permissive=True), ValidationSpec()) == ({}, None)
