"""Delta table files and commits with pyarrow + ``deltalake`` (delta-rs); no Spark, no JVM.

Used by the Spark data source (:mod:`sparkship.tables.datasource`) in its tasks and on its driver, and by the
small metadata tables (:mod:`sparkship.tables.metadata`). A data source write is atomic: the tasks write parquet
files and the driver makes ONE Delta commit. The data source's options: docs/DESIGN.md.
"""
from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema, Transaction
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, create_table_with_add_actions

from sparkship.errors import ConcurrentWriteError, IntegrityError, NotFoundError, SchemaMismatchError
from sparkship.tables.filesystem import is_unsupported_operation, unsupported_filesystem

SOURCE_NAME = "sparkship_delta"
CAS_APP_ID = "sparkship"  # Delta transaction identifier of compare-and-set commits (both engines)
TARGET_SPLIT_BYTES = 64 * 1024 * 1024
WRITE_ID_KEY = "sparkship.writeId"


# --- schemas -----------------------------------------------------------------------------------------------


def table_arrow_schema(path: str, version: int | None = None) -> pa.Schema:
    dt = DeltaTable(path, version=version) if version is not None else DeltaTable(path)
    return _normalise_schema(pa.schema(dt.schema().to_arrow()))


def _normalise_schema(schema: pa.Schema) -> pa.Schema:
    # delta-rs hands out large/view string types; Spark's arrow conversion wants plain ones.
    def fix(t: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return pa.string()
        if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
            return pa.binary()
        if pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
            return pa.list_(pa.field(t.value_field.name, fix(t.value_type), True))
        if pa.types.is_list(t):
            return pa.list_(pa.field(t.value_field.name, fix(t.value_type), True))
        if pa.types.is_struct(t):
            return pa.struct([pa.field(f.name, fix(f.type), True) for f in t])
        if pa.types.is_map(t):
            return pa.map_(fix(t.key_type), fix(t.item_type))
        if pa.types.is_timestamp(t) and t.tz is not None:
            return pa.timestamp("us", tz="UTC")
        return t

    return pa.schema([pa.field(f.name, fix(f.type), True) for f in schema])


# --- reading -----------------------------------------------------------------------------------------------


def list_files(path: str, version: int | None) -> list[tuple[str, int, dict[str, str | None]]]:
    """(relative path, size, partition values) of every data file of one table version.

    A path in the log that is absolute, a URI, or leads out of the table folder raises :class:`IntegrityError`
    naming the table: a log from elsewhere must not make sparkship read (or later remove) other files.
    """
    dt = DeltaTable(path, version=version) if version is not None else DeltaTable(path)
    partition_columns = dt.metadata().partition_columns
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    for a in actions:
        inside_table(path, a["path"])
    return [
        (a["path"], a["size_bytes"], {c: a.get(f"partition.{c}") for c in partition_columns})
        for a in actions
    ]


def refuse_removed_files(path: str, version: int,
                         listed: list[tuple[str, int, dict[str, str | None]]] | None = None) -> None:
    """:class:`NotFoundError` if a data file of ``version`` (``listed`` as :func:`list_files` gives them, listed
    here when not given) is gone: a pinned version whose files VACUUM removed, said in one line before a Spark
    task fails on it. The latest version is not checked: VACUUM never removes its files."""
    versions = commit_versions(path)
    if versions and version >= versions[-1]:
        return
    listed = list_files(path, version) if listed is None else listed
    gone = [rel for rel, _, _ in listed if not os.path.exists(inside_table(path, rel))]
    if gone:
        raise NotFoundError(
            f"version {version} of {path} cannot be read: {len(gone)} of its {len(listed)} data files were removed "
            "(VACUUM); pin a version that is still kept (sparkship tables history) or read the latest")


_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def inside_table(table: str, rel: str) -> str:
    """The local file a log's (URI-encoded, relative) data file path names; :class:`IntegrityError` if it is
    absolute, a URI (``file://``, ``s3://``...), or leaves the table folder (``..``, also when encoded).

    >>> inside_table("/data/t", "day=2024-01-01/part-0.parquet")
    '/data/t/day=2024-01-01/part-0.parquet'
    >>> inside_table("/data/t", "day=a%252Fb/part-0.parquet")   # the value 'a/b', encoded in the folder name
    '/data/t/day=a%2Fb/part-0.parquet'
    >>> inside_table("/data/t", "%2E%2E/other/part-0.parquet")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sparkship.errors.IntegrityError: Delta table /data/t: its log lists data file '%2E%2E/other/part-0.parquet', ...
    """
    decoded = unquote(rel)
    parts = decoded.replace("\\", "/").split("/")
    escapes = (
        not decoded
        or "\x00" in decoded
        or _URI_SCHEME.match(rel) is not None
        or os.path.isabs(decoded)
        or decoded.startswith(("/", "\\"))
        or ".." in parts
    )
    absolute = os.path.normpath(os.path.join(table, decoded))
    if escapes or os.path.commonpath([absolute, os.path.normpath(table)]) != os.path.normpath(table):
        raise IntegrityError(
            f"Delta table {table}: its log lists data file {rel!r}, which is outside the table: refused")
    return absolute


def file_row_counts(path: str, version: int | None) -> dict[str, int | None]:
    """``numRecords`` from the Delta stats of every data file of one version (None where a file has none)."""
    dt = DeltaTable(path, version=version) if version is not None else DeltaTable(path)
    actions = pa.table(dt.get_add_actions(flatten=True)).select(["path", "num_records"]).to_pylist()
    return {a["path"]: a["num_records"] for a in actions}


def commit_row_count(path: str, version: int) -> int | None:
    """Rows added by the commit of ``version`` (from its add actions' stats); None if it cannot be told."""
    commit = os.path.join(path, "_delta_log", f"{version:020d}.json")
    if not os.path.isfile(commit):
        return None
    total = 0
    with open(commit) as fh:
        for line in fh:
            add = json.loads(line).get("add")
            if add is None:
                continue
            records = json.loads(add.get("stats") or "{}").get("numRecords")
            if records is None:
                return None
            total += int(records)
    return total


DataFile = tuple[str, dict[str, "str | None"], int]  # relative path, partition values, size in the log


def plan_splits(files: list[tuple[str, int, dict[str, str | None]]]) -> list[list[DataFile]]:
    """Group data files into lists of about TARGET_SPLIT_BYTES, one per read task."""
    splits: list[list[DataFile]] = []
    current: list[DataFile] = []
    size = 0
    for rel, nbytes, parts in sorted(files):
        if current and size + nbytes > TARGET_SPLIT_BYTES:
            splits.append(current)
            current, size = [], 0
        current.append((rel, parts, nbytes))
        size += nbytes
    if current:
        splits.append(current)
    return splits or [[]]


def _constant_column(value: Any, length: int, type_: pa.DataType) -> pa.Array:
    # delta-rs hands partition values typed (date, int...) or as strings, depending on the call.
    if value is None:
        return pa.nulls(length, type_)
    return pa.array([value] * length).cast(type_)


def read_batches(table: str, split: list[DataFile], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Record batches of ``schema`` from the given data files, partition columns filled in from the log.

    A file whose size differs from the log's, or whose pages fail their CRC, raises :class:`IntegrityError`
    naming it: a truncated or edited file is refused, never read as other data.
    """
    for rel, partition_values, size in split:
        absolute = inside_table(table, rel)  # checked again here: a task may get a split from anywhere
        actual = os.path.getsize(absolute) if os.path.exists(absolute) else None
        if actual != size:
            found = "missing" if actual is None else f"{actual} bytes"
            raise IntegrityError(f"data file {rel} of Delta table {table} is {found}, the log says {size} bytes")
        try:
            parquet = pq.ParquetFile(absolute, page_checksum_verification=True)
            present = set(parquet.schema_arrow.names)
            columns = [n for n in schema.names if n in present]
            rows = 0
            for batch in parquet.iter_batches(batch_size=65536, columns=columns):
                rows += batch.num_rows
                arrays = []
                for f in schema:
                    if f.name in present:
                        arrays.append(batch.column(f.name).cast(f.type))
                    else:
                        # Partition columns live in the log, not the file; absent columns read as null.
                        arrays.append(_constant_column(partition_values.get(f.name), batch.num_rows, f.type))
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
            if rows != parquet.metadata.num_rows:  # a damaged footer can make pyarrow read fewer rows silently
                raise IntegrityError(f"data file {rel} of Delta table {table} is damaged: {rows} rows read, "
                                     f"its footer says {parquet.metadata.num_rows}")
        except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
            raise IntegrityError(f"data file {rel} of Delta table {table} is damaged: {exc}") from None


# --- writing -----------------------------------------------------------------------------------------------


def _partition_dir(partition_by: list[str], values: dict[str, str | None]) -> str:
    parts = []
    for col in partition_by:
        v = values[col]
        parts.append(f"{col}={'__HIVE_DEFAULT_PARTITION__' if v is None else quote(v, safe='')}")
    return "/".join(parts)


class _FloatStats:
    """min, max and nulls of one top-level floating point column of a file, from its batches as they are written.

    pyarrow's parquet statistics leave NaN out of min/max; Spark's parquet reader trusts them for its row-group
    filters and Delta's data skipping for its file filters, while Spark orders NaN above every number: a file with
    NaN rows would be skipped by ``x = double('NaN')`` or ``x > 5``. So files written here carry no parquet statistics
    for floating point columns, and their Delta statistics come from here, with min/max only when the column held no
    NaN and both are finite (JSON has no token for an infinity).
    """

    def __init__(self) -> None:
        self.nulls, self.nan, self.low, self.high = 0, False, None, None

    def add(self, column: pa.Array) -> None:
        self.nulls += column.null_count
        if self.nan or pc.any(pc.is_nan(column)).as_py():
            self.nan = True
            return
        found = pc.min_max(column).as_py()
        if found["min"] is not None:
            self.low = found["min"] if self.low is None else min(self.low, found["min"])
            self.high = found["max"] if self.high is None else max(self.high, found["max"])

    def finite_range(self) -> tuple[float, float] | None:
        if self.nan or self.low is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
            return None
        return self.low, self.high


def _leaf_paths(name: str, type_: pa.DataType) -> Iterator[tuple[str, pa.DataType]]:
    """Parquet column paths of one Arrow field (as pyarrow writes nested types) with their leaf types."""
    if pa.types.is_struct(type_):
        for child in type_:
            yield from _leaf_paths(f"{name}.{child.name}", child.type)
    elif pa.types.is_list(type_) or pa.types.is_large_list(type_):
        yield from _leaf_paths(f"{name}.list.element", type_.value_type)
    elif pa.types.is_map(type_):
        yield from _leaf_paths(f"{name}.key_value.key", type_.key_type)
        yield from _leaf_paths(f"{name}.key_value.value", type_.item_type)
    else:
        yield name, type_


def _stats_json(meta: pq.FileMetaData, floats: dict[str, _FloatStats]) -> str:
    """Delta file statistics from the parquet footer the writer already computed (no extra pass over data).

    min/max only where unambiguous: integers and dates, top-level columns. Floating point columns from ``floats``:
    their files carry no parquet statistics (see :class:`_FloatStats`).
    """
    stats: dict[str, Any] = {"numRecords": meta.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for i in range(meta.num_columns):
        chunks = [meta.row_group(g).column(i) for g in range(meta.num_row_groups)]
        if not chunks or "." in chunks[0].path_in_schema:
            continue
        name = chunks[0].path_in_schema
        if name in floats:
            stats["nullCount"][name] = floats[name].nulls
            found = floats[name].finite_range()
            if found is not None:
                stats["minValues"][name], stats["maxValues"][name] = found
            continue
        if any(c.statistics is None for c in chunks):
            continue
        stats["nullCount"][name] = sum(c.statistics.null_count for c in chunks)
        physical, logical = chunks[0].physical_type, str(chunks[0].statistics.logical_type)
        wanted = physical in ("INT32", "INT64") and logical in ("None", "Int", "Date")
        with_values = [c.statistics for c in chunks if c.statistics.has_min_max]
        if not wanted or not with_values or len(with_values) != sum(
            1 for c in chunks if c.statistics.num_values > 0
        ):
            continue
        lo, hi = min(s.min for s in with_values), max(s.max for s in with_values)
        date = logical == "Date"
        stats["minValues"][name] = lo.isoformat() if date else lo
        stats["maxValues"][name] = hi.isoformat() if date else hi
    return json.dumps(stats)


def _partition_string(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return str(value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat())
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if "\x00" in text:  # delta-spark cannot name such a folder; refuse here too so both engines agree
        raise ValueError(f"partition value {text!r} holds a NUL character")
    return text


class _OpenFile:
    """One parquet file being streamed into, for one partition of one write task."""

    def __init__(self, table_path: str, rel: str, schema: pa.Schema, values: dict[str, str | None]) -> None:
        self.rel, self.values = rel, values
        self.absolute = os.path.join(table_path, rel)
        os.makedirs(os.path.dirname(self.absolute), exist_ok=True)
        # Dictionary pages rarely pay off for floating point data and cost a failed attempt per page.
        dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
        # No parquet statistics for floating point leaves: pyarrow's leave NaN out (see _FloatStats).
        with_statistics = [path for f in schema for path, type_ in _leaf_paths(f.name, f.type)
                           if not pa.types.is_floating(type_)]
        self.writer = pq.ParquetWriter(self.absolute, schema, compression="snappy", use_dictionary=dictionary or False,
                                       write_page_checksum=True, write_statistics=with_statistics or False)
        self.floats = {f.name: _FloatStats() for f in schema if pa.types.is_floating(f.type)}

    def write(self, batch: pa.RecordBatch) -> None:
        for name, found in self.floats.items():
            found.add(batch.column(name))
        self.writer.write_batch(batch)

    def close(self) -> dict[str, Any]:
        """Finish the file; return its add-action fields."""
        self.writer.close()
        st = os.stat(self.absolute)
        return {
            "path": self.rel,
            "size": st.st_size,
            "partition_values": self.values,
            "modification_time": int(st.st_mtime * 1000),
            "stats": _stats_json(pq.read_metadata(self.absolute), self.floats),
        }


def _new_file_name() -> str:
    return f"part-{uuid.uuid4().hex}-c000.snappy.parquet"


def _split_by_partition(batch: pa.RecordBatch,
                        partition_by: list[str]) -> Iterator[tuple[dict[str, Any], pa.RecordBatch]]:
    keys = pa.Table.from_batches([batch.select(partition_by)]).group_by(partition_by).aggregate([]).to_pylist()
    if len(keys) == 1:  # the usual case (a batch, a day, a run): no filtering pass
        yield keys[0], batch
        return
    for key in keys:
        mask = None
        for col, value in key.items():
            column = batch.column(col)
            cond = pc.is_null(column) if value is None else pc.fill_null(pc.equal(column, value), False)
            mask = cond if mask is None else pc.and_(mask, cond)
        yield key, batch.filter(mask)


def write_data_files(
    table_path: str, data: pa.Table | Iterable[pa.RecordBatch], schema: pa.Schema, partition_by: list[str]
) -> list[dict[str, Any]]:
    """Stream ``data`` (cast to ``schema``) into parquet files under ``table_path``, one per partition value;
    return their add-action fields. Nothing becomes visible until :func:`commit_files` commits them.
    """
    data_columns = [n for n in schema.names if n not in partition_by]
    file_schema = pa.schema([schema.field(n) for n in data_columns])
    batches: Iterable[pa.RecordBatch] = data.to_batches() if isinstance(data, pa.Table) else data
    open_files: dict[tuple[Any, ...], _OpenFile] = {}
    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            batch = batch.cast(schema)
            parts = _split_by_partition(batch, partition_by) if partition_by else [({}, batch)]
            for key, rows in parts:
                handle = tuple(key.items())
                if handle not in open_files:
                    values = {c: _partition_string(v) for c, v in key.items()}
                    folder = _partition_dir(partition_by, values)
                    rel = (f"{folder}/" if folder else "") + _new_file_name()
                    open_files[handle] = _OpenFile(table_path, rel, file_schema, values)
                open_files[handle].write(rows.select(data_columns))
    except BaseException:
        for f in open_files.values():
            f.writer.close()
            remove_files(table_path, [{"path": f.rel}])
        raise
    return [f.close() for f in open_files.values()]


def remove_files(table: str, files: list[dict[str, Any]]) -> None:
    for f in files:
        try:
            os.remove(os.path.join(table, f["path"]))
        except OSError:
            pass


STAGED_DIR = "_sparkship_staged"


def stage_written(table: str, write_id: str, files: list[dict[str, Any]]) -> None:
    """Record the files a write job wrote (in the job's commit step), for the caller's process to commit."""
    folder = os.path.join(table, STAGED_DIR)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{write_id}.tmp")
    with open(tmp, "w") as fh:
        json.dump(files, fh)
    os.replace(tmp, os.path.join(folder, f"{write_id}.json"))


def take_staged(table: str, write_id: str) -> list[dict[str, Any]]:
    """The files staged by :func:`stage_written` for ``write_id`` (the record itself is removed)."""
    record = os.path.join(table, STAGED_DIR, f"{write_id}.json")
    with open(record) as fh:
        files: list[dict[str, Any]] = json.load(fh)
    os.remove(record)
    return files


def commit_versions(table: str) -> list[int]:
    """The versions whose commit files are in a local table's ``_delta_log``, ascending ([] without a log)."""
    try:
        names = os.listdir(os.path.join(table, "_delta_log"))
    except OSError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isascii() and n[:-5].isdigit())


def commit_info(table: str, version: int) -> dict[str, Any]:
    """The ``commitInfo`` action of a local table's commit ``version`` ({} when the commit has none)."""
    with open(os.path.join(table, "_delta_log", f"{version:020d}.json"), encoding="utf-8") as fh:
        for line in fh:
            if '"commitInfo"' in line:
                action = json.loads(line)
                if "commitInfo" in action:
                    return dict(action["commitInfo"])
    return {}


def table_exists(path: str) -> bool:
    """True when ``path`` holds a Delta table."""
    return DeltaTable.is_deltatable(path)


def commit_files(
    path: str,
    files: list[dict[str, Any]],
    schema: pa.Schema,
    *,
    overwrite: bool,
    partition_by: list[str],
    replace_partitions: dict[str, Any] | None,
    expected_version: int | None,
    write_id: str,
    overwrite_schema: bool = False,
    properties: dict[str, str] | None = None,
) -> None:
    """Make one Delta commit adding ``files`` (relative to ``path``); ``properties`` of a table it creates."""
    actions = [
        AddAction(f["path"], f["size"], f["partition_values"], f["modification_time"], True, f["stats"]) for f in files
    ]
    if replace_partitions:
        _check_inside_partitions(path, files, replace_partitions)
    commit = _commit_properties(write_id, expected_version)
    delta_schema = Schema.from_arrow(schema)
    if not table_exists(path):
        if expected_version not in (None, -1):
            raise ConcurrentWriteError(f"table {path} does not exist, expected version {expected_version}")
        if _create_table(path, delta_schema, actions, partition_by, properties, commit, expected_version):
            return
    elif expected_version == -1:
        raise ConcurrentWriteError(f"table {path} already exists")
    dt = DeltaTable(path, version=expected_version) if expected_version is not None else DeltaTable(path)
    if overwrite and replace_partitions:
        mode = "overwrite"
        filters = [(k, "=", _partition_string(v)) for k, v in replace_partitions.items()]
    else:
        mode, filters = ("overwrite" if overwrite else "append"), None
    target_schema = delta_schema if (overwrite and overwrite_schema) else dt.schema()
    try:
        dt.create_write_transaction(
            list[AddAction | RemoveAction](actions), mode, target_schema, partition_by=partition_by or None,
            partition_filters=filters, commit_properties=commit,
        )
    except (DeltaError, CommitFailedError, OSError) as exc:
        if is_unsupported_operation(exc):
            raise unsupported_filesystem(path, "the commit's no-replace rename", exc) from None
        if expected_version is not None and isinstance(exc, CommitFailedError):
            raise ConcurrentWriteError(f"table {path} moved past version {expected_version}") from None
        raise


def _check_inside_partitions(path: str, files: list[dict[str, Any]], replace_partitions: dict[str, Any]) -> None:
    """Every written file must belong to the partitions being replaced."""
    wanted = {k: _partition_string(v) for k, v in replace_partitions.items()}
    for f in files:
        outside = {k: f["partition_values"].get(k) for k in wanted if f["partition_values"].get(k) != wanted[k]}
        if outside:
            raise SchemaMismatchError(f"cannot write to {path}: rows outside the partitions being replaced "
                                      f"{wanted}: {outside}")


def _commit_properties(write_id: str, expected_version: int | None) -> CommitProperties:
    """The commit's write id and, for a compare-and-set, no retries and the CAS transaction marker."""
    return CommitProperties(
        custom_metadata={WRITE_ID_KEY: write_id},
        max_commit_retries=0 if expected_version is not None else None,
        # The same compare-and-set marker delta-spark writes (see sparkship.tables.native), so that both engines'
        # compare-and-set commits exclude each other.
        app_transactions=[Transaction(CAS_APP_ID, expected_version + 1)] if expected_version is not None else None,
    )


def _create_table(path: str, delta_schema: Schema, actions: list[AddAction], partition_by: list[str],
                  properties: dict[str, str] | None, commit: CommitProperties, expected_version: int | None) -> bool:
    """Create the table with ``actions`` as its first commit: True, or False when another writer created it first
    and a plain write should append instead."""
    try:
        create_table_with_add_actions(
            path, delta_schema, actions, mode="error", partition_by=partition_by or None,
            configuration=properties or None, commit_properties=commit,
        )
        return True
    except (DeltaError, CommitFailedError, OSError) as exc:
        if is_unsupported_operation(exc):
            raise unsupported_filesystem(path, "the commit's no-replace rename", exc) from None
        if not table_exists(path):
            raise
        # Someone created it first. A CAS on "must not exist" loses; a plain write appends instead.
        if expected_version == -1:
            raise ConcurrentWriteError(f"table {path} was created concurrently") from None
        return False


