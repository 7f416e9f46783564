"""Latency and throughput of the JVM-free scorer vs Spark, measured side by side in one run.

Two pipelines are trained on the same synthetic data (numeric columns with nulls, categories unseen at fit):
  (a) Imputer + StringIndexer + OneHotEncoder + VectorAssembler + StandardScaler + LogisticRegression
  (b) the same prep + RandomForestClassifier(50 trees)
For each: single-row p50/p99 of the scorer in-process (``score_one``) and over HTTP (``sparkship serve`` in a
subprocess, keep-alive client), batch rows/s of the scorer (Arrow in, numpy out), and the same for Spark
(``transform()`` of a 1-row DataFrame; ``transform()`` of the batch written to the ``noop`` sink).

    .venv/bin/python benchmarks/serve_latency.py [--rows 100000] [--single 2000] [--http 1000]

Prints a markdown table. Goals: (a) in-process p50 <= 50 us, (b) <= 200 us; HTTP p50 <= 2 ms; batch >= 10x
Spark local for (a).

Then (c) VectorAssembler(30 numeric columns) + StandardScaler + LogisticRegression: batch rows/s from pandas and
from Arrow (``--linear-rows``, 1M by default) and single-row p50, side by side with the same saved pipeline
through MLflow's spark flavor (``mlflow.spark.save_model`` + ``mlflow.pyfunc.load_model(...).predict``, which
runs Spark's transform on a local session; ``pip install -e .[bench]``). Goals: >= 1,000,000 rows/s from pandas
and Arrow, single-row p50 <= 10 us. ``--only-linear`` skips (a) and (b).
"""
from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np


def _rows(n: int, seed: int) -> list[tuple]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        x1 = None if rnd.random() < 0.05 else rnd.gauss(0, 1)
        x2 = None if rnd.random() < 0.05 else rnd.uniform(0, 100)
        x3 = rnd.gauss(5, 2)
        plan = rnd.choice(["basic", "pro", "team", "enterprise", None])
        region = rnd.choice(["eu", "us", "apac", "latam"] + (["mars"] if seed else []))
        score = 0.8 * (x1 or 0) + 0.01 * (x2 or 50) - 0.3 * x3 + (1.0 if plan == "pro" else 0) + rnd.gauss(0, 1)
        out.append((float(i), x1, x2, x3, plan, region, int(score > -1)))
    return out


