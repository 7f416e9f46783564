"""What the scoring output's own columns cost in the Delta write, measured side by side.

    .venv/bin/python benchmarks/score_output_columns.py [--rows 1000000] [--rounds 5] [--format delta|parquet]

The same saved-model transform (the scoring benchmark's pipeline, on the same generated input) is written four
ways, alternating, each to a new table:

* ``raw``: ``id``, ``prediction``, ``probability`` (what ``score_overhead.py``'s raw side writes);
* ``+ run columns``: plus the six columns every scoring output carries (``model_name``, ``model_version``,
  ``scored_at``, ``run_id``, ``input_version``, ``scoring_batch``), constant within a run;
* ``+ run columns, partitioned``: the same, partitioned by ``scoring_batch`` as sparkship writes it;
* ``+ run columns, partitioned, quarantine filter``: the same, after the quarantine rules' filter.

Prints median seconds and the ratio to ``raw``. ``--format parquet`` writes plain parquet instead of Delta.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

WAYS = {
    "raw": dict(run_columns=False, partitioned=False, filtered=False),
    "+ run columns": dict(run_columns=True, partitioned=False, filtered=False),
    "+ run columns, partitioned": dict(run_columns=True, partitioned=True, filtered=False),
    "+ run columns, partitioned, quarantine filter": dict(run_columns=True, partitioned=True, filtered=True),
}


def _scored(spark: Any, model: Any, source: str, *, run_columns: bool, filtered: bool) -> Any:
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    rows = spark.read.format("delta").load(source)
    if filtered:  # the rules scoring.quarantine_rules makes for this pipeline
        bad = (F.col("id").isNull() | F.coalesce(F.abs(F.col("age")) == float("inf"), F.lit(False))
               | F.coalesce(F.abs(F.col("tenure")) == float("inf"), F.lit(False)) | F.col("tenure").isNull()
               | F.isnan("tenure") | F.col("region").isNull()
               | F.coalesce(~F.col("region").isin(["north", "south"]), F.lit(False)))
        rows = rows.where(~bad)
    columns: list[Any] = ["id", "prediction", vector_to_array("probability").alias("probability")]
    if run_columns:
        columns += [F.lit("churn").alias("model_name"), F.lit("1").alias("model_version"),
                    F.lit(datetime.now(timezone.utc)).cast("timestamp").alias("scored_at"),
                    F.lit("run-1").alias("run_id"), F.lit(3).cast("bigint").alias("input_version"),
                    F.lit(0).cast("bigint").alias("scoring_batch")]
    return model.transform(rows).select(*columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--format", choices=("delta", "parquet"), default="delta")
    args = parser.parse_args()

    from pyspark.sql import functions as F

    from sparkship import tables
    from sparkship.spark import get_spark
    from test_scoring import fit_model

    work = tempfile.mkdtemp(prefix="score-columns-")
    spark = get_spark(home=os.path.join(work, "home"))
    if tables.engine_for(spark) != "native":
        raise SystemExit("this benchmark needs the native engine: Delta's jars (`make jars`)")
    model = fit_model(spark)
    source = os.path.join(work, "events")
    spark.range(args.rows).select(
        F.col("id"), (F.randn(1) * 10 + 40).alias("age"), (F.rand(2) * 60).alias("tenure"),
        F.element_at(F.array(*[F.lit(p) for p in ("basic", "plus", "pro")]), (F.rand(3) * 3).cast("int") + 1)
        .alias("plan"),
        F.when(F.rand(4) < 0.5, "north").otherwise("south").alias("region"),
    ).write.format("delta").save(source)

    seconds: dict[str, list[float]] = {name: [] for name in WAYS}
    for i in range(args.rounds + 1):  # the first round warms up (JIT, codegen) and is not counted
        for name, way in WAYS.items():
            started = time.perf_counter()
            writer = _scored(spark, model, source, run_columns=way["run_columns"], filtered=way["filtered"]).write
            writer = writer.format(args.format).mode("overwrite")
            if way["partitioned"]:
                writer = writer.partitionBy("scoring_batch")
            writer.save(os.path.join(work, f"out-{i}-{len(seconds[name])}-{name.replace(' ', '')}"))
            if i:
                seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["raw"])
    print(f"\n{args.rows:,} rows, {args.rounds} rounds (alternating, after one warm-up), {args.format}, "
          f"local[*] on {os.cpu_count()} cores\n")
    print("| written | median s | rounds s | ratio |")
    print("| --- | ---: | --- | ---: |")
    for name, runs in seconds.items():
        print(f"| {name} | {statistics.median(runs):.2f} | {', '.join(f'{r:.2f}' for r in runs)} | "
              f"{statistics.median(runs) / base:.2f}x |")
    spark.stop()


if __name__ == "__main__":
    main()
