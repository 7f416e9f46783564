"""The scoring state table: which input versions a (model, input, output) triple has scored.

A small Delta table (``<output>_state``) read and written with Arrow through delta-rs (no Spark job). Each
scoring run appends two rows for its (model name, input, output):

* ``pending`` before it writes anything: the range it is about to score (``from_version`` exclusive, -1 for the
  whole snapshot, to ``input_version`` inclusive) and whether it replaces the whole output (``full``);
* ``committed`` after the output commit: the same range, the output version and the row counts.

The latest ``committed`` row says where the next incremental run starts. A ``pending`` row newer than it
means the previous run died somewhere between the two: its output commit may or may not have landed. An
incremental run heals that by re-scoring the same range into the same ``scoring_batch`` partition (see
:mod:`sparkship.scoring`); a dead full run is redone in full.

Leases. A run holds the output's lease (``<output>_lease``, another small Delta table) from before it reads the
state until after its ``committed`` row: the lease names its owner (run id, host, process id and the process's
start time) and expires ``LEASE_S`` seconds after its latest renewal; a background thread renews it every
``LEASE_S / 3`` seconds. A run that finds the lease held by a live run waits up to its ``wait_s`` and then
refuses, naming the holder: so a manual run started during the scheduled one never mistakes the scheduled
run's ``pending`` row for a dead run's. A lease is free when its run committed (its ``committed`` state row is
newer than its latest lease row: a finished run writes no separate release, one Delta commit fewer per run),
when it was released (a run that failed or had nothing to score), when it expired, or - on the same host - when
its owner process is gone (a killed run is healed by the next run at once, without waiting for the expiry).

    >>> state = ScoringState("/tmp/scores_state")                            # doctest: +SKIP
    >>> state.latest("churn", "/data/events", "/tmp/scores").committed        # doctest: +SKIP
    >>> with RunLease("/tmp/scores_lease", "run-1").hold(wait_s=0):           # doctest: +SKIP
    ...     pass
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import pyarrow as pa

from sparkship.errors import ConcurrentWriteError
from sparkship.tables import metadata

log = logging.getLogger(__name__)

PENDING = "pending"
COMMITTED = "committed"

STATE_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("model_name", pa.string()),
        ("input_path", pa.string()),
        ("output_path", pa.string()),
        ("status", pa.string()),
        ("full", pa.bool_()),
        ("from_version", pa.int64()),
        ("input_version", pa.int64()),
        ("scoring_batch", pa.int64()),
        ("model_version", pa.int64()),
        ("run_id", pa.string()),
        ("output_version", pa.int64()),
        ("rows_in", pa.int64()),
        ("scored", pa.int64()),
        ("quarantined", pa.int64()),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class StateRow:
    """One row of the state table."""

    seq: int
    model_name: str
    input_path: str
    output_path: str
    status: str
    full: bool
    from_version: int
    input_version: int
    scoring_batch: int
    model_version: int
    run_id: str
    output_version: int | None = None
    rows_in: int | None = None
    scored: int | None = None
    quarantined: int | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class Latest:
    """The newest committed row and, when the run after it did not finish, its pending row."""

    committed: StateRow | None
    unfinished: StateRow | None
    table_version: int  # -1 when the state table does not exist yet
    owner: StateRow | None = None  # the newest row of the output, whatever its model and input
    next_seq: int = 1  # the ``seq`` of the next row appended to the table


class ScoringState:
    """The state table at ``path`` (one per output table)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def latest(self, model_name: str, input_path: str, output_path: str) -> Latest:
        version = metadata.table_version(self.path)
        if version is None:
            return Latest(None, None, -1)
        every = metadata.read_arrow(self.path, version=version).to_pylist()
        of_output = sorted((StateRow(**r) for r in every if r["output_path"] == output_path), key=lambda r: r.seq)
        rows = [r for r in of_output if (r.model_name, r.input_path) == (model_name, input_path)]
        committed = next((r for r in reversed(rows) if r.status == COMMITTED), None)
        newest = rows[-1] if rows else None
        unfinished = newest if newest is not None and newest.status == PENDING else None
        return Latest(committed, unfinished, version, of_output[-1] if of_output else None,
                      max((r["seq"] for r in every), default=0) + 1)

    def append(self, row: StateRow, expected_version: int | None = None) -> int:
        """Append one row (``seq`` is the caller's); compare-and-set on the table when ``expected_version``."""
        record: dict[str, Any] = {**row.__dict__, "at": row.at or datetime.now(timezone.utc)}
        return metadata.append_arrow(
            self.path, pa.Table.from_pylist([record], schema=STATE_SCHEMA), expected_version=expected_version
        )

    def committed_since(self, run_id: str, since: datetime) -> bool:
        """True when run ``run_id`` appended a ``committed`` row at or after ``since``: its lease ended with it."""
        if metadata.table_version(self.path) is None:
            return False
        rows = metadata.read_arrow(self.path, columns=["run_id", "status", "at"]).to_pylist()
        return any(r["run_id"] == run_id and r["status"] == COMMITTED and r["at"] >= since for r in rows)

    def next_seq(self) -> int:
        if metadata.table_version(self.path) is None:
            return 1
        seqs = metadata.read_arrow(self.path, columns=["seq"]).column("seq").to_pylist()
        return max(seqs, default=0) + 1


