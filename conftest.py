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
