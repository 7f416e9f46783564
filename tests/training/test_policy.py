"""The validation gate's policies: rules, explicit permissive policies, compare-and-set policy versions, the
bundle's gate policy variable and specs that may only tighten a policy."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest

from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import SparkshipError
from sparkship.policy import NoPolicyError, Rules, parse_rules, set_policy
from sparkship.policy import current as current_policy
from sparkship.policy import history as policy_history
from sparkship.promotion import PromotionRefusedError, promote
from sparkship.registry import Registry
from sparkship.validation import check_rules, effective_rules, primary_metric, validate
from tests.helpers.cli import run_cli
from tests.helpers.paths import ROOT
from tests.helpers.validation import (
    cli_json,
    manifest,
    register,
    set_gate_policy,
)

pytestmark = pytest.mark.seconds(50)


@pytest.fixture(autouse=True)
def _on_both_engines(engine):
    """Every test here runs on delta-spark and on the delta-rs data source (conftest.engine)."""


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


def test_without_a_policy_the_gate_fails_in_one_line_and_the_spec_alone_is_not_one(
    spark, home, table, models, capsys
) -> None:
    settings = Settings.resolve(home=home)
    # the candidate's own rules are not a policy: it would otherwise choose its own gate
    v = register(settings, models["good"], manifest("churn", "classification", "y", ["x1", "x2"],
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
    code, out = cli_json(capsys, "policy", "set", "churn")
    assert code == 2 and "no rules given" in out["error"] and "permissive" in out["error"]
    code, out = cli_json(capsys, "policy", "set", "churn", "--permissive", "--min", "f1=0.5")
    assert code == 2 and "'permissive' gates nothing" in out["error"]
    assert current_policy(settings, "churn") is None

    code, out = cli_json(capsys, "policy", "set", "churn", "--permissive", "--reason", "exploration phase")
    assert code == 0
    assert (out["version"], out["permissive"], out["rules"], out["changed"]) == (1, True, "permissive", True)
    assert (out["reason"], out["source"]) == ("exploration phase", "cli")
    weak = register(settings, models["weak"], manifest("churn", "classification", "y", ["x2"]))
    result = validate(spark, settings, f"churn/{weak}", table)
    assert result.passed and result.checks == [] and (result.thresholds, result.max_regression) == ({}, None)
    details = Registry(settings).events("churn", event="validated")[-1]["details"]
    assert details["policy"]["permissive"] is True and details["policy"]["reason"] == "exploration phase"
    # a permissive policy adds no rules, but the candidate's own still hold
    strict = register(settings, models["weak"], manifest("churn", "classification", "y", ["x2"],
                                                          {"areaUnderROC": {"min": 0.8}}))
    assert not validate(spark, settings, f"churn/{strict}", table).passed


def test_the_cli_sets_and_shows_the_policy_that_the_gate_applies(spark, home, table, models) -> None:
    settings = Settings.resolve(home=home)
    v = register(settings, models["weak"], manifest("churn", "classification", "y", ["x2"]))

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
    v = register(settings, models["good"], manifest("churn", "classification", "y", ["x1", "x2"]))
    set_gate_policy(settings, "churn", "areaUnderROC>=0.6")
    assert validate(spark, settings, f"churn/{v}", table).passed
    set_gate_policy(settings, "churn", "areaUnderROC>=0.99")  # raised after the PASS
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

