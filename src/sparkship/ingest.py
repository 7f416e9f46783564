"""Files into Delta tables: the ``tables import`` command's library side."""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from sparkship import tables
from sparkship.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
FORMATS = ("csv", "parquet", "json")


def detect_format(source: str) -> str:
    ext = os.path.splitext(source.rstrip("/"))[1].lower().lstrip(".")
    aliases = {"csv": "csv", "parquet": "parquet", "pq": "parquet", "json": "json", "jsonl": "json", "ndjson": "json"}
    if ext not in aliases:
        raise UsageError(f"cannot tell the format of {source!r} from its extension: pass --format csv|parquet|json")
    return aliases[ext]


def import_file(
    spark: "SparkSession",
    source: str,
    table: str,
    *,
    fmt: str | None = None,
    mode: str = "append",
    partition_by: list[str] | None = None,
    expected_version: int | None = None,
) -> dict[str, Any]:
    """Read ``source`` (CSV with a header and inferred types, parquet or JSON lines) and write it to ``table``.

    Returns ``{"table", "version", "rows"}``. ``expected_version`` makes the write a compare-and-set: it commits
    only if the table is still at that version (-1: it must not exist yet).

        >>> import_file(spark, "people.csv", "/tmp/people")      # doctest: +SKIP
        {'table': '/tmp/people', 'version': 0, 'rows': 3}
    """
    if not os.path.exists(source) and "://" not in source:
        raise UsageError(f"--source {source}: no such file")
    fmt = fmt or detect_format(source)
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    reader = spark.read
    if fmt == "csv":
        reader = reader.option("header", "true").option("inferSchema", "true").option("mode", "FAILFAST")
    df = reader.format(fmt).load(source)
    if not df.columns:
        raise UsageError(f"{source} has no columns")
    df = df.cache()
    rows = df.count()
    log.info("importing %d rows from %s into %s (%s)", rows, source, table, mode)
    version = tables.write(df, table, mode=mode, partition_by=partition_by, expected_version=expected_version)
    df.unpersist()
    return {"table": table, "version": version, "rows": rows}
