"""Fixtures of the scoring tests: the churn pipeline fitted once per module, and a home with it registered as
churn/1 that a module's tests share (each test writes its own input and output tables)."""
from __future__ import annotations

import pytest

from sparkship.config import Settings
from tests.helpers.scoring import fit_model, register


@pytest.fixture(scope="module")
def fitted(spark):
    """The churn pipeline of :func:`tests.helpers.scoring.fit_model`."""
    return fit_model(spark)


@pytest.fixture(scope="module")
def registered(spark, fitted, tmp_path_factory) -> Settings:
    """A home whose registry holds ``fitted`` as churn/1. Saving a pipeline runs a dozen Spark jobs: once per
    module, not per test. Tests that register more versions make a home of their own."""
    settings = Settings.resolve(home=str(tmp_path_factory.mktemp("scoring") / "home"))
    register(spark, fitted, settings)
    return settings


@pytest.fixture
def settings(registered, monkeypatch) -> Settings:
    """The module's registered home, also exported as SPARKSHIP_HOME for CLI calls (in-process or processes)."""
    monkeypatch.setenv("SPARKSHIP_HOME", registered.home)
    return registered
