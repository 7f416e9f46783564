"""Every docstring example under src/sparkship runs (examples that need a cluster, a registry or files are
marked ``# doctest: +SKIP`` where they stand)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sparkship

pytestmark = pytest.mark.quick


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(sparkship.__path__, "sparkship."))


def _api_globals(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> dict:
    """What sparkship.api's examples work on: the session, a Delta table, a pipeline fitted on it by plain pyspark,
    and a fresh sparkship home (the API resolves its settings from SPARKSHIP_HOME)."""
    import random

    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StringIndexer, VectorAssembler

    from sparkship import tables

    spark = request.getfixturevalue("spark")
    monkeypatch.setenv("SPARKSHIP_HOME", str(tmp_path / "home"))
    rnd = random.Random(0)
    rows = [(i, rnd.gauss(0, 1), rnd.choice(["a", "b"])) for i in range(120)]
    df = spark.createDataFrame([(i, x, c, int(x + (c == "a") > 0.2)) for i, x, c in rows],
                               "id long, x double, c string, y int")
    table = str(tmp_path / "table")
    tables.write(df, table, mode="overwrite")
    model = Pipeline(stages=[StringIndexer(inputCol="c", outputCol="c_idx"),
                             VectorAssembler(inputCols=["x", "c_idx"], outputCol="features"),
                             LogisticRegression(labelCol="y", maxIter=20)]).fit(df)
    return {"spark": spark, "table": table, "fitted_model": model}


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str, tmp_path, monkeypatch, request) -> None:
    monkeypatch.chdir(tmp_path)  # an example that writes relative paths writes here
    module = importlib.import_module(name)
    extra = _api_globals(request, tmp_path, monkeypatch) if name == "sparkship.api" else None
    result = doctest.testmod(module, extraglobs=extra, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see above)"


def test_the_examples_are_found() -> None:
    """Guards the collection itself: modules known to hold runnable examples are among those tested."""
    modules = _modules()
    assert {"sparkship.names", "sparkship.monitoring", "sparkship.spec", "sparkship.serving.batch"} <= set(modules)
    runnable = sum(
        1
        for name in modules
        for test in doctest.DocTestFinder().find(importlib.import_module(name))
        for example in test.examples
        if not example.options.get(doctest.SKIP)
    )
    assert runnable >= 30
