"""The SparkSession factory.

On Databricks the active session is used as it is. Elsewhere a local session sized for a small machine is
built, or one attached to a standalone cluster when a master URL is given (``--master`` / ``SPARK_MASTER``).
Local sessions load Delta Lake's jars (real delta-spark, as on Databricks) whenever they are installed: the
Makefile puts them in ``<venv>/jars/delta``; ``SPARKSHIP_DELTA_JARS`` names another folder.

    >>> from sparkship.spark import delta_jars
    >>> isinstance(delta_jars(), list)
    True
"""
from __future__ import annotations

import glob
import os
import sys
from typing import TYPE_CHECKING

from sparkship.errors import SparkshipError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

DELTA_JARS_ENV = "SPARKSHIP_DELTA_JARS"
ENGINE_ENV = "SPARKSHIP_DELTA_ENGINE"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


class MissingJarsError(SparkshipError):
    """The native Delta engine was asked for, but Delta Lake's jars are not installed."""

    exit_code = 2


def on_databricks() -> bool:
    """True inside a Databricks runtime (clusters and serverless)."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def delta_jars_dir() -> str:
    """Where local sessions look for Delta Lake's jars."""
    return os.environ.get(DELTA_JARS_ENV) or os.path.join(sys.prefix, "jars", "delta")


def delta_jars() -> list[str]:
    """Delta Lake's jars (delta-spark, delta-storage, antlr4-runtime), or [] when they are not installed."""
    jars = sorted(glob.glob(os.path.join(delta_jars_dir(), "*.jar")))
    return jars if any(os.path.basename(j).startswith("delta-spark_") for j in jars) else []


def _check_engine_choice(jars: list[str]) -> None:
    if os.environ.get(ENGINE_ENV, "").strip().lower() == "native" and not jars:
        raise MissingJarsError(
            f"{ENGINE_ENV}=native needs Delta Lake's jars, and {delta_jars_dir()} holds none: run `make jars` "
            f"(or set {DELTA_JARS_ENV} to a folder with delta-spark, delta-storage and antlr4-runtime jars), "
            f"or set {ENGINE_ENV}=deltars"
        )


def get_spark(
    home: str | None = None, master: str | None = None, app_name: str = "sparkship", remote: str | None = None
) -> "SparkSession":
    """Return the active SparkSession, or build one.

    Args:
        home: sparkship home; the local warehouse and scratch folders go beneath it.
        master: a Spark master URL (``spark://host:port``); default ``SPARK_MASTER`` or ``local[*]``.
        app_name: the application name shown by Spark.
        remote: a Spark Connect URL (``sc://host:port``, or ``local[2]`` for pyspark's local Connect server);
            default ``SPARK_REMOTE``.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if on_databricks():  # the runtime always has a session; getOrCreate returns it
        return SparkSession.builder.getOrCreate()

    from sparkship.config import Settings

    settings = Settings.resolve(home=home, master=master)
    jars = delta_jars()
    _check_engine_choice(jars)
    _local_environment()
    remote = remote or os.environ.get("SPARK_REMOTE")
    builder = _builder(SparkSession.builder.appName(app_name), settings.home, jars)
    if remote:
        # A Connect session: the master belongs to the server, so none is set here.
        os.environ.pop("SPARK_REMOTE", None)
        spark = builder.remote(remote).getOrCreate()
        os.environ["SPARK_REMOTE"] = remote
        return spark
    builder = builder.master(settings.master or "local[*]")
    # Executors (local or on a standalone cluster) connect back to the driver at this address.
    builder = builder.config("spark.driver.host", os.environ.get("SPARK_DRIVER_HOST", "127.0.0.1"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _local_environment() -> None:
    # Executors must run the same Python as the driver (a venv locally, the cluster's Python elsewhere).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Bind to loopback unless told otherwise: a laptop's or CI box's other interfaces are none of our business.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def _builder(builder: "SparkSession.Builder", home: str, jars: list[str]) -> "SparkSession.Builder":
    builder = (
        builder
        # A laptop or CI box has few cores: a few shuffle partitions beat the default 200.
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.warehouse.dir", f"{home}/spark-warehouse")
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={home}/derby")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.python.worker.reuse", "true")
    )
    if jars:
        builder = (
            builder.config("spark.jars", ",".join(jars))
            .config("spark.sql.extensions", DELTA_EXTENSION)
            .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
            # Small local tables: a few partitions for Delta's log replay instead of 50.
            .config("spark.databricks.delta.snapshotPartitions", "2")
        )
    return builder
