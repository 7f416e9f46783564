"""Catalog table names: parsing, sibling names, and the local catalog that persists across processes.

A table argument is a *name* (``catalog.schema.table`` or ``schema.table``, parts optionally backquoted) or a
*path*; :func:`~sparkship.tables.engine.is_table_name` tells them apart. On Databricks a name goes to Unity
Catalog (or the workspace's Hive metastore) unchanged. Locally a table ``s.t`` lives at
``<home>/spark-warehouse/s.db/t`` and each process registers it before its first use (:func:`register_tables`,
:func:`local_parts`); how that stays consistent across processes: docs/DESIGN.md.

    >>> str(parse_name("`main`.sales.`churn-v2`")), sibling("main.sales.`churn-v2`", "_state")
    ('main.sales.`churn-v2`', 'main.sales.`churn-v2_state`')
    >>> sibling("/data/scores", "_state")
    '/data/scores_state'
"""
from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparkship.errors import UsageError
from sparkship.spark import on_databricks
from sparkship.tables import files as delta_files
from sparkship.tables.engine import _IDENT, is_table_name

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

CATALOG_ENV = "SPARKSHIP_CATALOG"
DEFAULT_CATALOG = "main"
SESSION_CATALOG = "spark_catalog"
_SIMPLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOCAL_PART = re.compile(r"[A-Za-z0-9_]+")
_SCAN_CONF = "spark.sparkship.localCatalog"
_lock = threading.Lock()
# Per session (by the id sparkship stored in its conf): the names registered so far, and whether it is local.
_registered: dict[str, set[tuple[str, str]]] = {}
_local: dict[str, bool] = {}


@dataclass(frozen=True)
class TableName:
    """A parsed name: 2 or 3 parts, unquoted."""

    parts: tuple[str, ...]

    @property
    def catalog(self) -> str | None:
        return self.parts[0] if len(self.parts) == 3 else None

    @property
    def schema(self) -> str:
        return self.parts[-2]

    @property
    def table(self) -> str:
        return self.parts[-1]

    def with_suffix(self, suffix: str) -> TableName:
        """The sibling table in the same schema (``t`` -> ``t<suffix>``)."""
        return TableName(self.parts[:-1] + (self.parts[-1] + suffix,))

    def __str__(self) -> str:
        return ".".join(quote_part(p) for p in self.parts)


def quote_part(part: str) -> str:
    """A part as SQL writes it: bare when it is a plain identifier, else backquoted (a backquote doubled)."""
    return part if _SIMPLE.fullmatch(part) else "`" + part.replace("`", "``") + "`"


def parse_name(text: str) -> TableName:
    """Split a table name into its parts; :class:`UsageError` when ``text`` is not a name.

    >>> parse_name("`my``cat`.s.t").parts
    ('my`cat', 's', 't')
    """
    if not is_table_name(text):
        raise UsageError(
            f"{text!r} is not a table name: use catalog.schema.table or schema.table (a part with other characters "
            "is backquoted: `my-table`), or a path"
        )
    parts = tuple(p[1:-1].replace("``", "`") if p.startswith("`") else p for p in re.findall(_IDENT, text))
    return TableName(parts)


def looks_like_name(text: str) -> bool:
    """True for a string meant as a name, valid or not: it has a backquote and no ``/`` (a path would)."""
    return "`" in text and "/" not in text and "\\" not in text


def check_table_argument(text: str, what: str = "table") -> None:
    """Refuse a malformed name (``sales.`churn``) before anything reads or writes, naming the argument."""
    if looks_like_name(text) and not is_table_name(text):
        raise UsageError(
            f"{what} {text!r}: not a valid table name (use catalog.schema.table or schema.table, backquoting a part "
            "with other characters and doubling a backquote inside one); a local folder is written ./NAME"
        )


def check_writable_location(path: str, what: str = "table") -> None:
    """Refuse a local table folder that cannot be created: a file on its way, or a folder without write access.

    Said before anything is written, so that a bad ``--output`` fails in one line, not in a Spark writer's trace.
    Catalog names and URIs are the catalog's and the object store's to refuse.
    """
    if is_table_name(path) or "://" in path or path.startswith("dbfs:"):
        return
    existing = os.path.abspath(path)
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{what} {path!r}: {existing} is a file, not a folder; choose a path under a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path!r}: the folder {existing} is not writable; choose a writable folder "
                         "or grant write access to it")

def canonical(text: str) -> str:
    """A name written one way (backquotes only where needed); anything else unchanged."""
    return str(parse_name(text)) if is_table_name(text) else text


def sibling(table: str, suffix: str) -> str:
    """The table derived from ``table``: a sibling name in the same schema, or the path with ``suffix`` added.

    Used for ``<output>_state``, ``_quarantine``, ``_lease`` and ``<scores>_profile_metrics``/``_drift_metrics``.
    """
    if is_table_name(table):
        return str(parse_name(table).with_suffix(suffix))
    return table.rstrip("/") + suffix


# --- the local catalog -------------------------------------------------------------------------------------------


def local_catalogs() -> tuple[str, ...]:
    """Catalog names a local session accepts in a 3-part name (all mean Spark's session catalog)."""
    configured = (os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG).strip().lower()
    return (SESSION_CATALOG, configured) if configured != SESSION_CATALOG else (SESSION_CATALOG,)


