"""Registration under faults, leftover folders, and the order of events: real Spark models, real Delta tables,
real processes and real signals.

A fault is injected at every step of a registration: before its commit call (``register:renamed``), after the
version row's commit call (``register:committed``) and after the event's (``register:recorded``), as an exception,
a KeyboardInterrupt (a real SIGINT) and a kill -9. The process is held at the kill point (sparkship.killpoints)
and a signal is delivered there: SIGINT, or SIGUSR1 whose handler raises an OSError (an I/O error at that step).
Faults inside a commit call are injected at the OS calls it makes. After each fault: every version the registry
names loads (its files and its manifest verified), and a retry registers the next version cleanly.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from sparkship import artifacts, tables
from sparkship.config import Settings
from sparkship.promotion import PromotionRefusedError, latest_validation, promote
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from sparkship.spec import parse_spec
from sparkship.training import TrainingResult, manifest_for, register_result, train

pytestmark = pytest.mark.seconds(100)

NAME = "churn"
POINTS = ["register:renamed", "register:committed", "register:recorded"]


@pytest.fixture(scope="module")
def result(spark, tmp_path_factory) -> TrainingResult:
    """One small trained model; every registration here stages its own copy of it (register_result)."""
    path = str(tmp_path_factory.mktemp("tables") / "churn")
    rows = [(float(i % 10), float((i * 7) % 5), int(i % 10 > 4)) for i in range(120)]
    tables.write(spark.createDataFrame(rows, "a double, b double, label int"), path, mode="overwrite")
    return train(spark, parse_spec({
        "name": NAME, "task": "classification", "table": path, "label": "label",
        "features": {"numeric": ["a", "b"]}, "model": {"algorithm": "logistic_regression", "params": {"maxIter": 5}},
        "split": {"test_fraction": 0.25, "seed": 7},
    }))


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.resolve(home=str(tmp_path / "home"))


def _register(settings: Settings, result: TrainingResult, run_id: str) -> int:
    return register_result(settings, result, run_id=run_id)["version"]


def _model_folder(settings: Settings) -> list[str]:
    folder = os.path.join(settings.models_root, NAME)
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def _orphaned(settings: Settings) -> list[str]:
    folder = os.path.join(settings.models_root, ".orphaned")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def _staging(settings: Settings) -> list[str]:
    folder = os.path.join(settings.models_root, ".staging")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def assert_every_version_loads(settings: Settings) -> list[int]:
    """Every version the registry names has its complete artifact (files and manifest verified); the latest
    loads as a PipelineModel. Returns the version numbers, which must run 1..N."""
    reg = Registry(settings)
    versions = reg.versions(NAME)
    numbers = [mv.version for mv in versions]
    assert numbers == list(range(1, len(numbers) + 1))
    for mv in versions:
        manifest = reg.manifest(parse_ref(mv.ref))[1]
        assert manifest["name"] == NAME and mv.manifest_sha256 == artifacts.manifest_digest(mv.artifact)
    mv, model = reg.load_model(parse_ref(NAME))
    assert mv.version == numbers[-1] and len(model.stages) >= 2
    return numbers


def assert_retry_registers_cleanly(settings: Settings, result: TrainingResult) -> int:
    before = assert_every_version_loads(settings)
    version = _register(settings, result, "retry")
    assert version == before[-1] + 1
    assert assert_every_version_loads(settings) == list(range(1, version + 1))
    assert Registry(settings).get(parse_ref(NAME)).run_id == "retry"
    return version


@contextmanager
def fault_at(point: str, fault: str, flag: Path, monkeypatch):
    """Hold this process at kill point ``point`` and deliver a real signal to its main thread there: SIGINT
    (KeyboardInterrupt) or SIGUSR1, whose handler raises an OSError (an I/O error at that step)."""
    monkeypatch.setenv("SPARKSHIP_PAUSE_AT", point)
    monkeypatch.setenv("SPARKSHIP_PAUSE_FLAG", str(flag))

    def io_error(signum, frame):  # noqa: ANN001, ARG001 - a signal handler
        raise OSError(errno.EIO, f"injected I/O error at {point}")

    previous = signal.signal(signal.SIGUSR1, io_error)
    signum = signal.SIGINT if fault == "interrupt" else signal.SIGUSR1
    main, done = threading.main_thread().ident, threading.Event()

    def deliver() -> None:
        while not done.is_set():
            if flag.exists():  # the main thread is waiting at the point
                signal.pthread_kill(main, signum)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=deliver, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        signal.signal(signal.SIGUSR1, previous)
        flag.unlink(missing_ok=True)
        monkeypatch.delenv("SPARKSHIP_PAUSE_AT")


# --- an exception and a KeyboardInterrupt at every step, in process ------------------------------------------


@pytest.mark.parametrize("fault", ["exception", "interrupt"])
@pytest.mark.parametrize("point", POINTS)
def test_a_fault_at_every_step_never_leaves_a_version_without_its_artifact(engine, settings, result, tmp_path,
                                                                          monkeypatch, caplog, point, fault):
    _register(settings, result, "first")
    caplog.set_level(logging.WARNING)
    committed = point != "register:renamed"
    expected = KeyboardInterrupt if fault == "interrupt" else OSError
    with fault_at(point, fault, tmp_path / "flag", monkeypatch):
        if committed and fault == "exception":
            # The row landed: the registration stands (an error now would invite a duplicate version).
            assert _register(settings, result, "faulted") == 2
        else:
            with pytest.raises(expected):
                _register(settings, result, "faulted")

    reg = Registry(settings)
    assert assert_every_version_loads(settings) == ([1, 2] if committed else [1])
    if committed:
        assert reg.get(parse_ref(NAME)).run_id == "faulted"
        assert any("churn/2 is registered" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    # Nothing was left behind: not the staged folder, not a folder without a row.
    assert _model_folder(settings) == (["1", "2"] if committed else ["1"])
    assert _staging(settings) == [] and _orphaned(settings) == []
    assert assert_retry_registers_cleanly(settings, result) == (3 if committed else 2)
    assert _orphaned(settings) == []


# --- kill -9 at every step ------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_at_every_step_never_leaves_a_version_without_its_artifact(settings, result, tmp_path, point):
    from tests.helpers.reliability import kill_paused, start_registration_paused  # noqa: E402 - tests/ helper

    _register(settings, result, "first")
    staged = artifacts.stage(result.model, manifest_for(result, "killed"), settings.models_root)
    proc = start_registration_paused(settings.home, staged, point, str(tmp_path))
    kill_paused(proc)

    committed = point != "register:renamed"
    assert assert_every_version_loads(settings) == ([1, 2] if committed else [1])
    reg = Registry(settings)
    events = [e["version"] for e in reg.events(NAME, "registered")]
    assert events == ([1, 2] if point == "register:recorded" else [1])
    # The retry takes the next number; a dead registration's folder that no row names is moved aside whole.
    assert assert_retry_registers_cleanly(settings, result) == (3 if committed else 2)
    moved = _orphaned(settings)
    assert len(moved) == (0 if committed else 1)
    for folder in moved:
        assert artifacts.verify(os.path.join(settings.models_root, ".orphaned", folder))["name"] == NAME


# --- faults inside a commit call, at the OS calls it makes ---------------------------------------------------


@pytest.mark.parametrize("fault", [OSError, KeyboardInterrupt])
def test_a_commit_call_that_fails_after_its_commit_landed_keeps_the_version(spark, settings, result, monkeypatch,
                                                                            caplog, fault):
    """The lookup after the commit (the version of the commit that carries our write id) fails once: the
    registry is read again, finds the row, and the artifact stays where the row says."""
    before = tables.engine_for(spark)
    tables.use_engine(spark, "deltars")  # the delta-rs store looks its commit up in the log with os.listdir
    try:
        _register(settings, result, "first")
        versions_path = Registry(settings).versions_path
        log_dir = os.path.join(versions_path, "_delta_log")
        landed = os.path.join(log_dir, f"{1:020d}.json")
        real_listdir, fired = os.listdir, []

        def listdir(path=".") -> list[str]:  # noqa: ANN001
            if not fired and os.fspath(path) == log_dir and os.path.exists(landed):
                fired.append(path)
                raise fault(errno.EIO, "injected: the log could not be listed") if fault is OSError else fault()
            return real_listdir(path)

        caplog.set_level(logging.WARNING)
        monkeypatch.setattr(os, "listdir", listdir)
        if fault is OSError:
            assert _register(settings, result, "landed") == 2
        else:
            with pytest.raises(KeyboardInterrupt):
                _register(settings, result, "landed")
        monkeypatch.setattr(os, "listdir", real_listdir)
        assert fired, "the fault was never injected"
        assert any("churn/2 is registered" in r.getMessage() for r in caplog.records)
        assert assert_every_version_loads(settings) == [1, 2]
        assert Registry(settings).get(parse_ref(NAME)).run_id == "landed"
        assert assert_retry_registers_cleanly(settings, result) == 3
    finally:
        tables.use_engine(spark, before)


def test_a_commit_call_that_fails_before_its_commit_lands_leaves_a_folder_the_retry_moves_aside(
        engine, settings, result, monkeypatch, caplog):
    """Writing the row's data file fails inside the commit call: nothing is moved or undone after a commit call,
    the registry still names only complete versions, and the next registration moves the folder aside."""
    _register(settings, result, "first")
    versions_path = Registry(settings).versions_path
    existing = set(os.listdir(versions_path))
    real_stat, fired = os.stat, []

    def stat(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
        if not fired and os.path.dirname(text) == versions_path and text.endswith(".parquet") \
                and os.path.basename(text) not in existing:  # the data file of the new row, once written
            fired.append(text)
            raise OSError(errno.ENOSPC, "injected: no space left on device", text)
        return real_stat(path, *args, **kwargs)

    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(OSError, match="no space left"):
        _register(settings, result, "failed")
    monkeypatch.setattr(os, "stat", real_stat)
    assert fired, "the fault was never injected"
    assert assert_every_version_loads(settings) == [1]
    assert _model_folder(settings) == ["1", "2"]  # left where the commit call may have used it
    assert any("no row names" in r.getMessage() for r in caplog.records)
    assert assert_retry_registers_cleanly(settings, result) == 2
    assert len(_orphaned(settings)) == 1
    assert any(".orphaned" in r.getMessage() and "churn/2" in r.getMessage() for r in caplog.records)


# --- leftover folders -----------------------------------------------------------------------------------------


def test_leftover_folders_never_block_a_registration_without_file_locks(settings, result, monkeypatch, caplog):
    first = _register(settings, result, "first")
    reg = Registry(settings)
    one = reg.get(parse_ref(f"{NAME}/{first}")).artifact
    leftover = os.path.join(settings.models_root, NAME, "2")  # a registration killed before its commit
    shutil.copytree(one, leftover)
    os.remove(os.path.join(leftover, "REGISTERED"))

    def no_locks(fd, operation):  # noqa: ANN001, ARG001 - the file system refuses flock (NFS without lockd, ...)
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    caplog.set_level(logging.WARNING)
    start = time.monotonic()
    assert _register(settings, result, "unlocked") == 2
    assert time.monotonic() - start < 60
    two = reg.get(parse_ref(f"{NAME}/2"))
    assert two.run_id == "unlocked" and two.artifact != leftover
    assert os.path.dirname(two.artifact) == os.path.dirname(leftover)
    assert os.path.basename(two.artifact).startswith("2-")
    assert os.path.isdir(leftover) and _orphaned(settings) == []  # maybe a live registration's: left alone
    assert any(leftover in r.getMessage() and "not a registered version" in r.getMessage() for r in caplog.records)
    assert _register(settings, result, "unlocked-again") == 3
    assert reg.get(parse_ref(f"{NAME}/3")).artifact == os.path.join(settings.models_root, NAME, "3")
    assert assert_every_version_loads(settings) == [1, 2, 3]
    # With locks back, the next registration moves the leftover aside.
    monkeypatch.undo()
    assert _register(settings, result, "locked") == 4
    assert not os.path.exists(leftover) and len(_orphaned(settings)) == 1
    assert assert_every_version_loads(settings) == [1, 2, 3, 4]


# --- the order of events --------------------------------------------------------------------------------------

SKEWED_CLOCK = '''
import datetime as _dt, sys
import deltalake, numpy, pandas, pyarrow.parquet, pyspark.sql, zoneinfo  # noqa: F401 - C extensions see the real type
_SHIFT = _dt.timedelta(hours=float(sys.argv[1]))
_REAL = _dt.datetime
class _Skewed(_REAL):
    @classmethod
    def now(cls, tz=None):
        return _REAL.now(tz) + _SHIFT
_dt.datetime = _Skewed  # this process's clock runs ahead: every datetime.now() sparkship calls
from sparkship.config import Settings
from sparkship.registry import Registry
Registry(Settings.resolve(home=sys.argv[2])).record_event(
    "churn", 1, "validated", {"passed": True, "reasons": [], "champion_version": None, "by": "a clock ahead"})
'''


def test_the_latest_verdict_is_the_last_committed_whatever_the_clocks(settings, result, tmp_path):
    """A PASS written by a process whose clock runs an hour ahead, then a FAIL written here: by their clocks the
    PASS is newer, by their commits the FAIL is. The gate and every reader follow the commits."""
    _register(settings, result, "first")
    reg = Registry(settings)
    script = tmp_path / "skewed.py"
    script.write_text(SKEWED_CLOCK)
    done = subprocess.run([sys.executable, str(script), "1", settings.home], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    reg.record_event(NAME, 1, "validated", {"passed": False, "reasons": ["accuracy 0.4 < 0.8"],
                                            "champion_version": None})

    verdicts = reg.events(NAME, "validated", version=1)
    assert [v["details"]["passed"] for v in verdicts] == [True, False]
    assert verdicts[0]["at"] > verdicts[1]["at"]  # the clocks disagree with the commits
    assert verdicts[0]["seq"] < verdicts[1]["seq"]
    assert [e["event"] for e in reg.events(NAME)] == ["registered", "validated", "validated"]
    assert latest_validation(reg, NAME, 1)["details"]["passed"] is False
    with pytest.raises(PromotionRefusedError, match="failed its latest validation"):
        promote(settings, f"{NAME}/1")
    assert reg.alias_version(NAME, "champion") is None


def _record_events(home: str, index: int) -> None:
    """In a fresh process: verdicts (compare-and-set) and notes (blind appends), interleaved."""
    from sparkship.config import Settings
    from sparkship.registry import Registry

    reg = Registry(Settings.resolve(home=home))
    for i in range(3):
        reg.record_event("churn", 1, "validated", {"passed": True, "by": index, "i": i})
        reg.record_event("churn", 1, "note", {"by": index, "i": i})


def test_concurrent_events_are_numbered_by_the_events_table_commits(settings, result):
    """Three processes append verdicts and notes at once: each verdict's seq is the version of the commit that
    wrote it; each note's is at most that (the version its writer read, plus one); and events() lists verdicts
    in the order of their commits."""
    import pyarrow.parquet as pq

    from tests.helpers.reliability import commit_actions, commit_count  # noqa: E402 - tests/ helper

    _register(settings, result, "first")
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        pool.starmap(_record_events, [(settings.home, i) for i in range(3)])

    reg = Registry(settings)
    landed = {}  # seq written in the row -> (event, version of the commit that wrote it)
    for version in range(commit_count(reg.events_path)):
        for action in commit_actions(reg.events_path, version):
            if "add" in action:
                row = pq.read_table(os.path.join(reg.events_path, action["add"]["path"])).to_pylist()[0]
                landed.setdefault(row["event"], []).append((row["seq"], version))
    assert len(landed["validated"]) == len(landed["note"]) == 9
    assert all(seq == version for seq, version in landed["validated"])
    assert all(seq <= version for seq, version in landed["note"])
    verdicts = reg.events(NAME, "validated")
    assert [v["seq"] for v in verdicts] == sorted(version for _, version in landed["validated"])
    assert len(reg.events(NAME)) == 1 + 18  # registered, then every one landed
