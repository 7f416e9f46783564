"""The two stores of small metadata tables: :class:`SparkStore` (delta-spark) and :class:`DeltaRsStore` (no JVM).

A store does not choose an engine: :class:`SparkStore` is handed the session and the native engine by its caller
(:func:`sparkship.tables.metadata.store_for`). Local tables are read with delta-rs in both (no Spark job).
"""
from __future__ import annotations

import random
import time
import uuid
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
from deltalake import DeltaTable

from sparkship.errors import ConcurrentWriteError, NotFoundError
from sparkship.tables import deltars_io, transactions, writes
from sparkship.tables import files as delta_files
from sparkship.tables.engine import CREATED_TABLE_PROPERTIES, METADATA_TABLE_PROPERTIES, DeltaEngine, is_local_path
from sparkship.tables.files import table_exists
from sparkship.tables.filesystem import check_commit_support
from sparkship.tables.writes import check_columns

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

APPEND_ATTEMPTS = 60


class MetadataStore(Protocol):
    """Reads and single-commit writes of a small Delta table, as Arrow."""

    def version(self, path: str) -> int | None: ...

    def read(self, path: str, version: int | None, columns: list[str] | None) -> pa.Table: ...

    def append(self, path: str, table: pa.Table, *, expected_version: int | None, partition_by: list[str] | None,
               overwrite: bool, append_only: bool = False) -> int: ...


class SparkStore:
    """Commits through the native Delta engine (delta-spark) of ``spark``; reads local tables with delta-rs."""

    def __init__(self, spark: SparkSession, delta: DeltaEngine) -> None:
        self.spark = spark
        self.delta = delta

    def version(self, path: str) -> int | None:
        if is_local_path(path):
            return deltars_io.table_version(path)
        return self.delta.version(self.spark, path) if self.delta.exists(self.spark, path) else None

    def read(self, path: str, version: int | None, columns: list[str] | None) -> pa.Table:
        if is_local_path(path):
            return deltars_io.read_arrow(path, version, columns)
        if not self.delta.exists(self.spark, path):
            raise NotFoundError(f"no Delta table at {path}")
        df = self.delta.read(self.spark, path, version)
        return deltars_io.spark_to_arrow(df.select(*columns) if columns else df)

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
        # lookup of the table's transaction ids, for which delta-spark rebuilds the table's state (several
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
        return is_local_path(path) and transactions.supported(self.spark)

    def _commit(self, path: str, table: pa.Table, mode: str, partition_by: list[str] | None,
                expected_version: int | None, from_arrow: bool) -> int:
        """One commit: from Arrow without a Spark job where the table takes it, else a Spark write."""
        if from_arrow:
            committed = transactions.append_arrow(self.spark, path, table, expected_version=expected_version,
                                                  write_id=uuid.uuid4().hex)
            if committed is not None:
                return committed
        options = writes.WriteOptions(partition_by=partition_by, expected_version=expected_version,
                                      properties=METADATA_TABLE_PROPERTIES)
        return writes.write(self.delta, deltars_io.arrow_to_spark(self.spark, table), path, mode, options)


class DeltaRsStore:
    """delta-rs only: no Spark, no JVM."""

    def version(self, path: str) -> int | None:
        return deltars_io.table_version(path)

    def read(self, path: str, version: int | None, columns: list[str] | None) -> pa.Table:
        return deltars_io.read_arrow(path, version, columns)

    def append(self, path: str, table: pa.Table, *, expected_version: int | None, partition_by: list[str] | None,
               overwrite: bool, append_only: bool = False) -> int:
        # A plain delta-rs commit is already a create-if-absent of the next log file: append_only changes nothing.
        check_commit_support(path)
        schema = pa.schema([f.with_nullable(True) for f in table.schema])
        if table_exists(path):
            existing = delta_files.table_arrow_schema(path)
            check_columns({f.name: f.type for f in delta_files._normalise_schema(schema)},
                          {f.name: f.type for f in existing}, path)
            schema = existing
            partition_by = list(DeltaTable(path).metadata().partition_columns)
        table = table.select(schema.names).cast(schema)
        written = delta_files.write_data_files(path, table, schema, partition_by or [])
        write_id = uuid.uuid4().hex
        try:
            delta_files.commit_files(
                path, written, schema, overwrite=overwrite, partition_by=partition_by or [], replace_partitions=None,
                expected_version=expected_version, write_id=write_id, properties=dict(CREATED_TABLE_PROPERTIES),
            )
        except Exception:
            delta_files.remove_files(path, written)
            raise
        return deltars_io.version_of_write(path, write_id)
