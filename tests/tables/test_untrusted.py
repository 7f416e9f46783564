"""Delta logs and values sparkship did not choose: data file paths that leave the table, partition values with
characters that mean something in a path. Real Spark writes, real tables on disk, read back by delta-rs and
duckdb as independent readers."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkship import tables
from sparkship.errors import IntegrityError, InvalidDataError
from sparkship.tables import files as delta_files
from tests.helpers.readers import deltalake_table, duckdb_table

pytestmark = pytest.mark.seconds(46)

SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("p", pa.string())])


def _small_table(path: str) -> None:
    """A two-version table: version 0 by the writer, version 1 appended by hand below."""
    files = delta_files.write_data_files(path, pa.table({"id": [1, 2], "p": ["a", "a"]}, schema=SCHEMA), SCHEMA, ["p"])
    delta_files.commit_files(path, files, SCHEMA, overwrite=False, partition_by=["p"], replace_partitions=None,
                             expected_version=None, write_id="w0")


def _append_add_action(path: str, rel: str, size: int) -> None:
    """Version 1 of the table: a hand-written commit adding ``rel`` (what a tampered or foreign log holds)."""
    add = {"add": {"path": rel, "partitionValues": {"p": "a"}, "size": size, "modificationTime": 1,
                   "dataChange": True, "stats": json.dumps({"numRecords": 1})}}
    with open(os.path.join(path, "_delta_log", f"{1:020d}.json"), "w") as fh:
        # It says it appended, as a forged commit would: incremental reads take it as an append.
        info = {"timestamp": 1, "operation": "WRITE", "operationParameters": {"mode": "Append"}, "isBlindAppend": True}
        fh.write(json.dumps({"commitInfo": info}) + "\n" + json.dumps(add) + "\n")


@pytest.fixture
def outside_file(tmp_path) -> tuple[str, int]:
    """A parquet file next to the table, readable and the right size: only its place is wrong."""
    secret = tmp_path / "secret"
    secret.mkdir()
    pq.write_table(pa.table({"id": [999]}), secret / "x.parquet")
    return str(secret / "x.parquet"), os.path.getsize(secret / "x.parquet")


ESCAPES = [
    "../secret/x.parquet",
    "p=a/../../secret/x.parquet",
    "%2E%2E/secret/x.parquet",                      # '..' percent-encoded
    "p=a%2F..%2F..%2Fsecret/x.parquet",             # '/..' hidden in an encoded folder name
    "{absolute}",
    "file://{absolute}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_a_data_file_outside_the_table_is_refused_naming_the_table(spark, tmp_path, outside_file, template):
    absolute, size = outside_file
    path = str(tmp_path / "t")
    _small_table(path)
    rel = template.format(absolute=absolute)
    _append_add_action(path, rel, size)
    with pytest.raises(IntegrityError, match=f"Delta table {path}: its log lists data file .*outside the table"):
        tables.read_arrow(path)
    # Through Spark (either engine) the read is planned from the same checked listing: it fails with our message.
    with pytest.raises(Exception, match=f"Delta table {path}: its log lists data file"):
        tables.read(spark, path).collect()
    with pytest.raises(Exception, match="outside the table"):
        tables.added_rows(spark, path, 0, 1).collect()
    # The version before the bad commit still reads, and never held the outside file's row.
    assert sorted(r["id"] for r in tables.read_arrow(path, version=0).to_pylist()) == [1, 2]


def test_a_split_naming_an_outside_file_is_refused_in_the_read_task(tmp_path, outside_file):
    """The read task checks again: a split is only a list of paths."""
    absolute, size = outside_file
    path = str(tmp_path / "t")
    _small_table(path)
    with pytest.raises(IntegrityError, match="outside the table"):
        list(delta_files.read_batches(path, [(os.path.relpath(absolute, path), {"p": "a"}, size)], SCHEMA))


# --- partition values that mean something in a path ----------------------------------------------------------

# '%', ' ', '/', '=', ':', '#', '?', '\', unicode (incl. astral), control characters; '' is Delta's null (below).
# NUL cannot name a folder on any file system: it is refused (test below).
special = st.text(
    alphabet=st.one_of(st.sampled_from("%/= :#?\\+.~\t\n"), st.characters(codec="utf-8", exclude_characters="\x00")),
    min_size=1, max_size=10,
)
values = st.lists(st.one_of(st.none(), special), min_size=1, max_size=4)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values)
def test_partition_values_round_trip_and_read_the_same_in_delta_rs_and_duckdb(spark, tmp_path_factory, chosen):
    path = str(tmp_path_factory.mktemp("parts") / "t")
    rows = [(i, value, None if i % 3 == 0 else i * 10) for i, value in enumerate(chosen * 2)]
    df = spark.createDataFrame(rows, "id long, p string, q long")
    tables.write(df, path, mode="overwrite", partition_by=["p", "q"])
    assert_df_equality(tables.read(spark, path).select(*df.columns), df, ignore_row_order=True,
                       ignore_nullable=True)
    # delta-rs and duckdb give Arrow rows: compared as Python values, exactly, with no Spark job in between.
    expected = sorted(rows)
    for reader in (deltalake_table, duckdb_table):
        got = sorted((r["id"], r["p"], r["q"]) for r in reader(path).to_pylist())
        assert got == expected, reader.__name__
    # Every data file stays inside the table folder, whatever the value held.
    for rel, _, _ in delta_files.list_files(path, None):
        assert os.path.isfile(delta_files.inside_table(path, rel))


@pytest.mark.parametrize("value", ["\x00", "day\x001"])
def test_a_nul_in_a_partition_value_is_refused_by_both_engines_and_nothing_is_committed(spark, engine, tmp_path,
                                                                                         value):
    path = str(tmp_path / "nul")
    tables.write(spark.createDataFrame([(0, "a")], "id long, p string"), path, mode="overwrite", partition_by=["p"])
    bad = spark.createDataFrame([(1, "b"), (2, value)], "id long, p string")
    with pytest.raises(InvalidDataError, match=r"partition column 'p' holds .*NUL character.*nothing was committed"):
        tables.write(bad, path, mode="append")
    assert tables.version(spark, path) == 0
    assert [r.id for r in tables.read(spark, path).collect()] == [0]


def test_an_empty_partition_value_is_null_in_every_reader(spark, tmp_path):
    """Delta stores a partition value "" as null (delta-spark does the same); all three readers agree."""
    path = str(tmp_path / "e")
    tables.write(spark.createDataFrame([(1, ""), (2, None), (3, " ")], "id long, p string"), path, mode="overwrite",
                 partition_by=["p"])
    expected = {1: None, 2: None, 3: " "}
    assert {r.id: r.p for r in tables.read(spark, path).collect()} == expected
    assert {r["id"]: r["p"] for r in deltalake_table(path).to_pylist()} == expected
    assert {r["id"]: r["p"] for r in duckdb_table(path).to_pylist()} == expected
