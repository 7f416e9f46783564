"""Delta tables through sparkship.tables: real Spark, real tables on disk, read back by independent engines."""
from __future__ import annotations

import datetime as dt
import functools
import json
import os

import pyarrow as pa
import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkship import tables
from sparkship.cli import main
from sparkship.errors import ConcurrentWriteError, SchemaMismatchError, SparkshipError
from sparkship.tables.files import commit_versions
from tests.helpers.readers import deltalake_table, duckdb_table
from tests.helpers.reliability import commit_actions

pytestmark = [pytest.mark.seconds(143), pytest.mark.quick]

SCHEMA = "id long, name string, score double, day date, at timestamp"


def _rows(n0: int, n: int) -> list[tuple]:
    return [
        (i, None if i % 7 == 0 else f"n{i % 3}", None if i % 5 == 0 else i / 4, dt.date(2024, 1, 1 + i % 3),
         dt.datetime(2024, 1, 1, 12, 0, i % 60, tzinfo=dt.timezone.utc))
        for i in range(n0, n0 + n)
    ]


@pytest.fixture(autouse=True)
def _on_both_engines(engine):
    """Every test here runs on delta-spark and on the delta-rs data source."""


@pytest.fixture
def people(spark):
    return spark.createDataFrame(_rows(0, 40), SCHEMA)


def test_create_append_overwrite_and_time_travel(spark, tmp_path, people):
    path = str(tmp_path / "t")
    v0 = tables.write(people, path, mode="overwrite")
    v1 = tables.write(people.where("id < 10"), path, mode="append")
    v2 = tables.write(people.where("id >= 30"), path, mode="overwrite")
    assert (v0, v1, v2) == (0, 1, 2)
    assert tables.version(spark, path) == 2
    assert_df_equality(tables.read(spark, path, version=0), people, ignore_row_order=True)
    assert_df_equality(tables.read(spark, path, version=1), people.unionByName(people.where("id < 10")),
                       ignore_row_order=True)
    assert_df_equality(tables.read(spark, path), people.where("id >= 30"), ignore_row_order=True)
    history = tables.history(spark, path)
    assert [h["version"] for h in history] == [2, 1, 0]
    assert [h["parameters"].get("mode") for h in history[:2]] == ["Overwrite", "Append"]


@pytest.mark.parametrize("compare_and_set", [False, True], ids=["plain", "compare-and-set"])
def test_partition_overwrite_replaces_only_that_partition(spark, tmp_path, people, compare_and_set):
    """With ``expected_version`` on delta-spark, the overwrite runs in sparkship's own Delta transaction
    (sparkship.tables.transactions); without it, through Delta's replaceWhere option."""
    path = str(tmp_path / "p")
    tables.write(people, path, mode="overwrite", partition_by=["day"])
    assert os.path.isdir(os.path.join(path, "day=2024-01-02"))
    new_rows = spark.createDataFrame(
        [(1000, "new", 1.0, dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc))], SCHEMA
    )

    def expected_version() -> dict:
        return {"expected_version": tables.version(spark, path)} if compare_and_set else {}

    tables.write(new_rows, path, mode="overwrite", replace_partitions={"day": dt.date(2024, 1, 2)},
                 **expected_version())
    expected = people.where(F.col("day") != F.lit(dt.date(2024, 1, 2))).unionByName(new_rows)
    assert_df_equality(tables.read(spark, path), expected, ignore_row_order=True)
    assert_df_equality(spark.createDataFrame(deltalake_table(path).to_pandas(), SCHEMA), expected,
                       ignore_row_order=True)
    # Rows outside the partition being replaced are refused and nothing changes.
    before = tables.version(spark, path)
    with pytest.raises(SparkshipError, match="outside the partitions being replaced"):
        tables.write(people, path, mode="overwrite", replace_partitions={"day": dt.date(2024, 1, 2)},
                     **expected_version())
    assert tables.version(spark, path) == before
    # A whole-table overwrite that keeps the schema.
    tables.write(new_rows, path, mode="overwrite", **expected_version())
    assert_df_equality(tables.read(spark, path), new_rows)


def test_schema_mismatch_names_the_columns_and_leaves_the_table(spark, tmp_path, people):
    path = str(tmp_path / "s")
    tables.write(people, path, mode="overwrite")
    files_before = sorted(os.listdir(path))
    wrong_type = people.withColumn("score", F.col("score").cast("string"))
    with pytest.raises(SchemaMismatchError, match="column 'score' is string, the table has double"):
        tables.write(wrong_type, path)
    with pytest.raises(SchemaMismatchError, match=r"missing columns \['name'\]; unexpected columns \['extra'\]"):
        tables.write(people.drop("name").withColumn("extra", F.lit(1)), path)
    assert tables.version(spark, path) == 0
    assert sorted(os.listdir(path)) == files_before  # checked before any task wrote a file
    # Columns in another order are matched by name.
    tables.write(people.select(*reversed(people.columns)), path)
    assert tables.version(spark, path) == 1


