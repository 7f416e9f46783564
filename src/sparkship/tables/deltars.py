"""The ``deltars`` engine: Spark DataFrames over the ``sparkship_delta`` Python data source (delta-rs).

For machines without Delta's jars, and plain local disks: delta-rs commits with hard links, which FUSE mounts
(Unity Catalog volumes) refuse; :func:`~sparkship.tables.files.check_commit_support` says so before any data
is written.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sparkship.tables import files as delta_files
from sparkship.tables import metadata
from sparkship.tables.engine import Commit, FileChanges, WriteRequest

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


def register(spark: "SparkSession") -> None:
    """Make ``format("sparkship_delta")`` known to ``spark`` (Spark 4's Python data sources)."""
    from sparkship.tables.datasource import DeltaRsDataSource

    spark.dataSource.register(DeltaRsDataSource)


class DeltaRsEngine:
    """delta-rs behind the :class:`~sparkship.tables.engine.DeltaEngine` Protocol."""

    name = "deltars"

    def exists(self, spark: "SparkSession", table: str) -> bool:
        return delta_files.table_exists(table)

    def version(self, spark: "SparkSession", table: str) -> int:
        return int(metadata.table_version(table))  # type: ignore[arg-type]

    def history(self, spark: "SparkSession", table: str, limit: int | None) -> list[Commit]:
        return [Commit(**c) for c in metadata.history(table, limit)]

    def schema(self, spark: "SparkSession", table: str, version: int | None) -> "StructType":
        from sparkship.tables.datasource import spark_schema_of

        return spark_schema_of(delta_files.table_arrow_schema(table, version))

    def partition_columns(self, spark: "SparkSession", table: str) -> list[str]:
        from deltalake import DeltaTable

        return list(DeltaTable(table).metadata().partition_columns)

    def read(self, spark: "SparkSession", table: str, version: int | None) -> "DataFrame":
        return self._reader(spark, table, version).load()

    def _reader(self, spark: "SparkSession", table: str, version: int | None):  # noqa: ANN202
        # The schema comes from the log on the driver, which spares Spark a Python worker round trip to ask for it.
        reader = spark.read.format(delta_files.SOURCE_NAME).schema(self.schema(spark, table, version))
        reader = reader.option("path", table)
        return reader.option("versionAsOf", str(version)) if version is not None else reader

    def write(self, df: "DataFrame", table: str, request: WriteRequest) -> int:
        from sparkship.tables.datasource import arrow_schema_of

        delta_files.check_commit_support(table)
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
            )
        except BaseException:
            delta_files.remove_files(table, written)
            raise
        return metadata.version_of_write(table, request.write_id)

    def file_changes(self, spark: "SparkSession", table: str, after_version: int, up_to_version: int) -> FileChanges:
        before = delta_files.file_row_counts(table, after_version)
        after = delta_files.file_row_counts(table, up_to_version)
        return FileChanges(
            added={f: n for f, n in after.items() if f not in before},
            removed={f for f in before if f not in after},
        )

    def read_files(self, spark: "SparkSession", table: str, version: int, files: list[str]) -> "DataFrame":
        return self._reader(spark, table, version).option("onlyFiles", json.dumps(sorted(files))).load()

    def count_rows(self, spark: "SparkSession", table: str, version: int, after_version: int | None) -> int:
        counts = delta_files.file_row_counts(table, version)
        if after_version is not None:
            counts = self.file_changes(spark, table, after_version, version).added
        if any(n is None for n in counts.values()):  # a file written without stats: count the rows
            return self.read_files(spark, table, version, list(counts)).count()
        return sum(counts.values())  # type: ignore[arg-type]

    def rows_committed(self, spark: "SparkSession", table: str, version: int) -> int | None:
        return delta_files.commit_row_count(table, version)
