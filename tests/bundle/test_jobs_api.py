"""``sparkship jobs run``: databricks-sdk against a local HTTP server speaking the Jobs API (fake_databricks)."""
from __future__ import annotations

import json
import logging
import os

import pytest

from sparkship import jobs_api
from sparkship.bundle import load_bundle, short_user_name
from sparkship.cli import main
from tests.helpers.fake_databricks import FakeDatabricks
from tests.helpers.paths import ROOT as REPO

pytestmark = pytest.mark.quick

ROOT = str(REPO)
# The names `databricks bundle deploy` gives the jobs of databricks.yml + resources/ with default variables:
# development mode prefixes "[dev <short name of first.last@example.com>] ".
DEV_TRAINING = "[dev first_last] sparkship-churn-training"
PROD_SCORING = "sparkship-churn-scoring"
FAST = ["--poll-seconds", "0.01", "--root", ROOT]


@pytest.fixture
def workspace(monkeypatch, tmp_path):
    """A fake workspace, and the SDK pointed at it through the usual env vars only."""
    for key in list(os.environ):
        if key.startswith("DATABRICKS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))
    with FakeDatabricks(token="dapi-secret-1") as ws:
        monkeypatch.setenv("DATABRICKS_HOST", ws.host)
        monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-secret-1")
        yield ws


def _run_cli(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(["jobs", "run", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]), err


def test_training_run_succeeds_and_follows_the_dev_job(workspace, capsys, caplog):
    caplog.set_level(logging.INFO, logger="sparkship.jobs_api")
    job = workspace.add_job(DEV_TRAINING, ["train", "validate", "promote"])
    workspace.add_job("[dev someone_else] sparkship-churn-training", ["train", "validate", "promote"])

    code, out, err = _run_cli(capsys, "training", "--target", "dev", "--wait", *FAST)

    assert code == 0, err
    assert (out["job_name"], out["job_id"], out["result_state"], out["succeeded"]) == (
        DEV_TRAINING, job.job_id, "SUCCESS", True)
    assert [(t["task_key"], t["result_state"]) for t in out["tasks"]] == [
        ("train", "SUCCESS"), ("validate", "SUCCESS"), ("promote", "SUCCESS")]
    assert [r.body for r in workspace.calls("/jobs/run-now")] == [{"job_id": job.job_id}]
    assert workspace.calls("/jobs/list")[0].query["name"] == [DEV_TRAINING]
    # The run was followed to its end (pending, running, terminated), with the token from the env.
    assert len(workspace.calls("/jobs/runs/get")) == 3
    assert {r.authorization for r in workspace.requests if r.path.startswith("/api/")} == {"Bearer dapi-secret-1"}
    # State changes are logged as they happen.
    assert [m for m in caplog.messages if m.startswith("run ")] == [
        f"run {out['run_id']}: PENDING (train PENDING, validate PENDING, promote PENDING)",
        f"run {out['run_id']}: RUNNING (train RUNNING, validate PENDING, promote PENDING)",
        f"run {out['run_id']}: TERMINATED (train TERMINATED, validate TERMINATED, promote TERMINATED)",
    ]


def test_failed_run_exits_1_and_says_which_task_failed_and_why(workspace, capsys):
    workspace.add_job(DEV_TRAINING, ["train", "validate", "promote"], fail_task="validate",
                      error="SparkshipError: candidate areaUnderROC 0.61 < min 0.7")

    code = main(["jobs", "run", "training", "--wait", *FAST])  # dev is the default target
    out = capsys.readouterr().out

    assert code == 1
    assert "TERMINATED FAILED" in out
    assert "Task validate failed" in out
    assert "task validate: SparkshipError: candidate areaUnderROC 0.61 < min 0.7" in out
    assert "promote UPSTREAM_FAILED" in out


def test_missing_job_is_a_clear_error_and_nothing_is_started(workspace, capsys):
    workspace.add_job("sparkship-churn-training", ["train"])  # the prod name: not the dev one

    code = main(["jobs", "run", "training", "--target", "dev", *FAST])
    err = capsys.readouterr().err

    assert code == 1
    assert f"no job named '{DEV_TRAINING}'" in err
    assert "databricks bundle deploy" in err
    assert workspace.calls("/jobs/run-now") == []


def test_production_target_uses_the_plain_name_and_returns_without_waiting(workspace, capsys):
    job = workspace.add_job(PROD_SCORING, ["score"])

    code, out, _ = _run_cli(capsys, "scoring", "--target", "prod", *FAST)

    assert code == 0
    assert (out["job_id"], out["result_state"], out["life_cycle_state"]) == (job.job_id, None, None)
    assert out["run_id"] == next(iter(workspace.runs))
    assert workspace.calls("/jobs/runs/get") == []
    assert workspace.calls("/scim/v2/Me") == []  # no prefix, so no need to know the user


def test_token_is_taken_from_the_environment(workspace, capsys, monkeypatch):
    workspace.add_job(PROD_SCORING, ["score"])
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")

    code = main(["jobs", "run", "scoring", "--target", "prod", *FAST])
    err = capsys.readouterr().err

    assert code == 1
    assert "Invalid access token" in err
    assert {r.authorization for r in workspace.calls("/jobs/list")} == {"Bearer dapi-wrong"}
    assert workspace.calls("/jobs/run-now") == []


def test_no_credentials_is_a_usage_error(monkeypatch, tmp_path, capsys):
    for key in list(os.environ):
        if key.startswith("DATABRICKS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no CLI token cache either

    code = main(["jobs", "run", "scoring", "--target", "prod", *FAST])

    assert code == 2
    assert "DATABRICKS_HOST and DATABRICKS_TOKEN" in capsys.readouterr().err


def test_unknown_job_key_or_target_names_what_the_bundle_has(workspace, capsys):
    assert main(["jobs", "run", "trainig", *FAST]) == 1
    jobs = "monitoring, registration, scoring, scoring_on_change, training"
    assert f"defines no job 'trainig'; jobs: {jobs}" in capsys.readouterr().err
    assert main(["jobs", "run", "training", "--target", "qa", *FAST]) == 1
    assert "no target 'qa'; targets: dev, staging, prod" in capsys.readouterr().err
    assert workspace.requests == []


def test_follow_run_gives_up_after_the_timeout(workspace):
    from databricks.sdk import WorkspaceClient

    job = workspace.add_job(PROD_SCORING, ["score"])
    client = WorkspaceClient()
    run_id = jobs_api.start_run(client, job.job_id)
    result = jobs_api.RunResult("scoring", PROD_SCORING, job.job_id, run_id)

    with pytest.raises(jobs_api.JobRunError, match=f"run {run_id} is still PENDING after 0 s"):
        jobs_api.follow_run(client, result, poll_seconds=0.01, timeout_seconds=0)


@pytest.mark.parametrize("user, short", [
    ("first.last@example.com", "first_last"),
    ("Jane-Doe+ml@corp.io", "jane_doe_ml"),
    ("a..b__c@x", "a_b_c"),
])
def test_short_user_name_follows_the_cli_rule(user, short):
    assert short_user_name(user) == short


def test_deployed_names_read_from_the_bundle():
    from sparkship.bundle import deployed_job_name

    bundle = load_bundle(ROOT)
    assert deployed_job_name(bundle, "training", "dev", "first_last") == DEV_TRAINING
    assert deployed_job_name(bundle, "scoring", "prod") == PROD_SCORING
    assert deployed_job_name(bundle, "monitoring", "staging") == "[staging] sparkship-churn-monitoring"
