"""Compare-and-set writes in a delta-spark transaction of their own (classic sessions, open-source Delta).

Where the session has a JVM handle and open-source delta-spark's classes, a write with ``expected_version`` to an
existing table that keeps its schema runs in an ``OptimisticTransaction``: :func:`prepare_write` checks that the
snapshot is at ``expected_version`` and writes the data files, :func:`commit_write` commits them with the
transaction id ``(sparkship, expected_version + 1)``; a lost race raises :class:`ConcurrentWriteError`.
:func:`append_arrow` commits a few Arrow rows the same way, without a Spark job. Why, and how the conflict check
works: docs/DESIGN.md.

    >>> from sparkship.tables import transactions
    >>> prepared = transactions.prepare_write(df, "/tmp/doc_cas", expected_version=3, write_id="w1")  # doctest: +SKIP
    >>> transactions.commit_write(prepared)                                                         # doctest: +SKIP
    4
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparkship.errors import ConcurrentWriteError, SchemaMismatchError
from sparkship.spark import is_connect
from sparkship.tables import files as delta_files
from sparkship.tables.engine import METADATA_TABLE_PROPERTIES
from sparkship.tables.files import CAS_APP_ID, WRITE_ID_KEY

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

_DELTA = "org.apache.spark.sql.delta"
_CONFLICT_CLASS = f"{_DELTA}.DeltaConcurrentModificationException"
_CONSTRAINT_CLASS = f"{_DELTA}.schema.DeltaInvariantViolationException"
_REPLACE_WHERE_CONSTRAINT = "EXPRESSION(replaceWhere)"  # the name Delta's own replaceWhere check uses


@dataclass(frozen=True)
class PreparedWrite:
    """A write whose data files are written and whose transaction is open, not committed yet."""

    spark: SparkSession
    table: str
    mode: str  # "append" | "overwrite"
    replace_where: str | None
    transaction: Any  # py4j handle of the OptimisticTransaction
    actions: Any  # py4j handle of a java.util.List of the files it removes and the files it wrote
    expected_version: int | None  # None: a blind append (no compare-and-set)
    write_id: str


def supported(spark: SparkSession) -> bool:
    """True when this session can run Delta transactions directly: a classic session with open-source delta-spark."""
    if is_connect(spark):
        return False
    from py4j.java_gateway import JavaClass

    jvm = _jvm(spark)
    return jvm is not None and isinstance(_java(jvm, f"{_DELTA}.DeltaLog"), JavaClass)


def prepare_write(df: DataFrame, folder: str, *, expected_version: int, write_id: str, mode: str = "append",
                  replace_where: str | None = None, table: str | None = None) -> PreparedWrite:
    """Open a transaction on the table at ``folder``, check its version and write ``df``'s files for it.

    ``df`` must already have the table's schema (the facade checks it). ``mode="overwrite"`` removes the files
    where the SQL predicate ``replace_where`` holds (on partition columns), or all of them; every written row must
    satisfy it. ``table`` is the name errors use. Raises :class:`ConcurrentWriteError` when the table is not at
    ``expected_version``, :class:`SchemaMismatchError` for a row outside ``replace_where``; nothing is committed.
    """
    spark = df.sparkSession
    jvm = _jvm(spark)
    shown = table or folder
    try:
        transaction = _start_at(spark, folder, expected_version, f"{mode} to {shown}")
        actions = _removals(spark, transaction, replace_where) if mode == "overwrite" else jvm.java.util.ArrayList()
        actions.addAll(_written_files(df, transaction, replace_where))
    except Exception as exc:  # noqa: BLE001 - py4j raises Py4JJavaError for anything the JVM throws
        raise _translated(mode, shown, replace_where, exc) from None
    return PreparedWrite(spark, shown, mode, replace_where, transaction, actions, expected_version, write_id)


def append_arrow(spark: SparkSession, folder: str, rows: pa.Table, *, expected_version: int | None, write_id: str,
                 table: str | None = None) -> int | None:
    """Append ``rows`` to the unpartitioned table at ``folder`` in one commit, without a Spark job; a table that
    does not exist yet is created with the rows' columns (all nullable), as a Spark write of them would.

    ``expected_version`` makes it a compare-and-set, as :func:`prepare_write` does (-1: the table must not exist);
    None makes it a blind append, which concurrent appends do not fail. Returns the version committed, or None,
    having written nothing, when the table needs Delta's own writer or the rows do not have its columns and types
    exactly (see :func:`_arrow_schema_for`): the caller then writes through Spark, which also names any mismatch.
    Raises :class:`ConcurrentWriteError` when the table is not at ``expected_version`` or a concurrent commit wins.
    """
    shown = table or folder
    try:
        if expected_version is None:
            transaction = _java(_jvm(spark), f"{_DELTA}.DeltaLog").forTable(
                spark._jsparkSession, folder).startTransaction()
        else:
            transaction = _start_at(spark, folder, expected_version, f"append to {shown}")
        if transaction.snapshot().version() < 0 and not _describe_new_table(spark, transaction, rows.schema):
            return None
    except Exception as exc:  # noqa: BLE001 - py4j raises Py4JJavaError for anything the JVM throws
        raise _translated("append", shown, None, exc) from None
    schema = _arrow_schema_for(transaction, rows.schema)
    if schema is None:
        return None
    written = delta_files.write_data_files(folder, rows.select(schema.names), schema, [])
    prepared = PreparedWrite(spark, shown, "append", None, transaction, _add_actions(spark, written),
                             expected_version, write_id)
    try:
        return commit_write(prepared)
    except ConcurrentWriteError:
        delta_files.remove_files(folder, written)  # never committed: nothing refers to them
        raise


def _describe_new_table(spark: SparkSession, transaction: Any, given: pa.Schema) -> bool:
    """Give a transaction on a table that does not exist yet the table's metadata: ``given``'s columns, all
    nullable, no partitions; Delta adds the session's default table properties and the protocol they need, as for
    a Spark write. False when a column's type has no Spark equivalent (nothing is set)."""
    import uuid

    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.sql.types import StructField, StructType

    try:
        columns = from_arrow_schema(delta_files._normalise_schema(given))
    except (TypeError, ValueError, NotImplementedError):
        return False
    schema = StructType([StructField(f.name, f.dataType, True) for f in columns.fields])
    metadata = _java(_jvm(spark), f"{_DELTA}.actions.Action").fromJson(json.dumps({"metaData": {
        "id": str(uuid.uuid4()), "format": {"provider": "parquet", "options": {}}, "schemaString": schema.json(),
        "partitionColumns": [], "configuration": dict(METADATA_TABLE_PROPERTIES), "createdTime": _now_ms(),
    }}))
    transaction.updateMetadataForNewTable(metadata)
    return True


