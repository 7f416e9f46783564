"""What does `sparkship train` cost over fitting and saving the same Pipeline by hand?

Both paths train on the same Delta table (generated once) with the same Pipeline (``training.build_pipeline``)
and the same split:

* ``sparkship``: ``training.train_and_register`` in-process - version pinning, input checks, fit, held-out
  metrics, reference profile, artifact with checksums, registry row;
* ``by hand``: ``tables.read`` + ``randomSplit`` + ``Pipeline.fit`` + ``model.write().save``;
* ``by hand, evaluated``: the same, plus the held-out metrics that sparkship reports (areas under the ROC and
  precision-recall curves, accuracy, F1, log loss), each from Spark's own evaluator on the held-out split, as
  someone fitting by hand would check a model before saving it. It is not the goal's baseline; it shows what
  the metrics, which promotion needs, cost when done the usual way.

The paths run in turn (A B C, then C B A, ...) after one unmeasured warm-up of each; the table reports medians.
Goal: sparkship / by hand <= 1.10. A second table breaks both paths down into steps (wall time and Spark jobs,
medians over the rounds): ``training.StepRecorder`` for sparkship's steps, the same recorder around the steps
by hand. sparkship's reference profile runs on a second thread while its held-out metrics run: those two steps
overlap in time.

    .venv/bin/python benchmarks/train_overhead.py --rows 200000 --rounds 3
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from ratio_table import print_ratio_table

from sparkship import metrics, tables, training
from sparkship.config import Settings
from sparkship.spark import get_spark
from sparkship.spec import TrainingSpec, parse_spec

SPARKSHIP, BY_HAND, EVALUATED = ("sparkship train", "by hand (fit + save)",
                                 "by hand, evaluated (fit + Spark's evaluators + save)")
PARAMS = {
    "random_forest": {"numTrees": 20, "maxDepth": 6},
    "gbt": {"maxIter": 20, "maxDepth": 5},
    "decision_tree": {"maxDepth": 6},
    "logistic_regression": {"maxIter": 50},
}


def make_table(spark, path: str, rows: int) -> int:
    """``rows`` rows: 6 numeric features (one with ~5% NaN and ~5% null), 2 categoricals, a 0/1 label."""
    from pyspark.sql import functions as F

    df = spark.range(rows).select(
        F.col("id"),
        *[F.randn(seed=i).alias(f"x{i}") for i in range(6)],
        (F.rand(seed=10) * 5).cast("int").cast("string").alias("plan"),
        (F.rand(seed=11) * 12).cast("int").alias("region"),
        F.rand(seed=12).alias("u"),
        F.rand(seed=13).alias("noise"),
    )
    score = F.col("x0") + 0.5 * F.col("x1") - 0.8 * F.col("x2") + F.when(F.col("plan") == "3", 1.0).otherwise(0.0)
    df = df.select(
        "id",
        F.when(F.col("u") < 0.05, F.lit(float("nan"))).when(F.col("u") < 0.10, F.lit(None))
        .otherwise(F.col("x0")).alias("x0"),
        *[f"x{i}" for i in range(1, 6)],
        "plan",
        "region",
        (score + (F.col("noise") - 0.5) * 2 > 0).cast("int").alias("label"),
    )
    return tables.write(df, path, mode="overwrite")


def by_hand(spark, spec, version: int, out_dir: str, evaluated: bool = False) -> dict[str, dict]:
    recorder = training.StepRecorder(spark)
    with recorder.step("read and check"):
        df = tables.read(spark, spec.table, version=version)
        train_df, test_df = df.randomSplit([1 - spec.split.test_fraction, spec.split.test_fraction],
                                           seed=spec.split.seed)
    with recorder.step("fit"):
        model = training.build_pipeline(spec).fit(train_df)
    if evaluated:
        with recorder.step("held-out metrics"):
            predictions = model.transform(test_df)
            for name in metrics.metric_names(spec.task, 2):  # make_table's label is 0/1
                metrics.evaluator(name, spec.label).evaluate(predictions)
    with recorder.step("save / register"):
        model.write().overwrite().save(out_dir)
    return recorder.steps


def with_sparkship(spark, settings, spec) -> dict[str, dict]:
    """``train_and_register`` in its two parts, so that registering shows as a step of its own."""
    result = training.train(spark, spec)
    recorder = training.StepRecorder(spark)
    with recorder.step("save / register"):
        training.register_result(settings, result)
    return {**result.steps, **recorder.steps}


def print_breakdown(steps: dict[str, list[dict[str, dict]]]) -> None:
    """Median seconds and jobs per step, both paths side by side."""
    names = list(dict.fromkeys(n for runs in steps.values() for run in runs for n in run))
    paths = list(steps)
    print("\n| step | " + " | ".join(f"{p} s | {p} jobs" for p in paths) + " |")
    print("| --- |" + " ---: | ---: |" * len(paths))
    for name in names:
        cells = []
        for p in paths:
            runs = [r[name] for r in steps[p] if name in r]
            if not runs:
                cells += ["-", "-"]
                continue
            jobs = [r["jobs"] for r in runs if r["jobs"] is not None]
            cells += [f"{statistics.median(r['seconds'] for r in runs):.2f}",
                      f"{statistics.median(jobs):.0f}" if jobs else "?"]
        print(f"| {name} | " + " | ".join(cells) + " |")


def bench_spec(table: str, version: int, algorithm: str) -> TrainingSpec:
    """The training spec both paths fit: six numeric and two categorical features, a 20% held-out split."""
    return parse_spec({
        "name": "bench",
        "task": "classification",
        "table": f"{table}@{version}",
        "label": "label",
        "features": {"numeric": [f"x{i}" for i in range(6)], "categorical": ["plan", "region"]},
        "model": {"algorithm": algorithm, "params": PARAMS[algorithm]},
        "split": {"test_fraction": 0.2, "seed": 42},
    })


def run_rounds(paths: dict[str, Callable[[], dict[str, dict]]], rounds: int
               ) -> tuple[dict[str, list[float]], dict[str, list[dict[str, dict]]]]:
    """Each path once to warm up, then ``rounds`` rounds in alternating order: seconds and steps per run."""
    for fn in paths.values():  # warm-up: JIT, Python workers, the data source
        fn()
    times: dict[str, list[float]] = {name: [] for name in paths}
    steps: dict[str, list[dict[str, dict]]] = {name: [] for name in paths}
    for r in range(rounds):
        order = list(paths) if r % 2 == 0 else list(reversed(paths))
        for name in order:
            t0 = time.perf_counter()
            steps[name].append(paths[name]())
            times[name].append(time.perf_counter() - t0)
            parts = ", ".join(f"{k} {v['seconds']:.2f} s/{v['jobs']} jobs" for k, v in steps[name][-1].items())
            print(f"round {r + 1}: {name}: {times[name][-1]:.2f} s ({parts})", file=sys.stderr)
    return times, steps


def print_results(args: argparse.Namespace, master: str, times: dict[str, list[float]],
                  steps: dict[str, list[dict[str, dict]]]) -> None:
    base = statistics.median(times[BY_HAND])
    print(f"\n{args.rows} rows, {args.algorithm} {PARAMS[args.algorithm]}, {args.rounds} rounds, master {master}\n")
    print_ratio_table(times, BY_HAND, "path")
    print_breakdown(steps)
    print("\n(sparkship's reference profile runs on a second thread while its held-out metrics run: those two "
          "steps overlap in time.)")
    ratio = statistics.median(times[SPARKSHIP]) / base
    print(f"\nsparkship / by hand = {ratio:.2f}x (goal <= 1.10x): {'met' if ratio <= 1.10 else 'NOT met'}")
    evaluated = statistics.median(times[EVALUATED])
    print(f"sparkship / by hand, evaluated = {statistics.median(times[SPARKSHIP]) / evaluated:.2f}x "
          f"(the held-out metrics by hand alone: {evaluated / base:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--algorithm", choices=sorted(PARAMS), default="random_forest")
    parser.add_argument("--workdir", default=None, help="default: a fresh temporary folder, removed at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    workdir = args.workdir or tempfile.mkdtemp(prefix="sparkship-bench-")
    spark = get_spark(home=os.path.join(workdir, "home"))
    try:
        table = os.path.join(workdir, "train_table")
        started = time.perf_counter()
        version = make_table(spark, table, args.rows)
        print(f"wrote {args.rows} rows to {table}@{version} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        spec = bench_spec(table, version, args.algorithm)
        settings = Settings.resolve(home=os.path.join(workdir, "home"))
        model_dir = os.path.join(workdir, "by_hand_model")
        paths: dict[str, Callable[[], dict[str, dict]]] = {
            SPARKSHIP: lambda: with_sparkship(spark, settings, spec),
            BY_HAND: lambda: by_hand(spark, spec, version, model_dir),
            EVALUATED: lambda: by_hand(spark, spec, version, model_dir, evaluated=True),
        }
        times, steps = run_rounds(paths, args.rounds)
        print_results(args, spark.sparkContext.master, times, steps)
        return 0
    finally:
        spark.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
