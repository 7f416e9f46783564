"""What one small commit to a metadata table costs on the native engine (delta-spark), and why.

    python benchmarks/metadata_commit.py [--commits 20] [--warmup 5]

The registry, alias, lease and scoring-state tables take one row per commit. Five ways of committing that row
through delta-spark run alternately in one session, each on a table of its own, after ``--warmup`` unmeasured
commits each:

* ``compare-and-set (sparkship)``: ``sparkship.tables.metadata.append_arrow`` with ``expected_version``. On this
  classic session with open-source delta-spark that is a Delta transaction of sparkship's own
  (``sparkship.tables.transactions.append_arrow``): pyarrow writes the row's parquet file, no Spark job runs,
  and the transaction, which read the whole table, commits it with Delta's conflict check;
* ``compare-and-set (sparkship, Spark write)``: the same transaction with the row written by a Spark job
  (``sparkship.tables.write`` of a DataFrame with ``expected_version``), as data tables are;
* ``compare-and-set (write options)``: the same row through Delta's idempotent-write options (``txnAppId`` /
  ``txnVersion``), which is how sparkship compare-and-sets where it has no JVM handle (Spark Connect) or not
  open-source Delta's classes (Databricks);
* ``blind append (sparkship)``: ``append_arrow(..., append_only=True)``, what the registry's events take;
* ``blind append (delta-spark alone)``: ``df.write.format("delta").mode("append").save``, no sparkship code.

Prints the median, p90 and mean seconds and the Spark jobs per commit; the mean includes the commits after
which delta-spark writes a checkpoint (every 10th version), which the median leaves out. The gap between the
two compare-and-sets is the options'
transaction-id lookup: delta-spark 4.0.1 answers it by rebuilding the table's state (Spark jobs named "Delta:
Compute snapshot for version ..."), even where the table's checksum file already lists the transaction ids.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import pyarrow as pa

from sparkship import tables
from sparkship.spark import get_spark
from sparkship.tables import metadata

ROW = pa.table({"name": ["churn"], "version": [1], "details_json": ["{}" * 20]})


def _jobs(spark) -> set[int]:  # noqa: ANN001 - a pyspark SparkSession
    return set(spark.sparkContext.statusTracker().getJobIdsForGroup(None))


def _committers(spark, work: str) -> dict[str, Callable[[], None]]:  # noqa: ANN001
    cas_path, spark_cas_path, options_path, blind_path, raw_path = (
        os.path.join(work, name) for name in ("cas", "spark-cas", "options", "blind", "raw"))

    def compare_and_set() -> None:
        current = metadata.table_version(cas_path)
        metadata.append_arrow(cas_path, ROW, expected_version=-1 if current is None else current)

    def compare_and_set_spark_write() -> None:
        current = metadata.table_version(spark_cas_path)
        tables.write(spark.createDataFrame(ROW), spark_cas_path, "append",
                     expected_version=-1 if current is None else current)

    def through_options() -> None:
        current = metadata.table_version(options_path)
        next_version = 0 if current is None else current + 1  # the options path's txnVersion is the version made
        (spark.createDataFrame(ROW).write.format("delta").mode("append")
         .option("txnAppId", "sparkship").option("txnVersion", str(next_version)).save(options_path))
        if metadata.table_version(options_path) != next_version:
            raise SystemExit("Delta skipped a write through the options: the benchmark's transaction ids are wrong")

    def blind() -> None:
        metadata.append_arrow(blind_path, ROW, append_only=True)

    def raw() -> None:
        spark.createDataFrame(ROW).write.format("delta").mode("append").save(raw_path)

    return {"compare-and-set (sparkship)": compare_and_set,
            "compare-and-set (sparkship, Spark write)": compare_and_set_spark_write,
            "compare-and-set (write options)": through_options,
            "blind append (sparkship)": blind,
            "blind append (delta-spark alone)": raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=20, help="measured commits per way (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured commits per way first (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-metadata-") as work:
        spark = get_spark(home=os.path.join(work, "home"))
        if tables.engine_for(spark) != "native":
            raise SystemExit("this benchmark needs the native engine: Delta's jars (`make jars`)")
        committers = _committers(spark, work)
        seconds: dict[str, list[float]] = {name: [] for name in committers}
        jobs: dict[str, list[int]] = {name: [] for name in committers}
        for i in range(args.warmup + args.commits):
            for name, commit in committers.items():  # alternate, so all see the same machine state
                before = _jobs(spark)
                started = time.perf_counter()
                commit()
                if i >= args.warmup:
                    seconds[name].append(time.perf_counter() - started)
                    jobs[name].append(len(_jobs(spark) - before))
        print(f"\n{args.commits} commits of one row each per way (after {args.warmup} unmeasured), "
              f"{spark.sparkContext.master}, delta-spark\n")
        print("| commit | median s | p90 s | mean s | Spark jobs (median) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name in committers:
            runs = sorted(seconds[name])
            print(f"| {name} | {statistics.median(runs):.3f} | {runs[int(0.9 * (len(runs) - 1))]:.3f} | "
                  f"{statistics.mean(runs):.3f} | {statistics.median(jobs[name]):.0f} |")
        spark.stop()


if __name__ == "__main__":
    main()
