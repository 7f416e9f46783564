"""Fixtures of the registration zoo (tests/registry/test_zoo_*.py): one set of tables, one sparkship home and registry
per test process (the three modules' case names differ), each model fitted and registered on first use."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sparkship import tables
from sparkship.config import Settings
from tests.helpers.zoo import Registered, register_and_score
from tests.helpers.zoo_models import ESTIMATORS, SCHEMA, Case, cases_of, make_rows


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A zoo module's tests that take ``case`` run once per case of the module's ``ZOO_GROUP``."""
    group = getattr(metafunc.module, "ZOO_GROUP", None)
    if group is not None and "case" in metafunc.fixturenames:
        cases = cases_of(group)
        metafunc.parametrize("case", cases, ids=[c.name for c in cases])


@pytest.fixture(scope="session")
def zoo_data(spark, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The training table (200 rows) and a holdout (90), as paths and as frames cached in memory (the fits, the
    expected transforms and the JVM-free rows read them many times; the CLI reads the tables themselves)."""
    root = tmp_path_factory.mktemp("zoo")
    table, holdout = str(root / "table"), str(root / "holdout")
    tables.write(spark.createDataFrame(make_rows(200, 1), SCHEMA), table, mode="overwrite")
    tables.write(spark.createDataFrame(make_rows(90, 7), SCHEMA), holdout, mode="overwrite")
    df, holdout_df = tables.read(spark, table).cache(), tables.read(spark, holdout).cache()
    yield {"root": root, "df": df, "table": table, "holdout": holdout, "holdout_df": holdout_df}
    df.unpersist()
    holdout_df.unpersist()


@pytest.fixture(scope="session")
def zoo_settings(tmp_path_factory) -> Settings:
    return Settings.resolve(home=str(tmp_path_factory.mktemp("zoo-home")))


class _Fitted:
    """Models fitted on first use (one failure does not cascade), on the module's table."""

    def __init__(self, df: Any) -> None:
        self.df, self.cache = df, {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.cache:
            self.cache[name] = ESTIMATORS[name]().fit(self.df)
        return self.cache[name]


@pytest.fixture(scope="session")
def zoo_fitted(zoo_data) -> _Fitted:
    return _Fitted(zoo_data["df"])


@pytest.fixture(scope="session")
def zoo_registered(spark, zoo_data, zoo_settings, zoo_fitted) -> Callable[[Case, Any], Registered]:
    """case -> its registered and scored version, made on first use (both tests of a case share it)."""
    cache: dict[str, Registered] = {}

    def get(case: Case, capsys) -> Registered:
        if case.name not in cache:
            cache[case.name] = register_and_score(case, zoo_fitted[case.name], zoo_settings, zoo_data, capsys)
        return cache[case.name]

    return get