def test_failed_job_leaves_no_commit(spark, tmp_path, people):
    """A task failure mid-write commits nothing: same version, same rows (stray files stay unreferenced)."""
    path = str(tmp_path / "f")
    tables.write(people, path, mode="overwrite")

    @F.udf("double")
    def explode_on_17(x):
        if x == 17:
            raise ValueError("boom")
        return float(x)

    with pytest.raises(Exception, match="boom"):
        tables.write(people.withColumn("score", explode_on_17("id")), path)
    assert tables.version(spark, path) == 0
    assert_df_equality(tables.read(spark, path), people, ignore_row_order=True)


def test_expected_version_is_a_compare_and_set(spark, tmp_path, people):
    path = str(tmp_path / "c")
    with pytest.raises(ConcurrentWriteError):
        tables.write(people, path, expected_version=0)
    assert tables.write(people, path, expected_version=-1) == 0
    assert tables.write(people, path, expected_version=0) == 1
    with pytest.raises(ConcurrentWriteError):
        tables.write(people, path, expected_version=0)
    assert tables.version(spark, path) == 1


def test_added_rows_between_versions(spark, tmp_path, people):
    path = str(tmp_path / "a")
    tables.write(people.where("id < 10"), path, mode="overwrite")
    tables.write(people.where("id between 10 and 19"), path)
    tables.write(people.where("id between 20 and 24"), path)
    assert_df_equality(tables.added_rows(spark, path, 0, 2), people.where("id between 10 and 24"),
                       ignore_row_order=True)
    assert tables.added_rows(spark, path, 2, 2).count() == 0
    tables.write(people, path, mode="overwrite")
    with pytest.raises(tables.NotAppendOnlyError,
                       match="changed by more than appends after version 2: WRITE at version 3"):
        tables.added_rows(spark, path, 2, 3)


def test_tables_read_identically_with_the_other_engine_deltalake_and_duckdb(spark, tmp_path, people, engine):
    path = str(tmp_path / "x")
    tables.write(people, path, mode="overwrite", partition_by=["name"])
    tables.write(spark.createDataFrame(_rows(100, 15), SCHEMA), path)
    ours = tables.read(spark, path)
    by_deltalake = spark.createDataFrame(deltalake_table(path).to_pandas(), ours.schema).select(*ours.columns)
    by_duckdb = spark.createDataFrame(duckdb_table(path).to_pandas(), ours.schema).select(*ours.columns)
    assert ours.count() == 55
    assert_df_equality(by_deltalake, ours, ignore_row_order=True)
    assert_df_equality(by_duckdb, ours, ignore_row_order=True)
    other = next(e for e in tables.ENGINES if e != engine)
    tables.use_engine(spark, other)
    by_other = tables.read(spark, path).select(*ours.columns)
    assert_df_equality(by_other, ours, ignore_row_order=True)
    assert tables.history(spark, path)[0]["version"] == 1
    # ...and the other engine can append to it: the first engine reads that back.
    tables.write(spark.createDataFrame(_rows(200, 3), SCHEMA), path)
    tables.use_engine(spark, engine)
    assert tables.read(spark, path).count() == 58
    # Time travel agrees too.
    assert deltalake_table(path, version=0).num_rows == tables.read(spark, path, version=0).count() == 40


def test_file_statistics_keep_nan_and_infinity_rows_findable_by_delta_spark(spark, tmp_path):
    """Delta-spark skips files by their min/max statistics, in which Spark orders NaN above every number. Statistics
    that leave a NaN out, or that are not valid JSON (``Infinity``), would make a filter lose rows or fail."""
    path = str(tmp_path / "floats")
    inf, nan = float("inf"), float("nan")
    rows = [(i, x, i / 4) for i, x in enumerate([1.0, nan, 2.0, inf, -inf, 3.0, None, nan], start=1)]
    tables.write(spark.createDataFrame(rows, "id long, x double, y double").coalesce(1), path, mode="overwrite")
    tables.write(spark.createDataFrame([(9, nan, 9.0)], "id long, x double, y double"), path)  # NaN only in x
    adds = [a["add"] for version in commit_versions(path) for a in commit_actions(path, version) if "add" in a]
    stats = [json.loads(add["stats"], parse_constant=lambda token, add=add: pytest.fail(f"{token} in {add}"))
             for add in adds]  # strict JSON: Delta's parser refuses NaN, Infinity
    assert [(s["minValues"].get("y"), s["maxValues"].get("y"), s["nullCount"]["x"]) for s in stats] == [
        (0.25, 2.0, 1), (9.0, 9.0, 0)]  # a finite column keeps its range, so files are still skipped on it
    plain = spark.createDataFrame(rows + [(9, nan, 9.0)], "id long, x double, y double")
    conditions = ("x > 5", "x = double('NaN')", "x >= 2", "x < 0", "x <= 1", "isnan(x)", "x is null", "y > 5")

    def found(table):  # one scan per condition (each skips files on its own), compared in one chispa call
        return functools.reduce(DataFrame.unionAll, [table.where(c).select(F.lit(c).alias("condition"), "id")
                                                     for c in conditions])

    for table in (spark.read.format("delta").load(path), tables.read(spark, path)):  # delta-spark itself, ours
        assert_df_equality(found(table), found(plain), ignore_row_order=True, ignore_nullable=True)


