"""Spark Python Data Source ``sparkship_delta``: Delta tables for Spark without Delta's jars.

Write tasks write parquet files into the table folder and return what they wrote; the driver then makes ONE
Delta commit through delta-rs, so a write is atomic: a failed or killed job leaves only unreferenced files,
never a half-visible table. Reads list the data files of one version and yield Arrow record batches.
The options are described in :mod:`sparkship.tables.files`.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)
from pyspark.sql.types import StructType

from sparkship.tables import files as delta_files
from sparkship.tables.deltars_io import arrow_schema_of, spark_schema_of


@dataclass
class FileSplit(InputPartition):
    """Data files (relative path, partition values) read by one Spark task."""

    files: list[delta_files.DataFile] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(len(self.files))


@dataclass
class WrittenFiles(WriterCommitMessage):
    """What one write task wrote: add-action fields for each file."""

    files: list[dict[str, Any]]


class DeltaRsReader(DataSourceReader):
    def __init__(self, path: str, version: int | None, schema: pa.Schema, only_files: list[str] | None) -> None:
        self.path = path
        self.version = version
        self.arrow_schema = schema
        self.only_files = set(only_files) if only_files is not None else None

    def partitions(self) -> list[FileSplit]:
        listed = delta_files.list_files(self.path, self.version)
        if self.only_files is not None:
            listed = [f for f in listed if f[0] in self.only_files]
        return [FileSplit(s) for s in delta_files.plan_splits(listed)]

    def read(self, partition: FileSplit) -> Iterator[pa.RecordBatch]:  # type: ignore[override]
        yield from delta_files.read_batches(self.path, partition.files, self.arrow_schema)


class DeltaRsWriter(DataSourceArrowWriter):
    """Write tasks write parquet files; ``commit`` stages the list for the caller's process to commit.

    The Delta commit itself runs in the process that called ``save()`` (:meth:`DeltaRsEngine.write`), so its
    errors (a lost compare-and-set, a filesystem that refuses the commit) reach the caller as exceptions.
    """

    def __init__(self, path: str, schema: pa.Schema, options: Mapping[str, str]) -> None:
        import json

        self.path = path
        self.arrow_schema = schema
        self.partition_by: list[str] = json.loads(options.get("partitionBy") or "[]")
        self.write_id = options["writeId"]

    def write(self, iterator: Iterator[pa.RecordBatch]) -> WrittenFiles:
        """Runs in each task: write this task's rows as parquet files (not yet part of the table)."""
        return WrittenFiles(delta_files.write_data_files(self.path, iterator, self.arrow_schema, self.partition_by))

    def commit(self, messages: list[WrittenFiles]) -> None:  # type: ignore[override]
        """Runs once after every task succeeded: record what was written, for the caller to commit."""
        delta_files.stage_written(self.path, self.write_id, [f for m in messages if m is not None for f in m.files])

    def abort(self, messages: list[WrittenFiles]) -> None:  # type: ignore[override]
        delta_files.remove_files(self.path, [f for m in messages if m is not None for f in m.files])


class DeltaRsDataSource(DataSource):
    """``spark.read.format("sparkship_delta").load(path)`` / ``df.write.format("sparkship_delta").save(path)``."""

    @classmethod
    def name(cls) -> str:
        return delta_files.SOURCE_NAME

    def _version(self) -> int | None:
        v = self.options.get("versionAsOf")
        return int(v) if v not in (None, "") else None

    def schema(self) -> StructType:
        return spark_schema_of(delta_files.table_arrow_schema(self.options["path"], self._version()))

    def reader(self, schema: StructType) -> DeltaRsReader:
        import json

        only = self.options.get("onlyFiles")
        return DeltaRsReader(
            self.options["path"], self._version(), arrow_schema_of(schema), json.loads(only) if only else None
        )

    def writer(self, schema: StructType, overwrite: bool) -> DeltaRsWriter:
        return DeltaRsWriter(self.options["path"], arrow_schema_of(schema), self.options)
