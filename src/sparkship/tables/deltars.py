"""The ``deltars`` engine: Spark DataFrames over the ``sparkship_delta`` Python data source (delta-rs).

For machines without Delta's jars, and plain local disks: delta-rs commits with hard links, which FUSE mounts
(Unity Catalog volumes) refuse; :func:`~sparkship.tables.filesystem.check_commit_support` says so before any data
is written.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow as pa
from deltalake import DeltaTable, Transaction
from deltalake.transaction import CommitProperties

from sparkship.errors import ConcurrentWriteError, NotFoundError
from sparkship.tables import deltars_io
from sparkship.tables import files as delta_files
from sparkship.tables.deltars_io import arrow_schema_of, spark_schema_of
from sparkship.tables.engine import (
    ChangeFeedUnavailableError,
    Commit,
    MergeRequest,
    TableIdentity,
    WriteRequest,
    check_readable,
)
from sparkship.tables.filesystem import check_commit_support

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, DataFrameReader, SparkSession
    from pyspark.sql.types import StructType


def register_data_source(spark: SparkSession) -> None:
    """Make ``format("sparkship_delta")`` known to ``spark`` (Spark 4's Python data sources)."""
    # Spark 4's data source API: pyspark 3.5 has none, and the package imports without pyspark at all.
    from sparkship.tables.datasource import DeltaRsDataSource

    spark.dataSource.register(DeltaRsDataSource)


class DeltaRsEngine:
    """delta-rs behind the :class:`~sparkship.tables.engine.DeltaEngine` Protocol."""

    name = "deltars"

    def exists(self, spark: SparkSession, table: str) -> bool:
        return delta_files.table_exists(table)

    def version(self, spark: SparkSession, table: str) -> int:
        found = deltars_io.table_version(table)
        if found is None:
            raise NotFoundError(f"no Delta table at {table}")
        return found

    def history(self, spark: SparkSession, table: str, limit: int | None) -> list[Commit]:
        return [Commit(**c) for c in deltars_io.history(table, limit)]

    def schema(self, spark: SparkSession, table: str, version: int | None) -> StructType:
        return spark_schema_of(delta_files.table_arrow_schema(table, version))

    def partition_columns(self, spark: SparkSession, table: str) -> list[str]:
        return list(DeltaTable(table).metadata().partition_columns)

    def read(self, spark: SparkSession, table: str, version: int | None) -> DataFrame:
        if version is not None:
            delta_files.refuse_removed_files(table, version)
        return self._reader(spark, table, version).load()

    def _reader(self, spark: SparkSession, table: str, version: int | None) -> DataFrameReader:
        check_readable(table)  # on the driver: one line, before any task fails on it
        # The schema comes from the log on the driver, which spares Spark a Python worker round trip to ask for it.
        reader = spark.read.format(delta_files.SOURCE_NAME).schema(self.schema(spark, table, version))
        reader = reader.option("path", table)
        return reader.option("versionAsOf", str(version)) if version is not None else reader

    def write(self, df: DataFrame, table: str, request: WriteRequest) -> int:
        check_commit_support(table)
        (
            df.write.format(delta_files.SOURCE_NAME)
            .mode(request.mode)
            .option("path", table)
            .option("partitionBy", json.dumps(request.partition_by))
            .option("writeId", request.write_id)
            .save()
        )
        written = delta_files.take_staged(table, request.write_id)
        try:
            delta_files.commit_files(
                table,
                written,
                arrow_schema_of(df.schema),
                overwrite=request.mode == "overwrite",
                partition_by=request.partition_by,
                replace_partitions=request.replace_partitions,
                expected_version=request.expected_version,
                write_id=request.write_id,
                overwrite_schema=request.overwrite_schema,
                # delta-rs reads no deletion vectors: a table it writes never asks for them.
                properties={k: v for k, v in request.properties.items() if k != "delta.enableDeletionVectors"},
            )
        except BaseException:
            delta_files.remove_files(table, written)
            raise
        return deltars_io.version_of_write(table, request.write_id)

    def identity(self, spark: SparkSession, table: str) -> TableIdentity:
        meta = DeltaTable(table).metadata()
        return TableIdentity(str(meta.id), {str(k): str(v) for k, v in meta.configuration.items()})

    def change_feed(self, spark: SparkSession, table: str, first_version: int, last_version: int) -> DataFrame:
        check_readable(table)
        try:
            feed = pa.table(DeltaTable(table).load_cdf(starting_version=first_version,
                                                       ending_version=last_version).read_all())
        except Exception as exc:  # noqa: BLE001 - delta-rs raises DeltaError for a range without CDF
            if "change data feed" in str(exc).lower() or "cdf" in str(exc).lower():
                raise ChangeFeedUnavailableError(f"{table} has no Change Data Feed for versions {first_version}.."
                                                 f"{last_version}: {str(exc).splitlines()[0][:200]}") from None
            raise
        schema = self.schema(spark, table, last_version)
        return deltars_io.arrow_to_spark(spark, feed.select([*schema.names, *_CDF_NAMES])
                                       .cast(_cdf_arrow_schema(schema, feed)))

    def appended_rows(self, spark: SparkSession, table: str, first_version: int, last_version: int) -> DataFrame:
        before = delta_files.file_row_counts(table, first_version - 1) if first_version > 0 else {}
        after = delta_files.file_row_counts(table, last_version)
        added = sorted(f for f in after if f not in before)
        return self._reader(spark, table, last_version).option("onlyFiles", json.dumps(added)).load()

    def merge(self, source: DataFrame, table: str, request: MergeRequest) -> int:
        check_commit_support(table)
        rows = deltars_io.spark_to_arrow(source)
        target = DeltaTable(table)
        if target.version() != request.expected_version:
            raise ConcurrentWriteError(f"merge into {table}: the table is at version {target.version()}, not "
                                       f"{request.expected_version}")
        columns = [c for c in source.columns if c != request.op_column]
        on = request.predicate
        deleting = f"s.`{request.op_column}` = 'delete'"
        properties = CommitProperties(custom_metadata={delta_files.WRITE_ID_KEY: request.write_id},
                                      max_commit_retries=0,
                                      app_transactions=[Transaction(delta_files.CAS_APP_ID,
                                                                    request.expected_version + 1)])
        merger = (target.merge(rows, predicate=on, source_alias="s", target_alias="t", commit_properties=properties)
                  .when_matched_delete(predicate=deleting)
                  .when_matched_update(updates={f"`{c}`": f"s.`{c}`" for c in columns})
                  .when_not_matched_insert(updates={f"`{c}`": f"s.`{c}`" for c in columns},
                                           predicate=f"NOT ({deleting})"))
        if request.delete_unmatched:
            merger = merger.when_not_matched_by_source_delete(predicate=request.delete_unmatched)
        try:
            merger.execute()
            if DeltaTable(table).version() == request.expected_version:
                # delta-rs commits nothing for a MERGE that changes nothing; the run's write still gets its commit
                # (its write id and transaction version), as delta-spark's MERGE does.
                target.create_write_transaction([], mode="append", schema=target.schema(),
                                                commit_properties=properties)
        except Exception as exc:  # noqa: BLE001 - delta-rs raises CommitFailedError on a lost race
            if type(exc).__name__ == "CommitFailedError":
                raise ConcurrentWriteError(
                    f"merge into {table} moved past version {request.expected_version}") from None
            raise
        return deltars_io.version_of_write(table, request.write_id)

    def count_rows(self, spark: SparkSession, table: str, version: int) -> int:
        counts = delta_files.file_row_counts(table, version)
        if any(n is None for n in counts.values()):  # a file written without stats: count the rows
            return self._reader(spark, table, version).option("onlyFiles", json.dumps(sorted(counts))).load().count()
        return sum(counts.values())  # type: ignore[arg-type]

    def rows_committed(self, spark: SparkSession, table: str, version: int) -> int | None:
        return delta_files.commit_row_count(table, version)


_CDF_NAMES = ["_change_type", "_commit_version", "_commit_timestamp"]


def _cdf_arrow_schema(schema: StructType, feed: pa.Table) -> pa.Schema:
    """The feed's Arrow schema with the table's columns as Spark reads them and the CDF columns typed as Delta's."""
    table = arrow_schema_of(schema)
    return pa.schema([*table, pa.field("_change_type", pa.string()), pa.field("_commit_version", pa.int64()),
                      pa.field("_commit_timestamp", pa.timestamp("us", tz="UTC"))])