# Writer features under which an append of plain files needs nothing more (invariants are checked below; the
# Change Data Feed records nothing for an append).
_PLAIN_APPEND_FEATURES = frozenset({"appendOnly", "invariants", "changeDataFeed"})


def _arrow_schema_for(transaction: Any, given: pa.Schema) -> pa.Schema | None:
    """The Arrow schema to write files of the transaction's table with, when pyarrow's files need nothing more
    than the table's columns: a protocol of Delta's first writer features (no constraints, generated or identity
    columns, column mapping or other table features), no partition columns, nullable columns only, and ``given``
    holding exactly the table's column names and types. None otherwise."""
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
    from pyspark.sql.types import StructType

    protocol = transaction.protocol()
    if transaction.metadata().partitionColumns().nonEmpty():
        return None
    if protocol.minWriterVersion() > 4:
        features = set(str(protocol.writerFeatureNames().mkString(",")).split(",")) - {""}
        if protocol.minWriterVersion() != 7 or not features <= _PLAIN_APPEND_FEATURES:
            return None
    configuration = dict(json.loads(transaction.metadata().json()).get("metaData", {}).get("configuration") or {})
    # Writer versions 3 and 4 add constraints and generated columns (which pyarrow's files would not honour) and
    # the Change Data Feed (which needs nothing for an append).
    if any(k.startswith("delta.constraints.") for k in configuration):
        return None
    table_schema = StructType.fromJson(json.loads(transaction.metadata().schemaString()))
    if any(not f.nullable or "delta.invariants" in f.metadata or "delta.generationExpression" in f.metadata
           for f in table_schema.fields):
        return None
    try:
        rows_schema = from_arrow_schema(delta_files._normalise_schema(given))
        arrow_schema = to_arrow_schema(table_schema)
    except (TypeError, ValueError, NotImplementedError):  # a type Arrow and Spark do not map alike
        return None
    if {f.name: f.dataType for f in rows_schema.fields} != {f.name: f.dataType for f in table_schema.fields}:
        return None
    return arrow_schema


