"""Feature stages of a saved pipeline, one class per Spark ML stage and named as in Spark: Imputer,
StringIndexer, OneHotEncoder, Bucketizer, VectorAssembler and VectorSizeHint. The stage contract is in
:mod:`sparkship.serving.base`; scalers are in :mod:`sparkship.serving.scalers`, predictors in
:mod:`sparkship.serving.predictors`.

    >>> stage = catalog.build_stage(read_metadata("/tmp/model/stages/0_Imputer_ec0820bdcd6e"))   # doctest: +SKIP
    >>> stage.plan({"a": ("double", None)})                                               # doctest: +SKIP
    >>> r = {"a": None}; stage.row(r); r                                                  # doctest: +SKIP
    {'a': None, 'a_i': 0.0028}
"""
from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparkship.serving import reader
from sparkship.serving.base import Schema, Stage, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.javastr import is_java_double, spark_string
from sparkship.serving.numeric import EMPTY
from sparkship.serving.reader import StageMetadata, to_double
from sparkship.serving.signature import FLOATING, INTEGRAL, InvalidRecordError


@register_stage
class ImputerModel(Stage):
    """Replaces null and ``missingValue`` (NaN by default) with the fitted surrogate, cast to the input type."""

    spark_class = "org.apache.spark.ml.feature.ImputerModel"
    known_params = frozenset({"inputCol", "outputCol", "inputCols", "outputCols", "strategy", "missingValue",
                              "relativeError"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = self._in_out()
        data = reader.read_data(meta.path)[0]
        self.surrogates = [float(data[c]) for c in self.input_cols]
        self.missing = to_double(self.p("missingValue", "NaN"))
        self.missing_nan = math.isnan(self.missing)

    def plan(self, schema: Schema) -> None:
        self._row_plan = []
        self.types = []
        for c, o, s in zip(self.input_cols, self.output_cols, self.surrogates):
            t, _ = self._need(schema, c, ("numeric",))
            # Spark casts the surrogate to the input column's type (an int column gets a truncated mean).
            if t in INTEGRAL:
                typed: Any = int(s) if math.isfinite(s) else 0
            elif t == "float":
                typed = float(np.float32(s))
            else:
                typed = s
            self._row_plan.append((c, o, typed))
            self.types.append(t)
            schema[o] = (t, None)

    def row(self, r: dict[str, Any]) -> bool:
        nan, mv = self.missing_nan, self.missing
        for c, o, s in self._row_plan:
            v = r[c]
            r[o] = s if v is None or (v != v if nan else v == mv) else v
        return True

    def batch(self, b: Batch) -> np.ndarray:
        for (c, o, s), t in zip(self._row_plan, self.types):
            x = b.cols[c].copy()
            miss = b.null_mask(c)
            hit = np.isnan(x) if (self.missing_nan and t in FLOATING) else (x == self.missing)
            miss = hit if miss is None else (miss | hit)
            x[miss] = s
            b.set(o, x, t)
        return EMPTY


@register_stage
class StringIndexerModel(Stage):
    """Maps labels to indices (frequency order as fitted); null and unseen labels per ``handleInvalid``."""

    spark_class = "org.apache.spark.ml.feature.StringIndexerModel"
    known_params = frozenset({"inputCol", "outputCol", "inputCols", "outputCols", "handleInvalid",
                              "stringOrderType"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = self._in_out()
        data = reader.read_data(meta.path)[0]
        labels = data.get("labelsArray")
        if labels is None and "labels" in data:  # Spark 2.x single-column format
            labels = [data["labels"]]
        if labels is None or len(labels) != len(self.input_cols):
            raise self.refuse("a labels layout other than labelsArray with one list per input column")
        self.labels: list[list[str]] = [list(ls) for ls in labels]
        self.lookup = [{s: float(i) for i, s in enumerate(ls)} for ls in self.labels]
        self.handle = self.p("handleInvalid", "error")
        if self.handle not in ("error", "skip", "keep"):
            raise self.refuse(f"handleInvalid={self.handle!r}")

    def input_type(self, col: str) -> str:
        # A saved model does not record its input types; the labels Spark's cast wrote tell them apart:
        # "1.0", "2.5", "NaN" come from a double column, "3" from a string or an integer one.
        labels = self.labels[self.input_cols.index(col)]
        if labels and all(s.lstrip("-").isascii() and s.lstrip("-").isdigit() and str(int(s)) == s for s in labels):
            return "integral"
        if labels and all(is_java_double(s) for s in labels):
            return "double"
        return "string"

    def plan(self, schema: Schema) -> None:
        self.types = [self._need(schema, c, ("string", "numeric", "boolean"))[0] for c in self.input_cols]
        for o in self.output_cols:
            schema[o] = ("double", None)
        self._row_plan = list(zip(self.input_cols, self.output_cols, self.types, self.lookup,
                                  [float(len(ls)) for ls in self.labels]))

    def row(self, r: dict[str, Any]) -> bool:
        handle = self.handle
        if handle == "skip":  # Spark filters first (na.drop over the inputs, then unseen labels), then indexes
            for c, _o, t, lut, _ in self._row_plan:
                v = r[c]
                if v is None or v != v or (v if t == "string" else spark_string(v, t)) not in lut:
                    return False
        for c, o, t, lut, n in self._row_plan:
            v = r[c]
            s = v if t == "string" or v is None else spark_string(v, t)
            i = lut.get(s) if s is not None else None
            if i is None:
                if handle != "keep":
                    raise InvalidRecordError(c, "StringIndexer encountered NULL value" if s is None
                                             else f"unseen label {s!r} (handleInvalid='error')")
                i = n
            r[o] = i
        return True

    def _strings(self, b: Batch, c: str, t: str) -> np.ndarray:
        x = b.cols[c]
        nm = b.null_mask(c)
        if t == "string":
            return x
        uniq, inv = np.unique(x, return_inverse=True)
        casted = np.array([spark_string(u.item(), t) for u in uniq] or [""], dtype=object)
        out = casted[inv.reshape(-1)] if len(uniq) else np.empty(0, dtype=object)
        if nm is not None:
            out = out.copy()
            out[nm] = None
        return out

    @staticmethod
    def _indices(b: Batch, c: str, strings: np.ndarray, labels: list[str]) -> np.ndarray:
        encoded = b.codes.get(c)
        if encoded is None:
            return _label_indices(strings, labels)
        codes, distinct = encoded  # look up the few distinct values, then spread them over the rows
        found: np.ndarray = np.append(_label_indices(distinct, labels), -1.0)[codes]
        return found

    def batch(self, b: Batch) -> np.ndarray:
        strs = {c: self._strings(b, c, t) for c, t in zip(self.input_cols, self.types)}
        dropped = EMPTY
        if self.handle == "skip":
            keep = np.ones(b.n, dtype=bool)
            for c, t, labels in zip(self.input_cols, self.types, self.labels):
                nm = b.null_mask(c)
                if nm is not None:
                    keep &= ~nm
                if t in FLOATING:
                    keep &= ~np.isnan(b.cols[c])
                keep &= self._indices(b, c, strs[c], labels) >= 0
            dropped = b.filter(keep)
            strs = {c: s[keep] for c, s in strs.items()} if len(dropped) else strs
        for c, o, n in zip(self.input_cols, self.output_cols, self.labels):
            idx = self._indices(b, c, strs[c], n)
            bad = idx < 0
            if bad.any():
                if self.handle != "keep":
                    b.fail(bad, c, "StringIndexer cannot index {value} (handleInvalid='error')")
                idx[bad] = len(n)
            b.set(o, idx, "double")
        return dropped


def _label_indices(values: np.ndarray, labels: list[str]) -> np.ndarray:
    """Index of each value in ``labels`` as float64, -1 where absent or None (hash lookups in Arrow's C++)."""
    found = pc.index_in(pa.array(values, type=pa.string(), from_pandas=False), value_set=pa.array(labels, pa.string()))
    out: np.ndarray = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.float64)
    return out


@register_stage
class OneHotEncoderModel(Stage):
    """Category index -> sparse one-hot vector (``dropLast``, ``handleInvalid`` keep/error)."""

    spark_class = "org.apache.spark.ml.feature.OneHotEncoderModel"
    known_params = frozenset({"inputCol", "outputCol", "inputCols", "outputCols", "dropLast", "handleInvalid"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = self._in_out()
        self.category_sizes = [int(s) for s in reader.read_data(meta.path)[0]["categorySizes"]]
        drop_last = bool(self.p("dropLast", True))
        self.keep = self.p("handleInvalid", "error") == "keep"
        if self.p("handleInvalid", "error") not in ("error", "keep"):
            raise self.refuse(f"handleInvalid={self.p('handleInvalid')!r}")
        # Spark's getConfigedCategorySizes: keep adds a slot for invalid values, dropLast removes the last one.
        self.sizes = [s + int(self.keep) - int(drop_last) for s in self.category_sizes]

    def plan(self, schema: Schema) -> None:
        for c, o, size in zip(self.input_cols, self.output_cols, self.sizes):
            self._need(schema, c, ("numeric",))
            schema[o] = ("vector", size)
        self._row_plan = list(zip(self.input_cols, self.output_cols, self.category_sizes, self.sizes))

    def _invalid(self, c: str, x: float) -> InvalidRecordError:
        what = "negative value" if x < 0 else "unseen value"
        return InvalidRecordError(c, f"OneHotEncoder got {what} {x!r} (handleInvalid='error')")

    def row(self, r: dict[str, Any]) -> bool:
        for c, o, cats, size in self._row_plan:
            x = r[c]
            if x is None:
                r[o] = None
                continue
            if 0 <= x < cats:
                i = int(x)
            elif self.keep:
                i = cats
            else:
                raise self._invalid(c, x)
            v = [0.0] * size
            if i < size:
                v[i] = 1.0
            r[o] = v
        return True

    def batch(self, b: Batch) -> np.ndarray:
        for c, o, cats, size in self._row_plan:
            x = b.cols[c].astype(np.float64)
            nm = b.null_mask(c)
            valid = (x >= 0) & (x < cats)
            bad = ~valid if nm is None else (~valid & ~nm)
            if bad.any() and not self.keep:
                i = int(np.flatnonzero(bad)[0])
                raise InvalidRecordError(c, str(self._invalid(c, float(x[i]))).split(": ", 1)[1], int(b.rows[i]))
            idx = np.where(valid, np.nan_to_num(x), cats).astype(np.int64)
            out = np.zeros((b.n, size), dtype=np.float64)
            hot = idx < size
            if nm is not None:
                hot &= ~nm
                out[nm] = np.nan
            out[np.flatnonzero(hot), idx[hot]] = 1.0
            b.set(o, out, "vector", nm)
        return EMPTY


@register_stage
class Bucketizer(Stage):
    """Continuous value -> bucket index by ``splits`` (``handleInvalid`` for NaN: error, skip, keep)."""

    spark_class = "org.apache.spark.ml.feature.Bucketizer"
    known_params = frozenset({"inputCol", "outputCol", "inputCols", "outputCols", "splits", "splitsArray",
                              "handleInvalid"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        if self.meta.is_set("inputCols"):
            self.input_cols, self.output_cols = list(self.p("inputCols")), list(self.p("outputCols"))
            self.splits = [[to_double(v) for v in s] for s in self.p("splitsArray")]
        else:
            self.input_cols, self.output_cols = [self.p("inputCol")], [self.p("outputCol")]
            self.splits = [[to_double(v) for v in self.p("splits")]]
        self.handle = self.p("handleInvalid", "error")
        if self.handle not in ("error", "skip", "keep"):
            raise self.refuse(f"handleInvalid={self.handle!r}")
        self._arrays = [np.asarray(s, dtype=np.float64) for s in self.splits]

    def plan(self, schema: Schema) -> None:
        for c, o in zip(self.input_cols, self.output_cols):
            self._need(schema, c, ("numeric",))
            schema[o] = ("double", None)

    def _bucket(self, c: str, splits: list[float], x: float) -> float:
        if x != x:
            if self.handle == "keep":
                return float(len(splits) - 1)
            raise InvalidRecordError(c, "Bucketizer encountered NaN (handleInvalid='error')")
        if x == splits[-1]:
            return float(len(splits) - 2)
        i = bisect_right(splits, x) - 1
        if i < 0 or i >= len(splits) - 1:
            raise InvalidRecordError(c, f"value {x!r} is out of Bucketizer bounds [{splits[0]}, {splits[-1]}]")
        return float(i)

    def row(self, r: dict[str, Any]) -> bool:
        if self.handle == "skip":
            for c in self.input_cols:
                v = r[c]
                if v is None or v != v:
                    return False
        for c, o, s in zip(self.input_cols, self.output_cols, self.splits):
            v = r[c]
            r[o] = None if v is None else self._bucket(c, s, float(v))
        return True

    def batch(self, b: Batch) -> np.ndarray:
        dropped = EMPTY
        if self.handle == "skip":
            keep = np.ones(b.n, dtype=bool)
            for c in self.input_cols:
                nm = b.null_mask(c)
                nan = np.isnan(b.cols[c].astype(np.float64))
                keep &= ~nan if nm is None else ~(nm | nan)
            dropped = b.filter(keep)
        for c, o, s in zip(self.input_cols, self.output_cols, self._arrays):
            x = b.cols[c].astype(np.float64)
            nm = b.null_mask(c)
            present = np.ones(b.n, dtype=bool) if nm is None else ~nm
            nan = np.isnan(x) & present
            if nan.any() and self.handle == "error":
                b.fail(nan, c, "Bucketizer encountered NaN (handleInvalid='error')")
            idx = (np.searchsorted(s, x, side="right") - 1).astype(np.float64)
            idx[x == s[-1]] = len(s) - 2
            oob = present & ~nan & ((idx < 0) | (idx >= len(s) - 1))
            if oob.any():
                b.fail(oob, c, f"value {{value}} is out of Bucketizer bounds [{s[0]}, {s[-1]}]")
            idx[nan] = len(s) - 1
            if nm is not None:
                idx[nm] = np.nan
            b.set(o, idx, "double", nm)
        return dropped


@register_stage
class VectorAssembler(Stage):
    """Concatenates numeric, boolean and vector columns; null/NaN per ``handleInvalid`` (error, skip, keep).

    As Spark's ``VectorAssembler.assemble``: a NaN in a numeric column fails (error) or drops the row (skip);
    NaN inside a vector is kept in every mode; a null vector becomes ``size`` NaNs in keep mode, which needs the
    size to be known (an earlier stage's output or a VectorSizeHint), as Spark requires. A vector input of
    unknown size (error/skip) contributes however many values it holds.
    """

    spark_class = "org.apache.spark.ml.feature.VectorAssembler"
    known_params = frozenset({"inputCols", "outputCol", "handleInvalid"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = list(self.p("inputCols")), [self.p("outputCol")]
        self.handle = self.p("handleInvalid", "error")
        if self.handle not in ("error", "skip", "keep"):
            raise self.refuse(f"handleInvalid={self.handle!r}")

    def plan(self, schema: Schema) -> None:
        self.kinds: list[tuple[str, str, int | None]] = []
        total: int | None = 0
        for c in self.input_cols:
            t, size = self._need(schema, c, ("numeric", "boolean", "vector"))
            if t == "vector" and size is None and self.handle == "keep":
                raise self.refuse(f"handleInvalid='keep' over vector column '{c}' of unknown size (Spark cannot "
                                  "infer it either: add a VectorSizeHint)")
            width = size if t == "vector" else 1
            self.kinds.append((c, t, width))
            total = None if total is None or width is None else total + width
        self.size = total
        self.scalar_only = all(t != "vector" for _, t, _ in self.kinds)
        schema[self.output_cols[0]] = ("vector", total)

    def _wrong_size(self, c: str, got: int, width: int) -> InvalidRecordError:
        return InvalidRecordError(c, f"VectorAssembler got a vector of size {got}; the pipeline expects {width}")

    def row(self, r: dict[str, Any]) -> bool:
        handle = self.handle
        if self.scalar_only and handle == "error":  # the common case: numbers only, nothing to pad
            try:
                out = [float(r[c]) for c, _, _ in self.kinds]
            except TypeError:  # a null: report it as the general path does
                return self._row_general(r)
            total = sum(out)
            if total != total:  # a NaN somewhere (or +inf and -inf): let the general path decide
                return self._row_general(r)
            r[self.output_cols[0]] = out
            return True
        return self._row_general(r)

    def _row_general(self, r: dict[str, Any]) -> bool:
        out: list[float] = []
        handle = self.handle
        for c, t, width in self.kinds:
            v = r[c]
            if v is None:
                if handle == "skip":
                    return False
                if handle == "error":
                    raise InvalidRecordError(c, "VectorAssembler got null (handleInvalid='error')")
                out.extend([math.nan] * (width or 0))
            elif t == "vector":
                if width is not None and len(v) != width:
                    raise self._wrong_size(c, len(v), width)
                out.extend(v)
            else:
                f = float(v)
                if f != f and handle != "keep":
                    if handle == "skip":
                        return False
                    raise InvalidRecordError(c, "VectorAssembler got NaN (handleInvalid='error')")
                out.append(f)
        r[self.output_cols[0]] = out
        return True

    def _skip_invalid(self, b: Batch) -> np.ndarray:
        """Spark's ``dataset.na.drop(inputCols)``: nulls anywhere, NaN in floating-point columns."""
        keep = np.ones(b.n, dtype=bool)
        for c, t, _ in self.kinds:
            nm = b.null_mask(c)
            if nm is not None:
                keep &= ~nm
            if t in FLOATING:
                keep &= ~np.isnan(b.cols[c])
        return b.filter(keep)

    def batch(self, b: Batch) -> np.ndarray:
        dropped = self._skip_invalid(b) if self.handle == "skip" else EMPTY
        if self.scalar_only and not any(c in b.nulls for c in self.input_cols):
            out = _stack_columns([b.cols[c] for c in self.input_cols], b.n)
            if self.handle == "error" and not b.nan_free.issuperset(self.input_cols):
                self._fail_on_nan(b, out)
            b.set(self.output_cols[0], out, "vector")
            return dropped
        parts = []
        for c, t, width in self.kinds:
            x = b.cols[c]
            nm = b.null_mask(c)
            if nm is not None and self.handle == "error":
                b.fail(nm, c, "VectorAssembler got null (handleInvalid='error')")
            if t == "vector":
                if width is not None and b.n and x.shape[1] != width:
                    raise self._wrong_size(c, x.shape[1], width)
            else:
                if self.handle == "error" and t in FLOATING:
                    nan = np.isnan(x)
                    if nan.any():
                        b.fail(nan, c, "VectorAssembler got NaN (handleInvalid='error')")
                x = x.reshape(-1, 1)
            if nm is not None:  # keep: a null becomes NaN (a whole vector of NaN for a vector column)
                x = x.astype(np.float64)
                x[nm] = np.nan
            parts.append(x)
        out = np.hstack(parts).astype(np.float64, copy=False) if parts else np.zeros((b.n, 0))
        b.set(self.output_cols[0], out, "vector")
        return dropped

    def _fail_on_nan(self, b: Batch, out: np.ndarray) -> None:
        if not out.size or not np.isnan(out.sum()):  # any NaN makes the total NaN: one pass finds none
            return
        nan_rows = np.isnan(out.sum(axis=1))
        if not nan_rows.any():
            return
        for j, (c, _t, _) in enumerate(self.kinds):  # name the first NaN column of the first such row
            i = int(np.flatnonzero(nan_rows)[0])
            if np.isnan(out[i, j]):
                mask = np.zeros(b.n, dtype=bool)
                mask[i] = True
                b.fail(mask, c, "VectorAssembler got NaN (handleInvalid='error')")
        # +inf and -inf in one row sum to NaN without any NaN: nothing to report


def _stack_columns(cols: list[np.ndarray], n: int) -> np.ndarray:
    """Scalar columns as one (n, k) float64 matrix: one contiguous copy per column (a feature-major array seen
    transposed, so the matrix is Fortran-ordered); the stages that read it take any memory order."""
    if not cols:
        return np.zeros((n, 0))
    stacked: np.ndarray = np.stack(cols, dtype=np.float64).T
    return stacked


@register_stage
class VectorSizeHint(Stage):
    """Declares a vector column's size; rows whose vector is null or of another size fail (``error``), are
    dropped (``skip``) or pass unchecked (``optimistic``), as Spark's ``VectorSizeHint.transform``."""

    spark_class = "org.apache.spark.ml.feature.VectorSizeHint"
    known_params = frozenset({"inputCol", "size", "handleInvalid"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        col = self.p("inputCol")
        self.input_cols, self.output_cols = [col], [col]
        self.size = int(self.p("size"))
        self.handle = self.p("handleInvalid", "error")
        if self.handle not in ("error", "skip", "optimistic"):
            raise self.refuse(f"handleInvalid={self.handle!r}")

    def input_type(self, col: str) -> str:
        return "vector"

    def plan(self, schema: Schema) -> None:
        c = self.input_cols[0]
        _, got = self._need(schema, c, ("vector",))
        if got is not None and got != self.size:
            # Spark's validateSchemaAndSize fails every transform when the column's metadata says otherwise.
            raise self.refuse(f"size {self.size} for column '{c}', which an earlier stage makes of size {got}")
        schema[c] = ("vector", self.size)

    def row(self, r: dict[str, Any]) -> bool:
        if self.handle == "optimistic":
            return True
        c = self.input_cols[0]
        v = r[c]
        if v is not None and len(v) == self.size:
            return True
        if self.handle == "skip":
            return False
        if v is None:
            raise InvalidRecordError(c, "got null vector in VectorSizeHint (handleInvalid='error')")
        raise InvalidRecordError(c, f"VectorSizeHint expects a vector of size {self.size} but got {len(v)}")

    def batch(self, b: Batch) -> np.ndarray:
        if self.handle == "optimistic":
            return EMPTY
        c = self.input_cols[0]
        x, nm = b.cols[c], b.null_mask(c)
        bad = np.ones(b.n, dtype=bool) if x.shape[1] != self.size else np.zeros(b.n, dtype=bool)
        if nm is not None:
            bad |= nm
        if not bad.any():
            return EMPTY
        if self.handle == "skip":
            return b.filter(~bad)
        if nm is not None and nm.any():
            b.fail(nm, c, "got null vector in VectorSizeHint (handleInvalid='error')")
        b.fail(bad, c, f"VectorSizeHint expects a vector of size {self.size} but got {x.shape[1]}")
        return EMPTY
