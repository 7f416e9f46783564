"""Compare-and-set on the native engine (delta-spark), proven with concurrent processes, each with its own JVM.

Every process has a local Spark session with Delta's jars, so the registry's tables are committed through
delta-spark (sparkship.tables.metadata.SparkStore) and the compare-and-set comes from Delta's own optimistic
concurrency (transaction identifiers).
"""
from __future__ import annotations

import multiprocessing
import os
import shutil

import pytest
from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import VectorAssembler

from sparkship import artifacts
from sparkship.config import Settings
from sparkship.registry import Registry

pytestmark = pytest.mark.seconds(47)

PROCESSES = 4


def _register_and_race_for_champion(home: str, staged: str, index: int) -> tuple[int, str]:
    """In a fresh process: a native Spark session, one registration, one CAS alias move from 'unset'."""
    from sparkship import tables
    from sparkship.config import Settings
    from sparkship.errors import SparkshipError
    from sparkship.registry import Registry
    from sparkship.spark import get_spark

    spark = get_spark(home=home)
    assert tables.engine_for(spark) == "native"
    registry = Registry(Settings.resolve(home=home))
    version = registry.register("churn", staged, run_id=f"proc-{index}").version
    try:
        registry.set_alias("churn", "champion", version, expect_version=0)
        outcome = "won"
    except SparkshipError as exc:
        outcome = f"lost: {exc}"
    return version, outcome


@pytest.fixture(scope="module")
def staged_copies(spark, tmp_path_factory) -> tuple[str, list[str]]:
    home = str(tmp_path_factory.mktemp("native-cas"))
    df = spark.createDataFrame([(float(i % 7), float(i % 2)) for i in range(60)], "a double, label double")
    model = Pipeline(stages=[VectorAssembler(inputCols=["a"], outputCol="features"),
                             LogisticRegression(maxIter=5)]).fit(df)
    manifest = {"name": "churn", "task": "classification", "label": "label", "algorithm": "logistic_regression",
                "metrics": {"accuracy": 0.5}, "signature": {"inputs": [{"name": "a", "type": "double"}]},
                "training": {"table": "/nowhere", "table_version": 0}}
    first = artifacts.stage(model, manifest, Settings.resolve(home=home).models_root)
    return home, [first] + [shutil.copytree(first, f"{first}-{i}") for i in range(1, PROCESSES)]


def test_concurrent_native_registrations_and_alias_moves_are_compare_and_set(staged_copies):
    home, staged = staged_copies
    env_before = os.environ.get("SPARKSHIP_DELTA_ENGINE")
    os.environ["SPARKSHIP_DELTA_ENGINE"] = "native"  # inherited by the spawned processes
    try:
        with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
            results = pool.starmap(_register_and_race_for_champion, [(home, s, i) for i, s in enumerate(staged)])
    finally:
        if env_before is None:
            os.environ.pop("SPARKSHIP_DELTA_ENGINE")
        else:
            os.environ["SPARKSHIP_DELTA_ENGINE"] = env_before
    versions = sorted(v for v, _ in results)
    assert versions == list(range(1, PROCESSES + 1))  # no gaps, no duplicates
    winners = [v for v, outcome in results if outcome == "won"]
    assert len(winners) == 1, results  # exactly one move from 'unset' wins; the others see it and lose
    registry = Registry(Settings.resolve(home=home))
    assert registry.alias_version("churn", "champion") == winners[0]
    assert [h["version"] for h in registry.alias_history("churn", "champion")] == winners
    # The tables really were committed by delta-spark: its engineInfo is in every commit of the versions table.
    from deltalake import DeltaTable

    infos = {c.get("engineInfo", "") for c in DeltaTable(registry.versions_path).history()}
    assert infos and all(i.startswith("Apache-Spark") for i in infos), infos
    # The events table is a log nobody compare-and-sets: its appends are blind (no transaction id to look up), and
    # concurrent ones all land. The versions table's commits each carry the CAS's transaction id.
    assert sorted(e["version"] for e in registry.events("churn", "registered")) == versions
    assert len(registry.events("churn", "alias_moved")) == 1
    assert _commit_kinds(registry.events_path) == {"blind append"}
    assert _commit_kinds(registry.versions_path) == {"compare-and-set"}


def _commit_kinds(table: str) -> set[str]:
    import json

    log = os.path.join(table, "_delta_log")
    kinds = set()
    for name in sorted(n for n in os.listdir(log) if n.endswith(".json")):
        with open(os.path.join(log, name)) as f:
            actions = [json.loads(line) for line in f if line.strip()]
        info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
        has_txn = any("txn" in a for a in actions)
        kinds.add("compare-and-set" if has_txn else "blind append" if info.get("isBlindAppend") else "other")
    return kinds


# --- the transaction path (sparkship.tables.transactions), with commits interleaved by hand -----------------------

def _one_row_table(spark, folder: str, n: int):  # noqa: ANN202 - a pyspark DataFrame
    from sparkship import tables

    df = spark.createDataFrame([(n, f"row {n}")], "n long, note string")
    if not tables.exists(spark, folder):
        tables.write(df, folder, "append", expected_version=-1)
    return df


