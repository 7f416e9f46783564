"""Delta tables by path: the only module that knows which Delta engine runs.

Two engines sit behind the same functions: ``native`` (``format("delta")`` and the delta-spark API: Databricks, or
a JVM with Delta's jars) and ``deltars`` (a Spark Python Data Source over delta-rs, for machines without the
jars). The engine is detected once per session; ``SPARKSHIP_DELTA_ENGINE=native|deltars`` overrides it. Small
metadata tables (the registry, scoring state) are read and written with Arrow (:func:`read_arrow`,
:func:`append_arrow`).

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

import os
import uuid
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from sparkship.errors import (
    ConcurrentWriteError,
    InvalidDataError,
    NotFoundError,
    SchemaMismatchError,
    SparkshipError,
    UsageError,
)
from sparkship.spark import DELTA_EXTENSION, ENGINE_ENV, MissingJarsError
from sparkship.tables import metadata
from sparkship.tables.deltars import DeltaRsEngine
from sparkship.tables.changes import judge_range
from sparkship.tables.engine import (
    CREATED_TABLE_PROPERTIES,
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
from sparkship.tables.metadata import append_arrow, read_arrow, table_exists, table_version
from sparkship.tables.native import NativeEngine

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

ENGINES = ("native", "deltars")
_ENGINE_CONF = "spark.sparkship.deltaEngine"

__all__ = [
    "engine_for",
    "read",
    "write",
    "exists",
    "version",
    "history",
    "schema",
    "added_rows",
    "change_feed",
    "identity",
    "merge",
    "count_rows",
    "rows_committed",
    "check_schema",
    "read_arrow",
    "append_arrow",
    "table_exists",
    "table_version",
    "metadata",
]


ENGINE_INSTANCES: dict[str, DeltaEngine] = {"native": NativeEngine(), "deltars": DeltaRsEngine()}


def _session_has_delta(spark: "SparkSession") -> bool:
    """True when the session runs delta-spark (its SQL extension is configured)."""
    try:
        return "DeltaSparkSessionExtension" in (spark.conf.get("spark.sql.extensions", "") or "")
    except Exception:  # noqa: BLE001 - a Connect server may refuse to show a static conf
        return False


def engine_for(spark: "SparkSession") -> str:
    """The Delta engine this session uses: ``native`` or ``deltars`` (registering the data source if needed).

    ``SPARKSHIP_DELTA_ENGINE`` chooses; otherwise ``native`` on Databricks and wherever the session has
    delta-spark, ``deltars`` elsewhere.
    """
    chosen = spark.conf.get(_ENGINE_CONF, None)
    if chosen:
        return chosen
    from sparkship.spark import on_databricks

    chosen = os.environ.get(ENGINE_ENV, "").strip().lower()
    if chosen and chosen not in ENGINES:
        raise UsageError(f"{ENGINE_ENV}={chosen!r} is not one of {', '.join(ENGINES)}")
    if chosen == "native" and not (on_databricks() or _session_has_delta(spark)):
        raise MissingJarsError(
            f"{ENGINE_ENV}=native, but this Spark session has no delta-spark (Delta's jars and "
            f"spark.sql.extensions={DELTA_EXTENSION}): run `make jars`, or set {ENGINE_ENV}=deltars"
        )
    if not chosen:
        chosen = "native" if on_databricks() or _session_has_delta(spark) else "deltars"
    use_engine(spark, chosen)
    return chosen


def use_engine(spark: "SparkSession", name: str) -> None:
    """Make ``spark`` use the engine ``name`` from now on (tests run one session with both)."""
    if name not in ENGINES:
        raise UsageError(f"Delta engine {name!r} is not one of {', '.join(ENGINES)}")
    if name == "deltars":
        from sparkship.tables import deltars

        deltars.register(spark)
    spark.conf.set(_ENGINE_CONF, name)


def engine(spark: "SparkSession") -> DeltaEngine:
    """The :class:`DeltaEngine` this session uses."""
    return ENGINE_INSTANCES[engine_for(spark)]


def _engine(spark: "SparkSession", table: str) -> DeltaEngine:
    """The session's engine for ``table``: catalog names need delta-spark's catalog."""
    from sparkship.tables.names import check_table_argument

    check_table_argument(table)
    chosen = engine(spark)
    if chosen.name != "native" and is_table_name(table):
        raise UsageError(
            f"{table} is a catalog table name, which needs the native engine (delta-spark: Databricks, or "
            "`make jars` locally); the deltars engine takes paths only"
        )
    return chosen


def read(spark: "SparkSession", path: str, version: int | None = None) -> "DataFrame":
    """The table at ``path`` as a DataFrame; ``version`` reads an older snapshot (time travel)."""
    if not exists(spark, path):
        raise NotFoundError(f"no Delta table at {path}")
    return _engine(spark, path).read(spark, path, version)


def exists(spark: "SparkSession", path: str) -> bool:
    return _engine(spark, path).exists(spark, path)


def version(spark: "SparkSession", path: str) -> int | None:
    """The latest version of the table, or None when there is no table at ``path``."""
    return _engine(spark, path).version(spark, path) if exists(spark, path) else None


def history(spark: "SparkSession", path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Commits, newest first: ``version``, ``timestamp`` (ms), ``operation``, ``parameters``."""
    if not exists(spark, path):
        raise NotFoundError(f"no Delta table at {path}")
    return [c.to_dict() for c in _engine(spark, path).history(spark, path, limit)]


