"""The SparkSession factory.

On Databricks the active session is used as it is. Elsewhere a local session sized for a small machine is
built, or one attached to a standalone cluster when a master URL is given (``--master`` / ``SPARK_MASTER``),
or a Spark Connect session when a remote is given (``--remote`` / ``SPARK_REMOTE``): ``sc://host:port`` attaches
to a server that owns its own configuration; ``local[N]`` starts pyspark's local Connect server in this process,
configured like a local classic session (Delta's jars included). :func:`is_connect` tells the two kinds apart for
the few features Connect lacks (``sparkContext``, the JVM, and ``cache`` on Databricks serverless).
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
import warnings
from typing import TYPE_CHECKING, TypeVar

from sparkship.config import Settings
from sparkship.python_workers import DAEMON_MODULE

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    Frame = TypeVar("Frame", bound=DataFrame)

DELTA_JARS_ENV = "SPARKSHIP_DELTA_JARS"
# Extra JVM flags for a local session's driver (the test suite sets JIT flags that suit short-lived JVMs).
DRIVER_JAVA_OPTIONS_ENV = "SPARKSHIP_DRIVER_JAVA_OPTIONS"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


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


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect session (no ``sparkContext``, no JVM handle; ``cache`` may be refused).

    Decided by the session's class, so no Connect module (and none of its gRPC dependencies) is imported for a
    classic session.
    """
    return type(spark).__module__.startswith("pyspark.sql.connect")


def active_session() -> SparkSession | None:
    """The session of this thread, else the process's default one (classic or Connect), else None.

    A helper thread (a lease renewal, say) has no active session of its own; ``SparkSession.active()`` falls back
    to the default session for both kinds, where the classic ``_instantiatedSession`` knows only classic ones.
    """
    if "pyspark.sql" not in sys.modules:  # a JVM-free process (the server): never start Spark for this
        return None
    from pyspark.sql import SparkSession  # loaded already (checked above); never imported for a JVM-free process

    try:
        return SparkSession.active()
    except Exception:  # noqa: BLE001 - NO_ACTIVE_OR_DEFAULT_SESSION
        return None


def cached(df: Frame) -> Frame:
    """``df.cache()`` on a classic session; ``df`` itself on Connect.

    Caching only saves recomputation (every cached frame in sparkship is deterministic), and Connect servers
    may refuse it (Databricks serverless: ``NOT_SUPPORTED_WITH_SERVERLESS``), so Connect skips it.
    """
    if not is_connect(df.sparkSession):
        df.cache()  # marks df itself as cached (it returns df)
    return df


def uncached(df: DataFrame) -> None:
    """Release what :func:`cached` cached (nothing on Connect)."""
    if not is_connect(df.sparkSession):
        df.unpersist()


def is_local_remote(remote: str) -> bool:
    """True for pyspark's local Connect server (``local``, ``local[2]``...), started in this process."""
    return remote.startswith("local")


def get_spark(
    home: str | None = None, master: str | None = None, app_name: str = "sparkship", remote: str | None = None
) -> SparkSession:
    """Return the active SparkSession, or build one.

    Args:
        home: sparkship home; the local warehouse and scratch folders go beneath it.
        master: a Spark master URL (``spark://host:port``); default ``SPARK_MASTER`` or ``local[*]``.
        app_name: the application name shown by Spark.
        remote: a Spark Connect URL (``sc://host:port``, or ``local[2]`` for pyspark's local Connect server);
            default ``SPARK_REMOTE``. A Connect session gets no master: the server has one.
    """
    from pyspark.sql import SparkSession  # pyspark loads with the first session, not with `import sparkship`

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if on_databricks():  # the runtime always has a session; getOrCreate returns it
        return SparkSession.builder.getOrCreate()
    settings = Settings.resolve(home=home, master=master, remote=remote)
    if settings.remote:
        return _connect_session(SparkSession.builder.appName(app_name), settings.home, settings.remote)
    jars = delta_jars()
    _local_environment()
    builder = _builder(SparkSession.builder.appName(app_name), settings.home, jars)
    master = settings.master or "local[*]"
    builder = builder.master(master)
    if master.startswith("local"):
        builder = _local_python_workers(builder)
    # Executors (local or on a standalone cluster) connect back to the driver at this address.
    builder = builder.config("spark.driver.host", os.environ.get("SPARK_DRIVER_HOST", "127.0.0.1"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _connect_session(builder: SparkSession.Builder, home: str, remote: str) -> SparkSession:
    """A Spark Connect session for ``remote``; no master is set (pyspark refuses one beside a remote).

    ``local[N]`` starts pyspark's Connect server in this process: it gets the local session's configuration,
    Delta's jars included, so the native engine works there as on a classic local session. A real server
    (``sc://...``) owns its jars, catalog and warehouse: it gets only session settings sparkship relies on.
    """
    if is_local_remote(remote):
        jars = delta_jars()
        _local_environment()
        builder = _local_python_workers(_builder(builder, home, jars).config(
            "spark.driver.host", os.environ.get("SPARK_DRIVER_HOST", "127.0.0.1")))
    else:
        builder = _session_settings(builder)
    # pyspark reads SPARK_REMOTE as well as the builder's remote, and refuses the pair when they differ: the
    # builder's is the one resolved from --remote / SPARK_REMOTE, so it alone is given while the session starts.
    env_remote = os.environ.pop("SPARK_REMOTE", None)
    try:
        with warnings.catch_warnings():
            # The local server takes every setting at start; the client then re-sends them, and pyspark warns
            # about each static one (CANNOT_MODIFY_CONFIG) although the server already has it.
            warnings.filterwarnings("ignore", message=r"Failed to set .*CANNOT_MODIFY_CONFIG", category=UserWarning)
            return builder.remote(remote).getOrCreate()
    finally:
        if env_remote is not None:
            os.environ["SPARK_REMOTE"] = env_remote


def _local_environment() -> None:
    # Executors must run the same Python as the driver (a venv locally, the cluster's Python elsewhere).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Bind to loopback unless told otherwise: a laptop's or CI box's other interfaces are none of our business.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def _local_python_workers(builder: SparkSession.Builder) -> SparkSession.Builder:
    # Python workers on this machine start from sparkship's daemon, which drops the archive copies of pyspark from
    # their path: each task would re-read them (sparkship/python_workers.py). Cluster executors may lack sparkship.
    return builder.config("spark.python.daemon.module", DAEMON_MODULE)


def _session_settings(builder: SparkSession.Builder) -> SparkSession.Builder:
    """Session settings sparkship's results rely on, for every session kind (runtime SQL settings only)."""
    return (
        builder
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )


def _builder(builder: SparkSession.Builder, home: str, jars: list[str]) -> SparkSession.Builder:
    builder = (
        _session_settings(builder)
        # A laptop or CI box has few cores: a few shuffle partitions beat the default 200.
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.warehouse.dir", f"{home}/spark-warehouse")
        .config("spark.driver.extraJavaOptions",
                f"-Dderby.system.home={home}/derby {os.environ.get(DRIVER_JAVA_OPTIONS_ENV, '')}".strip())
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
