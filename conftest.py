"""One SparkSession for the whole test run (starting one costs ~10 s)."""
from __future__ import annotations

import os
import sys

import pytest

# Tests never touch a user's ./.sparkship: each gets its own home below.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


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


# Modules `make test-quick` leaves out: real clusters, kill -9 trials, second environments, fresh venvs,
# concurrent JVMs. Marked here, in one place, so the quick subset stays a few minutes.
SLOW_MODULES = {
    "test_distributed", "test_scoring_kill", "test_reliability", "test_reliability_server", "test_demo",
    "test_spark35", "test_native_cas", "test_fuse_refusals", "test_wheel", "test_interop_mlflow", "test_connect",
    "test_report", "test_cli_errors", "test_table_names",
}


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: left out of `make test-quick`")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
