"""Columnar rows for the batch path: numpy arrays per column, null masks, Spark types, original row numbers.

Numeric columns are float64 (double, float) or int64 (integral types) arrays; booleans bool arrays; strings
object arrays holding ``str`` or ``None``; vectors 2-D float64 arrays; ``array<string>`` columns (tokens) object
arrays holding lists of ``str`` (or ``None``). A null is flagged in ``nulls[name]``
(its slot holds NaN, 0 or None). ``rows`` keeps each surviving row's position in the caller's input, so rows
dropped by a stage (Spark's ``skip`` modes) can be reported. Input columns may be read-only views of the
caller's pandas or Arrow memory (no copy): a stage writes new arrays, never into an input column.

    >>> import pyarrow as pa
    >>> from sparkship.serving.signature import Signature, Field
    >>> b = from_arrow(pa.table({"x": [1.0, None]}), Signature([Field("x", "double")]))
    >>> b.n, b.null_mask("x").tolist()
    (2, [False, True])
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparkship.serving.signature import FLOATING, INTEGRAL, InvalidRecordError, Signature


class Batch:
    """A set of rows, one numpy array per column."""

    def __init__(self, n: int, rows: np.ndarray | None = None) -> None:
        self.n = n
        self.rows = np.arange(n) if rows is None else rows
        self.cols: dict[str, np.ndarray] = {}
        self.nulls: dict[str, np.ndarray] = {}
        self.types: dict[str, str] = {}
        # String columns read from Arrow also keep their dictionary encoding: (codes, distinct values), code -1
        # for null. Stages that look strings up (StringIndexer) then work on the few distinct values.
        self.codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # Floating columns known to hold no NaN (the input check already summed them): no stage checks again.
        self.nan_free: set[str] = set()

    def set(self, name: str, values: np.ndarray, spark_type: str, nulls: np.ndarray | None = None) -> None:
        self.cols[name] = values
        self.codes.pop(name, None)
        self.nan_free.discard(name)
        self.types[name] = spark_type
        if nulls is not None and nulls.any():
            self.nulls[name] = nulls
        else:
            self.nulls.pop(name, None)

    def null_mask(self, name: str) -> np.ndarray | None:
        return self.nulls.get(name)

    def filter(self, keep: np.ndarray) -> np.ndarray:
        """Keep the rows where ``keep`` is True; return the input positions of the others."""
        dropped: np.ndarray = self.rows[~keep]
        if len(dropped):
            self.cols = {k: v[keep] for k, v in self.cols.items()}
            self.nulls = {k: v[keep] for k, v in self.nulls.items() if v[keep].any()}
            self.codes = {k: (codes[keep], distinct) for k, (codes, distinct) in self.codes.items()}
            self.rows = self.rows[keep]
            self.n = int(keep.sum())
        return dropped

    def fail(self, mask: np.ndarray, field: str, message: str) -> None:
        """Raise :class:`InvalidRecordError` for the first row flagged in ``mask`` (Spark would fail the job)."""
        i = int(np.flatnonzero(mask)[0])
        raise InvalidRecordError(field, message.format(value=_value_repr(self, field, i)), int(self.rows[i]))


def _value_repr(b: Batch, field: str, i: int) -> str:
    if field not in b.cols:
        return "?"
    nm = b.nulls.get(field)
    if nm is not None and nm[i]:
        return "null"
    v = b.cols[field][i]
    return repr(v.tolist() if isinstance(v, np.ndarray) else v.item() if hasattr(v, "item") else v)


def _column_from_values(name: str, values: Sequence[Any], spark_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Typed array + null mask from Python values already checked by :meth:`Signature.coerce_record`."""
    nulls = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    if spark_type in FLOATING:
        arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    elif spark_type in INTEGRAL:
        arr = np.array([0 if v is None else v for v in values], dtype=np.int64)
    elif spark_type == "boolean":
        arr = np.array([False if v is None else v for v in values], dtype=bool)
    elif spark_type == "vector":
        sizes = {len(v) for v in values if v is not None}
        if len(sizes) > 1:
            raise InvalidRecordError(name, f"vectors of different lengths {sorted(sizes)}")
        width = sizes.pop() if sizes else 0
        arr = np.array([[np.nan] * width if v is None else v for v in values], dtype=np.float64).reshape(
            len(values), width
        )
    elif spark_type == "array<string>":
        arr = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):  # one list per slot (a slice assignment would broadcast the lists)
            arr[i] = v
    else:
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
    return arr, nulls


