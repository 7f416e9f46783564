"""Incremental `sparkship score` after a small change against a full rescore, each beside the same work by hand.

1. New tables get deletion vectors, as Databricks creates them by default (``DV_DEFAULT``). A ``--rows`` input
   (the Change Data Feed on, as on every table sparkship creates) is scored in full into five outputs: two by
   `sparkship score`, three by hand (the raw transform, written with the properties sparkship's output has:
   Change Data Feed, deletion vectors). Then 1% of its rows are UPDATEd, 0.5% DELETEd and 1% appended, and the
   changed input is scored five ways, each into its own output: sparkship incremental (Change Data Feed, one
   MERGE), sparkship full (``full=True``), by hand incremental (the
   Change Data Feed read with plain Spark, each key's last change, the transform of the upserted rows, one bare
   ``MERGE INTO``), by hand full (the transform of the whole input, one Delta overwrite) and the floor (the same
   bare MERGE timed alone, its source read and scored beforehand). Ratios:
   sparkship incremental / full (goal <= 0.15x), by hand incremental / full (what the required MERGE costs),
   sparkship incremental / by hand incremental (what sparkship adds) and floor / sparkship full (the least a
   MERGE-based run can take). All outputs but the full rewrite by hand must then hold the same (id, prediction)
   rows as sparkship's incremental one.
2. `sparkship score` in full into a fresh output against ``PipelineModel.load().transform()`` + a plain Delta
   write of the same data, at each of ``--sizes`` rows.

``--model lr``: the tests' churn pipeline (tests/helpers/scoring.py: feature stages + LogisticRegression);
``--model rf``: the same feature stages + RandomForestClassifier(numTrees=50, maxDepth=6). Rounds alternate the
order of the paths; medians are reported. Progress goes to stderr, tables to stdout.

    .venv/bin/python benchmarks/incremental_changes.py [--rows 2000000] [--rounds 2] [--sizes 1000000,4000000]
        [--model lr|rf] [--skip-sizes]
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
from importlib import metadata
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # the repository: tests.helpers

from ratio_table import print_ratio_table  # noqa: E402 - this folder's own module
from run_info import header_lines  # noqa: E402 - this folder's own module

log = logging.getLogger("bench")
KEYS = ["id"]
MODELS = {"lr": "tests/helpers/scoring.py's pipeline: feature stages + LogisticRegression(maxIter=20), 300 rows",
          "rf": "tests/helpers/scoring.py's feature stages + RandomForestClassifier(numTrees=50, maxDepth=6), "
                "2,000 rows"}
SP_INC, SP_FULL = "sparkship, incremental (Change Data Feed, MERGE)", "sparkship, full rescore (full=True)"
HAND_INC, HAND_FULL = "by hand, incremental (Change Data Feed, MERGE)", "by hand, full (transform + overwrite)"
FLOOR = "floor: the MERGE alone (changes read and scored beforehand, untimed)"
DV_DEFAULT = "spark.databricks.delta.properties.defaults.enableDeletionVectors"
# The properties sparkship's output has (every table sparkship creates has the Change Data Feed; deletion vectors
# come from DV_DEFAULT, set below): the by-hand MERGEs write the same kind of commit as sparkship's.
HAND_PROPERTIES = {"delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "true"}
HAND_MERGE = ("MERGE INTO delta.`{out}` AS t USING hand_changes AS s ON t.id = s.id "
              "WHEN MATCHED AND s.deleted THEN DELETE "
              "WHEN MATCHED THEN UPDATE SET t.prediction = s.prediction, t.probability = s.probability "
              "WHEN NOT MATCHED AND NOT s.deleted THEN INSERT (id, prediction, probability) "
              "VALUES (s.id, s.prediction, s.probability)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the changed input (part 1)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each path (at most 25)")
    parser.add_argument("--sizes", default="1000000,4000000", help="input sizes of part 2, comma-separated")
    parser.add_argument("--skip-sizes", action="store_true", help="run part 1 only")
    parser.add_argument("--model", choices=sorted(MODELS), default="lr", help="the registered pipeline (see MODELS)")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 25:  # each round changes its own residues of id % 100 (see change_input)
        parser.error("--rounds must be between 1 and 25")
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    return args


def machine_lines(spark: Any) -> list[str]:
    """Where and when the numbers were taken, for the README."""
    from sparkship import tables

    return header_lines(f"Spark master {spark.sparkContext.master}") + [
        f"pyspark {metadata.version('pyspark')}, delta-spark {metadata.version('delta-spark')}, "
        f"engine {tables.engine_for(spark)}; {DV_DEFAULT}={spark.conf.get(DV_DEFAULT, 'false')}",
    ]


def make_input(spark: Any, rows: int, first_id: int = 0, seed: int = 0) -> Any:
    """The model's input columns (tests/helpers/scoring.py's), generated by Spark: no Python list of 4M rows."""
    from pyspark.sql import functions as F

    plans = F.array(*[F.lit(p) for p in ("basic", "plus", "pro")])
    return spark.range(first_id, first_id + rows).select(
        F.col("id"),
        (F.randn(seed + 1) * 10 + 40).alias("age"),
        (F.rand(seed + 2) * 60).alias("tenure"),
        F.element_at(plans, (F.rand(seed + 3) * 3).cast("int") + 1).alias("plan"),
        F.when(F.rand(seed + 4) < 0.5, "north").otherwise("south").alias("region"),
    )


def write_input(spark: Any, path: str, rows: int) -> None:
    from sparkship import tables

    # Deletion vectors as Databricks creates tables: UPDATE and DELETE then mark rows instead of rewriting files.
    tables.write(make_input(spark, rows), path, mode="overwrite", properties={"delta.enableDeletionVectors": "true"})


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def change_input(spark: Any, src: str, rows: int, round_no: int, next_id: int) -> dict[str, int]:
    """UPDATE 1%, DELETE 0.5% and append 1% of ``rows``; three commits. Returns the rows each touched.

    Round ``r`` updates ``id % 100 == 2r`` and deletes ``id % 200 == 4r + 1`` (an odd residue of id % 100): no row is
    both updated and deleted, and no round changes a row an earlier round changed (it may hit earlier appends).
    """
    from sparkship import tables

    table = f"delta.`{src}`"
    updated = spark.sql(
        f"UPDATE {table} SET tenure = tenure + 30, plan = CASE plan WHEN 'basic' THEN 'pro' ELSE 'basic' END "
        f"WHERE id % 100 = {2 * round_no}").first()[0]
    deleted = spark.sql(f"DELETE FROM {table} WHERE id % 200 = {4 * round_no + 1}").first()[0]
    appended = rows // 100
    tables.write(make_input(spark, appended, first_id=next_id, seed=10 + round_no), src, mode="append")
    return {"updated": int(updated), "deleted": int(deleted), "appended": appended}


def differing_rows(spark: Any, a: str, b: str) -> tuple[int, int, int, int]:
    """Rows of ``a`` not in ``b`` and of ``b`` not in ``a`` on (id, prediction), and each side's row count."""
    from sparkship import tables

    left, right = (tables.read(spark, p).select("id", "prediction") for p in (a, b))
    return left.exceptAll(right).count(), right.exceptAll(left).count(), left.count(), right.count()


