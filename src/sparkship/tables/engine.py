"""The seam between the two Delta engines: one Protocol, implemented by :class:`~sparkship.tables.native.NativeEngine`
(delta-spark) and :class:`~sparkship.tables.deltars.DeltaRsEngine` (a Spark Python data source over delta-rs).

Both take the same arguments and raise the same exceptions (:class:`~sparkship.errors.ConcurrentWriteError`,
:class:`~sparkship.errors.SchemaMismatchError`, :class:`NotAppendOnlyError`, ...); the facade in
:mod:`sparkship.tables` checks inputs once and then calls one of them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sparkship.errors import SparkshipError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


_IDENT = r"(?:`(?:[^`]|``)+`|[A-Za-z_][A-Za-z0-9_]*)"
_TABLE_NAME = re.compile(rf"{_IDENT}(?:\.{_IDENT}){{1,2}}")


def is_table_name(table: str) -> bool:
    """True for a catalog name (``catalog.schema.table`` or ``schema.table``, parts optionally backquoted).

    Anything else is a path: a local folder whose name has dots is written ``./data.v2``.

    >>> is_table_name("main.sales.churn"), is_table_name("`my-cat`.sales.churn"), is_table_name("/data/churn")
    (True, True, False)
    """
    return _TABLE_NAME.fullmatch(table) is not None


def is_local_path(table: str) -> bool:
    """A path on a mounted filesystem: neither a catalog name nor a URI (``s3://``, ``dbfs:/``...)."""
    from sparkship.config import is_uri

    return not is_uri(table) and not is_table_name(table)


class NotAppendOnlyError(SparkshipError):
    """The table changed by more than appends between two versions."""


class UnsupportedFilesystemError(SparkshipError):
    """The filesystem under a table refuses an operation the engine needs to commit (a FUSE mount, say)."""

    exit_code = 2


@dataclass(frozen=True)
class WriteRequest:
    """How :meth:`DeltaEngine.write` commits: all checks on it are done by the facade beforehand."""

    mode: str  # "append" | "overwrite"
    write_id: str  # recorded in the commit, so the caller can find the version it made
    partition_by: list[str] = field(default_factory=list)
    replace_partitions: dict[str, Any] | None = None
    expected_version: int | None = None  # compare-and-set: -1 = the table must not exist yet
    overwrite_schema: bool = False


@dataclass(frozen=True)
class Commit:
    """One entry of a table's history."""

    version: int
    timestamp: int  # ms since the epoch
    operation: str
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "timestamp": self.timestamp, "operation": self.operation,
            "parameters": self.parameters, "metrics": self.metrics, "metadata": self.metadata,
        }


@dataclass(frozen=True)
class FileChanges:
    """Data files added and removed (with data changes) between two versions, with each added file's rows."""

    added: dict[str, int | None]  # relative path -> numRecords from the file's statistics (None: no stats)
    removed: set[str]


class DeltaEngine(Protocol):
    """What both Delta engines do, with the same signatures. ``table`` is a path (a name for the native engine)."""

    name: str

    def exists(self, spark: "SparkSession", table: str) -> bool: ...

    def version(self, spark: "SparkSession", table: str) -> int: ...

    def history(self, spark: "SparkSession", table: str, limit: int | None) -> list[Commit]: ...

    def schema(self, spark: "SparkSession", table: str, version: int | None) -> "StructType": ...

    def partition_columns(self, spark: "SparkSession", table: str) -> list[str]: ...

    def read(self, spark: "SparkSession", table: str, version: int | None) -> "DataFrame": ...

    def write(self, df: "DataFrame", table: str, request: WriteRequest) -> int:
        """Commit ``df`` once as ``request`` says and return the version committed."""
        ...

    def file_changes(self, spark: "SparkSession", table: str, after_version: int, up_to_version: int) -> FileChanges: ...

    def read_files(self, spark: "SparkSession", table: str, version: int, files: list[str]) -> "DataFrame":
        """Rows of ``version`` that live in the data files ``files`` (relative paths)."""
        ...

    def count_rows(self, spark: "SparkSession", table: str, version: int, after_version: int | None) -> int:
        """Rows in ``version``, or appended after ``after_version``, from Delta's statistics where possible."""
        ...

    def rows_committed(self, spark: "SparkSession", table: str, version: int) -> int | None: ...


def judge_appends(table: str, changes: FileChanges, after_version: int, up_to_version: int) -> list[str]:
    """The files appended between two versions; :class:`NotAppendOnlyError` when any data file was removed.

    One rule for both engines: a commit that removed data (overwrite, delete, update, compaction) makes the
    difference more than appends, and the caller must re-read in full.
    """
    if changes.removed:
        raise NotAppendOnlyError(
            f"{table} changed by more than appends between versions {after_version} and {up_to_version} "
            f"({len(changes.removed)} data files removed): rescore in full"
        )
    return sorted(changes.added)
