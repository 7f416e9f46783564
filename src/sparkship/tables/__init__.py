"""Delta tables by path (or catalog name), on whichever Delta engine the session uses.

Two engines sit behind the same functions: ``native`` (``format("delta")`` and the delta-spark API: Databricks, or
a JVM with Delta's jars) and ``deltars`` (a Spark Python Data Source over delta-rs, for machines without the
jars). :mod:`sparkship.tables.engine_choice` is the only module that knows which one runs. Small metadata tables
(the registry, scoring state) are read and written with Arrow (:func:`read_arrow`, :func:`append_arrow`).
This package only re-exports; the layering is described in docs/DESIGN.md.

Example::

    from sparkship import tables
    from sparkship.spark import get_spark

    spark = get_spark()
    df = spark.createDataFrame([(1, "a"), (2, "b")], "id long, name string")
    v0 = tables.write(df, "/tmp/people", mode="overwrite")
    v1 = tables.write(df, "/tmp/people", mode="append")
    assert tables.read(spark, "/tmp/people", version=v0).count() == 2
    assert [h["version"] for h in tables.history(spark, "/tmp/people")] == [v1, v0]
"""
from __future__ import annotations

from sparkship.errors import ConcurrentWriteError, SchemaMismatchError
from sparkship.tables import metadata
from sparkship.tables.engine import (
    ChangeFeedUnavailableError,
    Commit,
    DeltaEngine,
    MergeRequest,
    NotAppendOnlyError,
    TableIdentity,
    UnsupportedFilesystemError,
    UnsupportedTableFeatureError,
    WriteRequest,
    is_table_name,
)
from sparkship.tables.engine_choice import ENGINES, MissingJarsError, choose_engine, use_engine
from sparkship.tables.engine_choice import engine_name as engine_for
from sparkship.tables.files import table_exists
from sparkship.tables.metadata import append_arrow, read_arrow, table_version
from sparkship.tables.operations import (
    added_rows,
    change_feed,
    count_rows,
    exists,
    history,
    identity,
    merge,
    read,
    rows_committed,
    schema,
    version,
    write,
)
from sparkship.tables.writes import check_schema

engine = choose_engine

__all__ = [
    "ENGINES", "engine_for", "engine", "choose_engine", "use_engine", "read", "write", "exists", "version",
    "history", "schema", "added_rows", "change_feed", "identity", "merge", "count_rows", "rows_committed",
    "check_schema", "read_arrow", "append_arrow", "table_exists", "table_version", "metadata",
    "NotAppendOnlyError", "ConcurrentWriteError", "SchemaMismatchError", "UnsupportedFilesystemError",
    "ChangeFeedUnavailableError", "UnsupportedTableFeatureError", "MissingJarsError", "TableIdentity",
    "DeltaEngine", "WriteRequest", "MergeRequest", "Commit", "is_table_name",
]
