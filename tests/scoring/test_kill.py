"""kill -9 of `sparkship score` at several points leaves the output whole; the next run finishes the work.

The killed and the held runs are real processes; the runs before and after them are in-process (``main`` or the
Python API) on the suite's session. Runs killed during a change-feed run: test_kill_changes.py.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import threading
import time

import pytest

from sparkship import scoring, tables
from sparkship.cli import main
from sparkship.scoring_state import ScoringState
from tests.helpers.reliability import commit_count, kill_paused, kill_score_when, start_paused
from tests.helpers.scoring import MODEL, make_rows, write_input

pytestmark = [pytest.mark.e2e, pytest.mark.seconds(265)]

START_TIMEOUT_S = 240


def _parquet_files(table: str) -> set[str]:
    return set(glob.glob(os.path.join(table, "**", "*.parquet"), recursive=True))


def _commits(table: str) -> set[str]:
    return set(glob.glob(os.path.join(table, "_delta_log", "*.json")))


def test_kill_during_scoring_leaves_output_whole_and_rerun_finishes(spark, settings, engine, tmp_path):
    """On delta-spark and on the delta-rs data source (conftest.engine): the kill points inside the output write
    depend on the engine's writer."""
    home = settings.home
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    write_input(spark, src, make_rows(50, 1) + [(None, 1.0, 1.0, "basic", "north")])
    first = scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="base")
    assert (first.scored, first.quarantined) == (50, 1)
    base_version = tables.version(spark, out)
    args = ["--model", MODEL, "--input", src, "--output", out, "--keys", "id"]
    log_path = str(tmp_path / "score.log")

    # 1. Killed right after its pending state row, as the output write starts: nothing changes.
    write_input(spark, src, make_rows(300, 2, first_id=1000) + [(None, 2.0, 2.0, "pro", "south")])
    argv = [sys.executable, "-m", "sparkship.cli", "score", *args, "--run-id", "k1"]
    kill_paused(start_paused(argv, "score:pending", str(tmp_path / "flag1"), env={"SPARKSHIP_HOME": home},
                             log_path=log_path))
    assert tables.version(spark, out) == base_version

    # 2. Killed once the output's data files appear. The commit follows them: on delta-spark after the write
    # tasks (the kill lands before it), on delta-rs' merge within milliseconds. Either the output did not move or
    # it moved by one commit that holds the whole range (the rows of k1's and k2's versions): never in between.
    write_input(spark, src, make_rows(300, 3, first_id=2000))
    before = _parquet_files(out)
    kill_score_when(home, args + ["--run-id", "k2"], log_path, lambda: bool(_parquet_files(out) - before))
    landed = tables.version(spark, out) - base_version
    assert landed in (0, 1) and tables.read(spark, out).count() == (50, 650)[landed]

    # 3. Killed once the output commit landed (the state row may not have): the next run must not duplicate.
    write_input(spark, src, make_rows(300, 4, first_id=3000))
    commits = _commits(out)
    kill_score_when(home, args + ["--run-id", "k3"], log_path, lambda: bool(_commits(out) - commits))
    assert tables.version(spark, out) == base_version + landed + 1

    write_input(spark, src, make_rows(20, 5, first_id=4000))
    code = main(["score", *args, "--run-id", "rerun", "-q"])
    assert code == 0
    scores = tables.read(spark, out)
    assert scores.count() == 50 + 300 + 300 + 300 + 20
    assert scores.select("id").distinct().count() == scores.count()
    assert tables.read(spark, out + "_quarantine").count() == 2  # the two null keys, once each
    latest = ScoringState(out + "_state").latest(MODEL, src, out)
    assert latest.unfinished is None and latest.committed.input_version == tables.version(spark, src)
    assert latest.committed.run_id == "rerun" or latest.committed.run_id == "k3"


def test_a_second_run_never_heals_a_live_run_but_heals_a_killed_one(spark, settings, tmp_path, capsys):
    """On the default engine (delta-spark) only: the lease and the state rows this is about are metadata tables,
    written and read through delta-rs on either engine; healing on each engine's output writer is covered by the
    reruns after the kills above and in test_kill_changes.py."""
    home = settings.home
    src, out = str(tmp_path / "events"), str(tmp_path / "scores")
    write_input(spark, src, make_rows(40, 1))
    args = ["--model", MODEL, "--input", src, "--output", out, "--keys", "id"]
    flag = str(tmp_path / "flag")

    def held(run_id: str):  # noqa: ANN202 - a real `sparkship score` process, held after its pending row
        return start_paused([sys.executable, "-m", "sparkship.cli", "score", *args, "--run-id", run_id],
                            "score:pending", flag, env={"SPARKSHIP_HOME": home},
                            log_path=str(tmp_path / f"{run_id}.log"), timeout_s=START_TIMEOUT_S)

    # 1. The scheduled run is in progress (its pending row is committed) when a manual run starts: the manual
    #    run refuses, naming it, and writes nothing; the scheduled run then finishes untouched.
    scheduled = held("scheduled")
    tables_of = (out, out + "_state", out + "_quarantine")
    before = [commit_count(t) for t in tables_of]
    capsys.readouterr()
    assert main(["score", *args, "--run-id", "manual", "--json"]) == 1
    error = json.loads(capsys.readouterr().out)
    assert error["type"] == "ConcurrentWriteError" and "run scheduled" in error["error"], error
    assert [commit_count(t) for t in tables_of] == before

    # 2. A run told to wait starts while the scheduled one is still held: it waits, then runs after it.
    waited: dict = {}
    waiter = threading.Thread(target=lambda: waited.update(result=scoring.score(
        spark, settings, MODEL, src, out, ["id"], run_id="waiter", wait_s=START_TIMEOUT_S)))
    waiter.start()
    time.sleep(1.0)
    assert waiter.is_alive()  # still waiting for the lease
    os.remove(flag)  # let the scheduled run go on
    assert scheduled.wait(timeout=START_TIMEOUT_S) == 0, open(str(tmp_path / "scheduled.log")).read()
    waiter.join(timeout=START_TIMEOUT_S)
    result = waited["result"]
    assert (result.healed, result.rows_in) == (False, 0)  # the scheduled run's work was done, not redone
    latest = ScoringState(out + "_state").latest(MODEL, src, out)
    assert latest.unfinished is None and latest.committed.run_id == "scheduled"
    assert tables.read(spark, out).count() == 40

    # 3. A run killed in progress is healed by the next one at once: its process is gone, so its lease (60 s) is
    #    free before it expires.
    write_input(spark, src, make_rows(25, 2, first_id=1000))
    kill_paused(held("doomed"))
    assert ScoringState(out + "_state").latest(MODEL, src, out).unfinished.run_id == "doomed"
    healer = scoring.score(spark, settings, MODEL, src, out, ["id"], run_id="healer")  # wait_s=0: no waiting
    assert healer.healed and healer.rows_in == 25
    scores = tables.read(spark, out)
    assert scores.count() == 65 and scores.select("id").distinct().count() == 65
