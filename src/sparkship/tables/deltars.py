"""The ``deltars`` engine: Spark DataFrames over the ``sparkship_delta`` Python data source (delta-rs)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sparkship.errors import ConcurrentWriteError, SparkshipError
from sparkship.tables import files as delta_files
from sparkship.tables import metadata

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


def exists(spark: "SparkSession", path: str) -> bool:
    return delta_files.table_exists(path)


def version(spark: "SparkSession", path: str) -> int:
    return int(metadata.table_version(path))  # type: ignore[arg-type]


def history(spark: "SparkSession", path: str, limit: int | None) -> list[dict[str, Any]]:
    return metadata.history(path, limit)


def schema(spark: "SparkSession", path: str, version: int | None) -> "StructType":
    from sparkship.tables.datasource import spark_schema_of

    return spark_schema_of(delta_files.table_arrow_schema(path, version))


def partition_columns(spark: "SparkSession", path: str) -> list[str]:
    from deltalake import DeltaTable

    return list(DeltaTable(path).metadata().partition_columns)


def read(spark: "SparkSession", path: str, version: int | None, only_files: list[str] | None = None) -> "DataFrame":
    # The schema comes from the log on the driver, which spares Spark a Python worker round trip to ask for it.
    reader = spark.read.format(delta_files.SOURCE_NAME).schema(schema(spark, path, version)).option("path", path)
    if version is not None:
        reader = reader.option("versionAsOf", str(version))
    if only_files is not None:
        reader = reader.option("onlyFiles", json.dumps(only_files))
    return reader.load()


def _reraise(exc: Exception) -> None:
    text = str(exc)
    if delta_files.CONFLICT_MARKER in text:
        raise ConcurrentWriteError(_marked_line(text, delta_files.CONFLICT_MARKER)) from None
    if delta_files.ERROR_MARKER in text:
        raise SparkshipError(_marked_line(text, delta_files.ERROR_MARKER)) from None
    raise exc


def _marked_line(text: str, marker: str) -> str:
    line = next(l for l in text.splitlines() if marker in l)
    return line[line.index(marker) + len(marker) :].lstrip(": ").strip()


def write(
    df: "DataFrame",
    path: str,
    mode: str,
    *,
    partition_by: list[str],
    replace_partitions: dict[str, Any] | None,
    expected_version: int | None,
    write_id: str,
    overwrite_schema: bool,
) -> None:
    writer = (
        df.write.format(delta_files.SOURCE_NAME)
        .mode(mode)
        .option("path", path)
        .option("partitionBy", json.dumps(partition_by))
        .option("writeId", write_id)
        .option("overwriteSchema", str(overwrite_schema).lower())
    )
    if replace_partitions:
        writer = writer.option("replacePartitions", json.dumps(replace_partitions, default=str))
    if expected_version is not None:
        writer = writer.option("expectedVersion", str(expected_version))
    try:
        writer.save()
    except Exception as exc:  # Spark wraps the data source's exceptions; recover ours by their marker
        _reraise(exc)


def version_of_write(spark: "SparkSession", path: str, write_id: str) -> int:
    return metadata.version_of_write(path, write_id)


def added_rows(spark: "SparkSession", path: str, after_version: int, up_to_version: int) -> "DataFrame":
    from sparkship.tables import NotAppendOnlyError

    before = {f[0] for f in delta_files.list_files(path, after_version)}
    after = {f[0] for f in delta_files.list_files(path, up_to_version)}
    if before - after:
        raise NotAppendOnlyError(
            f"{path} changed by more than appends between versions {after_version} and {up_to_version} "
            f"({len(before - after)} data files removed): rescore in full"
        )
    return read(spark, path, up_to_version, only_files=sorted(after - before))


def count_rows(spark: "SparkSession", path: str, version: int, after_version: int | None) -> int:
    counts = delta_files.file_row_counts(path, version)
    if after_version is not None:
        before = delta_files.file_row_counts(path, after_version)
        counts = {f: n for f, n in counts.items() if f not in before}
    if any(n is None for n in counts.values()):  # a file written without stats: count the rows
        rows = read(spark, path, version) if after_version is None else added_rows(spark, path, after_version, version)
        return rows.count()
    return sum(counts.values())  # type: ignore[arg-type]


def rows_committed(spark: "SparkSession", path: str, version: int) -> int | None:
    return delta_files.commit_row_count(path, version)
