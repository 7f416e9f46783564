"""Small metadata tables (registry, aliases, events, scoring state) as Delta tables, read and written with Arrow.

:func:`store_for` picks the store for a path: :class:`~sparkship.tables.stores.SparkStore` (commits through
delta-spark) whenever the process's Spark session uses the native engine, and
:class:`~sparkship.tables.stores.DeltaRsStore` (no Spark job, no JVM) otherwise; why: docs/DESIGN.md. Writes are
single commits; ``expected_version`` makes one a compare-and-set on the whole table.

    >>> import pyarrow as pa
    >>> from sparkship.tables import append_arrow, read_arrow
    >>> v = append_arrow("/tmp/doc_meta", pa.table({"k": [1]}), expected_version=None)  # doctest: +SKIP
"""
from __future__ import annotations

import pyarrow as pa

from sparkship.errors import UsageError
from sparkship.tables.deltars_io import arrow_to_spark, history, spark_to_arrow, version_of_write
from sparkship.tables.engine import is_table_name
from sparkship.tables.engine_choice import NATIVE, native_session
from sparkship.tables.names import check_table_argument
from sparkship.tables.stores import DeltaRsStore, MetadataStore, SparkStore
from sparkship.tables.writes import check_columns

__all__ = [
    "store_for", "table_version", "read_arrow", "append_arrow", "MetadataStore", "SparkStore", "DeltaRsStore",
    "check_columns", "history", "version_of_write", "arrow_to_spark", "spark_to_arrow",
]


def store_for(path: str) -> MetadataStore:
    """The store for ``path``: through the process's Spark session when it uses the native engine, else delta-rs.

    Raises:
        UsageError: ``path`` is a catalog table name and no session with the native engine runs.
    """
    spark = native_session()
    if spark is not None:
        check_table_argument(path)
        return SparkStore(spark, NATIVE)
    if is_table_name(path):
        raise UsageError(f"{path} is a catalog table name: it needs a Spark session with the native engine "
                         "(delta-spark), and this process has none")
    return DeltaRsStore()


def table_version(path: str) -> int | None:
    """Latest version, or None when there is no table."""
    return store_for(path).version(path)


def read_arrow(path: str, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
    """The whole table (or ``columns`` of it) at ``version`` as an Arrow table."""
    return store_for(path).read(path, version, columns)


def append_arrow(
    path: str,
    table: pa.Table,
    *,
    expected_version: int | None = None,
    partition_by: list[str] | None = None,
    overwrite: bool = False,
    append_only: bool = False,
) -> int:
    """Append (or overwrite with) ``table`` in one commit; return the version committed.

    ``expected_version``: commit only if the table is still at that version (-1: it must not exist yet),
    else raise :class:`~sparkship.errors.ConcurrentWriteError` with the table unchanged.
    ``append_only``: the table is a log that no writer compare-and-sets (the registry's events), so a plain
    append need not be one either.
    """
    return store_for(path).append(path, table, expected_version=expected_version, partition_by=partition_by,
                                  overwrite=overwrite, append_only=append_only)