def from_records(records: Sequence[Mapping[str, Any]], signature: Signature) -> Batch:
    """Rows given as dicts; every record is checked against the signature (field and row named on failure)."""
    coerced = [signature.coerce_record(r, i) for i, r in enumerate(records)]
    b = Batch(len(coerced))
    for f in signature.inputs:
        t = signature.types[f.name]
        arr, nulls = _column_from_values(f.name, [r[f.name] for r in coerced], t)
        b.set(f.name, arr, t, nulls)
    return b


def _dictionary_codes(col: Any) -> tuple[np.ndarray, np.ndarray]:
    """(int64 codes, object array of distinct strings) of a string column; code -1 where null."""
    encoded = col.combine_chunks().dictionary_encode() if isinstance(col, pa.ChunkedArray) else col.dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    distinct = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    return codes, distinct


def from_arrow(table: Any, signature: Signature) -> Batch:
    """Rows given as a ``pyarrow.Table`` (or RecordBatch); columns are cast to the signature's types."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    b = Batch(table.num_rows)
    for f in signature.inputs:
        t = signature.types[f.name]
        if f.name not in table.column_names:
            raise InvalidRecordError(f.name, "is missing")
        col = table.column(f.name)
        nulls = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else np.zeros(0, dtype=bool)
        codes = None
        try:
            if t in FLOATING or t in INTEGRAL:
                arr = _arrow_numbers(col, t, nulls)
            elif t == "boolean":
                arr = _arrow_booleans(col)
            elif t == "string":
                codes = _arrow_string_codes(col)
                arr = np.append(codes[1], [None])[codes[0]]  # code -1 picks the trailing None
            elif t == "array<string>":
                arr, nulls = _arrow_string_lists(f.name, col)
            else:  # vector
                arr, nulls = _vector_column(f.name, col)
        except (TypeError, pa.ArrowInvalid) as exc:
            raise InvalidRecordError(f.name, str(exc)) from None
        b.set(f.name, np.asarray(arr), t, np.asarray(nulls, dtype=bool) if len(nulls) else None)
        if codes is not None:
            b.codes[f.name] = codes
    return b


def _arrow_numbers(col: Any, t: str, nulls: np.ndarray) -> np.ndarray:
    """A numeric Arrow column as int64 (integral ``t``, nulls 0) or float64 (nulls NaN; float32 precision for
    ``float``); TypeError for another Arrow type or a fractional value in an integral column."""
    atype = col.type
    if not (pa.types.is_integer(atype) or pa.types.is_floating(atype) or pa.types.is_decimal(atype)
            or pa.types.is_null(atype)):
        raise TypeError(f"expected {t}, got {atype}")
    if t in INTEGRAL and pa.types.is_floating(atype):
        vals = pc.fill_null(col, 0.0).to_numpy(zero_copy_only=False)
        finite = np.isfinite(vals)
        if not (finite & (vals == np.trunc(np.where(finite, vals, 0)))).all():
            raise TypeError(f"expected {t}, got non-integral values")
    if t in INTEGRAL:
        out: np.ndarray = pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        return out
    if not col.null_count and t == "double":  # zero-copy where Arrow allows (read-only then)
        out = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return out
    arr: np.ndarray = col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
    arr[nulls] = np.nan
    if t == "float":
        arr = arr.astype(np.float32).astype(np.float64)
    return arr


def _arrow_booleans(col: Any) -> np.ndarray:
    """A boolean (or all-null) Arrow column as a bool array, nulls False."""
    if not (pa.types.is_boolean(col.type) or pa.types.is_null(col.type)):
        raise TypeError(f"expected boolean, got {col.type}")
    out: np.ndarray = pc.fill_null(col.cast(pa.bool_()), False).to_numpy(zero_copy_only=False)
    return out


def _arrow_string_codes(col: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_dictionary_codes` of a string column (an integer column is cast to string first, as Spark does)."""
    atype = col.type
    if pa.types.is_integer(atype):
        col = col.cast(pa.string())
    elif not (pa.types.is_string(atype) or pa.types.is_large_string(atype) or pa.types.is_null(atype)):
        raise TypeError(f"expected string, got {atype}")
    return _dictionary_codes(col)


