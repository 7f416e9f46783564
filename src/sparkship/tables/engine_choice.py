"""Which Delta engine runs: the only module that knows.

:func:`choose_engine` decides once per session, from the environment (``SPARKSHIP_DELTA_ENGINE=native|deltars``),
the session's configuration (delta-spark's SQL extension) and where Delta's jars are looked for, and records the
choice in the session's configuration; every later call reads it back. ``native`` runs on Databricks and wherever
the session has delta-spark, ``deltars`` elsewhere.

    >>> sorted(ENGINES)
    ['deltars', 'native']
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sparkship.errors import SparkshipError, UsageError
from sparkship.spark import DELTA_EXTENSION, DELTA_JARS_ENV, active_session, delta_jars_dir, on_databricks
from sparkship.tables.deltars import DeltaRsEngine, register_data_source
from sparkship.tables.engine import DeltaEngine, is_table_name
from sparkship.tables.names import check_table_argument
from sparkship.tables.native import NativeEngine

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

ENGINE_ENV = "SPARKSHIP_DELTA_ENGINE"
NATIVE: DeltaEngine = NativeEngine()
DELTARS: DeltaEngine = DeltaRsEngine()
_BY_NAME = {engine.name: engine for engine in (NATIVE, DELTARS)}
ENGINES = tuple(_BY_NAME)
_ENGINE_CONF = "spark.sparkship.deltaEngine"


class MissingJarsError(SparkshipError):
    """The native Delta engine was asked for, but the session has no delta-spark (Delta Lake's jars)."""

    exit_code = 2


def choose_engine(spark: SparkSession) -> DeltaEngine:
    """The Delta engine ``spark`` uses, chosen on the first call and recorded in the session's configuration.

    Raises:
        UsageError: ``SPARKSHIP_DELTA_ENGINE`` names no engine.
        MissingJarsError: it names ``native`` and the session has no delta-spark.
    """
    recorded = spark.conf.get(_ENGINE_CONF, None)
    if recorded:
        return _BY_NAME[recorded]
    requested = os.environ.get(ENGINE_ENV, "").strip().lower()
    if requested and requested not in ENGINES:
        raise UsageError(f"{ENGINE_ENV}={requested!r} is not one of {', '.join(ENGINES)}")
    has_delta = on_databricks() or _session_has_delta(spark)
    if requested == "native" and not has_delta:
        raise MissingJarsError(
            f"{ENGINE_ENV}=native needs Delta Lake's jars, and this Spark session has none ({delta_jars_dir()} "
            f"holds no delta-spark jar, or spark.sql.extensions lacks {DELTA_EXTENSION}): run `make jars` (or set "
            f"{DELTA_JARS_ENV} to a folder with delta-spark, delta-storage and antlr4-runtime jars), or set "
            f"{ENGINE_ENV}=deltars"
        )
    name = requested or ("native" if has_delta else "deltars")
    use_engine(spark, name)
    return _BY_NAME[name]


def engine_name(spark: SparkSession) -> str:
    """The name of the engine ``spark`` uses: ``native`` or ``deltars``."""
    return choose_engine(spark).name


def use_engine(spark: SparkSession, name: str) -> None:
    """Make ``spark`` use the engine ``name`` from now on (tests run one session with both)."""
    if name not in ENGINES:
        raise UsageError(f"Delta engine {name!r} is not one of {', '.join(ENGINES)}")
    if name == "deltars":
        register_data_source(spark)
    spark.conf.set(_ENGINE_CONF, name)


def table_engine(spark: SparkSession, table: str) -> DeltaEngine:
    """The session's engine for ``table`` (a path, or a catalog name, which needs delta-spark's catalog)."""
    check_table_argument(table)
    chosen = choose_engine(spark)
    if chosen.name != "native" and is_table_name(table):
        raise UsageError(
            f"{table} is a catalog table name, which needs the native engine (delta-spark: Databricks, or "
            "`make jars` locally); the deltars engine takes paths only"
        )
    return chosen


def native_session() -> SparkSession | None:
    """The process's Spark session when its engine is ``native``, else None.

    A helper thread (a lease renewal, say) has no active session of its own: the process's session (classic or
    Spark Connect) is used; a JVM-free process (the server) gets None and never starts Spark for this.
    """
    spark = active_session()
    if spark is None:
        return None
    return spark if choose_engine(spark).name == "native" else None


def _session_has_delta(spark: SparkSession) -> bool:
    """True when the session runs delta-spark (its SQL extension is configured)."""
    try:
        return "DeltaSparkSessionExtension" in (spark.conf.get("spark.sql.extensions", "") or "")
    except Exception:  # noqa: BLE001 - a Connect server may refuse to show a static conf
        return False
