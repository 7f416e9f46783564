"""The SparkSession factory.

On Databricks the active session is used as it is. Elsewhere a local session sized for a small machine is
built, or one attached to a standalone cluster when a master URL is given (``--master`` / ``SPARK_MASTER``).

    >>> from sparkship.spark import get_spark
    >>> spark = get_spark(home="/tmp/sh")          # doctest: +SKIP
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession


def on_databricks() -> bool:
    """True inside a Databricks runtime (clusters and serverless)."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def get_spark(home: str | None = None, master: str | None = None, app_name: str = "sparkship") -> "SparkSession":
    """Return the active SparkSession, or build one.

    Args:
        home: sparkship home; the local warehouse and scratch folders go beneath it.
        master: a Spark master URL (``spark://host:port``); default ``SPARK_MASTER`` or ``local[*]``.
        app_name: the application name shown by Spark.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if on_databricks():  # the runtime always has a session; getOrCreate returns it
        return SparkSession.builder.getOrCreate()

    from sparkship.config import Settings

    settings = Settings.resolve(home=home, master=master)
    master_url = settings.master or "local[*]"
    # Executors must run the same Python as the driver (a venv locally, the cluster's Python elsewhere).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Bind to loopback unless told otherwise: a laptop's or CI box's other interfaces are none of our business.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master_url)
        # A laptop or CI box has few cores: a few shuffle partitions beat the default 200.
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.warehouse.dir", f"{settings.home}/spark-warehouse")
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={settings.home}/derby")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.python.worker.reuse", "true")
    )
    # Executors (local or on a standalone cluster) connect back to the driver at this address.
    builder = builder.config("spark.driver.host", os.environ.get("SPARK_DRIVER_HOST", "127.0.0.1"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    from sparkship import tables

    tables.engine_for(spark)  # registers the local Delta data source when it is the engine in use
    return spark
