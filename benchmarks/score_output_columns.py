"""What the scoring output's own columns cost in the Delta write, measured side by side.

    .venv/bin/python benchmarks/score_output_columns.py [--rows 1000000] [--rounds 5] [--format delta|parquet]

The same saved-model transform (the scoring benchmark's pipeline, on the same generated input) is written four
ways, alternating, each to a new table:

* ``raw``: ``id``, ``prediction``, ``probability`` (what ``score_overhead.py``'s raw side writes);
* ``+ run columns``: plus the six columns every scoring output carries (``model_name``, ``model_version``,
  ``scored_at``, ``run_id``, ``input_version``, ``scoring_batch``), constant within a run;
* ``+ run columns, partitioned``: the same, partitioned by ``scoring_batch`` as sparkship writes it;
* ``+ run columns, partitioned, quarantine filter``: the same, after the quarantine rules' filter.

With ``--stats``, one more way writes ``+ run columns, partitioned`` into a table created beforehand (not timed)
with ``delta.dataSkippingStatsColumns = id,prediction``: Delta then collects per-file statistics for those two
columns only, not for the constant run columns. It measures what those statistics cost in the write; sparkship's
outputs keep Delta's default (statistics on every column).

With ``--by-kind``, three more ways split the run columns by type (``+ strings``: ``model_name``,
``model_version``, ``run_id``; ``+ timestamp``: ``scored_at``; ``+ longs``: ``input_version``,
``scoring_batch``), and one writes all six as partition values (``+ run columns as partition values``: nothing
of them in the data files, the layout benchmarks/README.md discusses).

Prints median seconds and the ratio to ``raw``. ``--format parquet`` writes plain parquet instead of Delta.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # the repository: tests.helpers

from ratio_table import print_ratio_table  # noqa: E402 - this folder's own module

RUN_COLUMNS = ("model_name", "model_version", "scored_at", "run_id", "input_version", "scoring_batch")
WAYS: dict[str, dict[str, Any]] = {
    "raw": dict(run_columns=(), partitioned=(), filtered=False),
    "+ run columns": dict(run_columns=RUN_COLUMNS, partitioned=(), filtered=False),
    "+ run columns, partitioned": dict(run_columns=RUN_COLUMNS, partitioned=("scoring_batch",), filtered=False),
    "+ run columns, partitioned, quarantine filter": dict(run_columns=RUN_COLUMNS, partitioned=("scoring_batch",),
                                                          filtered=True),
}
BY_KIND: dict[str, dict[str, Any]] = {
    "+ strings": dict(run_columns=("model_name", "model_version", "run_id"), partitioned=(), filtered=False),
    "+ timestamp": dict(run_columns=("scored_at",), partitioned=(), filtered=False),
    "+ longs": dict(run_columns=("input_version", "scoring_batch"), partitioned=(), filtered=False),
    "+ run columns as partition values": dict(run_columns=RUN_COLUMNS, partitioned=RUN_COLUMNS, filtered=False),
}
STATS = {
    "+ run columns, partitioned, stats on id and prediction only": dict(
        run_columns=RUN_COLUMNS, partitioned=("scoring_batch",), filtered=False, stats_columns=("id", "prediction")),
}


def _create_with_stats_columns(spark: Any, path: str, schema: Any, partitioned: tuple[str, ...],
                               stats_columns: tuple[str, ...]) -> None:
    """An empty Delta table at ``path`` that collects file statistics for ``stats_columns`` only."""
    from delta.tables import DeltaTable

    (DeltaTable.create(spark).location(path).addColumns(schema).partitionedBy(*partitioned)
     .property("delta.dataSkippingStatsColumns", ",".join(stats_columns)).execute())


def _scored(spark: Any, model: Any, source: str, *, run_columns: tuple[str, ...], filtered: bool) -> Any:
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from sparkship.scoring import quarantine_rules

    rows = spark.read.format("delta").load(source)
    if filtered:  # the rules sparkship's scoring makes for this pipeline, keyed by id
        inputs = [{"name": f.name, "type": f.dataType.simpleString()} for f in rows.schema.fields if f.name != "id"]
        bad = F.lit(False)
        for condition, _ in quarantine_rules(model, inputs, ["id"]):
            bad = bad | condition
        rows = rows.where(~bad)
    columns: list[Any] = ["id", "prediction", vector_to_array("probability").alias("probability")]
    return model.transform(rows).select(*columns, *run_constants(run_columns))


def run_constants(names: tuple[str, ...] = RUN_COLUMNS) -> list[Any]:
    """The run columns ``names`` as literals of the types sparkship's scoring output gives them."""
    from pyspark.sql import functions as F

    constants = {"model_name": F.lit("churn"), "model_version": F.lit("1"),
                 "scored_at": F.lit(datetime.now(timezone.utc)).cast("timestamp"), "run_id": F.lit("run-1"),
                 "input_version": F.lit(3).cast("bigint"), "scoring_batch": F.lit(0).cast("bigint")}
    return [constants[name].alias(name) for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--format", choices=("delta", "parquet"), default="delta")
    parser.add_argument("--by-kind", action="store_true", help="also the run columns by type, and as partitions")
    parser.add_argument("--stats", action="store_true",
                        help="also the run columns with Delta statistics on id and prediction only")
    args = parser.parse_args()
    if args.stats and args.format != "delta":
        parser.error("--stats needs --format delta (the statistics are Delta's)")
    ways = {**WAYS, **(BY_KIND if args.by_kind else {}), **(STATS if args.stats else {})}

    from pyspark.sql import functions as F

    from sparkship import tables
    from sparkship.spark import get_spark
    from tests.helpers.scoring import fit_model

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

    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for i in range(args.rounds + 1):  # the first round warms up (JIT, codegen) and is not counted
        for name, way in ways.items():
            path = os.path.join(work, f"out-{i}-{len(seconds[name])}-{name.replace(' ', '').replace(',', '')}")
            if way.get("stats_columns"):  # the table's creation is not timed; building the frame is, in every way
                schema = _scored(spark, model, source, run_columns=way["run_columns"], filtered=False).schema
                _create_with_stats_columns(spark, path, schema, way["partitioned"], way["stats_columns"])
            started = time.perf_counter()
            scored = _scored(spark, model, source, run_columns=way["run_columns"], filtered=way["filtered"])
            writer = scored.write.format(args.format).mode("append" if way.get("stats_columns") else "overwrite")
            if way["partitioned"]:
                writer = writer.partitionBy(*way["partitioned"])
            writer.save(path)
            if i:
                seconds[name].append(time.perf_counter() - started)
    print(f"\n{args.rows:,} rows, {args.rounds} rounds (alternating, after one warm-up), {args.format}, "
          f"local[*] on {os.cpu_count()} cores\n")
    print_ratio_table(seconds, "raw", "written")
    spark.stop()


if __name__ == "__main__":
    main()
