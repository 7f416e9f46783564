"""Compare-and-set appends in a delta-spark transaction of their own (classic sessions, open-source Delta).

The native engine's portable compare-and-set is Delta's idempotent-write options (``txnAppId`` /
``txnVersion``, see :mod:`sparkship.tables.native`). delta-spark 4.0.1 looks that transaction id up by
rebuilding the table's state: three Spark jobs, about 0.7 s of a one-row commit's 1 s on two cores
(``benchmarks/metadata_commit.py``). Where the session has a JVM handle and open-source delta-spark's classes
(local sessions, open-source clusters), an append with ``expected_version`` runs in an
``OptimisticTransaction`` instead, in two steps:

1. :func:`prepare_append` starts the transaction, refuses unless its snapshot is at ``expected_version``,
   records a read of the whole table and of sparkship's transaction id, and writes the data files;
2. :func:`commit_append` commits those files with the transaction id ``(sparkship, expected_version + 1)``,
   the same one the options path records.

Delta's conflict check at commit makes it a true compare-and-set without the state rebuild: any commit that
landed after the snapshot and added data (every compare-and-set commit does), or that carries sparkship's
transaction id (a commit made through the options path, from a Spark Connect client say), fails this one with
one of Delta's concurrent-modification exceptions, raised here as :class:`ConcurrentWriteError`. Spark Connect
sessions, and Databricks (whose Delta is not these classes), keep the options path.

    >>> from sparkship.tables import transactions
    >>> prepared = transactions.prepare_append(df, "/tmp/doc_cas", expected_version=3, write_id="w1")  # doctest: +SKIP
    >>> transactions.commit_append(prepared)                                                         # doctest: +SKIP
    4
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparkship.errors import ConcurrentWriteError
from sparkship.spark import is_connect
from sparkship.tables.files import CAS_APP_ID, WRITE_ID_KEY

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

_DELTA = "org.apache.spark.sql.delta"
_CONFLICT_CLASS = f"{_DELTA}.DeltaConcurrentModificationException"


@dataclass(frozen=True)
class PreparedAppend:
    """An append whose data files are written and whose transaction is open, not committed yet."""

    spark: "SparkSession"
    table: str
    transaction: Any  # py4j handle of the OptimisticTransaction
    files: Any  # py4j handle of the Scala Seq[FileAction] it wrote
    expected_version: int
    write_id: str


def supported(spark: "SparkSession") -> bool:
    """True when this session can run Delta transactions directly: a classic session with open-source delta-spark."""
    if is_connect(spark):
        return False
    from py4j.java_gateway import JavaClass

    jvm = spark.sparkContext._jvm
    return jvm is not None and isinstance(_java(jvm, f"{_DELTA}.DeltaLog"), JavaClass)


def prepare_append(df: "DataFrame", folder: str, *, expected_version: int, write_id: str,
                   table: str | None = None) -> PreparedAppend:
    """Open a transaction on the table at ``folder``, check its version and write ``df``'s files for it.

    ``df`` must already have the table's schema (the facade checks it). ``table`` is the name errors use.
    Raises :class:`ConcurrentWriteError` when the table is not at ``expected_version``; nothing is committed.
    """
    spark = df.sparkSession
    jvm = spark.sparkContext._jvm
    shown = table or folder
    try:
        transaction = _java(jvm, f"{_DELTA}.DeltaLog").forTable(spark._jsparkSession, folder).startTransaction()
        found = transaction.snapshot().version()
        if found != expected_version:
            raise ConcurrentWriteError(f"append to {shown}: the table is at version {found}, not {expected_version}")
        # Both reads make later commits conflicts for this one: data added by anyone who read the table (every
        # compare-and-set here), and sparkship's transaction id set by the options path.
        transaction.readWholeTable()
        getattr(transaction.readTxn(), "$plus$eq")(CAS_APP_ID)
        files = transaction.writeFiles(df._jdf)
    except Exception as exc:  # noqa: BLE001 - py4j raises Py4JJavaError for anything the JVM throws
        raise _translated(shown, exc) from None
    return PreparedAppend(spark, shown, transaction, files, expected_version, write_id)


def commit_append(prepared: PreparedAppend) -> int:
    """Commit a prepared append and return the version it made, or raise :class:`ConcurrentWriteError`."""
    jvm = prepared.spark.sparkContext._jvm
    converters = jvm.scala.collection.JavaConverters
    actions = jvm.java.util.ArrayList(converters.seqAsJavaListConverter(prepared.files).asJava())
    option = jvm.scala.Option
    actions.add(_java(jvm, f"{_DELTA}.actions.SetTransaction")(
        CAS_APP_ID, prepared.expected_version + 1, option.apply(jvm.java.lang.Long.valueOf(str(_now_ms())))
    ))
    operation = _java(jvm, f"{_DELTA}.DeltaOperations.Write")(
        jvm.org.apache.spark.sql.SaveMode.Append, option.empty(), option.empty(),
        option.apply(json.dumps({WRITE_ID_KEY: prepared.write_id})),
    )
    try:
        return int(prepared.transaction.commit(converters.asScalaBufferConverter(actions).asScala().toList(), operation))
    except Exception as exc:  # noqa: BLE001 - py4j raises Py4JJavaError for anything the JVM throws
        raise _translated(prepared.table, exc) from None


def _java(jvm: Any, dotted_name: str) -> Any:
    """A Java class (or nested class: ``DeltaOperations.Write``) through py4j's view of the JVM."""
    found = jvm
    for part in dotted_name.split("."):
        found = getattr(found, part)
    return found


def _now_ms() -> int:
    return int(time.time() * 1000)


def _translated(table: str, exc: Exception) -> Exception:
    """Delta's concurrent-modification exceptions as :class:`ConcurrentWriteError`; anything else unchanged."""
    if isinstance(exc, ConcurrentWriteError):
        return exc
    java_exception = getattr(exc, "java_exception", None)
    if java_exception is not None and _is_a(java_exception, _CONFLICT_CLASS):
        brief = (str(java_exception.getMessage() or "").splitlines() or [""])[0][:300]
        return ConcurrentWriteError(f"append to {table} conflicted with a concurrent commit: {brief}")
    return exc


def _is_a(java_object: Any, class_name: str) -> bool:
    """True when the Java object's class is ``class_name`` or extends it (compared by name: the class loaders
    of Delta's jars and of ``Class.forName`` may differ)."""
    cls = java_object.getClass()
    while cls is not None:
        if cls.getName() == class_name:
            return True
        cls = cls.getSuperclass()
    return False
