"""The ``native`` engine: delta-spark (Databricks, and local sessions with Delta's jars).

Everything goes through Spark SQL and the DataFrame API, so it runs on classic and Spark Connect sessions alike
and needs no JVM handle. A write with ``expected_version=e`` is a compare-and-set: it records Delta's transaction
identifier ``(app "sparkship", version e+1)``, and when another writer commits first the caller gets
:class:`~sparkship.errors.ConcurrentWriteError`. On a classic session with open-source delta-spark, such a write
to an existing local table that keeps its schema goes through :mod:`sparkship.tables.transactions` instead (why:
docs/DESIGN.md).
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from sparkship.errors import ConcurrentWriteError, NotFoundError, SchemaMismatchError
from sparkship.spark import is_connect
from sparkship.tables import files as delta_files
from sparkship.tables import names, transactions
from sparkship.tables.engine import (
    ChangeFeedUnavailableError,
    Commit,
    MergeRequest,
    TableIdentity,
    WriteRequest,
    is_local_path,
    is_table_name,
)
from sparkship.tables.files import CAS_APP_ID, WRITE_ID_KEY

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
    from pyspark.sql.types import StructType

# Delta's conflict error classes (pyspark surfaces them by condition when delta's Python package is absent).
_CONFLICT_CONDITIONS = (
    "DELTA_CONCURRENT_", "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED", "DELTA_FILE_ALREADY_EXISTS",
)


def is_path(table: str) -> bool:
    """A path or URI (not a catalog name)."""
    return not is_table_name(table)


def sql_ident(table: str) -> str:
    """The SQL identifier of a table: ``delta.`path``` for paths, the name as given otherwise."""
    if is_path(table):
        return "delta.`" + table.replace("`", "``") + "`"
    return table


def resolve(spark: SparkSession, table: str) -> str:
    """What SQL and the DataFrame API take for ``table``: the path, the name as given (Databricks, or a session
    with its own metastore), or the local catalog's identifier, registering the table first when another process
    created it (see :mod:`sparkship.tables.names`)."""
    if is_path(table):
        return table
    if not names.is_local_catalog(spark):
        return table
    entry = names.local_table(spark, table)
    names.register(spark, entry)
    return entry.ident


def _ident(spark: SparkSession, table: str) -> str:
    return sql_ident(table) if is_path(table) else resolve(spark, table)


def _error_condition(exc: BaseException) -> str:
    """The error condition (class) of a Spark exception, or ''."""
    getter = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)  # 4.0 / 3.5
    try:
        return str(getter() or "") if getter else ""
    except Exception:  # noqa: BLE001 - not every exception carries one
        return ""


def is_conflict(exc: BaseException) -> bool:
    """True for Delta's optimistic-concurrency failures (any of its ConcurrentModification exceptions)."""
    try:
        from delta.exceptions import DeltaConcurrentModificationException

        if isinstance(exc, DeltaConcurrentModificationException):
            return True
    except ImportError:  # pragma: no cover - delta-spark's Python package is optional at run time
        pass
    if _error_condition(exc).startswith(_CONFLICT_CONDITIONS):
        return True
    # Some reach Python unconverted (a Py4JJavaError from a path write): the condition is in the message.
    return any(m.startswith(_CONFLICT_CONDITIONS) for m in re.findall(r"\[(DELTA_[A-Z_]+)\]", str(exc)[:2000]))


def is_missing_table(exc: BaseException) -> bool:
    condition = _error_condition(exc)
    return condition.startswith(("DELTA_MISSING_DELTA_TABLE", "DELTA_TABLE_NOT_FOUND", "TABLE_OR_VIEW_NOT_FOUND",
                                 "DELTA_PATH_DOES_NOT_EXIST", "PATH_NOT_FOUND"))