def _rows(spark, folder: str) -> list[int]:
    return sorted(r.n for r in spark.read.format("delta").load(folder).collect())


def test_a_cas_append_takes_the_transaction_path_on_a_classic_session(spark, tmp_path):
    from sparkship import tables
    from sparkship.tables import transactions

    folder = str(tmp_path / "t")
    _one_row_table(spark, folder, 0)
    assert transactions.supported(spark)
    version = tables.write(_one_row_table(spark, folder, 1), folder, "append", expected_version=0)
    assert version == 1 and _rows(spark, folder) == [0, 1]
    info = spark.sql(f"DESCRIBE HISTORY delta.`{folder}`").where("version = 1").first()
    assert info.isBlindAppend is False  # it read the whole table: the mark of the transaction path
    assert _commit_kinds(folder) == {"compare-and-set"}


def test_two_prepared_appends_at_one_version_commit_once(spark, tmp_path):
    from sparkship.errors import ConcurrentWriteError
    from sparkship.tables import transactions

    folder = str(tmp_path / "t")
    _one_row_table(spark, folder, 0)
    first = transactions.prepare_write(_one_row_table(spark, folder, 1), folder, expected_version=0, write_id="a")
    second = transactions.prepare_write(_one_row_table(spark, folder, 2), folder, expected_version=0, write_id="b")
    assert transactions.commit_write(first) == 1
    with pytest.raises(ConcurrentWriteError, match="conflicted with a concurrent commit"):
        transactions.commit_write(second)
    assert _rows(spark, folder) == [0, 1]


@pytest.mark.parametrize("winner_rows", [1, 0], ids=["rows", "no-rows"])
def test_a_commit_through_the_write_options_beats_a_prepared_append(spark, tmp_path, winner_rows):
    """What a Spark Connect client commits (Delta's txnAppId/txnVersion options) is a conflict for it too, even
    one that adds no rows (no files to conflict on: its transaction id is the conflict)."""
    from sparkship import tables
    from sparkship.errors import ConcurrentWriteError
    from sparkship.tables import transactions

    folder = str(tmp_path / "t")
    _one_row_table(spark, folder, 0)
    prepared = transactions.prepare_write(_one_row_table(spark, folder, 1), folder, expected_version=0, write_id="a")
    (_one_row_table(spark, folder, 2).limit(winner_rows).write.format("delta").mode("append")
     .option("txnAppId", "sparkship").option("txnVersion", "1").save(folder))
    assert spark.read.format("delta").load(folder).count() == 1 + winner_rows and tables.version(spark, folder) == 1
    with pytest.raises(ConcurrentWriteError):
        transactions.commit_write(prepared)
    assert _rows(spark, folder) == [0, 2][: 1 + winner_rows]


def test_the_write_options_path_skips_a_version_the_transaction_path_took(spark, tmp_path):
    from sparkship import tables

    folder = str(tmp_path / "t")
    _one_row_table(spark, folder, 0)
    assert tables.write(_one_row_table(spark, folder, 1), folder, "append", expected_version=0) == 1
    # A client that also expected version 0 (through the options) finds its transaction id taken: Delta skips it.
    (_one_row_table(spark, folder, 2).write.format("delta").mode("append")
     .option("txnAppId", "sparkship").option("txnVersion", "1").save(folder))
    assert tables.version(spark, folder) == 1 and _rows(spark, folder) == [0, 1]


def test_a_prepared_append_at_the_wrong_version_writes_nothing(spark, tmp_path):
    from sparkship.errors import ConcurrentWriteError
    from sparkship.tables import transactions

    folder = str(tmp_path / "t")
    _one_row_table(spark, folder, 0)
    files_before = sorted(os.listdir(folder))
    with pytest.raises(ConcurrentWriteError, match="is at version 0, not 3"):
        transactions.prepare_write(_one_row_table(spark, folder, 1), folder, expected_version=3, write_id="a")
    assert sorted(os.listdir(folder)) == files_before and _rows(spark, folder) == [0]


# --- metadata appends from Arrow in the transaction (sparkship.tables.transactions.append_arrow) ------------------

META_SCHEMA = "seq long, note string, at timestamp, ok boolean, score double"


def _meta_rows(first: int, n: int):  # noqa: ANN202 - a pyarrow Table
    from datetime import datetime, timedelta, timezone

    import pyarrow as pa

    start = datetime(2026, 12, 3, 9, 30, tzinfo=timezone.utc)
    return pa.Table.from_pylist(
        [{"seq": i, "note": f"row {i}" if i % 3 else None, "at": start + timedelta(seconds=i, microseconds=7),
          "ok": i % 2 == 0, "score": i / 4} for i in range(first, first + n)],
        schema=pa.schema([("seq", pa.int64()), ("note", pa.string()), ("at", pa.timestamp("us", tz="UTC")),
                          ("ok", pa.bool_()), ("score", pa.float64())]),
    )


