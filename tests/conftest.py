"""One SparkSession for the whole test run, so that its JVM starts once."""
from __future__ import annotations

import os
import sys
import time

import pytest

# Tests never touch a user's ./.sparkship: each gets its own home below.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# Flags for the suite's JVMs, the pytest workers' own sessions included: a quick start, and the class archive `make
# test` builds (scripts/jvm_class_archive.py) when it is there. The CLI processes and the workers' sessions alike
# run queries over a few hundred or thousand rows, for which compiling Java code costs more CPU than running it
# interpreted. As system properties, so that the JVM's class path, and with it the class archive, stays as it is (a
# SPARK_CONF_DIR goes on the class path and the archive then fails to map). `make test` on two workers is CPU-bound,
# so CPU saved in every JVM shortens the whole run.
from scripts.jvm_class_archive import INTERPRETED_EXPRESSIONS, jvm_options  # noqa: E402

CLASS_ARCHIVE = os.path.join(sys.prefix, "jvm-classes.jsa")
os.environ.setdefault("SPARKSHIP_DRIVER_JAVA_OPTIONS",
                      f"{jvm_options(CLASS_ARCHIVE)} {INTERPRETED_EXPRESSIONS}")


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    from sparkship.spark import get_spark

    session = get_spark(home=str(tmp_path_factory.mktemp("spark-home")))
    yield session
    session.stop()


@pytest.fixture
def home(tmp_path, monkeypatch) -> str:
    """A fresh sparkship home for one test, also exported as SPARKSHIP_HOME for CLI calls."""
    path = str(tmp_path / "home")
    monkeypatch.setenv("SPARKSHIP_HOME", path)
    return path


ENGINES = ("native", pytest.param("deltars", marks=pytest.mark.deltars))


@pytest.fixture(params=ENGINES)
def engine(request, spark, monkeypatch) -> str:
    """Runs a test once per Delta engine: the session switches engines, CLI subprocesses get the env variable."""
    from sparkship import tables

    before = tables.engine_for(spark)
    tables.use_engine(spark, request.param)
    monkeypatch.setenv("SPARKSHIP_DELTA_ENGINE", request.param)
    yield request.param
    tables.use_engine(spark, before)


def _seconds(item: pytest.Item) -> float:
    mark = item.get_closest_marker("seconds")
    return float(mark.args[0]) if mark else 0.0


def pytest_collection_modifyitems(config, items) -> None:
    """Hand modules out longest first (their ``seconds`` marker). pytest-xdist gives a worker one module at a time in
    collection order; by number of tests (its default) the long modules with few tests (a real cluster, kill -9
    trials, fresh venvs) would come last, one worker running them while the other idles. The Makefile passes
    --no-loadscope-reorder so this order holds."""
    items.sort(key=lambda item: -_seconds(item))  # stable: a module keeps its order


# A worker that dies mid-test (killed, or ended by pytest-timeout's thread method, whose stack dump a worker's
# output does not show) leaves only "node down". These say what the machine looked like then.
_STARTED: dict[str, float] = {}
_NODES_DOWN: list[str] = []


def pytest_runtest_logstart(nodeid, location) -> None:
    _STARTED[nodeid] = time.monotonic()


def _biggest_processes(count: int = 8) -> list[str]:
    rows = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as fh:
                rss = next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")[:140]
        except (OSError, ValueError):
            continue
        rows.append((rss, f"{rss // 1024:>7} MiB  pid {pid}  {cmd}"))
    return [text for _, text in sorted(rows, reverse=True)[:count]]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    if not error:
        return
    reporter = node.config.pluginmanager.get_plugin("terminalreporter")
    running = [(n, time.monotonic() - t) for n, t in _STARTED.items()]
    with open("/proc/meminfo") as fh:
        available = next((line.split()[1] for line in fh if line.startswith("MemAvailable:")), "?")
    lines = [f"[{node.gateway.id}] down ({error}); MemAvailable {int(available) // 1024} MiB; load {os.getloadavg()}"]
    lines += [f"  last test started: {n} ({s:.0f} s ago)" for n, s in sorted(running, key=lambda x: x[1])[:2]]
    lines += ["  " + row for row in _biggest_processes()]
    for line in lines:
        reporter.write_line(line)
    _NODES_DOWN.extend(lines)


def pytest_terminal_summary(terminalreporter) -> None:
    """The workers that died, again at the end: CI logs keep the tail of a run's output."""
    if _NODES_DOWN:
        terminalreporter.section("workers that died")
        for line in _NODES_DOWN:
            terminalreporter.write_line(line)
