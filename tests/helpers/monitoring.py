"""Customers whose inputs drift on demand, and score tables shaped like `sparkship score` output."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np

from sparkship import tables

DAY0 = datetime(2026, 11, 20, 6, 0, tzinfo=timezone.utc)
MONITORED_SCHEMA = "id long, age double, income double, plan string, churned double"


def monitored_rows(n: int, seed: int, *, age_shift: float = 0.0, plans: tuple[float, ...] = (0.5, 0.3, 0.2),
                   age_null: float = 0.02, start: int = 0) -> list[tuple[Any, ...]]:
    """Synthetic customers; ``age_shift``/``plans``/``age_null`` move the input distribution."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, n) + age_shift
    missing = rng.random(n) < age_null
    income = rng.lognormal(10, 0.5, n)
    names = ["basic", "pro", "enterprise", "trial"][: len(plans)]
    plan = rng.choice(names, p=plans, size=n)
    logit = 0.08 * (age - 40) + 0.8 * (plan == "pro") - 0.5
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return [
        (start + i, None if missing[i] else float(age[i]), float(income[i]), str(plan[i]), float(label[i]))
        for i in range(n)
    ]


def write_scores(spark, env: dict[str, Any], name: str, rows: list[tuple[Any, ...]], *, features: bool = True) -> str:
    """A table shaped like `sparkship score` output; row i is scored on day i % 2 (two daily windows)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    df = spark.createDataFrame(rows, MONITORED_SCHEMA).drop("churned")
    out = env["model"].transform(df).select(
        "id", *(["age", "income", "plan"] if features else []),
        F.col("prediction"), vector_to_array("probability").alias("probability"),
        F.lit("churn").alias("model_name"), F.lit("1").alias("model_version"),
        (F.lit(DAY0).cast("timestamp") + F.make_interval(days=(F.col("id") % 2).cast("int"))).alias("scored_at"),
        F.lit("run-1").alias("run_id"), F.lit(0).cast("bigint").alias("input_version"),
        F.lit(0).cast("bigint").alias("scoring_batch"),
    )
    path = str(env["root"] / name)
    tables.write(out, path, mode="overwrite")
    return path