def fit_forest(spark: Any) -> Any:
    """tests/helpers/scoring.py's feature stages, fitted by its fit_model, + RandomForestClassifier(numTrees=50,
    maxDepth=6). The stages are reused rather than copied so that both models see the same features; the forest
    gets 2,000 rows because 300 leave its trees short of depth 6, and the depth is what scoring pays for."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import RandomForestClassifier
    from pyspark.sql import functions as F

    from tests.helpers.scoring import INPUT_SCHEMA, fit_model, make_rows

    features = fit_model(spark).stages[:-1]
    train = spark.createDataFrame(make_rows(2000, seed=1), INPUT_SCHEMA).withColumn(  # fit_model's label
        "label", ((F.col("age") + F.col("tenure") / 2 + F.when(F.col("plan") == "pro", 10).otherwise(0)) > 58)
        .cast("double"))
    # A Pipeline passes fitted stages through as they are and fits only the forest.
    return Pipeline(stages=[*features, RandomForestClassifier(numTrees=50, maxDepth=6, seed=1)]).fit(train)


def register_model(spark: Any, settings: Any, kind: str) -> str:
    """Fit ``kind`` (lr or rf), register it as tests/helpers/scoring.py's register does; its PipelineModel folder."""
    from sparkship import artifacts
    from sparkship.registry import Registry
    from tests.helpers.scoring import MODEL, fit_model, manifest_for

    model = fit_model(spark) if kind == "lr" else fit_forest(spark)
    manifest = dict(manifest_for(spark), algorithm="logistic_regression" if kind == "lr" else "random_forest")
    version = Registry(settings).register(MODEL, artifacts.stage(model, manifest, settings.models_root))
    return os.path.join(version.artifact, artifacts.MODEL_DIR)


def scored_by_hand(model: Any, rows: Any) -> Any:
    """What a by-hand job keeps of the transform: the key, the prediction and the probability as array<double>."""
    from pyspark.ml.functions import vector_to_array

    return model.transform(rows).select("id", "prediction", vector_to_array("probability").alias("probability"))