SCHEMA = "id double, x1 double, x2 double, x3 double, plan string, region string, label int"


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _time_each(fn, args_list) -> list[float]:
    out = []
    for a in args_list:
        t0 = time.perf_counter()
        fn(a)
        out.append(time.perf_counter() - t0)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_latencies(model_dir: str, records: list[dict], n: int) -> list[float]:
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sparkship.cli", "-q", "serve", "--path", model_dir,
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError as exc:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(proc.stderr.read().decode()) from exc
                time.sleep(0.2)
        with httpx.Client(base_url=base) as client:
            for r in records[:50]:  # warm up
                client.post("/predict", json=r)
            lat = []
            for i in range(n):
                rec = records[i % len(records)]
                t0 = time.perf_counter()
                resp = client.post("/predict", json=rec)
                lat.append(time.perf_counter() - t0)
                assert resp.status_code == 200, resp.text
        return lat
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def pipelines_a_and_b() -> dict:
    """(a) and (b), unfitted: the same prep in front of a logistic regression and of a 50-tree random forest."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression, RandomForestClassifier
    from pyspark.ml.feature import Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

    prep = [
        Imputer(inputCols=["x1", "x2"], outputCols=["x1_i", "x2_i"], strategy="median"),
        StringIndexer(inputCols=["plan", "region"], outputCols=["plan_ix", "region_ix"], handleInvalid="keep"),
        OneHotEncoder(inputCols=["plan_ix", "region_ix"], outputCols=["plan_oh", "region_oh"], handleInvalid="keep"),
        VectorAssembler(inputCols=["x1_i", "x2_i", "x3", "plan_oh", "region_oh"], outputCol="raw"),
        StandardScaler(inputCol="raw", outputCol="features", withMean=True),
    ]
    return {
        "(a) prep + LogisticRegression": Pipeline(stages=prep + [LogisticRegression(regParam=0.01)]),
        "(b) prep + RandomForest(50 trees)": Pipeline(stages=prep + [RandomForestClassifier(numTrees=50, seed=1)]),
    }


def _measure_pipeline(work: str, label: str, fitted: Any, records: list[dict], one_row_dfs: list,
                      arrow_batch: Any, batch_df: Any, args: argparse.Namespace) -> dict:
    """One fitted pipeline, saved, then timed: JVM-free 1-row and batch, over HTTP, and Spark 1-row and batch."""
    from pyspark.ml import PipelineModel

    from sparkship.serving import load

    path = os.path.join(work, label[1])
    fitted.write().overwrite().save(path)
    spark_model = PipelineModel.load(path)
    scorer = load(path)

    # in-process, one record at a time (plain Python path)
    recs = [records[i % len(records)] for i in range(args.single)]
    for r in recs[:200]:
        scorer.score_one(r)
    single = _time_each(scorer.score_one, recs)

    # batch, Arrow in: best of 3
    batch_s = min(_time_each(scorer.score, [arrow_batch] * 3))

    http = _http_latencies(path, records, args.http)

    # Spark: 1-row transform + collect; batch transform to the noop sink (every output column computed)
    spark_model.transform(one_row_dfs[0]).collect()
    spark_single = _time_each(lambda df: spark_model.transform(df).collect(), one_row_dfs)
    spark_model.transform(batch_df).write.format("noop").mode("overwrite").save()
    spark_batch_s = min(_time_each(
        lambda df: spark_model.transform(df).write.format("noop").mode("overwrite").save(), [batch_df] * 2))
    return {
        "pipeline": label,
        "p50_us": _pct(single, 50) * 1e6, "p99_us": _pct(single, 99) * 1e6,
        "http_p50_ms": _pct(http, 50) * 1e3, "http_p99_ms": _pct(http, 99) * 1e3,
        "batch_rps": args.rows / batch_s,
        "spark1_p50_ms": _pct(spark_single, 50) * 1e3, "spark1_p99_ms": _pct(spark_single, 99) * 1e3,
        "spark_batch_rps": args.rows / spark_batch_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="batch size")
    parser.add_argument("--single", type=int, default=2000, help="single-row calls to time in-process")
    parser.add_argument("--http", type=int, default=1000, help="HTTP requests to time")
    parser.add_argument("--spark-single", type=int, default=20, help="1-row Spark transforms to time")
    parser.add_argument("--linear-rows", type=int, default=1_000_000, help="batch size for (c)")
    parser.add_argument("--mlflow-rows", type=int, default=100_000, help="batch size for MLflow's pyfunc in (c)")
    parser.add_argument("--only-linear", action="store_true", help="run (c) only")
    args = parser.parse_args()

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from sparkship.spark import get_spark

    work = tempfile.mkdtemp(prefix="sparkship-bench-")
    spark = get_spark(home=work, master="local[2]")
    spark.sparkContext.setLogLevel("ERROR")
    train = spark.createDataFrame(_rows(20_000, 0), SCHEMA).cache()
    batch_df = spark.createDataFrame(_rows(args.rows, 1), SCHEMA).cache()
    batch_df.count()
    pipelines = pipelines_a_and_b()
    arrow_batch = batch_df.toArrow()
    records = arrow_batch.slice(0, 500).to_pylist()
    one_row_dfs = [spark.createDataFrame([tuple(r.values())], SCHEMA) for r in records[: args.spark_single]]
    results = [] if args.only_linear else [
        _measure_pipeline(work, label, pipeline.fit(train), records, one_row_dfs, arrow_batch, batch_df, args)
        for label, pipeline in pipelines.items()]
    linear = _linear30(spark, work, args)
    version = spark.version
    spark.stop()

    print(f"\nJVM-free scorer vs Spark {version} local[2], "
          f"{os.cpu_count()} CPUs, batch of {args.rows:,} rows\n")
    _print_table(results)
    if results:
        print("\ngoals: (a) 1-row p50 <= 50 µs, (b) <= 200 µs; HTTP p50 <= 2 ms; batch >= 10x Spark for (a)")
    _print_linear(linear, args)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


def _print_table(results: list[dict]) -> None:
    if not results:
        return
    print("| pipeline | scorer 1-row p50 | p99 | HTTP p50 | HTTP p99 | Spark 1-row p50 | p99 | 1-row speed-up "
          "(p50) | scorer batch rows/s | Spark batch rows/s | batch speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['pipeline']} | {r['p50_us']:.0f} µs | {r['p99_us']:.0f} µs | {r['http_p50_ms']:.2f} ms | "
              f"{r['http_p99_ms']:.2f} ms | {r['spark1_p50_ms']:.0f} ms | {r['spark1_p99_ms']:.0f} ms | "
              f"{r['spark1_p50_ms'] * 1e3 / r['p50_us']:,.0f}x | {r['batch_rps']:,.0f} | "
              f"{r['spark_batch_rps']:,.0f} | {r['batch_rps'] / r['spark_batch_rps']:.1f}x |")


def _linear30(spark, work: str, args) -> dict:
    """(c): the 30-feature VectorAssembler + StandardScaler + LogisticRegression pipeline, scorer vs MLflow."""
    import pandas as pd
    import pyarrow as pa
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    from sparkship.serving import load

    names = [f"f{i}" for i in range(30)]
    rng = np.random.default_rng(3)

    def frame(n: int) -> pd.DataFrame:
        x = rng.normal(size=(n, 30))
        return pd.DataFrame({c: x[:, i].copy() for i, c in enumerate(names)})  # one block, like to_pandas()

    train = frame(20_000)
    train["label"] = (train[names[:5]].sum(axis=1) > 0).astype(int)
    path = os.path.join(work, "c")
    Pipeline(stages=[VectorAssembler(inputCols=names, outputCol="raw"),
                     StandardScaler(inputCol="raw", outputCol="features", withMean=True),
                     LogisticRegression(regParam=0.01)]).fit(spark.createDataFrame(train)).write().overwrite().save(path)
    scorer = load(path)
    pdf = frame(args.linear_rows)
    table = pa.Table.from_pandas(pdf, preserve_index=False)
    out = {"rows": args.linear_rows,
           "pandas_rps": args.linear_rows / min(_time_each(scorer.score, [pdf] * 3)),
           "arrow_rps": args.linear_rows / min(_time_each(scorer.score, [table] * 3))}
    records = pdf.head(2000).to_dict("records")
    for r in records[:300]:
        scorer.score_one(r)
    out["p50_us"] = _pct(_time_each(scorer.score_one, records), 50) * 1e6

    import mlflow.pyfunc
    import mlflow.spark

    mpath = os.path.join(work, "c_mlflow")
    mlflow.spark.save_model(PipelineModel.load(path), mpath)
    pyfunc = mlflow.pyfunc.load_model(mpath)
    small = pdf.head(args.mlflow_rows)
    pyfunc.predict(small.head(100))  # warm up
    ml_batch = min(_time_each(pyfunc.predict, [small] * 2))
    ml_single = _time_each(pyfunc.predict, [pdf.iloc[i:i + 1] for i in range(20)])
    # same rows through both: the predictions must agree
    ours = scorer.score(small.head(1000)).columns["prediction"]
    theirs = np.asarray(pyfunc.predict(small.head(1000)), dtype=float).ravel()
    out.update(mlflow_rps=len(small) / ml_batch, mlflow_p50_us=_pct(ml_single, 50) * 1e6,
               agree=bool((ours == theirs).all()))
    return out


def _print_linear(r: dict, args) -> None:
    print(f"\n(c) VectorAssembler(30 doubles) + StandardScaler + LogisticRegression; scorer batch of {r['rows']:,} "
          f"rows, MLflow spark-flavor pyfunc batch of {args.mlflow_rows:,} rows "
          f"(predictions agree: {r['agree']})\n")
    print("| path | batch rows/s (pandas) | batch rows/s (Arrow) | 1-row p50 |")
    print("|---|---|---|---|")
    print(f"| sparkship scorer | {r['pandas_rps']:,.0f} | {r['arrow_rps']:,.0f} | {r['p50_us']:.1f} µs |")
    print(f"| MLflow spark flavor (pyfunc) | {r['mlflow_rps']:,.0f} | - | {r['mlflow_p50_us'] / 1e3:,.1f} ms |")
    print(f"| ratio (scorer / MLflow) | {r['pandas_rps'] / r['mlflow_rps']:,.0f}x | - | "
          f"{r['mlflow_p50_us'] / r['p50_us']:,.0f}x faster |")
    print("\ngoals (c): batch >= 1,000,000 rows/s from pandas and Arrow; 1-row p50 <= 10 µs")


if __name__ == "__main__":
    main()
