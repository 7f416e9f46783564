"""The end-to-end demo runs every step on real Spark, real Delta tables and a real server (smaller data)."""
from __future__ import annotations

import json
import os

import pytest
from chispa import assert_df_equality

from sparkship import tables
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.refs import parse_ref
from sparkship.registry import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.seconds(28)]


def test_demo_runs_every_step_and_leaves_a_consistent_world(spark, tmp_path, capsys):
    workdir = str(tmp_path / "demo")
    assert main(["demo", "--workdir", workdir, "--train-rows", "4000", "--batch-rows", "1000", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    steps = [s["step"] for s in summary["steps"]]
    assert steps == ["generate dataset", "import Delta tables", "train logistic regression", "train random forest",
                     "validate on holdout", "promote the better", "score batch 1 (full)",
                     "score batch 2 (incremental)", "monitor drift", "write report", "serve + 1 request"]
    assert "POST /predict -> 200" in summary["steps"][-1]["result"]

    registry = Registry(Settings.resolve(home=workdir))
    champion = registry.get(parse_ref("churn@champion"))
    validated = {e["version"]: e["details"] for e in registry.events("churn", "validated")}
    auc = {v: d["candidate_metrics"]["areaUnderROC"] for v, d in validated.items()}
    assert champion.version == max(auc, key=auc.get)  # the better one was promoted
    # Two incremental scoring runs: each customer scored exactly once, by the champion.
    scores = tables.read(spark, f"{workdir}/tables/churn_scores")
    customers = tables.read(spark, f"{workdir}/tables/churn_customers")
    assert_df_equality(scores.select("customer_id"), customers.select("customer_id"), ignore_row_order=True)
    assert {r.model_version for r in scores.select("model_version").distinct().collect()} == {str(champion.version)}
    assert os.path.getsize(f"{workdir}/report.html") > 50_000
    assert tables.exists(spark, f"{workdir}/tables/churn_scores_drift_metrics")
