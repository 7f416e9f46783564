"""Retraining on drift: ``sparkship monitor --on-drift report`` and the guard ``sparkship retrain`` (at most one
retraining per window, each decision an event in a real registry of Delta tables under a tmp home)."""
from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timedelta

import pytest

# The monitoring module's trained model and score tables (module-scoped fixtures, rebuilt for this module).
from sparkship import retrain
from sparkship.cli import main
from sparkship.config import Settings
from sparkship.errors import UsageError
from sparkship.registry import Registry

pytestmark = pytest.mark.seconds(90)


@pytest.fixture
def home(tmp_path) -> list[str]:
    return ["--home", str(tmp_path / "home"), "--json"]


def _retrain(capsys, home: list[str], *argv: str) -> tuple[int, dict]:
    code = main(["retrain", *argv, *home])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_monitor_reports_drift_as_a_task_value_instead_of_failing(env, same, shifted, capsys, caplog):  # noqa: F811
    args = ["--model", "churn/1", "--threshold", "0.5", "--no-write", "--home", env["settings"].home, "--json"]
    with caplog.at_level(logging.INFO, logger="sparkship.retrain"):
        assert main(["monitor", "--scores", shifted[0], *args, "--on-drift", "report"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["flagged"] and all(f["psi"] > 0.5 for f in out["flagged"])
    assert "task value drift=true (not on Databricks: not set)" in caplog.messages
    caplog.clear()
    # The default still fails the task on drift; no drift reports false either way.
    assert main(["monitor", "--scores", shifted[0], *args]) == 2
    with caplog.at_level(logging.INFO, logger="sparkship.retrain"):
        assert main(["monitor", "--scores", same, *args, "--on-drift", "report"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["flagged"] == []
    assert "task value drift=false (not on Databricks: not set)" in caplog.messages


def test_the_guard_allows_one_retraining_per_window_and_records_each_decision(capsys, home):
    code, first = _retrain(capsys, home, "--model", "churn", "--window", "7d", "--run-id", "101")
    assert code == 0 and first["allowed"] and first["event"] == retrain.REQUESTED
    assert first["last_request"] is None
    code, second = _retrain(capsys, home, "--model", "churn", "--window", "7d", "--run-id", "102")
    assert code == 2 and not second["allowed"] and second["event"] == retrain.REFUSED
    registry = Registry(Settings.resolve(home=home[1]))
    [requested] = registry.events("churn", retrain.REQUESTED)
    [refused] = registry.events("churn", retrain.REFUSED)
    assert (requested["run_id"], requested["seq"], requested["details"]["reason"]) == ("101", first["seq"], "drift")
    assert refused["run_id"] == "102" and refused["seq"] > requested["seq"]
    assert refused["details"]["last_request"] == {"seq": requested["seq"], "at": requested["at"], "run_id": "101"}
    # Another model has a window of its own.
    code, other = _retrain(capsys, home, "--model", "upsell", "--window", "7d")
    assert code == 0 and other["allowed"]


def test_the_window_counts_from_the_latest_request(tmp_path):
    registry = Registry(Settings.resolve(home=str(tmp_path / "home")))
    assert retrain.request_retrain(registry, "churn", "1d", run_id="1").allowed
    # The window runs from the event's time as the registry recorded it.
    at = datetime.fromisoformat(registry.events("churn", retrain.REQUESTED)[-1]["at"])
    assert not retrain.request_retrain(registry, "churn", "1d", now=at + timedelta(hours=23)).allowed
    second = retrain.request_retrain(registry, "churn", "1d", run_id="2", now=at + timedelta(days=1))
    assert second.allowed and second.last_request["run_id"] == "1"
    # Refusals do not move the window: only requests do.
    later = datetime.fromisoformat(registry.events("churn", retrain.REQUESTED)[-1]["at"])
    assert not retrain.request_retrain(registry, "churn", "1d", now=later + timedelta(hours=1)).allowed
    assert [e["event"] for e in registry.events("churn")] == [retrain.REQUESTED, retrain.REFUSED,
                                                              retrain.REQUESTED, retrain.REFUSED]


def test_deciders_running_at_once_request_one_retraining(tmp_path):
    """The decision is a compare-and-set on the events table: of four deciders started together, one requests
    and the others, deciding again on the history that now holds its request, are refused."""
    import threading

    registry = Registry(Settings.resolve(home=str(tmp_path / "home")))
    registry.record_event("churn", None, "registered")  # the events table exists before the race
    start, decisions = threading.Barrier(4), []

    def decide(run: int) -> None:
        start.wait()
        decisions.append(retrain.request_retrain(registry, "churn", "7d", run_id=str(run)))

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(d.allowed for d in decisions) == [False, False, False, True]
    events = registry.events("churn")
    assert [e["event"] for e in events] == ["registered", retrain.REQUESTED] + [retrain.REFUSED] * 3
    assert [e["seq"] for e in events[1:]] == sorted({d.seq for d in decisions})


@pytest.mark.parametrize("argv, message", [
    (["--model", "churn", "--window", "0d"], "--window '0d' is invalid"),
    (["--model", "churn", "--window", "weekly"], "--window 'weekly' is invalid"),
    (["--model", "Churn!", "--window", "7d"], "model name 'Churn!' is invalid"),
    (["--model", "churn", "--reason", " "], "--reason must not be empty"),
])
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, argv, message):
    home = str(tmp_path / "home")
    code = main(["retrain", *argv, "--home", home])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and message in err[0], err
    assert not os.path.exists(Registry(Settings.resolve(home=home)).events_path)


def test_window_parsing():
    assert retrain.parse_window("30m") == timedelta(minutes=30)
    assert retrain.parse_window(" 2w ") == timedelta(weeks=2)
    with pytest.raises(UsageError, match="use a positive number"):
        retrain.parse_window("7 days")


def test_task_values_are_set_only_in_a_databricks_job(monkeypatch, caplog):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    with caplog.at_level(logging.INFO, logger="sparkship.retrain"):
        assert retrain.set_task_value("retrain", "true") is False
    assert caplog.messages == ["task value retrain=true (not on Databricks: not set)"]
