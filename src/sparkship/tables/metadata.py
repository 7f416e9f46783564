"""Small metadata tables (registry, aliases, events, scoring state) as Delta tables, read and written with Arrow.

Two stores sit behind :func:`table_version`, :func:`read_arrow` and :func:`append_arrow` (:class:`MetadataStore`):
:class:`SparkStore` (commits through delta-spark) whenever a Spark session with the native engine is active, and
:class:`DeltaRsStore` (no Spark job, no JVM) otherwise; why: docs/DESIGN.md. Writes are single commits;
``expected_version`` makes one a compare-and-set on the whole table. Local tables are read with delta-rs in both
stores (no Spark job).

    >>> import pyarrow as pa
    >>> from sparkship.tables import append_arrow, read_arrow
    >>> v = append_arrow("/tmp/doc_meta", pa.table({"k": [1]}), expected_version=None)  # doctest: +SKIP
"""
from __future__ import annotations

import os
import random
import time
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol

import pyarrow as pa

from sparkship.errors import ConcurrentWriteError, IntegrityError, NotFoundError, SchemaMismatchError, UsageError
from sparkship.tables import files as delta_files
from sparkship.tables.engine import (
    CREATED_TABLE_PROPERTIES,
    METADATA_TABLE_PROPERTIES,
    check_readable,
    is_local_path,
)
from sparkship.tables.files import table_exists

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

APPEND_ATTEMPTS = 60


class MetadataStore(Protocol):
    """Reads and single-commit writes of a small Delta table, as Arrow."""

    def version(self, path: str) -> int | None: ...

    def read(self, path: str, version: int | None, columns: list[str] | None) -> pa.Table: ...

    def append(self, path: str, table: pa.Table, *, expected_version: int | None, partition_by: list[str] | None,
               overwrite: bool, append_only: bool = False) -> int: ...


def store_for(path: str) -> MetadataStore:
    """The store for ``path``: through the active Spark session when it uses the native engine, else delta-rs."""
    spark = _active_native_session()
    if spark is not None:
        return SparkStore(spark)
    from sparkship.tables.engine import is_table_name

    if is_table_name(path):
        raise UsageError(f"{path} is a catalog table name: it needs a Spark session with the native engine "
                         "(delta-spark), and this process has none")
    return DeltaRsStore()


def _active_native_session() -> "SparkSession | None":
    from sparkship.spark import active_session

    # A helper thread (a lease renewal, say) has no active session of its own: the process's session (classic
    # or Spark Connect) is used; a JVM-free process (the server) gets None and never starts Spark for this.
    spark = active_session()
    if spark is None:
        return None
    from sparkship import tables

    return spark if tables.engine_for(spark) == "native" else None


def table_version(path: str) -> int | None:
    """Latest version, or None when there is no table."""
    return store_for(path).version(path)