def _brief(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    # A Py4JJavaError's first line is "An error occurred while calling o69.save.": show Delta's own line instead.
    named = [line.lstrip(": ") for line in lines[:5] if re.search(r"\[DELTA_[A-Z_]+\]", line)]
    return (named or lines or [type(exc).__name__])[0][:300]


class NativeEngine:
    """delta-spark behind the :class:`~sparkship.tables.engine.DeltaEngine` Protocol."""

    name = "native"

    def exists(self, spark: SparkSession, table: str) -> bool:
        if is_local_path(table):
            if delta_files.commit_versions(table):
                return True
            if not is_connect(spark):
                return False
            # A Spark Connect server elsewhere (Databricks Connect) may see paths this machine does not: ask it.
        if is_table_name(table) and names.is_local_catalog(spark):
            return names.register(spark, names.local_table(spark, table))  # the folder holds a commit
        try:
            spark.sql(f"DESCRIBE DETAIL {sql_ident(table)}").collect()
            return True
        except Exception as exc:  # noqa: BLE001 - Delta raises AnalysisException for a missing table
            if is_missing_table(exc) or "is not a Delta table" in str(exc):
                return False
            raise

    def version(self, spark: SparkSession, table: str) -> int:
        folder = _local_folder(spark, table)
        versions = delta_files.commit_versions(folder) if folder else []
        if versions:
            return versions[-1]
        return self.history(spark, table, 1)[0].version

    def history(self, spark: SparkSession, table: str, limit: int | None) -> list[Commit]:
        folder = _local_folder(spark, table)
        # The commit files say what DESCRIBE HISTORY says, without the Spark job it runs on every call.
        local = _local_history(folder, limit) if folder else []
        if local:
            return local
        query = f"DESCRIBE HISTORY {_ident(spark, table)}" + (f" LIMIT {int(limit)}" if limit else "")
        try:
            rows = spark.sql(query).collect()
        except Exception as exc:  # noqa: BLE001
            if is_missing_table(exc):
                raise NotFoundError(f"no Delta table at {table}") from None
            raise
        return [
            Commit(
                version=int(r["version"]),
                timestamp=int(r["timestamp"].timestamp() * 1000),
                operation=r["operation"],
                parameters=dict(r["operationParameters"] or {}),
                metrics=dict(r["operationMetrics"] or {}),
                metadata=_user_metadata(r["userMetadata"]),
                blind_append=r["isBlindAppend"],
            )
            for r in rows
        ]

    def schema(self, spark: SparkSession, table: str, version: int | None) -> StructType:
        return self._reader(spark, table, version).schema  # no data is read, so no data-path check

    def partition_columns(self, spark: SparkSession, table: str) -> list[str]:
        folder = _local_folder(spark, table)
        if folder is not None:
            from deltalake import DeltaTable

            try:  # the log's metadata, without DESCRIBE DETAIL's snapshot job
                return list(DeltaTable(folder).metadata().partition_columns)
            except Exception:  # noqa: BLE001 - a table feature delta-rs cannot read: ask Delta itself
                pass
        return list(self._detail(spark, table)["partitionColumns"])

    def location(self, spark: SparkSession, table: str) -> str:
        folder = _local_folder(spark, table)
        if folder is not None:
            return os.path.abspath(folder)
        return str(self._detail(spark, table)["location"])

    def _detail(self, spark: SparkSession, table: str) -> Any:
        return spark.sql(f"DESCRIBE DETAIL {_ident(spark, table)}").first()

    def read(self, spark: SparkSession, table: str, version: int | None) -> DataFrame:
        _check_data_paths(_local_folder(spark, table), version)
        return self._reader(spark, table, version)

    @staticmethod
    def _reader(spark: SparkSession, table: str, version: int | None) -> DataFrame:
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(table) if is_path(table) else reader.table(resolve(spark, table))

    def write(self, df: DataFrame, table: str, request: WriteRequest) -> int:
        cas_version = _cas_version_keeping_schema(request)
        folder = _local_folder(df.sparkSession, table) if cas_version is not None else None
        if folder and cas_version is not None and transactions.supported(df.sparkSession):
            replace_where = _replace_where(request.replace_partitions) if request.replace_partitions else None
            prepared = transactions.prepare_write(df, folder, expected_version=cas_version, write_id=request.write_id,
                                                  mode=request.mode, replace_where=replace_where, table=table)
            return transactions.commit_write(prepared)
        writer = self._writer(df, request)
        try:
            if is_path(table):
                writer.save(table)
            elif names.is_local_catalog(df.sparkSession):
                self._write_local_name(df.sparkSession, writer, table)
            else:
                writer.saveAsTable(table)
        except Exception as exc:  # noqa: BLE001 - Delta's exceptions come through pyspark's converters
            raise self._translated(df.sparkSession, table, request, exc) from None
        found = self._version_of_write(df.sparkSession, table, request.write_id)
        if found is None:  # Delta skipped it: another CAS commit took the version first
            raise ConcurrentWriteError(f"{request.mode} to {table}: another writer committed after version "
                                       f"{request.expected_version} first (compare-and-set lost)")
        return found

    @staticmethod
    def _write_local_name(spark: SparkSession, writer: Any, table: str) -> None:
        """Write a name of the local catalog: through the catalog when the table exists; a new table is written
        at its warehouse folder (Delta's optimistic concurrency decides between two creators) and registered."""
        entry = names.local_table(spark, table)
        if names.register(spark, entry):
            writer.saveAsTable(entry.ident)
            return
        writer.save(entry.location)
        names.register(spark, entry)

    @staticmethod
    def _writer(df: DataFrame, request: WriteRequest) -> DataFrameWriter:
        writer = (
            df.write.format("delta").mode(request.mode)
            .option("userMetadata", json.dumps({WRITE_ID_KEY: request.write_id}))
        )
        if request.expected_version is not None:
            writer = writer.option("txnAppId", CAS_APP_ID).option("txnVersion", str(request.expected_version + 1))
        if request.partition_by:
            writer = writer.partitionBy(*request.partition_by)
        if request.replace_partitions:
            writer = writer.option("replaceWhere", _replace_where(request.replace_partitions))
        if request.overwrite_schema:
            writer = writer.option("overwriteSchema", "true")
        for key, value in request.properties.items():  # Delta takes them as the properties of a table it creates
            writer = writer.option(key, value)
        return writer

    def _translated(self, spark: SparkSession, table: str, request: WriteRequest, exc: Exception) -> Exception:
        if is_conflict(exc) or (request.expected_version == -1 and self.exists(spark, table)):
            return ConcurrentWriteError(f"{request.mode} to {table} conflicted with a concurrent commit: {_brief(exc)}")
        condition = _error_condition(exc)
        if condition.startswith("DELTA_REPLACE_WHERE_MISMATCH"):
            return SchemaMismatchError(f"cannot write to {table}: rows outside the partitions being replaced "
                                       f"{request.replace_partitions}")
        if condition.startswith(("DELTA_FAILED_TO_MERGE_FIELDS", "DELTA_SCHEMA_", "_LEGACY_ERROR_TEMP_DELTA_0007")):
            return SchemaMismatchError(f"cannot write to {table}: {_brief(exc)}")
        return exc

    def _version_of_write(self, spark: SparkSession, table: str, write_id: str) -> int | None:
        for limit in (20, None):
            for commit in self.history(spark, table, limit):
                if commit.metadata.get(WRITE_ID_KEY) == write_id:
                    return commit.version
        return None

    # --- what changed, and upserts ---------------------------------------------------------------------

    def identity(self, spark: SparkSession, table: str) -> TableIdentity:
        folder = _local_folder(spark, table)
        if folder is not None:
            from deltalake import DeltaTable

            try:  # the log's metadata, without DESCRIBE DETAIL's snapshot job
                meta = DeltaTable(folder).metadata()
                return TableIdentity(str(meta.id), {str(k): str(v) for k, v in meta.configuration.items()})
            except Exception:  # noqa: BLE001 - a log delta-rs cannot read: ask Delta itself
                pass
        detail = self._detail(spark, table)
        return TableIdentity(str(detail["id"]), dict(detail["properties"] or {}))

    def change_feed(self, spark: SparkSession, table: str, first_version: int, last_version: int) -> DataFrame:
        reader = (spark.read.format("delta").option("readChangeFeed", "true")
                  .option("startingVersion", first_version).option("endingVersion", last_version))
        try:
            feed = reader.load(table) if is_path(table) else reader.table(resolve(spark, table))
            feed.schema  # noqa: B018 - Delta checks the range when the relation is built
        except Exception as exc:  # noqa: BLE001 - Delta raises AnalysisException/DeltaAnalysisException
            if _error_condition(exc).startswith(("DELTA_MISSING_CHANGE_DATA", "DELTA_CHANGE_DATA_FEED_NOT_ENABLED",
                                                 "DELTA_CHANGE_TABLE_FEED_DISABLED")) or \
                    "not enabled" in str(exc)[:500].lower():
                raise ChangeFeedUnavailableError(f"{table} has no Change Data Feed for versions {first_version}.."
                                                 f"{last_version}: {_brief(exc)}") from None
            raise
        return feed

    def appended_rows(self, spark: SparkSession, table: str, first_version: int, last_version: int) -> DataFrame:
        from pyspark.sql import functions as F

        # Delta lists each snapshot's files (no log read by path): the run's appends are the files in the last
        # snapshot that the one before the run did not have.
        before = set(self._reader(spark, table, first_version - 1).inputFiles()) if first_version > 0 else set()
        added = [f for f in self._reader(spark, table, last_version).inputFiles() if f not in before]
        names = sorted({unquote(f.rsplit("/", 1)[-1]) for f in added})
        df = self.read(spark, table, last_version)
        return df.where(F.col("_metadata.file_name").isin(names)).select(*[f"`{c}`" for c in df.columns])

    def merge(self, source: DataFrame, table: str, request: MergeRequest) -> int:
        spark = source.sparkSession
        view = f"sparkship_merge_{request.write_id}"
        # The source is the few changed rows: broadcast it, never the target (Spark may estimate a projection of a
        # mid-sized target under the broadcast threshold and run out of driver memory building it).
        source.hint("broadcast").createOrReplaceTempView(view)
        target = _ident(spark, table)
        columns = [c for c in source.columns if c != request.op_column]
        on = request.predicate
        deleting = f"s.`{request.op_column}` = 'delete'"
        statement = (
            f"MERGE INTO {target} AS t USING {view} AS s ON {on} "
            f"WHEN MATCHED AND {deleting} THEN DELETE "
            f"WHEN MATCHED THEN UPDATE SET {', '.join(f't.`{c}` = s.`{c}`' for c in columns)} "
            f"WHEN NOT MATCHED AND NOT ({deleting}) THEN INSERT ({', '.join(f'`{c}`' for c in columns)}) "
            f"VALUES ({', '.join(f's.`{c}`' for c in columns)})"
            + (f" WHEN NOT MATCHED BY SOURCE AND ({request.delete_unmatched}) THEN DELETE"
               if request.delete_unmatched else "")
        )
        # Delta's idempotent DML: the same transaction identifier as the compare-and-set writes, and the write id.
        confs = {"spark.databricks.delta.write.txnAppId": CAS_APP_ID,
                 "spark.databricks.delta.write.txnVersion": str(request.expected_version + 1),
                 "spark.databricks.delta.commitInfo.userMetadata": json.dumps({WRITE_ID_KEY: request.write_id})}
        current = self.version(spark, table)
        if current != request.expected_version:
            raise ConcurrentWriteError(f"merge into {table}: the table is at version {current}, not "
                                       f"{request.expected_version}")
        try:
            for key, value in confs.items():
                spark.conf.set(key, value)
            spark.sql(statement).collect()
        except Exception as exc:  # noqa: BLE001 - Delta's exceptions come through pyspark's converters
            if is_conflict(exc):
                raise ConcurrentWriteError(f"merge into {table} conflicted with a concurrent commit: "
                                           f"{_brief(exc)}") from None
            raise
        finally:
            for key in confs:
                spark.conf.unset(key)
            spark.catalog.dropTempView(view)
        found = self._version_of_write(spark, table, request.write_id)
        if found is None:
            raise ConcurrentWriteError(f"merge into {table}: another writer committed after version "
                                       f"{request.expected_version} first (compare-and-set lost)")
        return found

    def count_rows(self, spark: SparkSession, table: str, version: int) -> int:
        folder = _local_folder(spark, table)
        local = _local_row_count(folder, version) if folder else None
        # Delta answers read().count() from the log's statistics too, but only through a Spark job.
        return local if local is not None else self.read(spark, table, version).count()

    def rows_committed(self, spark: SparkSession, table: str, version: int) -> int | None:
        for commit in self.history(spark, table, None):
            if commit.version == version:
                rows = commit.metrics.get("numOutputRows")
                return int(rows) if rows is not None else None
        return None


def _local_history(table: str, limit: int | None) -> list[Commit]:
    """Commits newest first, from the ``commitInfo`` action of each commit file (as DESCRIBE HISTORY shows)."""
    versions = delta_files.commit_versions(table)[::-1]
    commits = []
    for version in versions[:limit] if limit else versions:
        info = delta_files.commit_info(table, version)
        commits.append(Commit(
            version=version,
            timestamp=int(info.get("timestamp") or 0),
            operation=str(info.get("operation", "")),
            parameters={k: v if isinstance(v, str) else json.dumps(v)
                        for k, v in (info.get("operationParameters") or {}).items()},
            metrics={k: str(v) for k, v in (info.get("operationMetrics") or {}).items()},
            metadata=_user_metadata(info.get("userMetadata")),
            blind_append=info.get("isBlindAppend"),
        ))
    return commits


def _user_metadata(text: str | None) -> dict[str, Any]:
    """A commit's userMetadata: ours is a JSON object; another writer's free text is kept as it is."""
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"userMetadata": text}


