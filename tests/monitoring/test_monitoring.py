"""Drift monitoring on a real trained model, real score-like Delta tables and the real CLI."""
from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from chispa import assert_approx_df_equality
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from sparkship import monitoring, tables
from sparkship.cli import main
from sparkship.errors import NotFoundError, SchemaMismatchError, UsageError
from sparkship.refs import parse_ref
from tests.helpers.monitoring import DAY0, MONITORED_SCHEMA, monitored_rows, write_scores

pytestmark = pytest.mark.seconds(40)


@pytest.fixture(autouse=True)
def _on_both_engines(engine):
    """Every test here runs on delta-spark and on the delta-rs data source (conftest.engine)."""


@pytest.fixture(scope="module")
def same_result(spark, env, same) -> monitoring.MonitorResult:
    return monitoring.monitor(spark, env["registry"], "churn/1", same, run_id="a")


@pytest.fixture(scope="module")
def shifted_result(spark, env, shifted) -> monitoring.MonitorResult:
    return monitoring.monitor(spark, env["registry"], "churn/1", shifted[0])


def test_unshifted_scores_are_not_flagged(same_result) -> None:
    result = same_result
    assert result.flagged == []
    assert result.features == ["age", "income", "plan", "prediction"]
    assert len(result.windows) == 2 and not result.predictions_only
    assert all(r["psi"] is not None and 0 <= r["psi"] < 0.1 for r in result.drift)


def test_shifted_scores_flag_the_moved_features_only(env, shifted_result) -> None:
    result = shifted_result
    flagged = {(r["window_start"], r["feature"]) for r in result.flagged}
    windows = ["2026-11-20T00:00:00+00:00", "2026-11-21T00:00:00+00:00"]
    assert result.windows == windows
    assert {(w, f) for w in windows for f in ("age", "plan")} <= flagged
    assert "income" not in {f for _, f in flagged}
    age = [r for r in result.drift if r["feature"] == "age"]
    assert all(r["null_rate"] > 0.07 and r["reference_null_rate"] < 0.04 for r in age)
    events = env["registry"].events("churn", "monitored")
    assert any(e["details"]["flagged"] == result.flagged for e in events)


def test_drift_and_profile_match_an_independent_numpy_computation(spark, env, shifted, shifted_result) -> None:
    """PSI, null rate and bin shares of 'age' recomputed with numpy from the raw rows and the reference."""
    path, rows = shifted
    manifest = env["registry"].manifest(parse_ref("churn/1"))[1]
    ref = manifest["reference_profile"]["features"]["age"]
    inner = np.array(ref["edges"][1:-1])
    expected_shares = np.array(ref["fractions"])
    expected_rows = []
    for day in (0, 1):
        ages = [r[1] for r in rows if r[0] % 2 == day]
        values = np.array([a for a in ages if a is not None])
        # profiles' rule: bin = number of inner edges strictly below the value
        shares = np.bincount(np.searchsorted(inner, values, side="left"), minlength=len(expected_shares)) / len(values)
        a, e = np.maximum(shares, 1e-4), np.maximum(expected_shares, 1e-4)
        day_name = (DAY0 + timedelta(days=day)).strftime("%Y-%m-%d")
        expected_rows.append((day_name, len(ages), float(np.sum((a - e) * np.log(a / e))),
                              1 - len(values) / len(ages), float(values.mean()), [float(s) for s in shares]))
    expected = spark.createDataFrame(
        expected_rows, "day string, count long, psi double, null_rate double, mean double, fractions array<double>"
    )
    drift = tables.read(spark, path + "_drift_metrics").where("feature = 'age'")
    profile = tables.read(spark, path + "_profile_metrics").where("feature = 'age'")
    actual = drift.join(profile.select("window_start", "mean", "fractions"), "window_start").selectExpr(
        "date_format(window_start, 'yyyy-MM-dd') AS day", "count", "psi", "null_rate", "mean", "fractions"
    )
    assert_approx_df_equality(actual, expected, 1e-9, ignore_nullable=True, ignore_row_order=True)


def test_scores_without_features_monitor_predictions_or_join_a_features_table(spark, env) -> None:
    rows = monitored_rows(600, seed=4)
    path = write_scores(spark, env, "bare_scores", rows, features=False)
    only = monitoring.monitor(spark, env["registry"], "churn/1", path, write=False)
    assert only.predictions_only and only.features == ["prediction"]
    assert any("predictions only" in n for n in only.notes)
    assert not tables.exists(spark, path + "_drift_metrics")

    features = str(env["root"] / "features")
    tables.write(spark.createDataFrame(rows, MONITORED_SCHEMA), features, mode="overwrite")
    joined = monitoring.monitor(spark, env["registry"], "churn/1", path, features_table=features, write=False)
    assert joined.features == ["age", "income", "plan", "prediction"] and not joined.predictions_only
    assert all(r["count"] == 300 for r in joined.drift)