def _arrow_string_lists(name: str, col: Any) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow list-of-strings column as an object array of lists and its null mask."""
    atype = col.type
    if not (pa.types.is_list(atype) or pa.types.is_large_list(atype) or pa.types.is_null(atype)):
        raise TypeError(f"expected array<string>, got {atype}")
    if not pa.types.is_null(atype) and not (pa.types.is_string(atype.value_type)
                                            or pa.types.is_large_string(atype.value_type)
                                            or pa.types.is_null(atype.value_type)):
        raise TypeError(f"expected array<string>, got {atype}")
    return _column_from_values(name, col.to_pylist(), "array<string>")


def _vector_column(name: str, col: Any) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow ``list``/``large_list``/``fixed_size_list`` of numbers as an (n, size) float64 matrix + null mask.

    Null vectors become rows of NaN (flagged in the mask), null elements NaN; vectors of different sizes in one
    batch are refused (score such rows one by one).
    """
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if pa.types.is_null(t):
        return np.full((len(arr), 0), np.nan), np.ones(len(arr), dtype=bool)
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise TypeError(f"expected vector (a list of numbers), got {t}")
    vt = t.value_type
    if not (pa.types.is_integer(vt) or pa.types.is_floating(vt) or pa.types.is_decimal(vt) or pa.types.is_null(vt)):
        raise TypeError(f"expected vector (a list of numbers), got {t}")
    nulls = arr.is_null().to_numpy(zero_copy_only=False)
    present = arr.filter(pa.array(~nulls)) if nulls.any() else arr
    if pa.types.is_fixed_size_list(t):
        width = t.list_size
    else:
        lengths = pc.list_value_length(present).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise TypeError(f"vectors of different lengths {sorted(set(lengths.tolist()))[:5]} in one batch")
        width = int(lengths[0]) if len(lengths) else 0
    # A null element can only be a NaN that pandas turned into null on the way (Spark vectors hold no nulls).
    values = present.flatten().cast(pa.float64()).to_numpy(zero_copy_only=False).reshape(len(present), width)
    if not nulls.any():
        return values, nulls
    out = np.full((len(arr), width), np.nan)
    out[~nulls] = values
    return out, nulls


def from_pandas(df: Any, signature: Signature) -> Batch:
    """Rows given as a pandas DataFrame (via Arrow; NaN in object columns counts as null)."""
    missing = [f.name for f in signature.inputs if f.name not in df.columns]
    if missing:
        raise InvalidRecordError(missing[0], "is missing")
    numeric = {f.name: col for f in signature.inputs
               if (col := _numpy_double_column(df[f.name], signature.types[f.name])) is not None}
    rest = Signature([f for f in signature.inputs if f.name not in numeric])
    names = [f.name for f in rest.inputs]
    if names:
        try:
            table = pa.Table.from_pandas(df[names], preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidRecordError(_bad_pandas_column(df, names), str(exc)) from None
        b = from_arrow(table, rest)
    else:
        b = Batch(len(df))
    for name, (arr, nulls) in numeric.items():
        b.set(name, arr, signature.types[name], nulls)
        if nulls is None:
            b.nan_free.add(name)
    return b


def _numpy_double_column(series: Any, spark_type: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A numpy-backed numeric pandas column for a double/float field, read without Arrow (no copy for float64;
    a read-only view). NaN counts as null, as in Arrow's pandas conversion. None for other columns."""
    dt = series.dtype
    if spark_type not in FLOATING or not isinstance(dt, np.dtype) or dt.kind not in "fiu":
        return None
    arr = series.to_numpy(dtype=np.float64, copy=False)
    if spark_type == "float":
        arr = arr.astype(np.float32).astype(np.float64)
    elif np.may_share_memory(arr, series.values):
        arr = arr.view()
        arr.flags.writeable = False  # a view of the caller's DataFrame: no stage may write into it
    nulls = np.isnan(arr) if dt.kind == "f" and np.isnan(np.add.reduce(arr)) else None
    return arr, nulls


def _bad_pandas_column(df: Any, names: list[str]) -> str:
    for name in names:
        try:
            pa.array(df[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return name
    return names[0]