def _local_folder(spark: SparkSession, table: str) -> str | None:
    """The folder of a table on this machine's filesystem (a local path, or a name of the local catalog)."""
    if is_local_path(table):
        return table
    if is_table_name(table) and names.is_local_catalog(spark):
        return names.local_table(spark, table).location
    return None


def _cas_version_keeping_schema(request: WriteRequest) -> int | None:
    """The expected version of a compare-and-set write to an existing table that keeps its schema (what
    :mod:`sparkship.tables.transactions` commits without the options path's transaction-id lookup), else None."""
    expected = request.expected_version
    return expected if expected is not None and expected >= 0 and not request.overwrite_schema else None


def _check_data_paths(folder: str | None, version: int | None) -> None:
    """An untrusted log must not make Spark read files outside the table (absolute paths, ``../``): the same
    check as the deltars engine's, on the file list delta-rs reads from the log (local tables). A pinned version
    whose files VACUUM removed is refused here in one line, not by a failed Spark task later."""
    if folder is not None and os.path.isdir(os.path.join(folder, "_delta_log")):
        try:
            listed = delta_files.list_files(folder, version)
        except Exception as exc:  # noqa: BLE001 - delta-rs' own error type; the check is one delta-rs can make
            if "Unsupported Delta table type" not in str(exc):
                raise
            # delta-rs cannot open a table with a column type it lacks (Spark ML's vectors, a UDT): Spark
            # reads it; the log's paths go unchecked.
            log.debug("%s: delta-rs cannot read its schema (%s): file paths not checked", folder, exc)
            return
        if version is not None:
            delta_files.refuse_removed_files(folder, version, listed)


def _local_row_count(folder: str, version: int) -> int | None:
    """Rows of a local table's version from its files' ``numRecords``, or None when the log cannot tell: a file
    without statistics, deletion vectors (rows deleted inside files), or a log delta-rs cannot read."""
    from deltalake import DeltaTable

    try:
        if "deletionVectors" in (DeltaTable(folder, version=version).protocol().reader_features or []):
            return None
        counts = delta_files.file_row_counts(folder, version)
    except Exception:  # noqa: BLE001 - a table feature delta-rs cannot read: Spark counts instead
        return None
    if any(n is None for n in counts.values()):
        return None
    return sum(counts.values())  # type: ignore[arg-type]


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _replace_where(partitions: dict[str, Any]) -> str:
    return " AND ".join(
        f"`{k}` IS NULL" if v is None else f"`{k}` = {_sql_literal(v)}" for k, v in partitions.items()
    )
