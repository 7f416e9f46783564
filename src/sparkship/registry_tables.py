"""The registry's Delta tables: their columns, a version row as Python, compare-and-set retries, and the columns
that a newer sparkship adds to an older registry.

Columns added since the first release: ``model_versions.manifest_sha256`` (the sha256 of the version's own
``manifest.json``, checked whenever the version is resolved or loaded) and ``events.seq`` (taken from the events
table's commit versions, the only order of events: :meth:`sparkship.registry.Registry.record_event`). A registry
written before them is read as it is: a missing column reads as null, so its old versions load without the
manifest check and its old events come first, in the order of their clocks. The first write to such a table adds
the columns in a commit of its own (:func:`upgrade`); every row written after that has them.

    >>> from sparkship.registry_tables import VERSIONS_SCHEMA
    >>> "manifest_sha256" in VERSIONS_SCHEMA.names
    True
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import pyarrow as pa
from deltalake import DeltaTable, Field

from sparkship.errors import ConcurrentWriteError, SparkshipError
from sparkship.tables import files as delta_files
from sparkship.tables import metadata

log = logging.getLogger(__name__)
T = TypeVar("T")

VERSIONS_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("version", pa.int64()),
        ("artifact", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("task", pa.string()),
        ("algorithm", pa.string()),
        ("table", pa.string()),
        ("table_version", pa.int64()),
        ("metrics_json", pa.string()),
        ("manifest_sha256", pa.string()),
    ]
)
ALIASES_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("name", pa.string()),
        ("alias", pa.string()),
        ("version", pa.int64()),
        ("previous_version", pa.int64()),
        ("moved_at", pa.timestamp("us", tz="UTC")),
        ("action", pa.string()),
        ("reason", pa.string()),
        ("forced", pa.bool_()),
        ("run_id", pa.string()),
    ]
)
EVENTS_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("version", pa.int64()),
        ("event", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("details_json", pa.string()),
        ("seq", pa.int64()),
    ]
)
MAX_ATTEMPTS = 200
_DELTA_TYPES = {pa.string(): "string", pa.int64(): "long"}  # the types of the columns added since the first release
_UPGRADED: set[str] = set()  # tables this process found with every column: columns are never removed


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model."""

    name: str
    version: int
    artifact: str
    created_at: datetime
    run_id: str | None = None
    task: str | None = None
    algorithm: str | None = None
    table: str | None = None
    table_version: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    manifest_sha256: str | None = None  # None: registered by a sparkship that did not record it

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        return out


def now() -> datetime:
    return datetime.now(timezone.utc)


def to_version(row: dict[str, Any]) -> ModelVersion:
    """A ``model_versions`` row as a :class:`ModelVersion` (rows of an older registry lack ``manifest_sha256``)."""
    return ModelVersion(
        name=row["name"],
        version=int(row["version"]),
        artifact=row["artifact"],
        created_at=row["created_at"],
        run_id=row["run_id"],
        task=row["task"],
        algorithm=row["algorithm"],
        table=row["table"],
        table_version=row["table_version"],
        metrics=json.loads(row["metrics_json"] or "{}"),
        manifest_sha256=row.get("manifest_sha256"),
    )


def version_row(mv: ModelVersion) -> pa.Table:
    """The one-row Arrow table that registers ``mv``."""
    row = {**asdict(mv), "metrics_json": json.dumps(mv.metrics, sort_keys=True)}
    del row["metrics"]
    return pa.Table.from_pylist([row], schema=VERSIONS_SCHEMA)


def read_rows(path: str) -> tuple[int, list[dict[str, Any]]]:
    """(table version or -1, rows) of one registry table."""
    v = metadata.table_version(path)
    if v is None:
        return -1, []
    return v, metadata.read_arrow(path, version=v).to_pylist()


def retry_on_conflict(what: str, attempt: Callable[[], T]) -> T:
    """Run ``attempt`` until its compare-and-set commit wins; back off a little between tries."""
    for n in range(MAX_ATTEMPTS):
        try:
            return attempt()
        except ConcurrentWriteError:
            time.sleep(random.uniform(0.005, 0.05) * min(n + 1, 10))
    raise ConcurrentWriteError(f"{what}: gave up after {MAX_ATTEMPTS} conflicting attempts")


def upgrade(path: str, schema: pa.Schema) -> None:
    """Add the columns of ``schema`` that the registry table at ``path`` lacks (an older registry), all nullable.

    Registry roots are local folders (:mod:`sparkship.config` refuses URIs), so delta-rs commits the change
    whatever engine the session uses. Adding a column that a concurrent upgrade just added changes nothing.
    """
    if path in _UPGRADED:
        return
    if metadata.table_version(path) is None:  # the first append creates the table with every column
        return
    missing = [f for f in schema if f.name not in _columns(path)]
    if missing:
        fields = [Field(f.name, _DELTA_TYPES[f.type], nullable=True) for f in missing]
        try:
            DeltaTable(path).alter.add_columns(fields)
        except Exception as exc:  # noqa: BLE001 - delta-rs raises several kinds; a concurrent upgrade may have won
            if any(f.name not in _columns(path) for f in missing):
                raise SparkshipError(f"{path} was written by an older sparkship and its new columns "
                                     f"{[f.name for f in missing]} could not be added ({exc}); nothing was "
                                     "written") from None
        log.warning("%s was written by an older sparkship: added its columns %s", path, [f.name for f in missing])
    _UPGRADED.add(path)


def _columns(path: str) -> list[str]:
    return delta_files.table_arrow_schema(path).names


__all__ = ["ALIASES_SCHEMA", "EVENTS_SCHEMA", "MAX_ATTEMPTS", "ModelVersion", "VERSIONS_SCHEMA", "now",
           "read_rows", "retry_on_conflict", "to_version", "upgrade", "version_row"]