def _add_actions(spark: SparkSession, written: list[dict[str, Any]]) -> Any:
    """Delta's add actions (a java.util.List) for files written by :func:`sparkship.tables.files.write_data_files`,
    parsed by Delta from the protocol's JSON form."""
    jvm = _jvm(spark)
    action = _java(jvm, f"{_DELTA}.actions.Action")
    actions = jvm.java.util.ArrayList()
    for f in written:
        actions.add(action.fromJson(json.dumps({"add": {
            "path": f["path"], "partitionValues": f["partition_values"], "size": f["size"],
            "modificationTime": f["modification_time"], "dataChange": True, "stats": f["stats"],
        }})))
    return actions


def _start_at(spark: SparkSession, folder: str, expected_version: int, what: str) -> Any:
    """A transaction on the table at ``folder``, which must be at ``expected_version``, that depends on all of it."""
    jvm = _jvm(spark)
    transaction = _java(jvm, f"{_DELTA}.DeltaLog").forTable(spark._jsparkSession, folder).startTransaction()
    found = transaction.snapshot().version()
    if found != expected_version:
        raise ConcurrentWriteError(f"{what}: the table is at version {found}, not {expected_version}")
    # Both reads make later commits conflicts for this one: data added by anyone who read the table (every
    # compare-and-set here), and sparkship's transaction id set by the options path.
    transaction.readWholeTable()
    getattr(transaction.readTxn(), "$plus$eq")(CAS_APP_ID)
    return transaction


def _removals(spark: SparkSession, transaction: Any, replace_where: str | None) -> Any:
    """Removal actions (a java.util.List) for the files where ``replace_where`` holds, or all files for None,
    chosen by Delta's partition filter."""
    jvm = _jvm(spark)
    if replace_where is None:
        files = transaction.filterFiles()
    else:
        files = transaction.filterFiles(_as_seq(jvm, jvm.java.util.ArrayList([_parsed(spark, replace_where)])), False)
    removals = jvm.java.util.ArrayList()
    for added in _as_list(jvm, files):
        removals.add(added.remove())
    return removals


def _written_files(df: DataFrame, transaction: Any, replace_where: str | None) -> Any:
    """Write ``df``'s files for the transaction (a java.util.List of their actions); with ``replace_where``, a
    constraint on every row, as Delta's replaceWhere option adds."""
    spark = df.sparkSession
    jvm = _jvm(spark)
    constraints = jvm.java.util.ArrayList()
    if replace_where is not None:
        check = _java(jvm, f"{_DELTA}.constraints.Constraints.Check")
        constraints.add(check(_REPLACE_WHERE_CONSTRAINT, _parsed(spark, replace_where)))
    return _as_list(jvm, transaction.writeFiles(df._jdf, _as_seq(jvm, constraints)))


