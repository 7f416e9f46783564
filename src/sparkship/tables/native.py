"""The ``native`` engine: ``format("delta")`` and the delta-spark API (Databricks, or a JVM with Delta's jars).

Not exercised by the local test suite (Delta's jars cannot be fetched here); it uses only documented
delta-spark calls, and the same facade tests run against it wherever the jars exist
(``SPARKSHIP_DELTA_ENGINE=native``).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sparkship.errors import ConcurrentWriteError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

WRITE_ID_KEY = "sparkship.writeId"


def _table(spark: "SparkSession", path: str):  # noqa: ANN202
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, path)


def exists(spark: "SparkSession", path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def version(spark: "SparkSession", path: str) -> int:
    return int(_table(spark, path).history(1).select("version").first()[0])


def history(spark: "SparkSession", path: str, limit: int | None) -> list[dict[str, Any]]:
    rows = _table(spark, path).history(limit) if limit else _table(spark, path).history()
    return [
        {
            "version": r["version"],
            "timestamp": int(r["timestamp"].timestamp() * 1000),
            "operation": r["operation"],
            "parameters": dict(r["operationParameters"] or {}),
            "metrics": dict(r["operationMetrics"] or {}),
            "metadata": json.loads(r["userMetadata"]) if r["userMetadata"] else {},
        }
        for r in rows.collect()
    ]


def schema(spark: "SparkSession", path: str, version: int | None) -> "StructType":
    return read(spark, path, version).schema


def partition_columns(spark: "SparkSession", path: str) -> list[str]:
    return list(_table(spark, path).detail().first()["partitionColumns"])


def read(spark: "SparkSession", path: str, version: int | None) -> "DataFrame":
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


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
    if expected_version is not None:
        current = version(spark=df.sparkSession, path=path) if exists(df.sparkSession, path) else -1
        if current != expected_version:
            raise ConcurrentWriteError(f"table {path} is at version {current}, not {expected_version}")
    writer = df.write.format("delta").mode(mode).option("userMetadata", json.dumps({WRITE_ID_KEY: write_id}))
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if replace_partitions:
        where = " AND ".join(
            f"`{k}` IS NULL" if v is None else f"`{k}` = {_sql_literal(v)}" for k, v in replace_partitions.items()
        )
        writer = writer.option("replaceWhere", where)
    if overwrite_schema:
        writer = writer.option("overwriteSchema", "true")
    writer.save(path)


def version_of_write(spark: "SparkSession", path: str, write_id: str) -> int:
    for commit in history(spark, path, 1000):
        if commit["metadata"].get(WRITE_ID_KEY) == write_id:
            return int(commit["version"])
    raise RuntimeError(f"the commit of write {write_id} is not in the history of {path}")


def added_rows(spark: "SparkSession", path: str, after_version: int, up_to_version: int) -> "DataFrame":
    from sparkship.tables import NotAppendOnlyError

    ops = [h for h in history(spark, path, None) if after_version < h["version"] <= up_to_version]
    if any(h["operation"] not in ("WRITE", "STREAMING UPDATE", "CREATE TABLE AS SELECT") or
           h["parameters"].get("mode", "Append") != "Append" for h in ops):
        raise NotAppendOnlyError(
            f"{path} changed by more than appends between versions {after_version} and {up_to_version}: rescore in full"
        )
    # Change Data Feed when the table has it; otherwise the difference of the two snapshots.
    props = _table(spark, path).detail().first()["properties"] or {}
    if props.get("delta.enableChangeDataFeed", "false").lower() == "true":
        changes = (
            spark.read.format("delta").option("readChangeFeed", "true")
            .option("startingVersion", after_version + 1).option("endingVersion", up_to_version).load(path)
        )
        return changes.where("_change_type = 'insert'").drop("_change_type", "_commit_version", "_commit_timestamp")
    return read(spark, path, up_to_version).exceptAll(read(spark, path, after_version))


def count_rows(spark: "SparkSession", path: str, version: int, after_version: int | None) -> int:
    # Delta answers a plain count from the log's statistics.
    rows = read(spark, path, version) if after_version is None else added_rows(spark, path, after_version, version)
    return rows.count()


def rows_committed(spark: "SparkSession", path: str, version: int) -> int | None:
    for commit in history(spark, path, None):
        if commit["version"] == version:
            rows = commit["metrics"].get("numOutputRows")
            return int(rows) if rows is not None else None
    return None