def hand_full(spark: Any, model_dir: str, src: str, out: str, properties: dict[str, str] | None = None) -> None:
    """By hand, full: load the model, transform the whole input, overwrite ``out`` in one Delta commit."""
    from pyspark.ml import PipelineModel

    writer = scored_by_hand(PipelineModel.load(model_dir), spark.read.format("delta").load(src)).write
    writer = writer.format("delta").mode("overwrite")
    for key, value in (properties or {}).items():  # Delta takes them as the properties of a table it creates
        writer = writer.option(key, value)
    writer.save(out)


def last_changes(spark: Any, src: str, first: int, last: int) -> Any:
    """Each key's last change in the input's Change Data Feed over versions ``first..last``, flagged ``deleted``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    feed = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", first)
            .option("endingVersion", last).load(src).where(F.col("_change_type") != "update_preimage"))
    newest = Window.partitionBy("id").orderBy(F.col("_commit_version").desc())
    return (feed.withColumn("_n", F.row_number().over(newest)).where(F.col("_n") == 1)
            .withColumn("deleted", F.col("_change_type") == "delete")
            .drop("_n", "_change_type", "_commit_version", "_commit_timestamp"))


def scored_changes(spark: Any, model_dir: str, src: str, scored_to: int) -> tuple[int, Any]:
    """The changes since input version ``scored_to``, each key's last, transformed (deleted keys with nulls), as
    the source of one MERGE. Returns the input's head version and the source."""
    from pyspark.ml import PipelineModel
    from pyspark.sql import functions as F

    model = PipelineModel.load(model_dir)  # loaded each run, as `sparkship score` loads it
    head = spark.sql(f"DESCRIBE HISTORY delta.`{src}` LIMIT 1").first()["version"]
    changes = last_changes(spark, src, scored_to + 1, head)
    upserts = scored_by_hand(model, changes.where(~F.col("deleted"))).withColumn("deleted", F.lit(False))
    deletes = changes.where(F.col("deleted")).select(
        "id", F.lit(None).cast("double").alias("prediction"), F.lit(None).cast("array<double>").alias("probability"),
        "deleted")
    return head, upserts.unionByName(deletes)


def merge_by_hand(spark: Any, source: Any, out: str) -> dict[str, int]:
    """One bare MERGE of ``source`` into ``out``; returns its row counts (what Delta's MERGE returns)."""
    # Broadcast the few changed rows, as sparkship does: without the hint Spark may estimate the target under the
    # broadcast threshold and run out of driver memory building it (a 2M-row run failed so before sparkship hinted).
    source.hint("broadcast").createOrReplaceTempView("hand_changes")
    merged = spark.sql(HAND_MERGE.format(out=out)).first().asDict()
    spark.catalog.dropTempView("hand_changes")
    return {k: int(v) for k, v in merged.items()}


def hand_incremental(spark: Any, model_dir: str, src: str, out: str, scored_to: int) -> tuple[int, dict[str, int]]:
    """By hand, incremental: the changes since input version ``scored_to``, transformed, in one bare MERGE.

    Returns the input version now scored and the MERGE's row counts."""
    head, source = scored_changes(spark, model_dir, src, scored_to)
    return head, merge_by_hand(spark, source, out)


def floor_merge(spark: Any, model_dir: str, src: str, out: str, scored_to: int) -> tuple[int, dict[str, int], float]:
    """The floor: the scored changes computed and cached first (untimed), then the MERGE alone, timed.

    Returns the input version now scored, the MERGE's row counts and the MERGE's seconds."""
    head, source = scored_changes(spark, model_dir, src, scored_to)
    source = source.localCheckpoint()  # eager: reads the feed and transforms here, outside the timed MERGE
    seconds, counts = timed(lambda: merge_by_hand(spark, source, out))
    return head, counts, seconds


def first_runs(spark: Any, settings: Any, model_dir: str, src: str, outs: dict[str, str]) -> dict[str, float]:
    """Score the unchanged input in full into every output (warm-up, not timed in the table): each path then
    starts from the same scores, sparkship's with its run columns, the by-hand ones with the same properties."""
    from sparkship import scoring
    from tests.helpers.scoring import MODEL

    first = {}
    for name, out in outs.items():
        log.info("part 1: first full run into the output of %s", name)
        if name in (SP_INC, SP_FULL):
            first[name] = timed(lambda out=out: scoring.score(spark, settings, MODEL, src, out, KEYS, full=True))[0]
        else:
            first[name] = timed(lambda out=out: hand_full(spark, model_dir, src, out, HAND_PROPERTIES))[0]
    return first


