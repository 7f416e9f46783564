"""The validation gate, promotion and rollback, on real Spark models, Delta tables and registry tables (the gate's
policies: test_policy.py)."""
from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np
import pytest

from sparkship import tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import NotFoundError, SchemaMismatchError, UsageError
from sparkship.policy import current as current_policy
from sparkship.policy import parse_rules
from sparkship.promotion import PromotionRefusedError, promote, rollback
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from sparkship.validation import validate
from tests.helpers.validation import (
    VALIDATION_SCHEMA,
    classification_metrics,
    cli_json,
    manifest,
    register,
    scored_frame,
    set_gate_policy,
    validation_rows,
)

pytestmark = pytest.mark.seconds(120)


@pytest.fixture(autouse=True)
def _on_both_engines(engine):
    """Every test here runs on delta-spark and on the delta-rs data source (conftest.engine)."""


# --- the rules, without Spark --------------------------------------------------------------------------


# --- validate ---------------------------------------------------------------------------------------------


def test_pass_on_a_pinned_snapshot_with_metrics_computed_over_all_its_rows(spark, home, table, models) -> None:
    settings = Settings.resolve(home=home)
    set_gate_policy(settings, "churn", "areaUnderROC>=0.8, max_regression=0.02")
    v = register(settings, models["good"], manifest("churn", "classification", "y", ["x1", "x2"]))
    result = validate(spark, settings, f"churn/{v}", f"{table}@0", run_id="r-1")

    assert result.passed and result.reasons == []
    # a table the model was not trained on is used whole
    assert (result.table, result.table_version, result.rows) == (table, 0, tables.read(spark, table, 0).count())
    assert (result.rows_kind, result.held_out_by) == ("all", [])
    assert (result.thresholds, result.max_regression) == ({"areaUnderROC": {"min": 0.8}}, 0.02)
    assert result.policy["version"] == 1 and result.spec_rules is None
    assert result.champion_metrics is None and result.champion_version is None
    expected = scored_frame(spark, models["good"], table, 0)
    want = classification_metrics(expected["y"].to_numpy(), expected["prediction"].to_numpy(),
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
    register(settings, models["weak"], manifest("churn", "classification", "y", ["x2"]))
    v = register(settings, models["good"], manifest("churn", "classification", "y", ["x1", "x2"]), run_id="987")
    assert v == 2

    # the bundle's way: validate --policy records the model's policy, then judges by it
    code, out = cli_json(capsys, "validate", "--model", "churn/run:987", "--table", table, "--run-id", "987",
                     "--policy", "accuracy>=0.7")
    assert code == 0 and out["status"] == "PASS" and out["version"] == v
    assert out["table_version"] == tables.version(spark, table) == 1  # the latest version, pinned at start
    assert out["rows"] == tables.read(spark, table, 1).count() and out["rows_kind"] == "all"
    assert out["thresholds"] == {"accuracy": {"min": 0.7}}
    recorded = out["policy"]
    assert (recorded["version"], recorded["source"], recorded["run_id"]) == (1, "validate --policy", "987")
    code, shown = cli_json(capsys, "policy", "show", "churn")
    assert code == 0 and shown["rules"] == "accuracy>=0.7" and shown["version"] == 1

    code, out = cli_json(capsys, "promote", "--model", "churn/run:987", "--run-id", "987")
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
    set_gate_policy(settings, "churn", "areaUnderROC>=0.8")
    good = register(settings, models["good"], manifest("churn", "classification", "y", ["x1", "x2"]))
    weak = register(settings, models["weak"], manifest("churn", "classification", "y", ["x2"]))
    assert validate(spark, settings, f"churn/{good}", table).passed
    assert promote(settings, f"churn/{good}").previous_version is None

    code, out = cli_json(capsys, "validate", "--model", f"churn/{weak}", "--table", table)
    assert code == 1 and out["status"] == "FAIL" and out["passed"] is False
    assert out["candidate_metrics"]["areaUnderROC"] < 0.8
    assert out["champion_version"] == good
    assert out["champion_metrics"]["areaUnderROC"] >= 0.8
    assert len(out["reasons"]) == 1 and "areaUnderROC" in out["reasons"][0] and "0.8" in out["reasons"][0]

    code, out = cli_json(capsys, "promote", "--model", f"churn/{weak}")
    assert code == 1 and "failed its latest validation" in out["error"]
    with pytest.raises(PromotionRefusedError, match="areaUnderROC"):
        promote(settings, f"churn/{weak}")
    assert Registry(settings).alias_version("churn", "champion") == good

    code, out = cli_json(capsys, "promote", "--model", f"churn/{weak}", "--force")
    assert code == 2 and "--reason" in out["error"]
    code, out = cli_json(capsys, "promote", "--model", f"churn/{weak}", "--force", "--reason", "incident 42 hotfix")
    assert code == 0 and (out["version"], out["previous_version"], out["forced"]) == (weak, good, True)

    code, out = cli_json(capsys, "rollback", "churn", "--reason", "hotfix made it worse")
    assert code == 0 and (out["version"], out["previous_version"]) == (good, weak)
    assert Registry(settings).alias_version("churn", "champion") == good

    code, history = cli_json(capsys, "models", "history", "churn")
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
    champion = register(settings, models["good"], manifest("churn", "classification", "y", ["x1", "x2"]))
    reg.set_alias("churn", "champion", champion)
    # weak clears the policy's (low) bar but is far more than 0.02 worse than the champion
    set_gate_policy(settings, "churn", "areaUnderROC>=0.55, max_regression=0.02")
    weak = register(settings, models["weak"], manifest("churn", "classification", "y", ["x2"]))
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
    same = register(settings, models["good"], manifest("churn", "classification", "y", ["x1", "x2"],
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
    v = register(settings, models["good"], manifest("churn", "classification", "y", ["x1", "x2"]))
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
    set_gate_policy(settings, "price", "r2>=0.5, rmse<=0")
    v = register(settings, models["linear"], manifest("price", "regression", "t", ["x1", "x2"]))
    result = validate(spark, settings, f"price/{v}", table)

    scored = scored_frame(spark, models["linear"], table, None)
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
    set_gate_policy(settings, "churn", "accuracy>=0.5")
    v = register(settings, models["good"], manifest("churn", "classification", "y_str", ["x1", "x2"],
                                                      labels=["no", "yes"]))
    result = validate(spark, settings, f"churn/{v}", f"{table}@0")

    scored = scored_frame(spark, models["good"], table, 0)
    label = scored["y_str"].map({"no": 0.0, "yes": 1.0}).to_numpy()
    want = classification_metrics(label, scored["prediction"].to_numpy(), scored["p1"].to_numpy())
    for metric, value in want.items():
        assert result.candidate_metrics[metric] == pytest.approx(value, abs=1e-9), metric

    # a string label without `labels` in the manifest is refused before any Spark job
    bare = register(settings, models["good"], manifest("churn", "classification", "y_str", ["x1", "x2"]))
    with pytest.raises(SchemaMismatchError, match="lists no class 'labels'"):
        validate(spark, settings, f"churn/{bare}", table)
    assert [e["version"] for e in Registry(settings).events("churn", event="validated")] == [v]


def test_bad_input_is_refused_before_anything_is_recorded(spark, home, table, models, tmp_path) -> None:
    settings = Settings.resolve(home=home)
    v = register(settings, models["good"], manifest("churn", "classification", "y", ["x1", "x2"]))
    narrow = str(tmp_path / "narrow")
    tables.write(spark.createDataFrame([(0.5, 1.0)], "x1 double, y double"), narrow, mode="overwrite")
    # rules given with a bad table are not recorded: the table is checked first
    with pytest.raises(SchemaMismatchError, match=r"lacks columns \['x2'\]"):
        validate(spark, settings, f"churn/{v}", narrow, rules=parse_rules("f1>=0.5"))
    with pytest.raises(UsageError, match=r"--policy bounds rmse, which a classification model does not report"):
        validate(spark, settings, f"churn/{v}", table, rules=parse_rules("rmse<=1"))
    assert current_policy(settings, "churn") is None
    set_gate_policy(settings, "churn", "rmse<=1")
    with pytest.raises(UsageError, match=r"policy of churn \(version 1\) bounds rmse.*`sparkship policy set churn`"):
        validate(spark, settings, f"churn/{v}", table)
    set_gate_policy(settings, "churn", "f1>=0.5")
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
    v = register(settings, models["good"], manifest("churn", "classification", "y", ["x1", "x2"],
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
    tables.write(spark.createDataFrame(validation_rows(600, seed=3), VALIDATION_SCHEMA), path, mode="overwrite")

    def spec(algorithm: str, params: dict[str, Any], seed: int):  # noqa: ANN202
        return parse_spec({"name": "churn", "task": "classification", "table": path, "label": "y",
                           "features": {"numeric": ["x1", "x2"]}, "model": {"algorithm": algorithm, "params": params},
                           "split": {"test_fraction": 0.3, "seed": seed}})

    results = {
        "a": train(spark, spec("logistic_regression", {"maxIter": 20}, 11)),
        "b": train(spark, spec("logistic_regression", {"regParam": 0.3}, 11)),
        "c": train(spark, spec("decision_tree", {"maxDepth": 3, "seed": 1}, 99)),
    }
    tables.write(spark.createDataFrame(validation_rows(200, seed=4), VALIDATION_SCHEMA), path, mode="append")
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
    set_gate_policy(settings, "churn", "areaUnderROC>=0.5")
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
    set_gate_policy(settings, "churn", "areaUnderROC>=0.5, max_regression=1")
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
    tables.write(spark.createDataFrame(validation_rows(250, seed=5), VALIDATION_SCHEMA), holdout, mode="overwrite")
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
