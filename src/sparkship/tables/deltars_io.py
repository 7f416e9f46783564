"""delta-rs reads of a table (its version, history and data as Arrow) and Arrow <-> Spark conversions.

No engine choice here: both the ``deltars`` engine and the metadata stores read through these.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from sparkship.errors import IntegrityError, NotFoundError
from sparkship.tables import files as delta_files
from sparkship.tables.engine import check_readable
from sparkship.tables.files import table_exists

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

_KNOWN_COMMIT_KEYS = {"version", "timestamp", "operation", "operationParameters", "clientVersion", "engineInfo",
                      "operationMetrics", "readVersion", "isBlindAppend"}


def table_version(path: str) -> int | None:
    """The latest version of the table at ``path``, or None when there is none."""
    if not table_exists(path):
        return None
    with readable_log(path):
        return int(DeltaTable(path).version())


def read_arrow(path: str, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
    """The table (or ``columns`` of it) at ``version`` as an Arrow table."""
    if not table_exists(path):
        raise NotFoundError(f"no Delta table at {path}")
    with readable_log(path):
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


@contextmanager
def readable_log(path: str) -> Iterator[None]:
    """A Delta log that delta-rs cannot read (a commit file lost, a gap) is an IntegrityError naming the table."""
    check_contiguous_log(path)
    try:
        yield
    except DeltaError as exc:
        raise IntegrityError(f"Delta table {path}: its log cannot be read ({exc})") from None


def check_contiguous_log(path: str) -> None:
    """Commit files must run without a gap from version 0 (or from a checkpoint) to the latest.

    A reader that takes the protocol and metadata from a checksum file (.crc) would otherwise list a table whose
    first commits were deleted as if it had fewer rows.
    """
    log_dir = os.path.join(path, "_delta_log")
    if not os.path.isdir(log_dir):
        return
    commits = delta_files.commit_versions(path)
    if not commits:
        return
    prefixes = [n.split(".")[0] for n in os.listdir(log_dir) if ".checkpoint" in n]
    checkpoints = [int(p) for p in prefixes if p.isascii() and p.isdigit()]
    start = max((c for c in checkpoints if c <= commits[-1]), default=-1) + 1
    missing = sorted(set(range(start, commits[-1] + 1)) - set(commits))
    if missing:
        raise IntegrityError(
            f"Delta table {path}: its delta log misses commit file(s) {missing[:5]} (no checkpoint covers them; "
            "the commit files must be contiguous): refused rather than read as fewer versions"
        )


def history(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Commits, newest first, as ``{version, timestamp, operation, parameters, metrics, metadata, blind_append}``."""
    if not table_exists(path):
        raise NotFoundError(f"no Delta table at {path}")
    return [
        {
            "version": c.get("version"),
            "timestamp": c.get("timestamp"),
            "operation": c.get("operation"),
            "parameters": c.get("operationParameters") or {},
            "metrics": c.get("operationMetrics") or {},
            "metadata": {k: v for k, v in c.items() if k not in _KNOWN_COMMIT_KEYS},
            "blind_append": c.get("isBlindAppend"),
        }
        for c in DeltaTable(path).history(limit)
    ]


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


def arrow_to_spark(spark: SparkSession, table: pa.Table) -> DataFrame:
    """A Spark DataFrame of an Arrow table."""
    try:
        return spark.createDataFrame(table)  # pyspark >= 4.0 takes Arrow directly
    except TypeError:  # pyspark 3.5
        from pyspark.sql.pandas.types import from_arrow_schema  # pyspark loads with a session, not the package

        return spark.createDataFrame(table.to_pandas(), schema=from_arrow_schema(table.schema))


def spark_to_arrow(df: DataFrame) -> pa.Table:
    """A (small) Spark DataFrame collected as an Arrow table."""
    if hasattr(df, "toArrow"):
        return df.toArrow()
    return pa.Table.from_pandas(df.toPandas(), preserve_index=False)


def spark_schema_of(arrow_schema: pa.Schema) -> StructType:
    """The Spark schema of an Arrow schema (timestamps with a time zone, as Delta stores them)."""
    from pyspark.sql.pandas.types import from_arrow_schema  # pyspark loads with a session, not with the package

    return from_arrow_schema(arrow_schema, prefer_timestamp_ntz=False)


def arrow_schema_of(spark_schema: StructType) -> pa.Schema:
    """The Arrow schema of a Spark schema, every column nullable (as delta-spark writes DataFrames)."""
    from pyspark.sql.pandas.types import to_arrow_schema  # pyspark loads with a session, not with the package

    schema = to_arrow_schema(spark_schema, timestamp_utc=True)
    return pa.schema([f.with_nullable(True) for f in schema])
