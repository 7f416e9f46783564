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

from deltalake import DeltaTable

from sparkship.config import is_uri
from sparkship.errors import SparkshipError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


# Every table sparkship creates records its changes, so that whatever reads it downstream can do so incrementally.
CREATED_TABLE_PROPERTIES = {"delta.enableChangeDataFeed": "true"}
# Metadata tables (registry, scoring state, lease) are read with delta-rs, which cannot read deletion vectors: they
# are created without them, whatever the session's defaults say (Databricks turns them on for new tables).
METADATA_TABLE_PROPERTIES = {**CREATED_TABLE_PROPERTIES, "delta.enableDeletionVectors": "false"}

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
    return not is_uri(table) and not is_table_name(table)


class NotAppendOnlyError(SparkshipError):
    """The table changed by more than appends between two versions."""


class ChangeFeedUnavailableError(SparkshipError):
    """The table has no Change Data Feed over the asked range (never enabled, or enabled later)."""


class UnsupportedTableFeatureError(SparkshipError):
    """The engine cannot read a table feature the table uses (deletion vectors on delta-rs, say)."""

    exit_code = 2


def check_readable(path: str, dt: Any = None) -> None:
    """Raise :class:`UnsupportedTableFeatureError` when the table uses a reader feature that the deltars engine
    (pyarrow over delta-rs' file list) cannot apply, such as deletion vectors."""
    protocol = (dt or DeltaTable(path)).protocol()
    unsupported = [f for f in (protocol.reader_features or []) if f not in ("timestampNtz",)]
    if protocol.min_reader_version > 1 and unsupported:
        raise UnsupportedTableFeatureError(
            f"{path} uses Delta reader features {unsupported}, which the deltars engine cannot read: use the native "
            "engine (delta-spark: Databricks, or `make jars` and SPARKSHIP_DELTA_ENGINE=native)"
        )


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
    properties: dict[str, str] = field(default_factory=dict)  # table properties of a table this write creates


@dataclass(frozen=True)
class Commit:
    """One entry of a table's history."""

    version: int
    timestamp: int  # ms since the epoch
    operation: str
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    metadata: dict[str, Any]
    blind_append: bool | None = None  # Delta's isBlindAppend, where the writer recorded it

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "timestamp": self.timestamp, "operation": self.operation,
            "parameters": self.parameters, "metrics": self.metrics, "metadata": self.metadata,
        }


@dataclass(frozen=True)
class TableIdentity:
    """What identifies a table across its versions: Delta's table id, and its current properties."""

    id: str
    properties: dict[str, str]

    @property
    def change_feed(self) -> bool:
        return self.properties.get("delta.enableChangeDataFeed", "").lower() == "true"


@dataclass(frozen=True)
class MergeRequest:
    """An upsert by keys (see :meth:`DeltaEngine.merge`): all checks on it are done by the facade beforehand."""

    predicate: str  # SQL on the target ``t`` and the source ``s``: when a source row matches a target row
    op_column: str  # "upsert" or "delete" per source row; not written
    write_id: str
    expected_version: int
    delete_unmatched: str | None = None  # SQL on ``t``: target rows no source row matches that are deleted


class DeltaEngine(Protocol):
    """What both Delta engines do, with the same signatures. ``table`` is a path (a name for the native engine)."""

    name: str

    def exists(self, spark: SparkSession, table: str) -> bool: ...

    def version(self, spark: SparkSession, table: str) -> int: ...

    def history(self, spark: SparkSession, table: str, limit: int | None) -> list[Commit]: ...

    def schema(self, spark: SparkSession, table: str, version: int | None) -> StructType: ...

    def partition_columns(self, spark: SparkSession, table: str) -> list[str]: ...

    def read(self, spark: SparkSession, table: str, version: int | None) -> DataFrame: ...

    def write(self, df: DataFrame, table: str, request: WriteRequest) -> int:
        """Commit ``df`` once as ``request`` says and return the version committed."""
        ...

    def identity(self, spark: SparkSession, table: str) -> TableIdentity: ...

    def change_feed(self, spark: SparkSession, table: str, first_version: int, last_version: int) -> DataFrame:
        """The Change Data Feed of versions ``first..last`` (inclusive); :class:`ChangeFeedUnavailableError` when the
        table did not record it over the whole range."""
        ...

    def appended_rows(self, spark: SparkSession, table: str, first_version: int, last_version: int) -> DataFrame:
        """Rows that the (append-only) commits ``first..last`` added, read at ``last``."""
        ...

    def merge(self, source: DataFrame, table: str, request: MergeRequest) -> int:
        """Upsert ``source`` into ``table`` by keys in one commit (a compare-and-set on ``expected_version``): rows
        whose op is "delete" delete their key, the others replace or insert it. Returns the version committed."""
        ...

    def count_rows(self, spark: SparkSession, table: str, version: int) -> int:
        """Rows in ``version``, from Delta's statistics where possible."""
        ...

    def rows_committed(self, spark: SparkSession, table: str, version: int) -> int | None: ...