def change_paths(spark: Any, settings: Any, model_dir: str, src: str, outs: dict[str, str]) -> dict[str, Callable]:
    """The five paths over the changed input, in the table's order; each returns its row counts or None, and the
    floor also the seconds of its MERGE alone."""
    from sparkship import scoring, tables
    from tests.helpers.scoring import MODEL

    start = tables.version(spark, src)
    scored_to = {HAND_INC: start, FLOOR: start}  # the input version each by-hand MERGE has scored

    def ours(out: str, full: bool) -> tuple[str, int, int, int]:
        res = scoring.score(spark, settings, MODEL, src, out, KEYS, full=full)
        return res.mode, res.rows_in, res.scored, res.deleted

    def by_hand_incremental() -> tuple[str, int, int, int]:
        scored_to[HAND_INC], m = hand_incremental(spark, model_dir, src, outs[HAND_INC], scored_to[HAND_INC])
        upserted = m["num_updated_rows"] + m["num_inserted_rows"]
        return "MERGE", upserted, upserted, m["num_deleted_rows"]

    def floor() -> tuple[str, int, int, int, float]:
        scored_to[FLOOR], m, seconds = floor_merge(spark, model_dir, src, outs[FLOOR], scored_to[FLOOR])
        upserted = m["num_updated_rows"] + m["num_inserted_rows"]
        return "MERGE", upserted, upserted, m["num_deleted_rows"], seconds

    return {SP_INC: lambda: ours(outs[SP_INC], False), SP_FULL: lambda: ours(outs[SP_FULL], True),
            HAND_INC: by_hand_incremental, HAND_FULL: lambda: hand_full(spark, model_dir, src, outs[HAND_FULL]),
            FLOOR: floor}


def part_changes(spark: Any, settings: Any, model_dir: str, work: str, args: argparse.Namespace) -> None:
    """Part 1: the five paths over the same changed input, side by side, each into its own output."""
    from sparkship import tables

    src = os.path.join(work, "events")
    outs = {name: os.path.join(work, folder, "scores") for name, folder in
            ((SP_INC, "inc"), (SP_FULL, "full"), (HAND_INC, "hand-inc"), (HAND_FULL, "hand-full"), (FLOOR, "floor"))}
    log.info("part 1: writing the %s-row input", f"{args.rows:,}")
    write_input(spark, src, args.rows)
    first = first_runs(spark, settings, model_dir, src, outs)
    paths = change_paths(spark, settings, model_dir, src, outs)
    times: dict[str, list[float]] = {name: [] for name in paths}
    results, next_id = [], args.rows
    for r in range(args.rounds):
        changes = change_input(spark, src, args.rows, r, next_id)
        next_id += changes["appended"]
        log.info("part 1, round %d: input at version %s after %s", r + 1, tables.version(spark, src), changes)
        for name in list(paths) if r % 2 == 0 else list(paths)[::-1]:
            log.info("part 1, round %d: %s", r + 1, name)
            seconds, counts = timed(paths[name])
            if counts is not None and len(counts) == 5:  # the floor times its MERGE alone
                seconds, counts = counts[4], counts[:4]
            times[name].append(seconds)
            if counts is not None:
                results.append((r + 1, name, changes, counts))
    log.info("part 1: comparing the outputs")
    checks = {"sparkship full": differing_rows(spark, outs[SP_INC], outs[SP_FULL]),
              "by hand, incremental": differing_rows(spark, outs[SP_INC], outs[HAND_INC]),
              "the floor": differing_rows(spark, outs[SP_INC], outs[FLOOR])}
    report_changes(args, first, times, results, checks, tables.read(spark, src).count())
    # The ratios compare like with like only if both MERGE targets mark rows the same way.
    for name in (SP_INC, HAND_INC, FLOOR):
        props = tables.identity(spark, outs[name]).properties
        print(f"Table properties of the output of {name}: " + ", ".join(f"{k}={props.get(k)}" for k in HAND_PROPERTIES))