def test_cli_rerun_replaces_the_same_windows_and_exits_2_on_drift(spark, env, same, same_result, shifted,
                                                                  capsys) -> None:
    home = ["--home", env["settings"].home, "--json"]
    profile_path, drift_path = monitoring.output_tables(same)
    before = tables.version(spark, drift_path)
    assert main(["monitor", "--model", "churn/1", "--scores", same, "--run-id", "b", *home]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"model", "model_version", "windows", "features", "flagged", "drift_table", "profile_table"}
    assert (out["model"], out["model_version"], out["flagged"]) == ("churn", 1, [])
    assert (out["drift_table"], out["profile_table"]) == (drift_path, profile_path)
    # The same two windows were replaced, not appended: one more commit, the same rows, the new run id.
    drift = tables.read(spark, drift_path)
    assert tables.version(spark, drift_path) == before + 1
    assert drift.count() == len(same_result.drift) == len(out["drift"]) == 2 * 4
    assert [r.run_id for r in drift.select("run_id").distinct().collect()] == ["b"]
    assert tables.read(spark, profile_path).count() == 2 * 4
    keep = ["window_start", "feature", "psi", "null_rate", "flagged"]
    assert [{k: r[k] for k in keep} for r in out["drift"]] == [{k: r[k] for k in keep} for r in same_result.drift]

    code = main(["monitor", "--model", "churn/1", "--scores", shifted[0], "--threshold", "0.5", "--window", "7d",
                 "--no-write", *home])
    out = json.loads(capsys.readouterr().out)
    assert code == 2 and out["flagged"] and all(f["psi"] > 0.5 for f in out["flagged"])
    assert len(out["windows"]) == 1 and out["drift_table"] is None
    assert main(["monitor", "--model", "churn/1", "--scores", same, "--no-write", "--home", env["settings"].home]) == 0
    text = capsys.readouterr().out
    assert "0 flagged (PSI > 0.2)" in text and "window_start" in text and "income" in text
    assert main(["monitor", "--model", "churn@missing", "--scores", same, *home]) == 1
    assert "no alias 'missing'" in json.loads(capsys.readouterr().out)["error"]


def test_bad_input_is_refused_before_writing(spark, env, same) -> None:
    from pyspark.sql import functions as F

    registry = env["registry"]
    with pytest.raises(UsageError, match="--window"):
        monitoring.monitor(spark, registry, "churn/1", same, window="1 fortnight")
    with pytest.raises(UsageError, match="threshold"):
        monitoring.monitor(spark, registry, "churn/1", same, threshold=0)
    with pytest.raises(NotFoundError, match="no scores table"):
        monitoring.monitor(spark, registry, "churn/1", str(env["root"] / "nowhere"))
    not_scores = str(env["root"] / "not_scores")
    tables.write(spark.createDataFrame(monitored_rows(10, seed=5), MONITORED_SCHEMA), not_scores, mode="overwrite")
    with pytest.raises(SchemaMismatchError, match="scored_at"):
        monitoring.monitor(spark, registry, "churn/1", not_scores)
    other = str(env["root"] / "other_version")
    tables.write(tables.read(spark, same).withColumn("model_version", F.lit("9")), other, mode="overwrite")
    with pytest.raises(NotFoundError, match="churn/1"):
        monitoring.monitor(spark, registry, "churn/1", other)
    assert not tables.exists(spark, other + "_drift_metrics")
    assert not tables.exists(spark, not_scores + "_drift_metrics")


@hsettings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=12), st.integers(0, 2**31))
def test_psi_is_the_symmetric_kl_divergence_of_the_clipped_shares(weights: list[float], seed: int) -> None:
    """PSI = KL(a||e) + KL(e||a) over shares raised to epsilon, recomputed with scipy's rel_entr."""
    from scipy.special import rel_entr

    total = sum(weights)
    if total == 0:
        return
    shares = [w / total for w in weights]
    other = np.random.default_rng(seed).dirichlet(np.ones(len(shares))).tolist()
    a, e = np.maximum(other, monitoring.EPSILON), np.maximum(shares, monitoring.EPSILON)
    expected = float(np.sum(rel_entr(a, e) + rel_entr(e, a)))
    assert monitoring.psi(other, shares) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert monitoring.psi(shares, shares) == pytest.approx(0.0, abs=1e-12)
    if np.max(np.abs(a - e)) > 1e-3:
        assert monitoring.psi(other, shares) > 0.0


@pytest.mark.parametrize("shift", [0.1, 0.5, 1.0, 2.0])
def test_psi_of_a_shifted_normal_is_its_squared_shift(shift: float) -> None:
    """For N(0, 1) against N(shift, 1) over fine bins, PSI tends to the Jeffreys divergence shift² (exact bin
    shares from the normal CDF; no sampling)."""
    from scipy.stats import norm

    edges = np.r_[-np.inf, np.linspace(-8, 10, 500), np.inf]
    expected_shares = np.diff(norm.cdf(edges)).tolist()
    actual_shares = np.diff(norm.cdf(edges, loc=shift)).tolist()
    assert monitoring.psi(actual_shares, expected_shares, epsilon=1e-300) == pytest.approx(shift**2, rel=1e-3)
