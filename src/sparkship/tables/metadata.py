"""Small metadata tables (registry, scoring state) as Delta tables, read and written with Arrow.

No Spark job and no JVM: a registry operation takes milliseconds, and the JVM-free server can follow aliases.
Writes are single commits; ``expected_version`` makes one a compare-and-set on the whole table, which is
how the registry hands out version numbers without gaps or duplicates across processes.

    >>> import pyarrow as pa
    >>> from sparkship.tables import append_arrow, read_arrow
    >>> v = append_arrow("/tmp/doc_meta", pa.table({"k": [1]}), expected_version=None)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import pyarrow as pa

from sparkship.errors import IntegrityError, NotFoundError, SchemaMismatchError
from sparkship.tables import files as delta_files
from sparkship.tables.files import table_exists


def table_version(path: str) -> int | None:
    """Latest version, or None when there is no table."""
    from deltalake import DeltaTable

    if not table_exists(path):
        return None
    with _readable_log(path):
        return DeltaTable(path).version()


@contextmanager
def _readable_log(path: str) -> Iterator[None]:
    """A Delta log that delta-rs cannot read (a commit file lost, a gap) is an IntegrityError naming the table."""
    from deltalake.exceptions import DeltaError

    try:
        yield
    except DeltaError as exc:
        raise IntegrityError(f"Delta table {path}: its log cannot be read ({exc})") from None


def read_arrow(path: str, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
    """The whole table (or ``columns`` of it) at ``version`` as an Arrow table."""
    if not table_exists(path):
        raise NotFoundError(f"no Delta table at {path}")
    with _readable_log(path):
        schema = delta_files.table_arrow_schema(path, version)
        files = delta_files.list_files(path, version)
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    batches = [
        b
        for split in delta_files.plan_splits(files)
        for b in delta_files.read_batches(path, split, schema)
    ]
    return pa.Table.from_batches(batches, schema=schema)


def check_columns(have: Mapping[str, Any], want: Mapping[str, Any], where: str) -> None:
    """Raise :class:`SchemaMismatchError` naming every missing, unexpected or retyped column.

    ``have``/``want`` map column names to types (Arrow types, or Spark type strings); the table's are ``want``.
    """
    problems = []
    if missing := [n for n in want if n not in have]:
        problems.append(f"missing columns {missing}")
    if extra := [n for n in have if n not in want]:
        problems.append(f"unexpected columns {extra}")
    for name, t in want.items():
        if name in have and have[name] != t:
            problems.append(f"column '{name}' is {have[name]}, the table has {t}")
    if problems:
        raise SchemaMismatchError(f"cannot write to {where}: " + "; ".join(problems))


def append_arrow(
    path: str,
    table: pa.Table,
    *,
    expected_version: int | None = None,
    partition_by: list[str] | None = None,
    overwrite: bool = False,
) -> int:
    """Append (or overwrite with) ``table`` in one commit; return the version committed.

    ``expected_version``: commit only if the table is still at that version (-1: it must not exist yet),
    else raise :class:`~sparkship.errors.ConcurrentWriteError` with the table unchanged.
    """
    schema = pa.schema([f.with_nullable(True) for f in table.schema])
    if table_exists(path):
        existing = delta_files.table_arrow_schema(path)
        check_columns({f.name: f.type for f in delta_files._normalise_schema(schema)},
                      {f.name: f.type for f in existing}, path)
        schema = existing
        from deltalake import DeltaTable

        partition_by = list(DeltaTable(path).metadata().partition_columns)
    table = table.select(schema.names).cast(schema)
    written = delta_files.write_data_files(path, table, schema, partition_by or [])
    write_id = uuid.uuid4().hex
    try:
        delta_files.commit_files(
            path,
            written,
            schema,
            overwrite=overwrite,
            partition_by=partition_by or [],
            replace_partitions=None,
            expected_version=expected_version,
            write_id=write_id,
        )
    except Exception:
        delta_files.remove_files(path, written)
        raise
    return version_of_write(path, write_id)


def history(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Commits, newest first, as ``{version, timestamp, operation, parameters, metadata}``."""
    from deltalake import DeltaTable

    if not table_exists(path):
        raise NotFoundError(f"no Delta table at {path}")
    out = []
    for c in DeltaTable(path).history(limit):
        known = {"version", "timestamp", "operation", "operationParameters", "clientVersion", "engineInfo",
                 "operationMetrics", "readVersion", "isBlindAppend"}
        out.append(
            {
                "version": c.get("version"),
                "timestamp": c.get("timestamp"),
                "operation": c.get("operation"),
                "parameters": c.get("operationParameters") or {},
                "metrics": c.get("operationMetrics") or {},
                "metadata": {k: v for k, v in c.items() if k not in known},
            }
        )
    return out


def version_of_write(path: str, write_id: str) -> int:
    """The version whose commit carries ``write_id``, read from the commit files themselves, newest first.

    (delta-rs' ``history()`` can misnumber commits while other processes are committing.)
    """
    log_dir = os.path.join(path, "_delta_log")
    if os.path.isdir(log_dir):
        commits = sorted((f for f in os.listdir(log_dir) if f.endswith(".json") and f[:-5].isdigit()), reverse=True)
        for name in commits:
            with open(os.path.join(log_dir, name)) as fh:
                for line in fh:
                    if '"commitInfo"' in line and write_id in line:
                        info = json.loads(line)["commitInfo"]
                        if info.get(delta_files.WRITE_ID_KEY) == write_id:
                            return int(name[:-5])
    else:  # object storage: ask delta-rs
        for commit in history(path, limit=1000):
            if commit["metadata"].get(delta_files.WRITE_ID_KEY) == write_id:
                return int(commit["version"])
    raise NotFoundError(f"the commit of write {write_id} is not in the history of {path}")