def report_changes(args: argparse.Namespace, first: dict[str, float], times: dict[str, list[float]],
                   results: list[tuple[int, str, dict[str, int], tuple[str, int, int, int]]],
                   checks: dict[str, tuple[int, int, int, int]], input_rows: int) -> None:
    """Part 1's tables: the five paths' medians, the four ratios, each round's row counts, the output checks."""
    def ratio(a: str, b: str) -> float:
        return statistics.median(times[a]) / statistics.median(times[b])

    print(f"\n## 1. {args.rows:,}-row input, 1% updated + 0.5% deleted + 1% appended, then scored\n")
    print(f"Model: {args.model} ({MODELS[args.model]}). First full runs from empty (warm-up, not in the table): "
          + ", ".join(f"{name} {s:.2f} s" for name, s in first.items()) + "\n")
    print_ratio_table(times, SP_FULL, "path, on the changed input")
    goal = ratio(SP_INC, SP_FULL)
    print("\n| ratio of medians | value | reads as |\n| --- | ---: | --- |")
    print(f"| sparkship incremental / sparkship full | {goal:.3f}x | the goal, <= 0.15x: "
          f"{'met' if goal <= 0.15 else 'NOT met'} |")
    print(f"| by hand incremental / by hand full | {ratio(HAND_INC, HAND_FULL):.3f}x | what the required MERGE "
          "costs against a plain rewrite |")
    print(f"| sparkship incremental / by hand incremental | {ratio(SP_INC, HAND_INC):.3f}x | what sparkship adds "
          "to the same MERGE |")
    print(f"| floor / sparkship full | {ratio(FLOOR, SP_FULL):.3f}x | the least any MERGE-based incremental run "
          "takes: above 0.15x, the goal cannot be met by applying the changes with Delta's MERGE |")
    print("\n| round | path | changes (updated / deleted / appended) | mode | rows_in | scored | deleted keys |")
    print("| ---: | --- | --- | --- | ---: | ---: | ---: |")
    for r, name, ch, (mode, rows_in, scored, deleted) in results:
        print(f"| {r} | {name} | {ch['updated']:,} / {ch['deleted']:,} / {ch['appended']:,} | {mode} "
              f"| {rows_in:,} | {scored:,} | {deleted:,} |")
    print()
    for other, (only_inc, only_other, n_inc, n_other) in checks.items():
        same = only_inc == only_other == 0 and n_inc == n_other == input_rows
        print(f"Sparkship incremental and {other}, same (id, prediction) rows: {'yes' if same else 'NO'} "
              f"(incremental-only {only_inc}, {other}-only {only_other}; rows {n_inc:,} / {n_other:,}; "
              f"input rows {input_rows:,})")


def part_sizes(spark: Any, settings: Any, model_dir: str, work: str, args: argparse.Namespace) -> None:
    """Part 2: `sparkship score` in full into a fresh output against the raw transform + Delta write."""
    from sparkship import scoring
    from tests.helpers.scoring import MODEL

    def raw(src: str, out: str) -> None:
        hand_full(spark, model_dir, src, out)  # loads the model each time, as `sparkship score` loads it each run

    def ours(src: str, out: str) -> None:
        scoring.score(spark, settings, MODEL, src, out, KEYS, full=True)

    for size in args.sizes:
        src = os.path.join(work, f"input-{size}")
        log.info("part 2: writing the %s-row input", f"{size:,}")
        write_input(spark, src, size)
        times: dict[str, list[float]] = {"raw transform + Delta write": [], "sparkship score (full=True)": []}
        sides = [("raw transform + Delta write", raw), ("sparkship score (full=True)", ours)]
        for r in range(args.rounds):
            for name, fn in sides if r % 2 == 0 else sides[::-1]:
                log.info("part 2, %s rows, round %d: %s", f"{size:,}", r + 1, name)
                out = os.path.join(work, f"out-{size}-{r}-{'raw' if fn is raw else 'ours'}")
                times[name].append(timed(lambda fn=fn, out=out: fn(src, out))[0])
        print(f"\n## 2. {size:,} rows: a full run against the raw transform\n")
        print_ratio_table(times, "raw transform + Delta write", "path")
        shutil.rmtree(src, ignore_errors=True)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)

    from sparkship.config import Settings
    from sparkship.spark import get_spark

    work = tempfile.mkdtemp(prefix="incremental-bench-")
    home = os.path.join(work, "home")
    spark = get_spark(home=home)
    # New tables get deletion vectors, as Databricks workspaces create them by default: the input, and the outputs
    # (sparkship's and the by-hand ones alike), whose MERGEs then mark replaced rows instead of rewriting files.
    spark.conf.set(DV_DEFAULT, "true")
    settings = Settings.resolve(home=home)
    log.info("fitting and registering the model: %s", MODELS[args.model])
    model_dir = register_model(spark, settings, args.model)
    print("\n".join(machine_lines(spark) + [f"model: {args.model} ({MODELS[args.model]})"]))
    try:
        part_changes(spark, settings, model_dir, work, args)
        if not args.skip_sizes:
            part_sizes(spark, settings, model_dir, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
