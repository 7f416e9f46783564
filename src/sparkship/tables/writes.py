"""Writes through a given Delta engine: the checks every write passes before any task runs, then one commit.

The caller picks the engine (:func:`sparkship.tables.engine_choice.table_engine`, or a metadata store's own);
nothing here chooses one.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparkship.errors import ConcurrentWriteError, InvalidDataError, SchemaMismatchError, SparkshipError
from sparkship.tables.engine import CREATED_TABLE_PROPERTIES, DeltaEngine, WriteRequest

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType


@dataclass(frozen=True)
class WriteOptions:
    """What :func:`sparkship.tables.write` takes besides the frame, the path and the mode (documented there)."""

    partition_by: Sequence[str] | None = None
    replace_partitions: Mapping[str, Any] | None = None
    expected_version: int | None = None
    overwrite_schema: bool = False
    properties: Mapping[str, str] | None = None


def check_columns(have: Mapping[str, Any], want: Mapping[str, Any], where: str) -> None:
    """Raise :class:`SchemaMismatchError` naming every missing, unexpected or retyped column.

    ``have``/``want`` map column names to types (Arrow types, or Spark type strings); the table's are ``want``.
    """
    problems = []
    if missing := [n for n in want if n not in have]:
        problems.append(f"missing columns {missing}")
    if extra := [n for n in have if n not in want]:
        problems.append(f"unexpected columns {extra}")
    for name, t in want.items():
        if name in have and have[name] != t:
            problems.append(f"column '{name}' is {have[name]}, the table has {t}")
    if problems:
        raise SchemaMismatchError(f"cannot write to {where}: " + "; ".join(problems))


def check_schema(incoming: StructType, existing: StructType, where: str) -> None:
    """Raise :class:`SchemaMismatchError` naming every missing, unexpected or retyped column."""
    check_columns(
        {f.name: f.dataType.simpleString() for f in incoming.fields},
        {f.name: f.dataType.simpleString() for f in existing.fields},
        where,
    )


def write(delta: DeltaEngine, df: DataFrame, path: str, mode: str, options: WriteOptions) -> int:
    """Check the write against the table at ``path``, commit ``df`` once through ``delta``; return the version."""
    if mode not in ("append", "overwrite"):
        raise SparkshipError(f"mode must be 'append' or 'overwrite', not {mode!r}")
    if options.replace_partitions and mode != "overwrite":
        raise SparkshipError("replace_partitions needs mode='overwrite'")
    spark = df.sparkSession
    exists = delta.exists(spark, path)
    partitions = list(options.partition_by or [])
    if exists:
        df, partitions = _against_table(delta, df, path, mode, options)
    _check_expected_version(delta, df, path, mode, options.expected_version, exists)
    _check_partitions(df, path, partitions, options.replace_partitions)
    request = WriteRequest(
        mode=mode,
        write_id=uuid.uuid4().hex,
        partition_by=list(partitions),
        replace_partitions=dict(options.replace_partitions) if options.replace_partitions else None,
        expected_version=options.expected_version,
        overwrite_schema=options.overwrite_schema,
        properties={} if exists else {**CREATED_TABLE_PROPERTIES, **(options.properties or {})},
    )
    try:
        return delta.write(df, path, request)
    except SparkshipError:
        raise
    except Exception:
        if partitions:  # a failed task tells little; say which value no engine can write
            refuse_unwritable_partition_values(df, partitions, path)
        raise


def _against_table(delta: DeltaEngine, df: DataFrame, path: str, mode: str,
                   options: WriteOptions) -> tuple[DataFrame, list[str]]:
    """``df`` with the existing table's column order (its schema checked), and the partition columns to write."""
    spark = df.sparkSession
    overwrite_schema = options.overwrite_schema
    if not (mode == "overwrite" and overwrite_schema):
        current = delta.schema(spark, path, None)
        check_schema(df.schema, current, path)
        df = df.select(*[f"`{f.name}`" for f in current.fields])
    table_partitions = delta.partition_columns(spark, path)
    asked = list(options.partition_by or [])
    if options.partition_by is not None and asked != table_partitions and not overwrite_schema:
        raise SchemaMismatchError(f"cannot write to {path}: it is partitioned by {table_partitions}, not {asked}")
    if not overwrite_schema or options.partition_by is None:
        return df, table_partitions
    return df, asked


def _check_expected_version(delta: DeltaEngine, df: DataFrame, path: str, mode: str, expected: int | None,
                            exists: bool) -> None:
    """Fail early when the table is not at ``expected`` (the engines' commits are compare-and-set too)."""
    if expected is None:
        return
    if not exists and expected != -1:
        raise ConcurrentWriteError(f"{mode} to {path}: there is no table, but version {expected} was expected")
    if expected >= -1:
        current = delta.version(df.sparkSession, path) if exists else -1
        if current != expected:
            raise ConcurrentWriteError(f"{mode} to {path}: the table is at version {current}, not {expected}")


def _check_partitions(df: DataFrame, path: str, partitions: Sequence[str],
                      replace_partitions: Mapping[str, Any] | None) -> None:
    unknown = [c for c in list(partitions) + list(replace_partitions or {}) if c not in df.columns]
    if unknown:
        raise SchemaMismatchError(f"cannot write to {path}: partition columns {unknown} are not in the data")
    if replace_partitions and set(replace_partitions) - set(partitions):
        raise SchemaMismatchError(
            f"cannot write to {path}: replace_partitions {sorted(replace_partitions)} must be partition columns "
            f"(the table's are {list(partitions)})"
        )


def refuse_unwritable_partition_values(df: DataFrame, partitions: Sequence[str], path: str) -> None:
    """Raise :class:`InvalidDataError` when a string partition column holds a NUL character.

    A partition value becomes a folder name, and no file system takes NUL in a name: delta-spark's task fails
    with "Mkdirs failed"; the deltars engine refuses it too so that both engines accept the same data. Checked
    only after a failed write, so a good write pays nothing for it.
    """
    # pyspark loads with a session, not with the package (the JVM-free server imports sparkship.tables).
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
