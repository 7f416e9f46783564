"""One SparkSession for the whole test run (starting one costs ~10 s)."""
from __future__ import annotations

import os
import sys

import pytest

# Tests never touch a user's ./.sparkship: each gets its own home below.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# The suite starts a hundred short-lived JVMs (each CLI call is a process with its own SparkSession): they get
# flags for a quick start, and the class archive `make test` builds (scripts/jvm_class_archive.py) when it is
# there. The session-scoped JVM below runs for the whole suite and keeps the JVM's defaults.
from scripts.jvm_class_archive import short_lived_jvm_options  # noqa: E402

CLASS_ARCHIVE = os.path.join(sys.prefix, "jvm-classes.jsa")
# The CLI processes' queries touch a few hundred rows: compiling Java code for each costs more CPU than running
# it interpreted (same results; Spark tests both ways). As system properties, so that the JVM's class path, and
# with it the class archive, stays as it is (a SPARK_CONF_DIR goes on the class path and the archive then fails
# to map). `make test`: 26 min 34 s of pytest with them, 30 min 47 s without (clean clones, 3 December).
INTERPRETED_EXPRESSIONS = "-Dspark.sql.codegen.wholeStage=false -Dspark.sql.codegen.factoryMode=NO_CODEGEN"
os.environ.setdefault("SPARKSHIP_DRIVER_JAVA_OPTIONS",
                      f"{short_lived_jvm_options(CLASS_ARCHIVE)} {INTERPRETED_EXPRESSIONS}")


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    from sparkship.spark import DRIVER_JAVA_OPTIONS_ENV, get_spark

    flags = os.environ.pop(DRIVER_JAVA_OPTIONS_ENV, None)
    try:
        session = get_spark(home=str(tmp_path_factory.mktemp("spark-home")))
    finally:
        if flags is not None:
            os.environ[DRIVER_JAVA_OPTIONS_ENV] = flags
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
# in a row): 30 s to 3 min each on two cores, so they run in `make test` only.
NOT_QUICK = {
    "test_concurrent_appends_from_separate_processes", "test_incremental_rerun_model_change_and_full",
    "test_another_models_scores_are_never_replaced_without_the_flag",
    "test_a_run_whose_columns_differ_from_the_output_is_refused_naming_the_flag",
}


# Summed seconds of each module's tests in `.ci/run` on 3 December 2026 (--junitxml, 2 cores). pytest-xdist hands
# a worker one module at a time in collection order; by default it orders them by their number of tests, which
# left the long modules with few tests (a real cluster, kill -9 trials, fresh venvs) for the end, one worker
# running them while the other idled. Longest first instead (the Makefile passes --no-loadscope-reorder); a
# module not listed here comes last.
MODULE_SECONDS = {
    "test_serving_models": 274, "test_scoring_kill": 259, "test_reliability": 250, "test_scoring": 242,
    "test_distributed": 163, "test_table_names": 157, "test_training": 147, "test_registry": 147, "test_tables": 132,
    "test_serving_parity": 104, "test_wheel": 93, "test_interop_mlflow": 84, "test_validation": 83,
    "test_native_cas": 63, "test_report": 62, "test_connect": 62, "test_tables_untrusted": 61, "test_cli_errors": 55,
    "test_spark35": 54, "test_serving_vectors": 53, "test_reliability_server": 50, "test_demo": 47,
    "test_monitoring": 42, "test_fuse_refusals": 37, "test_ingest": 30, "test_serving_features": 27,
    "test_serving_sql": 27, "test_serving_text": 22, "test_server": 17, "test_bundle": 11, "test_metrics": 9,
}


def _module_name(item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1]


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "quick: the subset `make test-quick` runs")


def pytest_collection_modifyitems(config, items) -> None:
    items.sort(key=lambda item: -MODULE_SECONDS.get(_module_name(item), 0))  # stable: a module keeps its order
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("engine") if callspec is not None else None
        module = _module_name(item)
        if module in QUICK_MODULES and engine in (None, "native") and item.originalname not in NOT_QUICK:
            item.add_marker(pytest.mark.quick)