def _append_worker(path: str, worker: int, batches: int, engine: str, home: str) -> list[int]:
    """Appends from a fresh process: through a Spark session on the native engine, through delta-rs otherwise."""

    if engine == "native":
        from sparkship.spark import get_spark

        spark = get_spark(home=home)
        assert tables.engine_for(spark) == "native"
        return [tables.write(spark.createDataFrame([(worker * 1000 + b, f"w{worker}")], "id int, who string"), path)
                for b in range(batches)]
    from sparkship.tables import append_arrow

    return [
        append_arrow(path, pa.table({"id": pa.array([worker * 1000 + b], pa.int32()), "who": [f"w{worker}"]}))
        for b in range(batches)
    ]


@pytest.mark.slow
def test_concurrent_appends_from_separate_processes(spark, tmp_path, engine):
    """Four processes append to one table at once: every row lands, once, each commit in its own version."""
    import multiprocessing

    path = str(tmp_path / "conc")
    tables.write(spark.createDataFrame([(-1, "seed")], "id int, who string"), path, mode="overwrite")
    # spawn, not fork: delta-rs' runtime does not survive a fork (see shared NOTES).
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        versions = pool.starmap(_append_worker, [(path, w, 5, engine, str(tmp_path / f"home{w}")) for w in range(4)])
    committed = sorted(v for vs in versions for v in vs)
    assert committed == list(range(1, 21))  # 20 commits, each its own version, none lost
    result = tables.read(spark, path)
    assert result.count() == 21
    assert result.select("id").distinct().count() == 21


def test_cli_import_show_history_json(spark, tmp_path, capsys, home):
    src = tmp_path / "x.csv"
    src.write_text("id,name,score\n1,a,1.5\n2,b,\n3,c,2.5\n")
    table = str(tmp_path / "imported")
    assert main(["tables", "import", "--source", str(src), "--table", table, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"table": table, "version": 0, "rows": 3}
    assert main(["tables", "show", table, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["schema"] == [{"name": "id", "type": "int"}, {"name": "name", "type": "string"},
                               {"name": "score", "type": "double"}]
    assert sorted(r["id"] for r in shown["rows"]) == [1, 2, 3]
    assert main(["tables", "import", "--source", str(src), "--table", table, "--json"]) == 0
    capsys.readouterr()
    assert main(["tables", "history", table, "--json"]) == 0
    assert [h["version"] for h in json.loads(capsys.readouterr().out)["history"]] == [1, 0]
    # A file whose schema differs is refused, naming the column; the table stays at version 1.
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,score\n1,a,high\n")
    assert main(["tables", "import", "--source", str(bad), "--table", table, "--json"]) == 1
    assert "column 'score': 'high' does not parse as double" in json.loads(capsys.readouterr().out)["error"]
    assert tables.version(spark, table) == 1
    assert main(["tables", "show", str(tmp_path / "missing"), "--json"]) == 1
    assert "no Delta table" in json.loads(capsys.readouterr().out)["error"]


def test_a_table_with_spark_ml_vectors_reads_on_the_native_engine(spark, tmp_path):
    """delta-rs cannot open a schema with Spark ML's vector type (a UDT); the native engine still writes, reads
    (also pinned to a version) and versions such a table."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import Vectors

    before = tables.engine_for(spark)
    tables.use_engine(spark, "native")
    try:
        path = str(tmp_path / "vectors")
        df = spark.createDataFrame([(1, Vectors.dense([1.0, 2.0])), (2, Vectors.sparse(2, [1], [3.0]))], ["id", "v"])
        v0 = tables.write(df, path, mode="overwrite")
        tables.write(df.limit(1), path, mode="append")
        as_arrays = functools.partial(lambda d: d.select("id", vector_to_array("v").alias("v")))
        assert_df_equality(as_arrays(tables.read(spark, path, version=v0)), as_arrays(df), ignore_row_order=True)
        assert tables.read(spark, path).count() == 3 and tables.version(spark, path) == v0 + 1
    finally:
        tables.use_engine(spark, before)
