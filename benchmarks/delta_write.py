"""Write and read 2M rows x 10 doubles through both Delta engines vs Spark's own parquet, side by side.

    python benchmarks/delta_write.py [--rows 2000000] [--rounds 3]

Engines: ``native`` (delta-spark, needs Delta's jars: `make jars`) and ``deltars`` (the delta-rs data source).
Prints a markdown table of median seconds and the ratios (goals: native write <= 1.1x parquet, deltars <= 1.3x).
With the jars it also times delta-spark's own ``df.write.format("delta").save`` (no sparkship code), which
separates what sparkship's facade adds from what Delta itself costs, and once more with Delta's per-file
statistics off (``spark.databricks.delta.stats.collect=false``; sparkship keeps them on).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from pyspark.sql import functions as F

from sparkship import tables
from sparkship.spark import get_spark

STATS_CONF = "spark.databricks.delta.stats.collect"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-delta-")
    spark = get_spark(home=os.path.join(work, "home"))
    cols = [F.rand(seed=i).alias(f"c{i}") for i in range(10)]
    df = spark.range(args.rows, numPartitions=4).select(*cols).cache()
    df.count()
    sums = [F.sum(f"c{i}") for i in range(10)]
    engines = [e for e in tables.ENGINES if e == "deltars" or tables.engine_for(spark) == "native"]
    results: dict[str, list[float]] = {}
    for r in range(args.rounds):  # alternate, so all see the same machine state
        parquet_path = f"{work}/parquet{r}"
        results.setdefault("parquet write", []).append(timed(lambda: df.write.mode("overwrite").parquet(parquet_path)))
        results.setdefault("parquet read", []).append(
            timed(lambda: spark.read.parquet(parquet_path).agg(*sums).collect()))
        if "native" in engines:
            raw_path = f"{work}/delta-spark{r}"
            results.setdefault("delta-spark write", []).append(
                timed(lambda: df.write.format("delta").mode("overwrite").save(raw_path)))
            # The same without Delta's per-file statistics (min/max/null counts), to show what they cost.
            spark.conf.set(STATS_CONF, "false")
            results.setdefault("delta-spark write without statistics", []).append(
                timed(lambda: df.write.format("delta").mode("overwrite").save(raw_path + "-nostats")))
            spark.conf.unset(STATS_CONF)
        for name in engines:
            tables.use_engine(spark, name)
            delta_path = f"{work}/{name}{r}"
            results.setdefault(f"{name} write", []).append(
                timed(lambda: tables.write(df, delta_path, mode="overwrite")))
            results.setdefault(f"{name} read", []).append(
                timed(lambda: tables.read(spark, delta_path).agg(*sums).collect()))
            assert tables.read(spark, delta_path).count() == args.rows
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n{args.rows:,} rows x 10 doubles, {args.rounds} rounds, local[*] on {os.cpu_count()} cores "
          f"(median seconds)\n")
    print("| operation | engine | Delta | Spark parquet | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for op in ("write", "read"):
        for name in engines:
            d, p = med[f"{name} {op}"], med[f"parquet {op}"]
            print(f"| {op} | {name} | {d:.2f} | {p:.2f} | {d / p:.2f}x |")
        if op == "write" and "delta-spark write" in med:
            for label, key in (("delta-spark alone (`format(\"delta\").save`)", "delta-spark write"),
                               ("delta-spark alone, statistics off", "delta-spark write without statistics")):
                d, p = med[key], med["parquet write"]
                print(f"| write | {label} | {d:.2f} | {p:.2f} | {d / p:.2f}x |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