def commit_write(prepared: PreparedWrite) -> int:
    """Commit a prepared write and return the version it made, or raise :class:`ConcurrentWriteError`."""
    jvm = _jvm(prepared.spark)
    option = jvm.scala.Option
    actions = jvm.java.util.ArrayList(prepared.actions)
    if prepared.expected_version is not None:
        actions.add(_java(jvm, f"{_DELTA}.actions.SetTransaction")(
            CAS_APP_ID, prepared.expected_version + 1, option.apply(jvm.java.lang.Long.valueOf(str(_now_ms())))
        ))
    save_mode = jvm.org.apache.spark.sql.SaveMode
    operation = _java(jvm, f"{_DELTA}.DeltaOperations.Write")(
        save_mode.Overwrite if prepared.mode == "overwrite" else save_mode.Append, option.empty(),
        option.apply(prepared.replace_where), option.apply(json.dumps({WRITE_ID_KEY: prepared.write_id})),
    )
    try:
        return int(prepared.transaction.commit(_as_seq(jvm, actions), operation))
    except Exception as exc:  # noqa: BLE001 - py4j raises Py4JJavaError for anything the JVM throws
        raise _translated(prepared.mode, prepared.table, prepared.replace_where, exc) from None


def _parsed(spark: SparkSession, predicate: str) -> Any:
    """A SQL predicate as a Catalyst expression (unresolved: Delta resolves it against the table, as it does for
    its ``replaceWhere`` option)."""
    return spark._jsparkSession.sessionState().sqlParser().parseExpression(predicate)


def _as_seq(jvm: Any, java_list: Any) -> Any:
    """A java.util.List as the immutable Scala Seq Delta's methods take (Scala 2.12 and 2.13 alike)."""
    return jvm.scala.collection.JavaConverters.asScalaBufferConverter(java_list).asScala().toList()


def _as_list(jvm: Any, seq: Any) -> Any:
    """A Scala Seq as a java.util.List."""
    return jvm.scala.collection.JavaConverters.seqAsJavaListConverter(seq).asJava()


def _java(jvm: Any, dotted_name: str) -> Any:
    """A Java class (or nested class: ``DeltaOperations.Write``) through py4j's view of the JVM."""
    found = jvm
    for part in dotted_name.split("."):
        found = getattr(found, part)
    return found


def _now_ms() -> int:
    return int(time.time() * 1000)


def _translated(mode: str, table: str, replace_where: str | None, exc: Exception) -> Exception:
    """Delta's concurrent-modification exceptions as :class:`ConcurrentWriteError`, a row outside ``replace_where``
    as :class:`SchemaMismatchError`; anything else unchanged."""
    if isinstance(exc, (ConcurrentWriteError, SchemaMismatchError)):
        return exc
    java_exception = getattr(exc, "java_exception", None)
    if java_exception is None:
        return exc
    if _is_a(java_exception, _CONFLICT_CLASS):
        return ConcurrentWriteError(
            f"{mode} to {table} conflicted with a concurrent commit: {_first_line(java_exception)}")
    violation = _cause_of_class(java_exception, _CONSTRAINT_CLASS)
    if violation is not None and replace_where is not None:
        return SchemaMismatchError(f"cannot write to {table}: rows outside the partitions being replaced "
                                   f"({replace_where}): {_first_line(violation)}")
    return exc


def _first_line(java_exception: Any) -> str:
    return (str(java_exception.getMessage() or "").splitlines() or [""])[0][:300]


def _cause_of_class(java_exception: Any, class_name: str) -> Any:
    """The exception or the first of its causes that is a ``class_name`` (a task's failure wraps the row's)."""
    current = java_exception
    while current is not None:
        if _is_a(current, class_name):
            return current
        current = current.getCause()
    return None


def _is_a(java_object: Any, class_name: str) -> bool:
    """True when the Java object's class is ``class_name`` or extends it (compared by name: the class loaders
    of Delta's jars and of ``Class.forName`` may differ)."""
    cls = java_object.getClass()
    while cls is not None:
        if cls.getName() == class_name:
            return True
        cls = cls.getSuperclass()
    return False


def _jvm(spark: SparkSession) -> Any:
    """The py4j gateway's JVM view of a classic session (callers run only where :func:`supported` holds)."""
    return spark.sparkContext._jvm