# --- the run lease -------------------------------------------------------------------------------------------

LEASE_S = 60.0
ACQUIRED, RENEWED, RELEASED = "acquired", "renewed", "released"
LEASE_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("run_id", pa.string()),
        ("host", pa.string()),
        ("pid", pa.int64()),
        ("pid_started", pa.string()),
        ("action", pa.string()),
        ("expires_at", pa.timestamp("us", tz="UTC")),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)


def _process_started(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from /proc), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class LeaseHolder:
    """The newest row of a lease table."""

    seq: int
    run_id: str
    host: str
    pid: int
    pid_started: str | None
    action: str
    expires_at: datetime
    at: datetime | None = None

    def is_live(self, now: datetime) -> bool:
        """Held: not released, not expired and, when the owner ran on this host, its process still there."""
        if self.action == RELEASED or self.expires_at <= now:
            return False
        if self.host == socket.gethostname() and os.path.isdir("/proc"):
            return _process_started(self.pid) == self.pid_started
        return True

    def describe(self) -> str:
        return (f"run {self.run_id} (process {self.pid} on {self.host}, lease until "
                f"{self.expires_at.isoformat(timespec='seconds')})")


class RunLease:
    """The lease of one output table, for one run (see the module docstring).

    ``ended`` tells whether a holder's run ended by recording its work elsewhere (the scoring state's
    ``committed`` row): such a lease is free without a release row. A run ends its own lease that way with
    :meth:`end_with`.
    """

    def __init__(self, path: str, run_id: str, duration_s: float = LEASE_S,
                 ended: Callable[[LeaseHolder], bool] | None = None) -> None:
        self.path = path
        self.run_id = run_id
        self.duration_s = duration_s
        self.lost = threading.Event()
        self._ended = ended
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._closed = False
        self._pid = os.getpid()

    def _has_ended(self, holder: LeaseHolder) -> bool:
        return holder.action == RELEASED or (self._ended is not None and holder.at is not None and self._ended(holder))

    def holder(self) -> tuple[int, LeaseHolder | None]:
        """(table version or -1, the newest lease row or None)."""
        version = metadata.table_version(self.path)
        if version is None:
            return -1, None
        rows = metadata.read_arrow(self.path, version=version).to_pylist()
        newest = max(rows, key=lambda r: r["seq"], default=None)
        return version, LeaseHolder(**newest) if newest else None

    def _append(self, action: str, seq: int, expected_version: int | None) -> None:
        now = datetime.now(timezone.utc)
        row = {
            "seq": seq, "run_id": self.run_id, "host": socket.gethostname(), "pid": self._pid,
            "pid_started": _process_started(self._pid), "action": action,
            "expires_at": now + timedelta(seconds=self.duration_s), "at": now,
        }
        metadata.append_arrow(self.path, pa.Table.from_pylist([row], schema=LEASE_SCHEMA),
                              expected_version=expected_version)

    def acquire(self, wait_s: float = 0.0) -> LeaseHolder | None:
        """Take the lease (compare-and-set); return the dead holder it took over from, if any.

        Waits up to ``wait_s`` seconds for a live holder to finish, then raises :class:`ConcurrentWriteError`
        naming it.
        """
        deadline = time.monotonic() + wait_s
        waited = False
        while True:
            version, holder = self.holder()
            ended = holder is None or self._has_ended(holder)
            if ended or not holder.is_live(datetime.now(timezone.utc)):  # type: ignore[union-attr]
                try:
                    self._append(ACQUIRED, (holder.seq if holder else 0) + 1, expected_version=version)
                except ConcurrentWriteError:
                    continue  # another run took it first: look again
                return None if ended else holder
            if time.monotonic() >= deadline:
                raise ConcurrentWriteError(
                    f"another scoring run is writing this output: {holder.describe()}. One run at a time per "
                    f"output: wait for it to finish{f' (waited {wait_s:g}s)' if wait_s else ''}, or pass a "
                    f"longer --wait; a run that died on another machine frees the lease when it expires"
                )
            if not waited:
                log.info("waiting up to %gs for %s to finish", wait_s, holder.describe())
                waited = True
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def check(self) -> None:
        """Raise :class:`ConcurrentWriteError` if this run lost its lease (its renewals failed)."""
        if self.lost.is_set():
            raise ConcurrentWriteError(f"run {self.run_id} lost its lease on {self.path}: nothing more is committed")

    def _renew_once(self) -> None:
        version, holder = self.holder()
        if holder is None or holder.run_id != self.run_id or holder.action == RELEASED:
            self.lost.set()
            return
        self._append(RENEWED, holder.seq + 1, expected_version=version)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.duration_s / 3):
            try:
                self._renew_once()
            except ConcurrentWriteError:
                continue  # a reader's view moved under us: the next tick looks again
            except Exception:  # noqa: BLE001 - a renewal must never kill the run; the lease then expires
                log.exception("could not renew the lease on %s", self.path)
            if self.lost.is_set():
                log.error("run %s lost its lease on %s", self.run_id, self.path)
                return

    def _stop_renewing(self) -> None:
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=5)

    def end_with(self, record: Callable[[], Any]) -> None:
        """End the lease by running ``record`` (the run's ``committed`` state row): no release row follows.

        Renewals stop first, so that the record is newer than the lease's latest row (what ``ended`` checks).
        """
        self._stop_renewing()
        self.check()
        record()
        self._closed = True

    def release(self) -> None:
        self._stop_renewing()
        for _ in range(50):
            version, holder = self.holder()
            if holder is None or holder.run_id != self.run_id or holder.action == RELEASED:
                return
            try:
                self._append(RELEASED, holder.seq + 1, expected_version=version)
                return
            except ConcurrentWriteError:
                continue

    @contextmanager
    def hold(self, wait_s: float = 0.0) -> Iterator["RunLease"]:
        """Acquire, renew in the background while the block runs, and release at the end (even on error) unless
        the block ended the lease with :meth:`end_with`."""
        dead = self.acquire(wait_s)
        if dead is not None:
            log.warning("took over the lease of %s, which is no longer running", dead.describe())
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease-{self.run_id}", daemon=True)
        self._renewer.start()
        try:
            yield self
        finally:
            self._stop_renewing()
            if not self._closed:
                self.release()