def read_arrow(path: str, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
    """The whole table (or ``columns`` of it) at ``version`` as an Arrow table."""
    return store_for(path).read(path, version, columns)


def append_arrow(
    path: str,
    table: pa.Table,
    *,
    expected_version: int | None = None,
    partition_by: list[str] | None = None,
    overwrite: bool = False,
    append_only: bool = False,
) -> int:
    """Append (or overwrite with) ``table`` in one commit; return the version committed.

    ``expected_version``: commit only if the table is still at that version (-1: it must not exist yet),
    else raise :class:`~sparkship.errors.ConcurrentWriteError` with the table unchanged.
    ``append_only``: the table is a log that no writer compare-and-sets (the registry's events), so a plain
    append need not be one either.
    """
    return store_for(path).append(path, table, expected_version=expected_version, partition_by=partition_by,
                                  overwrite=overwrite, append_only=append_only)


class SparkStore:
    """Commits through the session's native Delta engine (delta-spark); reads local tables with delta-rs."""

    def __init__(self, spark: "SparkSession") -> None:
        self.spark = spark

    def version(self, path: str) -> int | None:
        if is_local_path(path):
            return _rs_table_version(path)
        from sparkship import tables

        return tables.version(self.spark, path)

    def read(self, path: str, version: int | None, columns: list[str] | None) -> pa.Table:
        if is_local_path(path):
            return _rs_read_arrow(path, version, columns)
        from sparkship import tables

        df = tables.read(self.spark, path, version)
        return spark_to_arrow(df.select(*columns) if columns else df)

    def append(self, path: str, table: pa.Table, *, expected_version: int | None, partition_by: list[str] | None,
               overwrite: bool, append_only: bool = False) -> int:
        mode = "overwrite" if overwrite else "append"
        from_arrow = mode == "append" and not partition_by and self._takes_arrow_appends(path)
        if expected_version is not None:
            return self._commit(path, table, mode, partition_by, expected_version, from_arrow)
        blind = append_only and not overwrite
        # Every commit to a table that anyone compare-and-sets is one too (so that the others' CAS hold): plain
        # appends retry it. An append-only log nobody compare-and-sets takes a blind append instead: Delta lets
        # it run beside concurrent appends (only two creators of a new table conflict), and it skips the CAS's
        # lookup of the table's transaction ids, for which delta-spark 4.0.1 rebuilds the table's state (three
        # Spark jobs, most of a small commit's cost; benchmarks/metadata_commit.py).
        for _ in range(APPEND_ATTEMPTS):
            current = None if blind else self.version(path)
            try:
                return self._commit(path, table, mode, partition_by,
                                    None if blind else -1 if current is None else current, from_arrow)
            except ConcurrentWriteError:
                time.sleep(random.uniform(0.01, 0.2))
        raise ConcurrentWriteError(f"{path}: {APPEND_ATTEMPTS} attempts to append lost to concurrent commits")

    def _takes_arrow_appends(self, path: str) -> bool:
        """Appends to this table can be committed from Arrow in a Delta transaction of sparkship's own
        (:func:`sparkship.tables.transactions.append_arrow`): a local table, a classic session with open-source
        delta-spark."""
        from sparkship.tables import transactions

        return is_local_path(path) and transactions.supported(self.spark)

    def _commit(self, path: str, table: pa.Table, mode: str, partition_by: list[str] | None,
                expected_version: int | None, from_arrow: bool) -> int:
        """One commit: from Arrow without a Spark job where the table takes it, else a Spark write."""
        from sparkship import tables
        from sparkship.tables import transactions

        if from_arrow:
            committed = transactions.append_arrow(self.spark, path, table, expected_version=expected_version,
                                                  write_id=uuid.uuid4().hex)
            if committed is not None:
                return committed
        return tables.write(arrow_to_spark(self.spark, table), path, mode, partition_by=partition_by,
                            expected_version=expected_version, properties=METADATA_TABLE_PROPERTIES)


def arrow_to_spark(spark: "SparkSession", table: pa.Table):  # noqa: ANN202 - a pyspark DataFrame
    """A Spark DataFrame of an Arrow table."""
    try:
        return spark.createDataFrame(table)  # pyspark >= 4.0 takes Arrow directly
    except TypeError:  # pyspark 3.5
        from pyspark.sql.pandas.types import from_arrow_schema

        return spark.createDataFrame(table.to_pandas(), schema=from_arrow_schema(table.schema))


def spark_to_arrow(df) -> pa.Table:  # noqa: ANN001 - a pyspark DataFrame
    """A (small) Spark DataFrame collected as an Arrow table."""
    if hasattr(df, "toArrow"):
        return df.toArrow()
    return pa.Table.from_pandas(df.toPandas(), preserve_index=False)


class DeltaRsStore:
    """delta-rs only: no Spark, no JVM."""

    def version(self, path: str) -> int | None:
        return _rs_table_version(path)

    def read(self, path: str, version: int | None, columns: list[str] | None) -> pa.Table:
        return _rs_read_arrow(path, version, columns)

    def append(self, path: str, table: pa.Table, *, expected_version: int | None, partition_by: list[str] | None,
               overwrite: bool, append_only: bool = False) -> int:
        # A plain delta-rs commit is already a create-if-absent of the next log file: append_only changes nothing.
        delta_files.check_commit_support(path)
        schema = pa.schema([f.with_nullable(True) for f in table.schema])
        if table_exists(path):
            existing = delta_files.table_arrow_schema(path)
            check_columns({f.name: f.type for f in delta_files._normalise_schema(schema)},
                          {f.name: f.type for f in existing}, path)
            schema = existing
            from deltalake import DeltaTable

            partition_by = list(DeltaTable(path).metadata().partition_columns)
        table = table.select(schema.names).cast(schema)
        written = delta_files.write_data_files(path, table, schema, partition_by or [])
        write_id = uuid.uuid4().hex
        try:
            delta_files.commit_files(
                path,
                written,
                schema,
                overwrite=overwrite,
                partition_by=partition_by or [],
                replace_partitions=None,
                expected_version=expected_version,
                write_id=write_id,
                properties=dict(CREATED_TABLE_PROPERTIES),
            )
        except Exception:
            delta_files.remove_files(path, written)
            raise
        return version_of_write(path, write_id)


def _rs_table_version(path: str) -> int | None:
    from deltalake import DeltaTable

    if not table_exists(path):
        return None
    with _readable_log(path):
        return DeltaTable(path).version()


@contextmanager
def _readable_log(path: str) -> Iterator[None]:
    """A Delta log that delta-rs cannot read (a commit file lost, a gap) is an IntegrityError naming the table."""
    from deltalake.exceptions import DeltaError

    _check_contiguous_log(path)
    try:
        yield
    except DeltaError as exc:
        raise IntegrityError(f"Delta table {path}: its log cannot be read ({exc})") from None


def _check_contiguous_log(path: str) -> None:
    """Commit files must run without a gap from version 0 (or from a checkpoint) to the latest.

    A reader that takes the protocol and metadata from a checksum file (.crc) would otherwise list a table whose
    first commits were deleted as if it had fewer rows.
    """
    log_dir = os.path.join(path, "_delta_log")
    if not os.path.isdir(log_dir):
        return
    names = os.listdir(log_dir)
    commits = delta_files.commit_versions(path)
    checkpoints = [int(n.split(".")[0]) for n in names if ".checkpoint" in n and n.split(".")[0].isascii() and n.split(".")[0].isdigit()]
    if not commits:
        return
    start = max((c for c in checkpoints if c <= commits[-1]), default=-1) + 1
    expected = set(range(start, commits[-1] + 1))
    missing = sorted(expected - set(commits))
    if missing:
        raise IntegrityError(
            f"Delta table {path}: its delta log misses commit file(s) {missing[:5]} (no checkpoint covers them; "
            "the commit files must be contiguous): "
            "refused rather than read as fewer versions"
        )


def _rs_read_arrow(path: str, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
    if not table_exists(path):
        raise NotFoundError(f"no Delta table at {path}")
    with _readable_log(path):
        check_readable(path)
        schema = delta_files.table_arrow_schema(path, version)
        files = delta_files.list_files(path, version)
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    batches = [
        b
        for split in delta_files.plan_splits(files)
        for b in delta_files.read_batches(path, split, schema)
    ]
    return pa.Table.from_batches(batches, schema=schema)


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


def history(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Commits, newest first, as ``{version, timestamp, operation, parameters, metadata}``."""
    from deltalake import DeltaTable

    if not table_exists(path):
        raise NotFoundError(f"no Delta table at {path}")
    out = []
    for c in DeltaTable(path).history(limit):
        known = {"version", "timestamp", "operation", "operationParameters", "clientVersion", "engineInfo",
                 "operationMetrics", "readVersion", "isBlindAppend"}
        out.append(
            {
                "version": c.get("version"),
                "timestamp": c.get("timestamp"),
                "operation": c.get("operation"),
                "parameters": c.get("operationParameters") or {},
                "metrics": c.get("operationMetrics") or {},
                "metadata": {k: v for k, v in c.items() if k not in known},
                "blind_append": c.get("isBlindAppend"),
            }
        )
    return out


def version_of_write(path: str, write_id: str) -> int:
    """The version whose commit carries ``write_id``, read from the commit files themselves, newest first.

    (delta-rs' ``history()`` can misnumber commits while other processes are committing.)
    """
    if os.path.isdir(os.path.join(path, "_delta_log")):
        for version in reversed(delta_files.commit_versions(path)):
            if delta_files.commit_info(path, version).get(delta_files.WRITE_ID_KEY) == write_id:
                return version
    else:  # object storage: ask delta-rs
        for commit in history(path, limit=1000):
            if commit["metadata"].get(delta_files.WRITE_ID_KEY) == write_id:
                return int(commit["version"])
    raise NotFoundError(f"the commit of write {write_id} is not in the history of {path}")
