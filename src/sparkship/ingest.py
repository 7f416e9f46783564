"""Files into Delta tables: the ``tables import`` command's library side.

A new table takes the types Spark infers from the file. Appending a CSV or JSON-lines file (untyped text) to an
existing table parses every value with the *table's* type instead of guessing one from the file: a one-row CSV
whose integer key is empty is a null key, not a string column. A value that does not parse as its column's type
is refused naming the row and the column, before anything is written.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from sparkship import tables
from sparkship.errors import SchemaMismatchError, UsageError
from sparkship.spark import cached, uncached
from sparkship.tables.names import check_writable_location

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)
FORMATS = ("csv", "parquet", "json")
UNTYPED = ("csv", "json")
_POSITION = "__sparkship_position"


def detect_format(source: str) -> str:
    """The format of ``source`` from its extension.

    >>> detect_format("events.jsonl"), detect_format("/data/people.CSV"), detect_format("day=1/part.pq")
    ('json', 'csv', 'parquet')
    """
    ext = os.path.splitext(source.rstrip("/"))[1].lower().lstrip(".")
    aliases = {"csv": "csv", "parquet": "parquet", "pq": "parquet", "json": "json", "jsonl": "json", "ndjson": "json"}
    if ext not in aliases:
        raise UsageError(f"cannot tell the format of {source!r} from its extension: pass --format csv|parquet|json")
    return aliases[ext]


def _read_inferred(spark: SparkSession, source: str, fmt: str) -> DataFrame:
    reader = spark.read
    if fmt == "csv":
        reader = reader.option("header", "true").option("inferSchema", "true").option("mode", "FAILFAST")
    return reader.format(fmt).load(source)


def _read_as_text(spark: SparkSession, source: str, fmt: str) -> DataFrame:
    """Every value as the text the file holds (CSV: no inference; JSON: numbers and booleans as strings)."""
    if fmt == "csv":
        return spark.read.option("header", "true").option("inferSchema", "false").option("mode", "FAILFAST").csv(source)
    return spark.read.option("primitivesAsString", "true").option("mode", "FAILFAST").json(source)


def _row_label(fmt: str, row: int) -> str:
    # Line numbers assume one record per line (no blank lines, no quoted line breaks): say so by giving both.
    line = row + 1 if fmt == "csv" else row
    return f"row {row} (line {line})"


def parse_with_schema(
    df: DataFrame, schema: StructType, source: str, fmt: str
) -> tuple[DataFrame, int, DataFrame]:
    """``df``'s text columns cast to ``schema``'s types (columns the table lacks are left for the schema check
    to name); returns (the typed rows, their count, the cached frame to unpersist after use). Raises
    :class:`SchemaMismatchError` naming the first row and column whose value does not parse. One pass over the
    file when everything parses.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    types = {f.name: f.dataType for f in schema.fields}
    checked = [c for c in df.columns if c in types and not isinstance(types[c], StringType)]
    positioned = cached(df.withColumn(_POSITION, F.monotonically_increasing_id()))  # file order, one read
    try:
        # A value is bad when the text is there (not null, not blank) but the cast to the table's type fails.
        first_bad = [
            F.min(F.when(F.col(f"`{c}`").isNotNull() & (F.trim(F.col(f"`{c}`")) != "")
                         & F.col(f"`{c}`").try_cast(types[c]).isNull(), F.col(_POSITION))).alias(c)
            for c in checked
        ]
        summary = positioned.agg(F.count(F.lit(1)).alias(_POSITION), *first_bad).collect()[0]
        bad = [(summary[c], c) for c in checked if summary[c] is not None]
        if bad:
            position, column = min(bad)
            row = positioned.where(F.col(_POSITION) <= position).count()  # monotonic ids are not contiguous
            value = positioned.where(F.col(_POSITION) == position).select(f"`{column}`").first()[0]
            raise SchemaMismatchError(
                f"{source}, {_row_label(fmt, row)}, column '{column}': {value!r} does not parse as "
                f"{types[column].simpleString()}, the column's type in the table; nothing was written"
            )
        typed = positioned.select(*[
            (F.when(F.trim(F.col(f"`{c}`")) != "", F.col(f"`{c}`").try_cast(types[c])) if c in checked
             else F.col(f"`{c}`")).alias(c)
            for c in df.columns
        ])
        return typed, int(summary[_POSITION]), positioned
    except BaseException:
        uncached(positioned)
        raise


def import_file(
    spark: SparkSession,
    source: str,
    table: str,
    *,
    fmt: str | None = None,
    mode: str = "append",
    partition_by: list[str] | None = None,
    expected_version: int | None = None,
) -> dict[str, Any]:
    """Read ``source`` (CSV with a header, parquet or JSON lines) and write it to ``table``.

    A new table (or ``mode="overwrite"``) takes the types Spark infers; an append of CSV or JSON lines parses
    the file with the existing table's types (see the module docstring). Returns ``{"table", "version", "rows"}``.
    ``expected_version`` makes the write a compare-and-set: it commits only if the table is still at that version
    (-1: it must not exist yet).

        >>> import_file(spark, "people.csv", "/tmp/people")      # doctest: +SKIP
        {'table': '/tmp/people', 'version': 0, 'rows': 3}
    """
    if not os.path.exists(source) and "://" not in source:
        raise UsageError(f"--source {source}: no such file")
    fmt = fmt or detect_format(source)
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    check_writable_location(table, "--table")
    if mode == "append" and fmt in UNTYPED and tables.exists(spark, table):
        text = _read_as_text(spark, source, fmt)
        if not text.columns:
            raise UsageError(f"{source} has no columns")
        df, rows, cache = parse_with_schema(text, tables.schema(spark, table), source, fmt)
    else:
        df = _read_inferred(spark, source, fmt)
        if not df.columns:
            raise UsageError(f"{source} has no columns")
        df = cache = cached(df)
        rows = df.count()
    log.info("importing %d rows from %s into %s (%s)", rows, source, table, mode)
    try:
        version = tables.write(df, table, mode=mode, partition_by=partition_by, expected_version=expected_version)
    finally:
        uncached(cache)
    return {"table": table, "version": version, "rows": rows}
