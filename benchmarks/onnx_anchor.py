"""sparkship's JVM-free scorer against ONNX Runtime on the same fitted Spark pipelines, side by side in one run.

sklearn's breast_cancer (569 rows, 30 features) is fitted with local Spark as VectorAssembler + one model per
pipeline: LogisticRegression, RandomForestClassifier(50 trees, depth 6), GBTClassifier(50 trees, depth 4),
DecisionTreeClassifier(depth 6), and the three regressors of the same sizes (the label as target; ``--models``
picks). onnxmltools turns a GBTRegressor into a graph that outputs 0/1, not the regression value: its ORT row
then times a wrong model (its max difference shows it). Each pipeline is saved and converted with
``onnxmltools.convert_sparkml`` (one float input
per column). The scored batch is the data set repeated 360 times (204,840 rows); Spark's own ``transform`` of the
569 rows, repeated the same way, is the reference.

Per pipeline: batch rows/s of ONNX Runtime (``intra_op_num_threads`` 1, and 2) on per-column float32 arrays, and of
``sparkship.serving.load(path).score(pandas_df)`` with ``SPARKSHIP_THREADS=1`` and ``=2``; the 1-row p50 of
``session.run`` on one row against ``score_one(dict)``. Rounds alternate the order; medians are reported.
Predictions must be identical to Spark's on every row; the largest probability (or regression prediction)
difference from Spark's is reported for each side: ONNX Runtime computes trees in float32, sparkship must stay
within 1e-9.

    .venv/bin/python benchmarks/onnx_anchor.py [--rounds 5] [--single 2000] [--repeat 360] [--models lr,rf,dt_reg,...]

Needs the ``onnx`` and ``fast`` extras (``pip install -e '.[onnx,fast]'``) besides pyspark and scikit-learn.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_info import header_lines  # noqa: E402

TOL = 1e-9
MODELS = {
    "lr": "LogisticRegression",
    "rf": "RandomForest 50 trees, depth 6",
    "gbt": "GBT 50 trees, depth 4",
    "dt": "DecisionTree depth 6",
    "rf_reg": "RandomForestRegressor 50 trees, depth 6",
    "gbt_reg": "GBTRegressor 50 trees, depth 4",
    "dt_reg": "DecisionTreeRegressor depth 6",
}


def _estimator(key: str):
    from pyspark.ml import classification as c
    from pyspark.ml import regression as r

    return {
        "lr": lambda: c.LogisticRegression(maxIter=100, regParam=0.01),
        "rf": lambda: c.RandomForestClassifier(numTrees=50, maxDepth=6, seed=1),
        "gbt": lambda: c.GBTClassifier(maxIter=50, maxDepth=4, seed=1),
        "dt": lambda: c.DecisionTreeClassifier(maxDepth=6, seed=1),
        "rf_reg": lambda: r.RandomForestRegressor(numTrees=50, maxDepth=6, seed=1),
        "gbt_reg": lambda: r.GBTRegressor(maxIter=50, maxDepth=4, seed=1),
        "dt_reg": lambda: r.DecisionTreeRegressor(maxDepth=6, seed=1),
    }[key]()


def _data():
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    cols = [n.replace(" ", "_") for n in d.feature_names]
    pdf = pd.DataFrame(d.data, columns=cols)
    pdf["label"] = d.target.astype(np.float64)
    return pdf, cols


def _spark_reference(model, sdf) -> dict[str, np.ndarray]:
    from pyspark.ml.functions import vector_to_array

    out = model.transform(sdf)
    sel = ["prediction"] + ([vector_to_array("probability").alias("probability")] if "probability" in out.columns
                            else [])
    pdf = out.select(*sel).toPandas()
    ref = {"prediction": pdf["prediction"].to_numpy(np.float64)}
    if "probability" in pdf:
        ref["probability"] = np.array([list(v) for v in pdf["probability"]], dtype=np.float64)
    return ref


def _ort_session(onx, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # ORT's idle pool threads spin for a while after each run; on 2 cores that would slow whatever runs next
    # (sparkship's rounds included), so they sleep instead.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onx.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _ort_outputs(sess, feeds) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return {n: np.asarray(v, dtype=np.float64) for n, v in zip(names, sess.run(None, feeds))}


def _max_diff(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> tuple[bool, float]:
    """(predictions identical to Spark's, the largest probability difference); for a regressor (predictions within
    float32's 1e-5 of Spark's, the largest prediction difference)."""
    pred = out["prediction"].reshape(-1)
    if "probability" in ref:
        same = bool(np.array_equal(pred, ref["prediction"]))
        return same, float(np.abs(out["probability"] - ref["probability"]).max())
    same = bool(np.allclose(pred, ref["prediction"], rtol=1e-5, atol=1e-5))
    return same, float(np.abs(pred - ref["prediction"]).max())


def _rows_per_s(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def _p50_us(fn, args) -> float:
    lat = []
    for a in args:
        t0 = time.perf_counter()
        fn(a)
        lat.append(time.perf_counter() - t0)
    return statistics.median(lat) * 1e6


def _bench_one(key: str, path: str, onx, pdf_big, ref, records, args) -> dict:
    from sparkship.serving import load

    cols = list(records[0])
    feeds = {c: pdf_big[c].to_numpy(np.float32).reshape(-1, 1) for c in cols}
    row_feeds = [{c: np.array([[r[c]]], dtype=np.float32) for c in cols} for r in records]
    sess1, sess2 = _ort_session(onx, 1), _ort_session(onx, 2)
    scorer = load(path)
    data = pdf_big[cols]
    n = len(data)

    def ours(threads: int):
        os.environ["SPARKSHIP_THREADS"] = str(threads)
        return scorer.score(data)

    want = ["prediction"] + (["probability"] if "probability" in ref else [])
    ort_ok, ort_diff = _max_diff(_ort_outputs(sess1, feeds), ref)
    res = ours(1)
    ours_ok, ours_diff = _max_diff({c: res.columns[c] for c in want}, ref)
    ways = {"ort1": lambda: sess1.run(None, feeds), "ort2": lambda: sess2.run(None, feeds),
            "ours1": lambda: ours(1), "ours2": lambda: ours(2)}
    speeds: dict[str, list[float]] = {k: [] for k in ways}
    for rnd in range(args.rounds):
        order = list(ways) if rnd % 2 == 0 else list(reversed(ways))
        for k in order:
            speeds[k].append(_rows_per_s(ways[k], n))
    os.environ["SPARKSHIP_THREADS"] = "1"
    singles = [records[i % len(records)] for i in range(args.single)]
    single_feeds = [row_feeds[i % len(row_feeds)] for i in range(args.single)]
    p50_ort = statistics.median(_p50_us(lambda f: sess1.run(None, f), single_feeds) for _ in range(3))
    p50_ours = statistics.median(_p50_us(scorer.score_one, singles) for _ in range(3))
    med = {k: statistics.median(v) for k, v in speeds.items()}
    return {"name": MODELS[key], "speed": med, "p50_ort": p50_ort, "p50_ours": p50_ours, "ort_ok": ort_ok,
            "ort_diff": ort_diff, "ours_ok": ours_ok, "ours_diff": ours_diff,
            "kernel": scorer.stages[-1].forest.kernel.name if hasattr(scorer.stages[-1], "forest") else "-"}


def _print(results: list[dict], n: int) -> None:
    print(f"\n{n:,} rows per batch; rows/s medians; ORT = ONNX Runtime; threads: ORT's intra-op threads, "
          "sparkship's SPARKSHIP_THREADS\n")
    print("| pipeline | ORT 1 thread | ORT 2 threads | sparkship 1 thread | sparkship 2 threads | sparkship / ORT, "
          "1 thread | ORT 1-row p50 | sparkship 1-row p50 | max diff vs Spark: ORT / sparkship | predictions = "
          "Spark's: ORT / sparkship |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        s = r["speed"]
        print(f"| {r['name']} | {s['ort1']:,.0f} | {s['ort2']:,.0f} | {s['ours1']:,.0f} | {s['ours2']:,.0f} | "
              f"**{s['ours1'] / s['ort1']:.2f}x** | {r['p50_ort']:.1f} µs | {r['p50_ours']:.1f} µs | "
              f"{r['ort_diff']:.1e} / {r['ours_diff']:.1e} | {'all' if r['ort_ok'] else 'NO'} / "
              f"{'all' if r['ours_ok'] else 'NO'} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--single", type=int, default=2000, help="1-row calls per latency sample")
    ap.add_argument("--repeat", type=int, default=360, help="copies of the 569 rows in the batch")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {','.join(MODELS)}")
    args = ap.parse_args()
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}: choose from {', '.join(MODELS)}")

    import numba
    import onnxmltools
    import onnxruntime
    import pyspark
    from onnxmltools.convert.common.data_types import FloatTensorType
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[*]").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    pdf, cols = _data()
    sdf = spark.createDataFrame(pdf).cache()
    pdf_big = pdf.loc[np.tile(np.arange(len(pdf)), args.repeat)].reset_index(drop=True)
    records = pdf[cols].to_dict("records")
    results = []
    with tempfile.TemporaryDirectory(prefix="onnx_anchor_") as work:
        for key in keys:
            model = Pipeline(stages=[VectorAssembler(inputCols=cols, outputCol="features"), _estimator(key)]).fit(sdf)
            path = os.path.join(work, key)
            model.save(path)
            ref_one = _spark_reference(model, sdf)
            ref = {k: np.concatenate([v] * args.repeat) for k, v in ref_one.items()}
            with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its operators' attributes
                onx = onnxmltools.convert_sparkml(model, key, [(c, FloatTensorType([None, 1])) for c in cols],
                                                  spark_session=spark)
            results.append(_bench_one(key, path, onx, pdf_big, ref, records, args))
            print(f"{key}: done", file=sys.stderr)
    spark.stop()
    kernel = next((r["kernel"] for r in results if r["kernel"] != "-"), "-")
    print("\n".join(header_lines(f"Java 17, pyspark {pyspark.__version__}, onnxruntime {onnxruntime.__version__}, "
                                 f"onnxmltools {onnxmltools.__version__}, numba {numba.__version__} (sparkship "
                                 f"tree kernel: {kernel})")))
    _print(results, len(pdf_big))
    bad = [r["name"] for r in results if not r["ours_ok"] or r["ours_diff"] > TOL]
    if bad:
        print(f"sparkship differs from Spark's transform for: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
