"""One SparkSession for the whole test run, so that its JVM starts once."""
from __future__ import annotations

import os
import sys
import time

import pytest

# Tests never touch a user's ./.sparkship: each gets its own home below.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# Flags for the suite's JVMs, the pytest workers' own sessions included: a quick start, and the class archive
# `make test` builds (scripts/jvm_class_archive.py) when it is there. The CLI processes and the workers' sessions
# alike run queries over a few hundred or thousand rows, for which compiling Java code costs more CPU than running
# it interpreted (same results; Spark tests both ways). As system properties, so that the JVM's class path, and
# with it the class archive, stays as it is (a SPARK_CONF_DIR goes on the class path and the archive then fails
# to map). `make test` on two workers is CPU-bound, so CPU saved in every JVM shortens the whole run.
from scripts.jvm_class_archive import short_lived_jvm_options  # noqa: E402

CLASS_ARCHIVE = os.path.join(sys.prefix, "jvm-classes.jsa")
INTERPRETED_EXPRESSIONS = "-Dspark.sql.codegen.wholeStage=false -Dspark.sql.codegen.factoryMode=NO_CODEGEN"
os.environ.setdefault("SPARKSHIP_DRIVER_JAVA_OPTIONS",
                      f"{short_lived_jvm_options(CLASS_ARCHIVE)} {INTERPRETED_EXPRESSIONS}")


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


ENGINES = ("native", "deltars")


@pytest.fixture(params=ENGINES)
def engine(request, spark, monkeypatch) -> str:
    """Runs a test once per Delta engine: the session switches engines, CLI subprocesses get the env variable."""
    from sparkship import tables

    before = tables.engine_for(spark)
    tables.use_engine(spark, request.param)
    monkeypatch.setenv("SPARKSHIP_DELTA_ENGINE", request.param)
    yield request.param
    tables.use_engine(spark, before)


# Modules that `make test-quick` runs, on the native engine only (the production path): the spec, the bundle,
# the jobs API, tables, scoring (which registers its models through the registry) and the server. Everything
# else (the registry's own tests, validation, monitoring, the serving matrices, real clusters, kill -9 trials,
# second environments, fresh venvs, concurrent JVMs, the deltars engine) runs in `make test`.
QUICK_MODULES = {
    "test_spec", "test_doctests", "test_bundle", "test_jobs_api", "test_tables", "test_scoring", "test_server",
}


# Within those modules, the slowest tests (four writer processes with a JVM each; runs of several scoring jobs
# in a row), so they run in `make test` only.
NOT_QUICK = {
    "test_concurrent_appends_from_separate_processes", "test_incremental_rerun_model_change_and_full",
    "test_another_models_scores_are_never_replaced_without_the_flag",
    "test_a_run_whose_columns_differ_from_the_output_is_refused_naming_the_flag",
}


# Approximate seconds of each module's tests in `make test` (from --junitxml), used only to hand modules out
# longest first. pytest-xdist hands a worker one module at a time in collection order; ordered by number of tests
# (its default), the long modules with few tests (a real cluster, kill -9 trials, fresh venvs) would come last, one
# worker running them while the other idles. The Makefile passes --no-loadscope-reorder so this order holds; a
# module not listed here comes last.
MODULE_SECONDS = {
    "test_scoring_kill": 600, "test_scoring_changes": 480, "test_scoring": 253, "test_serving_models": 153,
    "test_reliability": 143,
    "test_tables": 143, "test_serving_parity": 136, "test_table_names": 112, "test_distributed": 97,
    "test_interop_mlflow": 83, "test_training": 63, "test_wheel": 57, "test_native_cas": 47, "test_connect": 46,
    "test_tables_untrusted": 46, "test_cli_errors": 70, "test_cli_bad_inputs": 110, "test_validation": 230,
    "test_registry": 41,
    "test_monitoring": 40, "test_reliability_server": 39, "test_report": 36, "test_spark35": 36,
    "test_serving_vectors": 34, "test_serving_sql": 32, "test_demo": 28, "test_serving_features": 26,
    "test_fuse_refusals": 20, "test_server": 19, "test_ingest": 18, "test_serving_text": 16, "test_metrics": 8,
    "test_bundle": 6, "test_scoring_lease": 15,
    "test_server_concurrency": 22,
    "test_registry_safety": 100, "test_artifact_integrity": 25,
    "test_register": 175, "test_export_onnx": 160, "test_scoring_jvm_free": 150, "test_serving_trees": 90,
    "test_retrain": 90, "test_bundle_agreement": 65, "test_bundle_cli": 35, "test_workflows": 5,
    "test_xgboost": 200, "test_bundle_registration": 50, "test_register_zoo": 800, "test_spec_pipelines": 300,
}


def _module_name(item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1]


def pytest_collection_modifyitems(config, items) -> None:
    items.sort(key=lambda item: -MODULE_SECONDS.get(_module_name(item), 0))  # stable: a module keeps its order
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("engine") if callspec is not None else None
        module = _module_name(item)
        if module in QUICK_MODULES and engine in (None, "native") and item.originalname not in NOT_QUICK:
            item.add_marker(pytest.mark.quick)


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