def schema(spark: "SparkSession", path: str, version: int | None = None) -> "StructType":
    """The table's Spark schema (from the Delta log; no DataFrame is planned)."""
    if not exists(spark, path):
        raise NotFoundError(f"no Delta table at {path}")
    return _engine(spark, path).schema(spark, path, version)


def check_schema(incoming: "StructType", existing: "StructType", where: str) -> None:
    """Raise :class:`SchemaMismatchError` naming every missing, unexpected or retyped column."""
    metadata.check_columns(
        {f.name: f.dataType.simpleString() for f in incoming.fields},
        {f.name: f.dataType.simpleString() for f in existing.fields},
        where,
    )


def write(
    df: "DataFrame",
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
    if mode not in ("append", "overwrite"):
        raise SparkshipError(f"mode must be 'append' or 'overwrite', not {mode!r}")
    if replace_partitions and mode != "overwrite":
        raise SparkshipError("replace_partitions needs mode='overwrite'")
    spark = df.sparkSession
    delta = _engine(spark, path)
    partitions = list(partition_by or [])
    table_exists_now = exists(spark, path)
    if table_exists_now:
        current = schema(spark, path)
        if not (mode == "overwrite" and overwrite_schema):
            check_schema(df.schema, current, path)
            df = df.select(*[f"`{f.name}`" for f in current.fields])
        table_partitions = delta.partition_columns(spark, path)
        if partition_by is not None and partitions != table_partitions and not overwrite_schema:
            raise SchemaMismatchError(
                f"cannot write to {path}: it is partitioned by {table_partitions}, not {partitions}"
            )
        if not overwrite_schema or partition_by is None:
            partitions = table_partitions
    elif expected_version not in (None, -1):
        raise ConcurrentWriteError(f"{mode} to {path}: there is no table, but version {expected_version} was expected")
    if expected_version is not None and expected_version >= -1:
        current = delta.version(spark, path) if table_exists_now else -1
        if current != expected_version:  # the engines' commits are compare-and-set too; this fails early
            raise ConcurrentWriteError(f"{mode} to {path}: the table is at version {current}, not {expected_version}")
    unknown = [c for c in list(partitions) + list(replace_partitions or {}) if c not in df.columns]
    if unknown:
        raise SchemaMismatchError(f"cannot write to {path}: partition columns {unknown} are not in the data")
    if replace_partitions and set(replace_partitions) - set(partitions):
        raise SchemaMismatchError(
            f"cannot write to {path}: replace_partitions {sorted(replace_partitions)} must be partition columns "
            f"(the table's are {partitions})"
        )
    request = WriteRequest(
        mode=mode,
        write_id=uuid.uuid4().hex,
        partition_by=list(partitions),
        replace_partitions=dict(replace_partitions) if replace_partitions else None,
        expected_version=expected_version,
        overwrite_schema=overwrite_schema,
        properties={} if table_exists_now else {**CREATED_TABLE_PROPERTIES, **(properties or {})},
    )
    try:
        return delta.write(df, path, request)
    except SparkshipError:
        raise
    except Exception:
        if partitions:  # a failed task tells little; say which value no engine can write
            _refuse_unwritable_partition_values(df, partitions, path)
        raise


def _refuse_unwritable_partition_values(df: "DataFrame", partitions: Sequence[str], path: str) -> None:
    """Raise :class:`InvalidDataError` when a string partition column holds a NUL character.

    A partition value becomes a folder name, and no file system takes NUL in a name: delta-spark's task fails
    with "Mkdirs failed"; the deltars engine refuses it too so that both engines accept the same data. Checked
    only after a failed write, so a good write pays nothing for it.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    for column in partitions:
        if not isinstance(df.schema[column].dataType, StringType):
            continue
        bad = df.filter(F.instr(F.col(f"`{column}`"), "\x00") > 0).select(f"`{column}`").limit(1).collect()
        if bad:
            raise InvalidDataError(
                f"cannot write to {path}: partition column {column!r} holds {bad[0][0]!r}, which contains a NUL "
                "character; a partition value names a folder and no file system takes NUL (nothing was committed)"
            )


def identity(spark: "SparkSession", path: str) -> TableIdentity:
    """The table's Delta id (a re-created table gets a new one) and its current properties."""
    if not exists(spark, path):
        raise NotFoundError(f"no Delta table at {path}")
    return _engine(spark, path).identity(spark, path)


def change_feed(spark: "SparkSession", path: str, after_version: int, up_to_version: int) -> "DataFrame":
    """The Change Data Feed of versions ``after_version`` (exclusive) to ``up_to_version`` (inclusive): the table's
    columns with ``_change_type``, ``_commit_version`` and ``_commit_timestamp``.

    Raises :class:`ChangeFeedUnavailableError` when the table did not record it over the whole range.
    """
    return _engine(spark, path).change_feed(spark, path, after_version + 1, up_to_version)


def added_rows(spark: "SparkSession", path: str, after_version: int, up_to_version: int) -> "DataFrame":
    """Rows appended in versions ``after_version`` (exclusive) to ``up_to_version`` (inclusive), judged commit by
    commit from the table's history (:mod:`sparkship.tables.changes`): commits that change no row (OPTIMIZE...)
    are skipped.

    Raises :class:`NotAppendOnlyError` when a commit in between did more than append (an overwrite, DELETE,
    UPDATE or MERGE, deletion vectors included): the only safe choice is then a full re-read, which the caller
    must ask for.
    """
    delta = _engine(spark, path)
    commits = delta.history(spark, path, None)
    runs = judge_range(path, commits, after_version, up_to_version)
    parts = [delta.appended_rows(spark, path, first, last) for first, last in runs]
    if not parts:  # nothing appended: an empty frame with the table's columns
        return delta.read(spark, path, up_to_version).limit(0)
    frame = parts[0]
    for part in parts[1:]:
        frame = frame.unionByName(part)
    return frame


def merge(source: "DataFrame", path: str, keys: Sequence[str], *, op_column: str, expected_version: int,
          delete_unmatched: str | None = None) -> int:
    """Upsert ``source`` into the table at ``path`` by ``keys`` in ONE commit and return its version.

    Rows whose ``op_column`` is ``"delete"`` delete their key; the others replace the key's row or insert it (a
    null key matches nothing). ``delete_unmatched``: SQL on the target (alias ``t``) selecting rows to delete that
    no source row matched. ``expected_version`` makes the commit a compare-and-set (:class:`ConcurrentWriteError`
    otherwise, the table unchanged). The source's columns (less ``op_column``) must be the table's.
    """
    spark = source.sparkSession
    delta = _engine(spark, path)
    check_schema(source.drop(op_column).schema, schema(spark, path), path)
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    return delta.merge(source, path, MergeRequest(predicate=on, op_column=op_column, write_id=uuid.uuid4().hex,
                                                  expected_version=expected_version, delete_unmatched=delete_unmatched))


def count_rows(spark: "SparkSession", path: str, version: int) -> int:
    """Rows in ``version``, from Delta's file statistics where every file has them (no data read), else counted."""
    return _engine(spark, path).count_rows(spark, path, version)


def rows_committed(spark: "SparkSession", path: str, version: int) -> int | None:
    """Rows that the commit of ``version`` added (its write metrics), or None if the log does not say."""
    return _engine(spark, path).rows_committed(spark, path, version)


__all__ += [
    "NotAppendOnlyError", "ConcurrentWriteError", "SchemaMismatchError", "UnsupportedFilesystemError",
    "ChangeFeedUnavailableError", "UnsupportedTableFeatureError", "TableIdentity", "DeltaEngine", "WriteRequest",
    "MergeRequest", "Commit", "engine", "use_engine",
]
