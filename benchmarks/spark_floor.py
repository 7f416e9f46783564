"""Plain Spark's CPU for one small Delta operation, on a session set up like a test worker's (the suite's JVM flags,
sparkship's local session settings), with no sparkship code in the operations: the floor under the test suite's own
Spark work, whose tables hold a few hundred rows.

Each round, over a table of ``--rows`` rows (200 by default, the registration zoo's size): ``write`` (a new Delta
table from a DataFrame of rows), ``read`` (the table read and collected), ``append`` (a tenth more rows), ``merge``
(a tenth of the rows merged by key: matched ones updated, the rest inserted), ``transform`` (a fitted VectorAssembler
+ LogisticRegression pipeline applied to the table, collected) and ``history`` (the table's Delta history
collected). ``--warmup`` rounds first (the JIT compiler's), then ``--rounds`` rounds are timed: the CPU seconds of
the JVM (read from /proc) and of this process, and the wall seconds, per operation.

    .venv/bin/python benchmarks/spark_floor.py --rounds 30
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.run_info import cpu_seconds, header_lines  # noqa: E402
from scripts.jvm_class_archive import INTERPRETED_EXPRESSIONS, jvm_options  # noqa: E402

SCHEMA = "id long, x1 double, x2 double, y int"


def _rows(n: int, first: int, seed: int) -> list[tuple]:
    rnd = random.Random(seed)
    rows = []
    for i in range(first, first + n):
        x1, x2 = rnd.gauss(0, 1), rnd.gauss(0, 1)
        rows.append((i, x1, x2, int(x1 - x2 + rnd.gauss(0, 0.3) > 0)))
    return rows


def _operations(spark, root: str, rows: int, model) -> Callable[[int], dict[str, Callable[[], object]]]:
    """round -> the round's operations by name, in the order they run (each on the round's own table)."""
    from delta.tables import DeltaTable

    extra = max(rows // 10, 1)

    def of_round(r: int) -> dict[str, Callable[[], object]]:
        path = os.path.join(root, f"t{r}")
        merge_rows = _rows(extra // 2, 0, r + 1) + _rows(extra - extra // 2, rows + extra, r + 2)
        return {
            "write": lambda: spark.createDataFrame(_rows(rows, 0, r), SCHEMA).write.format("delta").save(path),
            "read": lambda: spark.read.format("delta").load(path).collect(),
            "append": lambda: spark.createDataFrame(_rows(extra, rows, r), SCHEMA).write.format("delta")
            .mode("append").save(path),
            "merge": lambda: DeltaTable.forPath(spark, path).alias("t")
            .merge(spark.createDataFrame(merge_rows, SCHEMA).alias("s"), "t.id = s.id")
            .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute(),
            "transform": lambda: model.transform(spark.read.format("delta").load(path)).collect(),
            "history": lambda: DeltaTable.forPath(spark, path).history().collect(),
        }
    return of_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200, help="rows of each table (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="rounds before the timed ones (default 10)")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    args = parser.parse_args()
    # The suite's flags (tests/conftest.py): the class archive `make test` builds, when it is there.
    os.environ.setdefault("SPARKSHIP_DRIVER_JAVA_OPTIONS", "{} {}".format(
        jvm_options(os.path.join(sys.prefix, "jvm-classes.jsa")), INTERPRETED_EXPRESSIONS))
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler

    from sparkship.spark import get_spark

    root = tempfile.mkdtemp(prefix="spark-floor-")
    spark = get_spark(home=os.path.join(root, "home"))
    jvm = spark.sparkContext._gateway.proc.pid
    model = Pipeline(stages=[VectorAssembler(inputCols=["x1", "x2"], outputCol="features"),
                             LogisticRegression(labelCol="y", maxIter=10)]).fit(
        spark.createDataFrame(_rows(args.rows, 0, 99), SCHEMA))
    of_round = _operations(spark, root, args.rows, model)
    spent: dict[str, list[float]] = {}
    for r in range(args.warmup + args.rounds):
        for name, operation in of_round(r).items():
            before = (cpu_seconds(jvm), time.process_time(), time.monotonic())
            operation()
            after = (cpu_seconds(jvm), time.process_time(), time.monotonic())
            if r >= args.warmup:
                totals = spent.setdefault(name, [0.0, 0.0, 0.0])
                for i in range(3):
                    totals[i] += after[i] - before[i]
    print("\n".join(header_lines(f"Java 17, {args.rows}-row tables, {args.warmup} rounds of warm-up, "
                                 f"{args.rounds} timed")))
    print("| operation | JVM CPU s | driver CPU s | total CPU s | wall s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (jvm_s, driver_s, wall_s) in spent.items():
        n = args.rounds
        print(f"| {name} | {jvm_s / n:.3f} | {driver_s / n:.3f} | {(jvm_s + driver_s) / n:.3f} | {wall_s / n:.3f} |")
    all_cpu = sum(v[0] + v[1] for v in spent.values()) / (args.rounds * len(spent))
    print(f"| mean of one operation | | | {all_cpu:.3f} | |")
    spark.stop()


if __name__ == "__main__":
    main()
