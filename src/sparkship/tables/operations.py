"""Delta tables by path (or catalog name), through the engine the session uses (:mod:`.engine_choice`).

Every function checks its inputs once and calls one engine; :mod:`sparkship.tables` re-exports them.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sparkship.errors import NotFoundError
from sparkship.tables import writes
from sparkship.tables.changes import judge_range
from sparkship.tables.engine import DeltaEngine, MergeRequest, TableIdentity
from sparkship.tables.engine_choice import table_engine
from sparkship.tables.writes import check_schema

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


def read(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """The table at ``path`` as a DataFrame; ``version`` reads an older snapshot (time travel)."""
    delta = _existing(spark, path)
    return delta.read(spark, path, version)


def exists(spark: SparkSession, path: str) -> bool:
    """True when ``path`` (or the catalog name) holds a Delta table."""
    return table_engine(spark, path).exists(spark, path)


def version(spark: SparkSession, path: str) -> int | None:
    """The latest version of the table, or None when there is no table at ``path``."""
    delta = table_engine(spark, path)
    return delta.version(spark, path) if delta.exists(spark, path) else None


def history(spark: SparkSession, path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Commits, newest first: ``version``, ``timestamp`` (ms), ``operation``, ``parameters``."""
    return [c.to_dict() for c in _existing(spark, path).history(spark, path, limit)]


def schema(spark: SparkSession, path: str, version: int | None = None) -> StructType:
    """The table's Spark schema (from the Delta log; no DataFrame is planned)."""
    return _existing(spark, path).schema(spark, path, version)


def write(
    df: DataFrame,
    path: str,
    mode: str = "append",
    *,
    partition_by: Sequence[str] | None = None,
    replace_partitions: Mapping[str, Any] | None = None,
    expected_version: int | None = None,
    overwrite_schema: bool = False,
    properties: Mapping[str, str] | None = None,
) -> int:
    """Write ``df`` to the Delta table at ``path`` in one commit and return the version committed.

    Args:
        mode: ``append`` or ``overwrite``.
        partition_by: partition columns of a new table (an existing table keeps its own).
        replace_partitions: with ``overwrite``, replace only the partitions where each column equals its value
            (Delta's replaceWhere on partition columns); every written row must belong to them.
        expected_version: commit only if the table is still at this version (``-1``: the table must not exist);
            otherwise raise :class:`ConcurrentWriteError` and leave the table as it is.
        overwrite_schema: with ``overwrite``, replace the table's schema instead of checking against it.
        properties: table properties of a table this write creates, besides the Change Data Feed (which every
            table sparkship creates has).

    The schema is checked before any task runs: a mismatch raises :class:`SchemaMismatchError` naming the
    columns, and the table is untouched.
    """
    options = writes.WriteOptions(partition_by=partition_by, replace_partitions=replace_partitions,
                                  expected_version=expected_version, overwrite_schema=overwrite_schema,
                                  properties=properties)
    return writes.write(table_engine(df.sparkSession, path), df, path, mode, options)


def identity(spark: SparkSession, path: str) -> TableIdentity:
    """The table's Delta id (a re-created table gets a new one) and its current properties."""
    return _existing(spark, path).identity(spark, path)


def change_feed(spark: SparkSession, path: str, after_version: int, up_to_version: int) -> DataFrame:
    """The Change Data Feed of versions ``after_version`` (exclusive) to ``up_to_version`` (inclusive): the table's
    columns with ``_change_type``, ``_commit_version`` and ``_commit_timestamp``.

    Raises :class:`ChangeFeedUnavailableError` when the table did not record it over the whole range.
    """
    return table_engine(spark, path).change_feed(spark, path, after_version + 1, up_to_version)


def added_rows(spark: SparkSession, path: str, after_version: int, up_to_version: int) -> DataFrame:
    """Rows appended in versions ``after_version`` (exclusive) to ``up_to_version`` (inclusive), judged commit by
    commit from the table's history (:mod:`sparkship.tables.changes`): commits that change no row (OPTIMIZE...)
    are skipped.

    Raises :class:`NotAppendOnlyError` when a commit in between did more than append (an overwrite, DELETE,
    UPDATE or MERGE, deletion vectors included): the only safe choice is then a full re-read, which the caller
    must ask for.
    """
    delta = table_engine(spark, path)
    commits = delta.history(spark, path, None)
    runs = judge_range(path, commits, after_version, up_to_version)
    parts = [delta.appended_rows(spark, path, first, last) for first, last in runs]
    if not parts:  # nothing appended: an empty frame with the table's columns
        return delta.read(spark, path, up_to_version).limit(0)
    frame = parts[0]
    for part in parts[1:]:
        frame = frame.unionByName(part)
    return frame


def merge(source: DataFrame, path: str, keys: Sequence[str], *, op_column: str, expected_version: int,
          delete_unmatched: str | None = None) -> int:
    """Upsert ``source`` into the table at ``path`` by ``keys`` in ONE commit and return its version.

    Rows whose ``op_column`` is ``"delete"`` delete their key; the others replace the key's row or insert it (a
    null key matches nothing). ``delete_unmatched``: SQL on the target (alias ``t``) selecting rows to delete that
    no source row matched. ``expected_version`` makes the commit a compare-and-set (:class:`ConcurrentWriteError`
    otherwise, the table unchanged). The source's columns (less ``op_column``) must be the table's.
    """
    spark = source.sparkSession
    delta = _existing(spark, path)
    check_schema(source.drop(op_column).schema, delta.schema(spark, path, None), path)
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    return delta.merge(source, path, MergeRequest(predicate=on, op_column=op_column, write_id=uuid.uuid4().hex,
                                                  expected_version=expected_version, delete_unmatched=delete_unmatched))


def count_rows(spark: SparkSession, path: str, version: int) -> int:
    """Rows in ``version``, from Delta's file statistics where every file has them (no data read), else counted."""
    return table_engine(spark, path).count_rows(spark, path, version)


def rows_committed(spark: SparkSession, path: str, version: int) -> int | None:
    """Rows that the commit of ``version`` added (its write metrics), or None if the log does not say."""
    return table_engine(spark, path).rows_committed(spark, path, version)


def _existing(spark: SparkSession, path: str) -> DeltaEngine:
    """The session's engine for ``path``; :class:`NotFoundError` when there is no table there."""
    delta = table_engine(spark, path)
    if not delta.exists(spark, path):
        raise NotFoundError(f"no Delta table at {path}")
    return delta
