"""The scoring run lease on real Delta tables (delta-rs, no Spark session): hosts' wall clocks are never compared.

Two hosts are played in one process by giving each :class:`RunLease` its own ``host`` name and wall clock.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from sparkship.errors import ConcurrentWriteError
from sparkship.scoring_lease import ACQUIRED, LEASE_SCHEMA, RELEASED, RunLease
from sparkship.scoring_state import COMMITTED, ScoringState, StateRow
from sparkship.tables import metadata

pytestmark = pytest.mark.seconds(15)

D = 1.5  # the lease time of every lease here: renewals every 0.5 s


def _clock(skew_s: float):
    return lambda: datetime.now(timezone.utc) + timedelta(seconds=skew_s)


def _newest(path: str) -> dict:
    return max(metadata.read_arrow(path).to_pylist(), key=lambda r: r["seq"])


def _lease_row(path: str, *, run_id: str, host: str, pid: int, started: str | None) -> None:
    """A lease row as another process writes it, here one that expires in an hour."""
    now = datetime.now(timezone.utc)
    seq = 1 if metadata.table_version(path) is None else _newest(path)["seq"] + 1
    row = {"seq": seq, "run_id": run_id, "host": host, "pid": pid, "pid_started": started, "action": ACQUIRED,
           "expires_at": now + timedelta(hours=1), "at": now}
    metadata.append_arrow(path, pa.Table.from_pylist([row], schema=LEASE_SCHEMA))


def test_a_renewing_holder_is_never_taken_over_whatever_the_clocks_say(tmp_path):
    path = str(tmp_path / "scores_lease")
    holder = RunLease(path, "nightly", D, host="a", wall_clock=_clock(-90))
    with holder.hold():
        # Its rows say it expired 88 s ago by a correct clock, and 178 s ago by a clock 90 s ahead.
        assert _newest(path)["expires_at"] < datetime.now(timezone.utc) - timedelta(seconds=60)
        for taker_clock in (None, _clock(+90)):
            with pytest.raises(ConcurrentWriteError, match=r"run nightly \(process \d+ on a\).*waited 0.5s.*"
                                                           r"unchanged for 1.5s: pass `--wait 1.5` or more"):
                RunLease(path, "manual", D, host="b", wall_clock=taker_clock).acquire(wait_s=0.5)
        # Waiting twice the lease time: its row keeps changing, so it is still running.
        renewals = _newest(path)["seq"]
        with pytest.raises(ConcurrentWriteError, match=r"run nightly .*\(waited 3s\); its lease kept changing"):
            RunLease(path, "manual", D, host="b").acquire(wait_s=2 * D)
        assert _newest(path)["seq"] > renewals and _newest(path)["run_id"] == "nightly"
        holder.check()
    assert _newest(path)["action"] == RELEASED
    assert RunLease(path, "manual", D, host="b").acquire() is None  # released: free at once


def test_a_holder_elsewhere_that_stopped_renewing_is_taken_over_after_a_lease_time_watched_unchanged(tmp_path):
    # Runs on host a that never renew: one whose clock is right, one whose clock is 90 s ahead (its lease looks
    # valid for 91.5 s more by any other clock).
    paths = {skew: str(tmp_path / f"lease_{skew}") for skew in (0, 90)}
    for skew, path in paths.items():
        assert RunLease(path, "crashed", D, host="a", wall_clock=_clock(skew)).acquire() is None
    time.sleep(D + 0.2)  # older than a lease time: what counts is how long the taker itself watched them
    for path in paths.values():
        with pytest.raises(ConcurrentWriteError, match=r"^another scoring run is writing this output: run crashed "
                                                       r"\(process \d+ on a\).*waited 0.5s.*taken over after its "
                                                       r"lease has been seen unchanged for 1.5s: pass `--wait 1.5` "
                                                       r"or more$"):
            RunLease(path, "next", D, host="b").acquire(wait_s=0.5)
        started = time.monotonic()
        dead = RunLease(path, "next", D, host="b").acquire(wait_s=D)  # what the refusal asked for is enough
        assert time.monotonic() - started >= D
        assert (dead.run_id, dead.host) == ("crashed", "a")
        assert (_newest(path)["run_id"], _newest(path)["host"], _newest(path)["action"]) == ("next", "b", ACQUIRED)


def test_a_dead_process_on_this_host_a_released_lease_and_an_ended_run_are_free_at_once(tmp_path):
    path = str(tmp_path / "scores_lease")
    gone = subprocess.Popen(["true"])
    gone.wait()
    _lease_row(path, run_id="killed", host=socket.gethostname(), pid=gone.pid, started="1")
    assert RunLease(path, "next", D).acquire().run_id == "killed"  # no wait: refused or taken at the first look
    # The same row from another host: its process cannot be checked from here, so it is not free.
    _lease_row(path, run_id="killed", host="elsewhere", pid=gone.pid, started="1")
    with pytest.raises(ConcurrentWriteError, match=r"run killed \(process \d+ on elsewhere\)"):
        RunLease(path, "next", D).acquire()

    path = str(tmp_path / "released_lease")
    done = RunLease(path, "failed", D, host="a")
    done.acquire()
    done.release()
    assert RunLease(path, "next", D, host="b").acquire() is None

    # A run that ended with its committed state row: free for a taker that asks the state (as scoring does).
    path, state = str(tmp_path / "ended_lease"), ScoringState(str(tmp_path / "scores_state"))
    finished = RunLease(path, "finished", D, host="a")
    with finished.hold():
        finished.end_with(lambda: state.append(StateRow(
            seq=1, model_name="churn", input_path="/in", output_path="/out", status=COMMITTED, full=True,
            from_version=-1, input_version=0, scoring_batch=1, model_version=1, run_id="finished")))
    assert _newest(path)["action"] != RELEASED  # ended by the state row alone
    with pytest.raises(ConcurrentWriteError, match="run finished"):
        RunLease(path, "next", D, host="b").acquire()  # without the callback it looks like a live run
    ended = RunLease(path, "next", D, host="b", ended=lambda h: state.committed_since(h.run_id, h.at))
    assert ended.acquire() is None


def test_a_live_run_on_this_host_is_refused(tmp_path):
    path = str(tmp_path / "scores_lease")
    with RunLease(path, "here", D).hold():
        assert _newest(path)["pid"] == os.getpid()
        with pytest.raises(ConcurrentWriteError, match=rf"run here \(process {os.getpid()} on "
                                                       rf"{socket.gethostname()}\).*waited 0.5s"):
            RunLease(path, "manual", D).acquire(wait_s=0.5)
    assert RunLease(path, "manual", D).acquire() is None
