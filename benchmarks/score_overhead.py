"""Overhead of `sparkship score` over a bare PipelineModel.transform + Delta write, measured side by side.

Both sides read the same 1M-row Delta table, load the same saved PipelineModel (Imputer + StringIndexer +
OneHotEncoder + VectorAssembler + LogisticRegression), and write keys + prediction + probability (as an array)
to a new Delta table in one commit. `sparkship score` adds the registry lookup, the checksum check, the schema
check, the quarantine rules, the row counts (from Delta statistics) and the state table. Rounds alternate; medians are reported.

    .venv/bin/python benchmarks/score_overhead.py [--rows 1000000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from sparkship import scoring, tables
    from sparkship.config import Settings
    from sparkship.spark import get_spark
    from test_scoring import MODEL, fit_model, register

    work = tempfile.mkdtemp(prefix="score-bench-")
    spark = get_spark(home=os.path.join(work, "home"))
    settings = Settings.resolve(home=os.path.join(work, "home"))
    model = fit_model(spark)
    version = register(spark, model, settings)
    model_dir = os.path.join(settings.models_root, MODEL, str(version), "model")

    src = os.path.join(work, "events")
    data = spark.range(args.rows).select(
        F.col("id"),
        (F.randn(1) * 10 + 40).alias("age"),
        (F.rand(2) * 60).alias("tenure"),
        F.element_at(F.array(*[F.lit(p) for p in ("basic", "plus", "pro")]), (F.rand(3) * 3).cast("int") + 1).alias("plan"),
        F.when(F.rand(4) < 0.5, "north").otherwise("south").alias("region"),
    )
    tables.write(data, src, mode="overwrite")

    def run_sparkship(i: int) -> float:
        start = time.perf_counter()
        result = scoring.score(spark, settings, MODEL, src, os.path.join(work, f"sparkship-{i}"), ["id"])
        elapsed = time.perf_counter() - start
        assert result.scored == args.rows, result
        return elapsed

    def run_raw(i: int) -> float:
        start = time.perf_counter()
        raw = PipelineModel.load(model_dir)
        out = raw.transform(tables.read(spark, src)).select(
            "id", "prediction", vector_to_array("probability").alias("probability")
        )
        tables.write(out, os.path.join(work, f"raw-{i}"), mode="overwrite")
        return time.perf_counter() - start

    run_raw(-1)  # warm-up: JIT, Python workers
    times: dict[str, list[float]] = {
        "raw transform + write": [], "sparkship score": [],
    }
    for i in range(args.rounds):
        times["raw transform + write"].append(run_raw(i))
        times["sparkship score"].append(run_sparkship(i))

    base = statistics.median(times["raw transform + write"])
    print(f"\n{args.rows:,} rows, {args.rounds} rounds (alternating), local[*] on {os.cpu_count()} cores\n")
    print("| path | median s | rounds s | ratio |")
    print("| --- | ---: | --- | ---: |")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {', '.join(f'{v:.2f}' for v in values)} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
