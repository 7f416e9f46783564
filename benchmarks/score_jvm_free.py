"""`sparkship score` with the JVM-free scorer in ``mapInArrow`` against Spark's ``PipelineModel.transform``.

Three pipelines on the churn inputs of tests/helpers/scoring.py (Imputer + StringIndexer + OneHotEncoder +
VectorAssembler, then LogisticRegression, RandomForest 50 trees depth 6, or GBT 50 trees depth 4), at each size
of ``--rows``, on both Delta engines (native delta-spark, deltars), two measures per scorer:

- **transform stage**: the input read from Delta and scored, keys + prediction + probability (as an array), to
  ``write.format("noop")`` (what the scorer costs, no Delta write);
- **whole job**: a full ``sparkship score`` run (``--full``: the whole input, into a fresh output).

One round each, the two scorers back to back (spark first); a warm-up run per scorer and engine beforehand.

    .venv/bin/python benchmarks/score_jvm_free.py [--rows 1000000,4000000] [--models lr,rf50,gbt50]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # the repository: tests.helpers
sys.path.insert(0, os.path.dirname(__file__))

from run_info import header_lines  # noqa: E402 - this folder's own module

SCORERS = ("spark", "jvm-free")
ENGINES = ("native", "deltars")


def fit_models(spark: Any) -> dict[str, Any]:
    """name -> fitted PipelineModel: the churn prep stages of tests/helpers/scoring.py with each model at the end."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import GBTClassifier, RandomForestClassifier

    from tests.helpers.scoring import INPUT_SCHEMA, fit_model, make_rows

    lr = fit_model(spark)
    prep = PipelineModel(stages=lr.stages[:-1])
    train = prep.transform(spark.createDataFrame(make_rows(2000, seed=1), INPUT_SCHEMA))
    label = ((train["age"] + train["tenure"] / 2) > 58).cast("double")
    train = train.withColumn("label", label).cache()
    rf = RandomForestClassifier(numTrees=50, maxDepth=6, seed=1).fit(train)
    gbt = GBTClassifier(maxIter=50, maxDepth=4, seed=1).fit(train)
    return {"lr": lr, "rf50": PipelineModel(stages=[*prep.stages, rf]),
            "gbt50": PipelineModel(stages=[*prep.stages, gbt])}


def write_input(spark: Any, path: str, rows: int) -> None:
    from pyspark.sql import functions as F

    from sparkship import tables

    plans = F.array(*[F.lit(p) for p in ("basic", "plus", "pro")])
    data = spark.range(rows).select(
        F.col("id"), (F.randn(1) * 10 + 40).alias("age"), (F.rand(2) * 60).alias("tenure"),
        F.element_at(plans, (F.rand(3) * 3).cast("int") + 1).alias("plan"),
        F.when(F.rand(4) < 0.5, "north").otherwise("south").alias("region"),
    )
    tables.write(data, path, mode="overwrite")


def transform_stage(spark: Any, model: Any, src: str) -> float:
    """Seconds to read ``src`` and score it with the model's scorer into the noop sink."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from sparkship import tables
    from sparkship.scoring.frames import scored_rows

    features = [i["name"] for i in model.inputs]
    scored = scored_rows(model, tables.read(spark, src).select("id", *features))
    probability = F.col("probability") if model.scorer == "jvm-free" else vector_to_array(F.col("probability"))
    start = time.perf_counter()
    scored.select("id", F.col("prediction").cast("double"), probability.alias("probability")) \
        .write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def whole_job(spark: Any, settings: Any, name: str, src: str, out: str, scorer: str) -> float:
    from sparkship import scoring

    start = time.perf_counter()
    result = scoring.score(spark, settings, name, src, out, ["id"], full=True, scorer=scorer)
    elapsed = time.perf_counter() - start
    assert result.scorer == scorer and result.quarantined == 0, result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,4000000", help="comma-separated input sizes")
    parser.add_argument("--models", default="lr,rf50,gbt50")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import pyspark

    from sparkship import artifacts, tables
    from sparkship.config import Settings
    from sparkship.refs import parse_ref
    from sparkship.registry import Registry
    from sparkship.scoring.request import load_scoring_model
    from sparkship.spark import get_spark
    from tests.helpers.scoring import manifest_for

    work = tempfile.mkdtemp(prefix="score-jvm-free-")
    spark = get_spark(home=os.path.join(work, "home"))
    settings = Settings.resolve(home=os.path.join(work, "home"))
    names = args.models.split(",")
    fitted = fit_models(spark)
    for name in names:
        staged = artifacts.stage(fitted[name], {**manifest_for(spark), "name": name}, settings.models_root)
        Registry(settings).register(name, staged)
    loaded = {(n, s): load_scoring_model(settings, parse_ref(n), s) for n in names for s in SCORERS}
    lines = header_lines(f"Java 17, pyspark {pyspark.__version__}, local[*]; "
                         f"load average at start {os.getloadavg()[0]:.1f}")
    rows_out: list[str] = []
    warm = os.path.join(work, "warm")
    write_input(spark, warm, 20_000)
    for rows in (int(r) for r in args.rows.split(",")):
        src = os.path.join(work, f"events-{rows}")
        write_input(spark, src, rows)
        for engine in ENGINES:
            tables.use_engine(spark, engine)
            for scorer in SCORERS:  # warm-up: Python workers, JIT
                whole_job(spark, settings, names[0], warm, os.path.join(work, f"w-{engine}-{scorer}"), scorer)
            for name in names:
                t = {s: transform_stage(spark, loaded[(name, s)], src) for s in SCORERS}
                j = {s: whole_job(spark, settings, name, src, os.path.join(work, f"o-{rows}-{engine}-{name}-{s}"), s)
                     for s in SCORERS}
                row = (f"| {rows:,} | {engine} | {name} | {t['spark']:.1f} | {t['jvm-free']:.1f} | "
                       f"{t['spark'] / t['jvm-free']:.2f}x | {j['spark']:.1f} | {j['jvm-free']:.1f} | "
                       f"{j['spark'] / j['jvm-free']:.2f}x | {rows / t['jvm-free']:,.0f} |")
                rows_out.append(row)
                print(row, flush=True)
    print("\n".join(lines))
    print("\n| rows | engine | model | transform stage s, spark | jvm-free | speed-up | whole job s, spark | "
          "jvm-free | speed-up | jvm-free stage rows/s |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows_out))


if __name__ == "__main__":
    main()
