"""The scoring run lease: one run at a time per output table, across hosts whose clocks disagree.

A run holds the output's lease (``<output>_lease``, a small Delta table) from before it reads the scoring state
until its ``committed`` state row, appending a renewal every ``duration_s / 3`` seconds. Hosts' wall clocks are
never compared: a holder on another host is taken for dead only once its newest row was seen unchanged for
``duration_s`` on the taker's own monotonic clock. When a lease is free at once: docs/DESIGN.md.

    >>> with RunLease("/tmp/scores_lease", "run-1").hold(wait_s=0):           # doctest: +SKIP
    ...     pass
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from sparkship.errors import ConcurrentWriteError
from sparkship.tables import metadata

log = logging.getLogger(__name__)

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


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class LeaseHolder:
    """The newest row of a lease table (``at`` and ``expires_at`` are the writer's wall clock: information only)."""

    seq: int
    run_id: str
    host: str
    pid: int
    pid_started: str | None
    action: str
    expires_at: datetime
    at: datetime | None = None

    def describe(self) -> str:
        return f"run {self.run_id} (process {self.pid} on {self.host})"


class RunLease:
    """The lease of one output table, for one run (see the module docstring).

    ``ended`` tells whether a holder's run ended by recording its work elsewhere (the scoring state's
    ``committed`` row): such a lease is free without a release row. A run ends its own lease that way with
    :meth:`end_with`. ``host`` and ``wall_clock`` name this host and stamp the rows' ``at`` and ``expires_at``.
    """

    def __init__(self, path: str, run_id: str, duration_s: float = LEASE_S,
                 ended: Callable[[LeaseHolder], bool] | None = None, *, host: str | None = None,
                 wall_clock: Callable[[], datetime] | None = None) -> None:
        self.path = path
        self.run_id = run_id
        self.duration_s = duration_s
        self.host = host if host is not None else socket.gethostname()
        self.lost = threading.Event()
        self._ended = ended
        self._wall_clock = wall_clock or _utc_now
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._closed = False
        self._pid = os.getpid()

    def _has_ended(self, holder: LeaseHolder) -> bool:
        return holder.action == RELEASED or (self._ended is not None and holder.at is not None and self._ended(holder))

    def _process_gone(self, holder: LeaseHolder) -> bool:
        """The holder ran on this host and its process is no longer there (no clock is compared)."""
        return (holder.host == self.host and os.path.isdir("/proc")
                and _process_started(holder.pid) != holder.pid_started)

    def holder(self) -> tuple[int, LeaseHolder | None]:
        """(table version or -1, the newest lease row or None)."""
        version = metadata.table_version(self.path)
        if version is None:
            return -1, None
        rows = metadata.read_arrow(self.path, version=version).to_pylist()
        newest = max(rows, key=lambda r: r["seq"], default=None)
        return version, LeaseHolder(**newest) if newest else None

    def _append(self, action: str, seq: int, expected_version: int | None) -> None:
        now = self._wall_clock()
        row = {
            "seq": seq, "run_id": self.run_id, "host": self.host, "pid": self._pid,
            "pid_started": _process_started(self._pid), "action": action,
            "expires_at": now + timedelta(seconds=self.duration_s), "at": now,
        }
        metadata.append_arrow(self.path, pa.Table.from_pylist([row], schema=LEASE_SCHEMA),
                              expected_version=expected_version)

    def acquire(self, wait_s: float = 0.0) -> LeaseHolder | None:
        """Take the lease (compare-and-set); return the dead holder it took over from, if any.

        A holder's lease is taken over once its newest row has been seen unchanged for ``duration_s`` on this
        host's monotonic clock (or at once when free, see the module docstring). Waits up to ``wait_s`` seconds,
        watching the row, then raises :class:`ConcurrentWriteError` naming the holder.
        """
        watched: tuple[int, str] | None = None  # (seq, run id) of the holder's newest row
        seen_since = 0.0
        deadline: float | None = None
        while True:
            version, holder = self.holder()
            now = time.monotonic()
            if holder is None or self._has_ended(holder):
                dead = None
            elif self._process_gone(holder):
                dead = holder
            else:
                if deadline is None:  # from the first look, so that a wait of duration_s is enough
                    deadline = now + wait_s
                    if wait_s:
                        log.info("waiting up to %gs for %s to finish", wait_s, holder.describe())
                if (holder.seq, holder.run_id) != watched:
                    watched, seen_since = (holder.seq, holder.run_id), now
                if now - seen_since < self.duration_s:
                    if now >= deadline:
                        raise ConcurrentWriteError(self._refusal(holder, wait_s))
                    time.sleep(min(0.5, self.duration_s / 4, max(0.0, deadline - now)))
                    continue
                dead = holder  # unchanged for a whole lease: it stopped renewing
            try:
                self._append(ACQUIRED, (holder.seq if holder else 0) + 1, expected_version=version)
            except ConcurrentWriteError:
                continue  # another run (or the holder's renewal) committed first: look again
            return dead

    def _refusal(self, holder: LeaseHolder, wait_s: float) -> str:
        waited = f" (waited {wait_s:g}s)" if wait_s else ""
        if wait_s >= self.duration_s:
            why = "its lease kept changing while this run waited, so it is still running"
        else:
            why = (f"a run that died on another machine is taken over after its lease has been seen unchanged for "
                   f"{self.duration_s:g}s: pass `--wait {self.duration_s:g}` or more")
        return (f"another scoring run is writing this output: {holder.describe()}. One run at a time per output: "
                f"wait for it to finish{waited}; {why}")

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
            except Exception:  # noqa: BLE001 - a renewal must never kill the run; the lease then goes stale
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
    def hold(self, wait_s: float = 0.0) -> Iterator[RunLease]:
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
