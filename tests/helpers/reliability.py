"""Helpers of the tests that kill processes or look into Delta commits (tests/test_reliability.py,
tests/scoring/test_kill*.py, tests/registry/, tests/tables/), importable by the processes they spawn.

Kept free of pyspark and of the test modules, so a ``spawn`` child imports only what it uses.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.helpers.paths import ROOT


def register_staged(home: str, name: str, staged: str, run_id: str) -> int:
    """Register one staged artifact from a fresh process; return the version it got."""
    from sparkship.config import Settings
    from sparkship.registry import Registry

    return Registry(Settings.resolve(home=home)).register(name, staged, run_id=run_id).version


def tree(root: str) -> set[str]:
    """Every file and folder under ``root``, relative to it."""
    out: set[str] = set()
    for folder, dirs, files in os.walk(root):
        for entry in dirs + files:
            out.add(os.path.relpath(os.path.join(folder, entry), root))
    return out


def commit_count(table: str) -> int:
    """How many commit files a Delta table's log holds (0 when there is no table yet)."""
    from sparkship.tables.files import commit_versions

    return len(commit_versions(table))


def commit_actions(table: str, version: int) -> list[dict]:
    """Every action of a local Delta table's commit ``version``, in the order it was written."""
    with open(os.path.join(table, "_delta_log", f"{version:020d}.json"), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@dataclass
class Run:
    """One `sparkship score` subprocess: when its state rows were committed, how it ended."""

    state_commits_s: list[float]  # seconds from launch to each state commit seen (pending, then committed)
    ended_after_s: float  # seconds from launch to exit (or to the kill)
    killed: bool
    returncode: int
    log: str


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``'s process group and every descendant, wherever its group (pyspark's daemon makes its own
    process group, so killing the run's group alone can leave a Python worker finishing a commit)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_score(home: str, args: list[str], state_table: str, log_path: str, kill_after_pending_s: float | None,
              timeout_s: float = 240.0) -> Run:
    """Run `sparkship score ARGS` in its own process group.

    With ``kill_after_pending_s`` the whole group (driver, JVM, Python workers) gets SIGKILL that many seconds
    after the run's pending state row is committed; if the run exits first, it is reported as not killed.
    """
    env = {**os.environ, "SPARKSHIP_HOME": home, "PYTHONUNBUFFERED": "1"}
    commits_before = commit_count(state_table)
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparkship.cli", "score", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
    seen: list[float] = []
    killed = False
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if now - start > timeout_s:
                raise TimeoutError(f"score did not finish in {timeout_s}s:\n{open(log_path).read()}")
            seen += [now - start] * (commit_count(state_table) - commits_before - len(seen))
            if seen and kill_after_pending_s is not None and now - start >= seen[0] + kill_after_pending_s:
                kill_tree(proc.pid)
                killed = True
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and not killed:
            kill_tree(proc.pid)
        proc.wait()
        try:  # the JVM and Python workers of a run that exited by itself are gone too; this is a no-op then
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    ended = time.monotonic() - start
    killed = proc.returncode == -signal.SIGKILL  # a run that exited just before the kill was not killed
    seen += [ended] * (commit_count(state_table) - commits_before - len(seen))  # landed in the last poll interval
    return Run(seen, ended, killed, proc.returncode, open(log_path).read())


def kill_score_when(home: str, args: list[str], log_path: str, ready: Callable[[], bool],
                    timeout_s: float = 240.0) -> None:
    """Run `sparkship score ARGS` in its own process group; SIGKILL the whole tree once ``ready()`` is true.

    Fails if the run ends before that (it was not killed) or ``ready()`` stays false for ``timeout_s``.
    """
    env = {**os.environ, "SPARKSHIP_HOME": home, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparkship.cli", "score", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"score finished (rc {proc.returncode}) before the kill point:\n"
                                     f"{open(log_path).read()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"kill point not reached in {timeout_s}s:\n{open(log_path).read()}")
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)  # the driver, its JVM and the Python workers (their own group too): all of this run
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, open(log_path).read()


def start_paused(argv: list[str], point: str, flag: str, env: dict[str, str] | None = None,
                 log_path: str | None = None, timeout_s: float = 240.0) -> subprocess.Popen:
    """Start ``argv`` in its own session, told to hold at kill point ``point``; return once it holds there.

    The process waits while ``flag`` exists (see :mod:`sparkship.killpoints`): :func:`kill_tree` it there, or
    remove ``flag`` to let it go on. Fails if the process ends or does not get there within ``timeout_s``.
    """
    full_env = {**os.environ, **(env or {}), "SPARKSHIP_PAUSE_AT": point, "SPARKSHIP_PAUSE_FLAG": flag,
                "PYTHONUNBUFFERED": "1"}
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(flag):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                kill_tree(proc.pid)
            proc.wait()
            log = open(log_path).read() if log_path else ""
            raise AssertionError(f"{argv[:4]} never reached kill point {point} (rc {proc.returncode}):\n{log}")
        time.sleep(0.01)
    return proc


def kill_paused(proc: subprocess.Popen) -> None:
    """SIGKILL a process held at a kill point, with its whole tree; wait for it."""
    kill_tree(proc.pid)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.returncode


def start_registration_paused(home: str, staged: str, point: str, work: str) -> subprocess.Popen:
    """A process registering ``staged`` as model ``churn`` (run id ``killed``) under ``home``, held at kill point
    ``point`` (see :func:`start_paused`); its output goes to ``<work>/register.log``."""
    code = ("import sys; from tests.helpers.reliability import register_staged; "
            "print(register_staged(sys.argv[1], 'churn', sys.argv[2], 'killed'))")
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return start_paused([sys.executable, "-c", code, home, staged], point, os.path.join(work, "flag"), env=env,
                        log_path=os.path.join(work, "register.log"))
