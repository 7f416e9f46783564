"""Overhead of `sparkship score` over a bare PipelineModel.transform + Delta write, measured side by side.

Both sides read the same Delta table, load the same saved PipelineModel (Imputer + StringIndexer +
OneHotEncoder + VectorAssembler + LogisticRegression), and write keys + prediction + probability (as an array)
to a new Delta table in one commit. `sparkship score` adds the registry lookup, the checksum check, the schema
check, the quarantine rules, the row counts (from Delta statistics), the lease and the state table, and its
output carries six run columns (the inference-table layout). A third path writes the raw transform with those
same six columns, partitioned by ``scoring_batch`` as sparkship writes them: it splits the overhead into what
the output's layout costs in the write and what sparkship's own steps cost beyond it. Rounds alternate; medians
are reported.

Where the time goes: the Spark jobs each side launches (counted with the status tracker, per job group, with
the call site of each job's first stage) and a cProfile of one extra `sparkship score` run, cumulative seconds
per step (plan, execute, commit and their parts).

    .venv/bin/python benchmarks/score_overhead.py [--rows 1000000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # the repository: tests.helpers

from score_output_columns import run_constants  # noqa: E402 - this folder's own module

# (file suffix, function name) -> label of the step, for the profile breakdown
STEPS = [
    (("scoring/request.py", "load_scoring_model"), "resolve + verify + PipelineModel.load"),
    (("artifacts.py", "verified"), "  of which: checksums (sha256)"),
    (("scoring/plan.py", "plan_run"), "plan_run (state, table versions, owner)"),
    (("scoring/frames.py", "build_frames"), "build_frames (transform plan, quarantine rules)"),
    (("scoring/job.py", "check_targets"), "check_targets (output schemas)"),
    (("scoring_lease.py", "acquire"), "lease acquire"),
    (("scoring_lease.py", "release"), "lease release"),
    (("scoring/job.py", "execute"), "execute (pending row, writes)"),
    (("tables/operations.py", "count_rows"), "  of which: rows_in from file stats"),
    (("tables/operations.py", "write"), "  of which: Delta writes (the Spark job)"),
    (("scoring/job.py", "_committed"), "  of which: counts from commit metrics"),
    (("scoring/job.py", "commit"), "commit (count check, committed row)"),
]


def jobs_of(spark: Any, group: str, run: Callable[[], float]) -> tuple[float, list[str]]:
    """Run ``run`` under Spark job group ``group``; return its seconds and the call site of each job it launched."""
    sc = spark.sparkContext
    sc.setJobGroup(group, group)
    try:
        elapsed = run()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    tracker = sc.statusTracker()
    sites = []
    for job_id in sorted(tracker.getJobIdsForGroup(group)):
        info = tracker.getJobInfo(job_id)
        stage = tracker.getStageInfo(min(info.stageIds)) if info and info.stageIds else None
        sites.append(stage.name.split(" at ")[0] if stage else "?")
    return elapsed, sites


def profile_steps(run: Callable[[], Any]) -> list[tuple[str, float]]:
    """Cumulative seconds of each step of STEPS in one profiled call of ``run``."""
    profiler = cProfile.Profile()
    profiler.runcall(run)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    out = []
    for (suffix, func), label in STEPS:
        total = sum(v[3] for (file, _, name), v in stats.items() if file.endswith(suffix) and name == func)
        out.append((label, total))
    return out


@dataclass
class Bench:
    """The benchmark's session, registered model and input table."""
    spark: Any
    settings: Any
    work: str
    src: str
    model_dir: str
    rows: int


def set_up(rows: int) -> Bench:
    """A session, the tests' churn model registered, and an input table of ``rows`` random rows."""
    from pyspark.sql import functions as F

    from sparkship import tables
    from sparkship.config import Settings
    from sparkship.spark import get_spark
    from tests.helpers.scoring import MODEL, fit_model, register

    work = tempfile.mkdtemp(prefix="score-bench-")
    spark = get_spark(home=os.path.join(work, "home"))
    settings = Settings.resolve(home=os.path.join(work, "home"))
    version = register(spark, fit_model(spark), settings)
    src = os.path.join(work, "events")
    data = spark.range(rows).select(
        F.col("id"),
        (F.randn(1) * 10 + 40).alias("age"),
        (F.rand(2) * 60).alias("tenure"),
        F.element_at(F.array(*[F.lit(p) for p in ("basic", "plus", "pro")]),
                     (F.rand(3) * 3).cast("int") + 1).alias("plan"),
        F.when(F.rand(4) < 0.5, "north").otherwise("south").alias("region"),
    )
    tables.write(data, src, mode="overwrite")
    return Bench(spark, settings, work, src, os.path.join(settings.models_root, MODEL, str(version), "model"), rows)