def local_parts(name: str) -> tuple[str, str]:
    """``(schema, table)`` of a name in the local catalog, lowercased as Spark's session catalog does.

    The one place a catalog part is mapped locally: ``spark_catalog`` and ``SPARKSHIP_CATALOG`` (default
    ``main``) mean the local catalog; any other catalog is refused rather than silently merged into it.
    Spark's session catalog takes schema and table names of letters, digits and ``_`` only (each also names a
    folder): others are refused here, before anything is read or written.

    >>> local_parts("main.Sales.churn"), local_parts("`spark_catalog`.sales.`2024`")
    (('sales', 'churn'), ('sales', '2024'))
    """
    parsed = parse_name(name)
    if parsed.catalog is not None and parsed.catalog.lower() not in local_catalogs():
        raise UsageError(
            f"table {name}: catalog '{parsed.catalog}' does not exist locally; local runs keep one catalog, "
            f"named {' or '.join(local_catalogs())} (set {CATALOG_ENV} to name it otherwise), or use schema.table"
        )
    for part in (parsed.schema, parsed.table):
        if not _LOCAL_PART.fullmatch(part):
            raise UsageError(
                f"table {name}: {part!r} cannot name a schema or table in the local catalog, which takes letters, "
                "digits and '_' only (Spark's session catalog); Unity Catalog takes more"
            )
    return parsed.schema.lower(), parsed.table.lower()


def _session_key(spark: SparkSession) -> str:
    key = spark.conf.get(_SCAN_CONF, None)
    if not key:
        key = uuid.uuid4().hex
        spark.conf.set(_SCAN_CONF, key)
    return key


def warehouse_dir(spark: SparkSession) -> str | None:
    """The session's warehouse folder on this machine's filesystem, or None (a URI: not a local catalog)."""
    value = spark.conf.get("spark.sql.warehouse.dir", None)
    if not value:
        return None
    if value.startswith("file:"):
        value = re.sub(r"^file:(//)?", "", value)
        value = "/" + value.lstrip("/")
    elif "://" in value:
        return None
    return os.path.abspath(value)


def is_local_catalog(spark: SparkSession) -> bool:
    """True when names resolve through sparkship's local catalog: not Databricks, and Spark's in-memory catalog.

    A session with a real metastore (Hive, Unity Catalog, Databricks Connect) keeps names itself; they pass
    unchanged.
    """
    if on_databricks():
        return False
    key = _session_key(spark)
    if key not in _local:
        try:
            implementation = spark.conf.get("spark.sql.catalogImplementation", "in-memory")
        except Exception:  # noqa: BLE001 - a remote server may refuse to show a static conf
            implementation = None
        _local[key] = implementation == "in-memory" and warehouse_dir(spark) is not None
    return _local[key]


@dataclass(frozen=True)
class LocalTable:
    """Where a name lives in the local catalog."""

    ident: str  # spark_catalog.`schema`.`table`, for SQL and the DataFrame API
    schema: str
    table: str
    location: str  # the warehouse folder

    def has_table(self) -> bool:
        """A Delta table is committed at the location (at least one commit file)."""
        return bool(delta_files.commit_versions(self.location))


def local_table(spark: SparkSession, name: str) -> LocalTable:
    """The local catalog's entry for ``name`` (refusing catalogs and parts it cannot hold); registers nothing."""
    schema, table = local_parts(name)
    warehouse = warehouse_dir(spark)
    assert warehouse is not None  # is_local_catalog checked it
    return LocalTable(
        ident=f"{SESSION_CATALOG}.{quote_part(schema)}.{quote_part(table)}",
        schema=schema,
        table=table,
        location=os.path.join(warehouse, f"{schema}.db", table),
    )


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def register(spark: SparkSession, entry: LocalTable) -> bool:
    """Register ``entry`` in this session's catalog if its folder holds a Delta table; True when it is there.

    Once per session and name: later calls cost a set lookup.
    """
    key = _session_key(spark)
    with _lock:
        done = _registered.setdefault(key, set())
        if (entry.schema, entry.table) in done:
            return True
        if not entry.has_table():
            return False
        if (entry.schema, "") not in done:
            spark.sql(f"CREATE SCHEMA IF NOT EXISTS {SESSION_CATALOG}.{quote_part(entry.schema)}")
            done.add((entry.schema, ""))
        spark.sql(f"CREATE TABLE IF NOT EXISTS {entry.ident} USING delta LOCATION {_sql_string(entry.location)}")
        done.add((entry.schema, entry.table))
        return True


def register_tables(spark: SparkSession) -> list[str]:
    """Register every Delta table in the local warehouse (for ``SHOW TABLES`` and SQL); returns their names.

    A folder that cannot be registered (not a Delta table, or a corrupt log) is logged and skipped.
    """
    if not is_local_catalog(spark):
        return []
    warehouse = warehouse_dir(spark)
    assert warehouse is not None
    names = []
    for schema_dir in sorted(os.listdir(warehouse)) if os.path.isdir(warehouse) else []:
        if not schema_dir.endswith(".db") or not os.path.isdir(os.path.join(warehouse, schema_dir)):
            continue
        schema = schema_dir[: -len(".db")]
        for table in sorted(os.listdir(os.path.join(warehouse, schema_dir))):
            if not (_LOCAL_PART.fullmatch(schema) and _LOCAL_PART.fullmatch(table)):
                continue  # not a folder sparkship names (Spark's catalog could not hold it)
            name = f"{quote_part(schema)}.{quote_part(table)}"
            try:
                if register(spark, local_table(spark, name)):
                    names.append(name)
            except Exception as exc:  # noqa: BLE001 - one bad folder must not hide the others
                log.warning("could not register %s from %s: %s", name, warehouse, str(exc).splitlines()[0][:200])
    return names
