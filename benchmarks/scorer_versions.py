"""The JVM-free scorer of this working tree against the scorer at an earlier git revision, side by side in one run.

Issue 14 widened the scorer (many new stages, vector columns, a fused linear path). This checks that the
stages it already supported did not get slower: pipelines (a) and (b) of ``serve_latency.py`` are fitted and
saved once by Spark, then each code version scores them in its own process (``PYTHONPATH`` set to that
version's ``src``), rounds alternating between the two versions so that the machine's drift hits both alike:
  * batch rows/s: Arrow in, the best of 3 ``score`` calls on the batch;
  * single row: p50 of ``score_one`` over 2,000 records.
Prints each version's medians over the rounds and the ratio (this tree / baseline; above 1 is faster).

    .venv/bin/python benchmarks/scorer_versions.py [--baseline f1f0ee7] [--rows 100000] [--rounds 5]

The default baseline, f1f0ee7, is the last commit before issue 14's scorer changes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run_info import REPO, checkout_src  # noqa: E402 - this folder's own module

# Runs in a fresh interpreter on one code version: loads each saved pipeline, times it, prints JSON.
WORKER = r"""
import json, sys, time
import numpy as np, pyarrow.parquet as pq
import sparkship.serving as serving
batch = pq.read_table(sys.argv[1])
records = batch.slice(0, 500).to_pylist()
out = {"code": serving.__file__}
for label, path in json.loads(sys.argv[2]).items():
    scorer = serving.load(path)
    calls = [records[i % len(records)] for i in range(2000)]
    for r in calls[:200]:
        scorer.score_one(r)
    single = []
    for r in calls:
        t0 = time.perf_counter(); scorer.score_one(r); single.append(time.perf_counter() - t0)
    scorer.score(batch)
    batch_s = []
    for _ in range(3):
        t0 = time.perf_counter(); scorer.score(batch); batch_s.append(time.perf_counter() - t0)
    best = min(batch_s)
    out[label] = {"batch_rps": batch.num_rows / best, "p50_us": float(np.percentile(single, 50)) * 1e6}
print(json.dumps(out))
"""


def _save_pipelines(work: str, rows: int) -> tuple[str, dict[str, str]]:
    """Fit and save serve_latency's (a) and (b) once; write the scoring batch as parquet."""
    import pyarrow.parquet as pq

    sys.path.insert(0, HERE)
    import serve_latency as sl

    from sparkship.spark import get_spark

    spark = get_spark(home=work, master="local[2]")
    spark.sparkContext.setLogLevel("ERROR")
    train = spark.createDataFrame(sl._rows(20_000, 0), sl.SCHEMA).cache()
    pipelines = sl.pipelines_a_and_b()
    paths = {}
    for label, pipeline in pipelines.items():
        paths[label] = os.path.join(work, label[1])
        pipeline.fit(train).write().overwrite().save(paths[label])
    batch_path = os.path.join(work, "batch.parquet")
    pq.write_table(spark.createDataFrame(sl._rows(rows, 1), sl.SCHEMA).toArrow(), batch_path)
    spark.stop()
    return batch_path, paths


def _run(src: str, batch_path: str, paths: dict[str, str]) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    done = subprocess.run([sys.executable, "-c", WORKER, batch_path, json.dumps(paths)],
                          env=env, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["code"].startswith(src):
        raise SystemExit(f"the worker imported {result['code']}, not the code under {src}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="f1f0ee7", help="git revision to compare against")
    parser.add_argument("--rows", type=int, default=100_000, help="batch size")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per version")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sparkship-versions-") as work:
        batch_path, paths = _save_pipelines(work, args.rows)
        versions = {"this tree": os.path.join(REPO, "src"),
                    f"baseline {args.baseline}": checkout_src(args.baseline, work)}
        runs: dict[str, list[dict]] = {v: [] for v in versions}
        for round_no in range(args.rounds):
            order = list(versions) if round_no % 2 == 0 else list(reversed(versions))
            for version in order:
                runs[version].append(_run(versions[version], batch_path, paths))
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    _print(runs, paths, args)


def _print(runs: dict[str, list[dict]], paths: dict[str, str], args: argparse.Namespace) -> None:
    new, old = list(runs)
    print(f"\nJVM-free scorer, this tree vs {args.baseline}: batch of {args.rows:,} rows (Arrow), "
          f"{args.rounds} alternating rounds, medians, {os.cpu_count()} CPUs\n")
    print("| pipeline | metric | this tree (min–max) | baseline (min–max) | ratio (this / baseline) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for label in paths:
        for metric, unit, better_high in (("batch_rps", "rows/s", True), ("p50_us", "µs", False)):
            a, b = ([r[label][metric] for r in runs[v]] for v in (new, old))
            ratio = statistics.median(a) / statistics.median(b)
            print(f"| {label} | {'batch' if better_high else '1-row p50'} ({unit}) | {_spread(a)} | {_spread(b)} | "
                  f"{ratio if better_high else 1 / ratio:.2f}x |")
    print("\n(ratio above 1: this tree is faster; for the 1-row p50 it is baseline / this tree)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}–{max(values):,.1f})"


if __name__ == "__main__":
    main()
