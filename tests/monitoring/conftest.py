"""A churn model and two score tables, one drawn like its training rows and one shifted."""
from __future__ import annotations

from typing import Any

import pytest

from sparkship import tables
from sparkship.config import Settings
from sparkship.refs import parse_ref
from sparkship.registry import Registry
from tests.helpers.monitoring import MONITORED_SCHEMA, monitored_rows, write_scores


@pytest.fixture(scope="module")
def env(spark, tmp_path_factory) -> dict[str, Any]:
    """A random forest trained and registered by sparkship's own training code, and its home."""
    from sparkship.spec import parse_spec
    from sparkship.training import register_result, train

    root = tmp_path_factory.mktemp("monitoring")
    settings = Settings.resolve(home=str(root / "home"))
    table = str(root / "customers")
    tables.write(spark.createDataFrame(monitored_rows(1200, seed=1), MONITORED_SCHEMA), table, mode="overwrite")
    spec = parse_spec({
        "name": "churn", "task": "classification", "table": table, "label": "churned",
        "features": {"numeric": ["age", "income"], "categorical": ["plan"]},
        "model": {"algorithm": "random_forest", "params": {"numTrees": 8, "maxDepth": 4, "seed": 3}},
        "split": {"test_fraction": 0.25, "seed": 7},
    })
    register_result(settings, train(spark, spec))
    registry = Registry(settings)
    _, model = registry.load_model(parse_ref("churn/1"))
    return {"root": root, "settings": settings, "registry": registry, "model": model}


@pytest.fixture(scope="module")
def same(spark, env) -> str:
    return write_scores(spark, env, "same_scores", monitored_rows(1600, seed=2))


@pytest.fixture(scope="module")
def shifted(spark, env) -> tuple[str, list[tuple[Any, ...]]]:
    # Older customers, more nulls, a plan mix that moved to enterprise and an unseen 'trial' plan; income as before.
    rows = monitored_rows(1600, seed=3, age_shift=12.0, plans=(0.15, 0.25, 0.4, 0.2), age_null=0.1)
    return write_scores(spark, env, "shifted_scores", rows), rows