def run_sparkship(bench: Bench, i: int) -> float:
    """One `sparkship score` run, loading the model as a fresh job does (nothing kept from the run before)."""
    from sparkship import artifacts, scoring
    from tests.helpers.scoring import MODEL

    artifacts.forget_loaded()
    start = time.perf_counter()
    result = scoring.score(bench.spark, bench.settings, MODEL, bench.src, os.path.join(bench.work, f"sparkship-{i}"),
                           ["id"])
    elapsed = time.perf_counter() - start
    assert result.scored == bench.rows, result
    return elapsed


def run_raw(bench: Bench, i: int, with_run_columns: bool = False) -> float:
    """The transform written by hand; ``with_run_columns``: with the output's run columns, as sparkship's are."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array

    from sparkship import scoring, tables

    start = time.perf_counter()
    raw = PipelineModel.load(bench.model_dir)
    out = raw.transform(tables.read(bench.spark, bench.src)).select(
        "id", "prediction", vector_to_array("probability").alias("probability"),
        *(run_constants() if with_run_columns else []),
    )
    tables.write(out, os.path.join(bench.work, f"{'layout' if with_run_columns else 'raw'}-{i}"), mode="overwrite",
                 partition_by=[scoring.BATCH_COLUMN] if with_run_columns else None)
    return time.perf_counter() - start


NAMES = {"raw": "raw transform + write", "layout": "raw transform + the six run columns, partitioned, + write",
         "sparkship": "sparkship score"}


def measure(bench: Bench, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """Seconds of each path per round (alternating, after a warm-up) and the call sites of one run's Spark jobs."""
    runs: dict[str, Callable[[int], float]] = {
        "raw": lambda i: run_raw(bench, i), "layout": lambda i: run_raw(bench, i, with_run_columns=True),
        "sparkship": lambda i: run_sparkship(bench, i)}
    for run in runs.values():  # warm-up: JIT, Python workers
        run(-1)
    times: dict[str, list[float]] = {name: [] for name in NAMES.values()}
    jobs: dict[str, list[str]] = {}
    for i in range(rounds):
        for key, run in runs.items():
            elapsed, sites = jobs_of(bench.spark, f"bench-{key}-{i}", lambda run=run: run(i))
            times[NAMES[key]].append(elapsed)
            jobs[NAMES[key]] = sites
    return times, jobs


def report(bench: Bench, rounds: int, times: dict[str, list[float]], jobs: dict[str, list[str]],
           steps: list[tuple[str, float]]) -> None:
    from sparkship import tables

    base = statistics.median(times[NAMES["raw"]])
    print(f"\n{bench.rows:,} rows, {rounds} rounds (alternating), local[*] on {os.cpu_count()} cores, "
          f"engine {tables.engine_for(bench.spark)}\n")
    print("| path | median s | rounds s | ratio | Spark jobs per run |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {', '.join(f'{v:.2f}' for v in values)} | {med / base:.2f}x "
              f"| {len(jobs[name])} |")
    layout = statistics.median(times[NAMES["layout"]])
    print(f"\nsparkship score / the same output layout written by hand: "
          f"{statistics.median(times[NAMES['sparkship']]) / layout:.2f}x (sparkship's own steps); "
          f"the layout / raw: {layout / base:.2f}x (the run columns in the write)")
    print("\nSpark jobs of one run, by call site (first stage's name):")
    for name, sites in jobs.items():
        print(f"  {name}: " + ", ".join(f"{site} x{n}" for site, n in sorted(Counter(sites).items())))
    print("\nOne profiled `sparkship score` run (cProfile, cumulative seconds; the profiler adds its own cost):")
    for label, seconds in steps:
        print(f"  {label:<52} {seconds:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bench = set_up(args.rows)
    times, jobs = measure(bench, args.rounds)
    steps = profile_steps(lambda: run_sparkship(bench, args.rounds))
    report(bench, args.rounds, times, jobs, steps)


if __name__ == "__main__":
    main()