def _spark_jobs_of(spark, group: str, run):  # noqa: ANN001, ANN202
    """``run()``'s result and the Spark jobs it launched that ran a stage (a table's first commit launches one
    without any stage: no task runs)."""
    spark.sparkContext.setJobGroup(group, group)
    try:
        result = run()
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    tracker = spark.sparkContext.statusTracker()
    return result, sum(1 for j in tracker.getJobIdsForGroup(group) if tracker.getJobInfo(j).stageIds)


def test_metadata_appends_commit_from_arrow_without_a_spark_job(spark, tmp_path):
    from chispa import assert_df_equality
    from deltalake import DeltaTable

    from sparkship.tables import metadata

    folder = str(tmp_path / "meta")
    committed, jobs = _spark_jobs_of(spark, "arrow-appends", lambda: [
        metadata.append_arrow(folder, _meta_rows(0, 2), expected_version=-1),  # creates the table
        metadata.append_arrow(folder, _meta_rows(2, 3), expected_version=0),
        metadata.append_arrow(folder, _meta_rows(5, 1)),
        metadata.append_arrow(folder, _meta_rows(6, 2), append_only=True),
    ])
    assert committed == [0, 1, 2, 3] and jobs == 0

    expected = spark.createDataFrame(_meta_rows(0, 8).to_pylist(), META_SCHEMA)
    assert_df_equality(spark.read.format("delta").load(folder).orderBy("seq"), expected,
                       ignore_nullable=True)
    assert DeltaTable(folder).to_pyarrow_table().sort_by("seq").equals(_meta_rows(0, 8))
    kinds = [_commit_kinds_of_version(folder, v) for v in (0, 1, 2, 3)]
    assert kinds == ["compare-and-set", "compare-and-set", "compare-and-set", "blind append"]
    schema = spark.read.format("delta").load(folder).schema
    assert [(f.name, f.dataType.simpleString(), f.nullable) for f in schema.fields] == [
        ("seq", "bigint", True), ("note", "string", True), ("at", "timestamp", True), ("ok", "boolean", True),
        ("score", "double", True)]


def _commit_kinds_of_version(table: str, version: int) -> str:
    from tests.helpers.reliability import commit_actions  # noqa: E402 - tests/ helper

    actions = commit_actions(table, version)
    info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
    if any("txn" in a for a in actions):
        return "compare-and-set"
    return "blind append" if info.get("isBlindAppend") else "other"


def test_a_metadata_append_at_a_stale_version_writes_nothing(spark, tmp_path):
    from sparkship.errors import ConcurrentWriteError
    from sparkship.tables import metadata

    folder = str(tmp_path / "meta")
    metadata.append_arrow(folder, _meta_rows(0, 1), expected_version=-1)
    assert metadata.append_arrow(folder, _meta_rows(1, 1), expected_version=0) == 1
    files_before = sorted(os.listdir(folder))
    with pytest.raises(ConcurrentWriteError, match="is at version 1, not 0"):
        metadata.append_arrow(folder, _meta_rows(2, 1), expected_version=0)
    assert sorted(os.listdir(folder)) == files_before
    assert sorted(r.seq for r in spark.read.format("delta").load(folder).collect()) == [0, 1]


def test_a_metadata_append_of_other_types_is_refused_naming_the_column(spark, tmp_path):
    import pyarrow as pa

    from sparkship.errors import SchemaMismatchError
    from sparkship.tables import metadata

    folder = str(tmp_path / "meta")
    metadata.append_arrow(folder, _meta_rows(0, 1), expected_version=-1)
    retyped = _meta_rows(1, 1).set_column(0, "seq", pa.array(["one"]))
    files_before = sorted(os.listdir(folder))
    with pytest.raises(SchemaMismatchError, match="seq"):
        metadata.append_arrow(folder, retyped, expected_version=0)
    assert sorted(os.listdir(folder)) == files_before


def test_a_table_with_constraints_keeps_delta_s_own_checks(spark, tmp_path):
    """A NOT NULL column and a CHECK constraint are enforced by Delta's writer: such tables are not written from
    Arrow (a Spark job runs), and a row that breaks them is refused with the table unchanged."""
    from sparkship.tables import metadata

    folder = str(tmp_path / "strict")
    spark.sql(f"CREATE TABLE delta.`{folder}` (seq BIGINT NOT NULL, note STRING, at TIMESTAMP, ok BOOLEAN, "
              "score DOUBLE) USING delta")
    spark.sql(f"ALTER TABLE delta.`{folder}` ADD CONSTRAINT small_score CHECK (score < 100)")
    version = metadata.table_version(folder)
    committed, jobs = _spark_jobs_of(spark, "strict-append",
                                     lambda: metadata.append_arrow(folder, _meta_rows(0, 2), expected_version=version))
    assert committed == version + 1 and jobs > 0
    too_big = _meta_rows(400, 1)  # score 100.0
    with pytest.raises(Exception, match="small_score"):
        metadata.append_arrow(folder, too_big, expected_version=committed)
    assert sorted(r.seq for r in spark.read.format("delta").load(folder).collect()) == [0, 1]
