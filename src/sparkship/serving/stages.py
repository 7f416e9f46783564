"""One small class per Spark ML stage, named as in Spark, each scoring a row (``row``) or a batch (``batch``).

Every class reproduces its Spark counterpart's ``transform()``: the same outputs, the same rows dropped in
``skip`` modes, and an :class:`InvalidRecordError` where Spark would fail the job (unseen label with
``handleInvalid='error'``, NaN into a VectorAssembler, ...). A stage or an explicitly set param this module does
not know is refused when the model is loaded (:class:`UnsupportedModelError`), never scored approximately.

Row path: ``row(r)`` reads and writes plain Python values in the dict ``r`` (vectors are lists of floats) and
returns False when Spark would drop the row. Batch path: ``batch(b)`` works on a :class:`Batch` in place and
returns the input positions of dropped rows.

    >>> stage = build_stage(read_metadata("/tmp/model/stages/0_Imputer_ec0820bdcd6e"))   # doctest: +SKIP
    >>> stage.plan({"a": ("double", None)})                                               # doctest: +SKIP
    >>> r = {"a": None}; stage.row(r); r                                                  # doctest: +SKIP
    {'a': None, 'a_i': 0.0028}
"""
from __future__ import annotations

import math
from bisect import bisect_right
from operator import mul
from typing import Any, ClassVar

import numpy as np

from sparkship.errors import SparkshipError
from sparkship.serving import reader
from sparkship.serving.batch import Batch
from sparkship.serving.reader import StageMetadata, to_double
from sparkship.serving.signature import FLOATING, INTEGRAL, InvalidRecordError, java_double_str, spark_string
from sparkship.serving.trees import Forest

# Column name -> (Spark type, vector size or None). Built up stage by stage when a pipeline is loaded.
Schema = dict[str, tuple[str, "int | None"]]

_EMPTY = np.empty(0, dtype=np.int64)


class UnsupportedModelError(SparkshipError):
    """The saved model holds a stage or a param setting the JVM-free scorer cannot reproduce exactly."""


class Stage:
    """Base class: params from the saved metadata, input/output columns, row and batch transforms."""

    spark_class: ClassVar[str] = ""
    # Params this class understands (those used by transform() and fit-only ones). An explicitly set param
    # outside this set is refused: it might change what transform() does.
    known_params: ClassVar[frozenset[str]] = frozenset()
    preferred_input_type: ClassVar[str] = "double"

    def __init__(self, meta: StageMetadata) -> None:
        self.meta = meta
        self.uid = meta.uid
        unknown = sorted(p for p in meta.set_params if p not in self.known_params)
        if unknown:
            raise UnsupportedModelError(
                f"stage {meta.uid} ({meta.class_name}) sets param(s) {', '.join(unknown)} that the JVM-free "
                "scorer does not support"
            )
        self.input_cols: list[str] = []
        self.output_cols: list[str] = []

    def p(self, name: str, default: Any = None) -> Any:
        return self.meta.params.get(name, default)

    def refuse(self, what: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"stage {self.uid} ({self.meta.class_name}): {what} is not supported")

    def _in_out(self) -> tuple[list[str], list[str]]:
        """inputCols/outputCols when set, else inputCol/outputCol (multi-column stages accept both)."""
        multi = self.meta.is_set("inputCols") or (not self.meta.is_set("inputCol") and bool(self.p("inputCols")))
        if multi:
            return list(self.p("inputCols")), list(self.p("outputCols") or [])
        return [self.p("inputCol")], [self.p("outputCol")]

    def input_type(self, col: str) -> str:
        """The type a pipeline input column consumed by this stage gets in a derived signature."""
        return self.preferred_input_type

    def plan(self, schema: Schema) -> None:
        """Check the input columns' types and sizes, precompute, and add the outputs to ``schema``."""
        raise NotImplementedError

    def row(self, r: dict[str, Any]) -> bool:
        raise NotImplementedError

    def batch(self, b: Batch) -> np.ndarray:
        raise NotImplementedError

    def _need(self, schema: Schema, col: str, kinds: tuple[str, ...]) -> tuple[str, int | None]:
        if col not in schema:
            raise UnsupportedModelError(f"stage {self.uid} ({self.meta.short_class}) reads column '{col}', "
                                        "which no input or earlier stage provides")
        t, size = schema[col]
        ok = any(t == k or (k == "numeric" and (t in FLOATING or t in INTEGRAL)) for k in kinds)
        if not ok:
            raise UnsupportedModelError(f"stage {self.uid} ({self.meta.short_class}) reads column '{col}' of "
                                        f"type {t}; expected {' or '.join(kinds)}")
        return t, size


# --- feature transformers ------------------------------------------------------------------------------------

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
        return _EMPTY


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
        if labels and all(s.lstrip("-").isdigit() and str(int(s)) == s for s in labels):
            return "integral"
        if labels and all(_is_java_double(s) for s in labels):
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
            for c, o, t, lut, _ in self._row_plan:
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

    def batch(self, b: Batch) -> np.ndarray:
        strs = {c: self._strings(b, c, t) for c, t in zip(self.input_cols, self.types)}
        dropped = _EMPTY
        if self.handle == "skip":
            keep = np.ones(b.n, dtype=bool)
            for c, t, lut in zip(self.input_cols, self.types, self.lookup):
                nm = b.null_mask(c)
                if nm is not None:
                    keep &= ~nm
                if t in FLOATING:
                    keep &= ~np.isnan(b.cols[c])
                keep &= np.fromiter((s in lut for s in strs[c]), dtype=bool, count=b.n)
            dropped = b.filter(keep)
            strs = {c: s[keep] for c, s in strs.items()} if len(dropped) else strs
        for c, o, lut, n in zip(self.input_cols, self.output_cols, self.lookup, self.labels):
            s = strs[c]
            idx = np.fromiter((lut.get(v, -1.0) if v is not None else -1.0 for v in s), dtype=np.float64,
                              count=len(s))
            bad = idx < 0
            if bad.any():
                if self.handle != "keep":
                    b.fail(bad, c, "StringIndexer cannot index {value} (handleInvalid='error')")
                idx[bad] = len(n)
            b.set(o, idx, "double")
        return dropped


def _is_java_double(s: str) -> bool:
    """True if ``s`` is exactly how Spark casts some double to string."""
    try:
        return java_double_str(float(s)) == s
    except ValueError:
        return False


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
        return _EMPTY


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
        dropped = _EMPTY
        if self.handle == "skip":
            keep = np.ones(b.n, dtype=bool)
            for c in self.input_cols:
                nm = b.null_mask(c)
                keep &= ~np.isnan(b.cols[c].astype(np.float64)) if nm is None else ~(nm | np.isnan(b.cols[c].astype(np.float64)))
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


class VectorAssembler(Stage):
    """Concatenates numeric, boolean and vector columns; null/NaN per ``handleInvalid`` (error, skip, keep)."""

    spark_class = "org.apache.spark.ml.feature.VectorAssembler"
    known_params = frozenset({"inputCols", "outputCol", "handleInvalid"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = list(self.p("inputCols")), [self.p("outputCol")]
        self.handle = self.p("handleInvalid", "error")
        if self.handle not in ("error", "skip", "keep"):
            raise self.refuse(f"handleInvalid={self.handle!r}")

    def plan(self, schema: Schema) -> None:
        self.kinds: list[tuple[str, str, int]] = []
        total = 0
        for c in self.input_cols:
            t, size = self._need(schema, c, ("numeric", "boolean", "vector"))
            if t == "vector" and size is None:
                raise self.refuse(f"input vector column '{c}' of unknown size")
            width = size if t == "vector" else 1
            self.kinds.append((c, t, int(width)))
            total += int(width)
        self.size = total
        schema[self.output_cols[0]] = ("vector", total)

    def row(self, r: dict[str, Any]) -> bool:
        out: list[float] = []
        handle = self.handle
        for c, t, width in self.kinds:
            v = r[c]
            if v is None:
                if handle == "skip":
                    return False
                if handle == "error":
                    raise InvalidRecordError(c, "VectorAssembler got null (handleInvalid='error')")
                out.extend([math.nan] * width)
            elif t == "vector":
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

    def batch(self, b: Batch) -> np.ndarray:
        dropped = _EMPTY
        if self.handle == "skip":  # Spark: dataset.na.drop(inputCols): nulls anywhere, NaN in numeric columns
            keep = np.ones(b.n, dtype=bool)
            for c, t, _ in self.kinds:
                nm = b.null_mask(c)
                if nm is not None:
                    keep &= ~nm
                if t in FLOATING:
                    keep &= ~np.isnan(b.cols[c])
            dropped = b.filter(keep)
        parts = []
        for c, t, width in self.kinds:
            x = b.cols[c].astype(np.float64)
            nm = b.null_mask(c)
            if nm is not None and self.handle == "error":
                b.fail(nm, c, "VectorAssembler got null (handleInvalid='error')")
            if t != "vector":
                if self.handle == "error" and t in FLOATING:
                    nan = np.isnan(x)
                    if nan.any():
                        b.fail(nan, c, "VectorAssembler got NaN (handleInvalid='error')")
                x = x.reshape(-1, 1)
            if nm is not None:  # keep: a null becomes NaN (a whole vector of NaN for a vector column)
                x = x.copy()
                x[nm] = np.nan
            parts.append(x)
        out = np.hstack(parts) if parts else np.zeros((b.n, 0))
        b.set(self.output_cols[0], out, "vector")
        return dropped


class _VectorStage(Stage):
    """A stage mapping one vector column to another of the same size."""

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = [self.p("inputCol")], [self.p("outputCol")]

    def input_type(self, col: str) -> str:
        return "vector"

    def plan_size(self, schema: Schema, size: int) -> None:
        _, got = self._need(schema, self.input_cols[0], ("vector",))
        if got is not None and got != size:
            raise self.refuse(f"input '{self.input_cols[0]}' of size {got} (the model was fitted on {size})")
        schema[self.output_cols[0]] = ("vector", size)


class StandardScalerModel(_VectorStage):
    """(x - mean) * (1/std) per ``withMean``/``withStd``; 0 where std is 0, as Spark does."""

    spark_class = "org.apache.spark.ml.feature.StandardScalerModel"
    known_params = frozenset({"inputCol", "outputCol", "withMean", "withStd"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        std, mean = reader.vector(data["std"]), reader.vector(data["mean"])
        self.with_mean, self.with_std = bool(self.p("withMean", False)), bool(self.p("withStd", True))
        self.shift = mean if self.with_mean else np.zeros_like(mean)
        with np.errstate(divide="ignore"):
            self.scale = np.where(std == 0, 0.0, 1.0 / np.where(std == 0, 1.0, std)) if self.with_std else None
        self._shift_l, self._scale_l = self.shift.tolist(), (self.scale.tolist() if self.scale is not None else None)

    def plan(self, schema: Schema) -> None:
        self.plan_size(schema, len(self.shift))

    def row(self, r: dict[str, Any]) -> bool:
        v = r[self.input_cols[0]]
        if v is None:
            r[self.output_cols[0]] = None
        elif self.with_mean and self.with_std:
            r[self.output_cols[0]] = [(x - m) * s for x, m, s in zip(v, self._shift_l, self._scale_l)]
        elif self.with_std:
            r[self.output_cols[0]] = list(map(mul, v, self._scale_l))
        elif self.with_mean:
            r[self.output_cols[0]] = [x - m for x, m in zip(v, self._shift_l)]
        else:
            r[self.output_cols[0]] = list(v)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        x = b.cols[self.input_cols[0]]
        if self.with_mean:
            x = x - self.shift
        out = x * self.scale if self.scale is not None else x.copy()
        b.set(self.output_cols[0], out, "vector", b.null_mask(self.input_cols[0]))
        return _EMPTY


class MinMaxScalerModel(_VectorStage):
    """Rescales each feature to [min, max]; constant features map to (min + max) / 2; NaN stays NaN."""

    spark_class = "org.apache.spark.ml.feature.MinMaxScalerModel"
    known_params = frozenset({"inputCol", "outputCol", "min", "max"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        lo, hi = reader.vector(data["originalMin"]), reader.vector(data["originalMax"])
        self.min, self.max = to_double(self.p("min", 0.0)), to_double(self.p("max", 1.0))
        rng = hi - lo
        self.orig_min = lo
        # Spark precomputes scale / range per feature; 0 marks a constant feature.
        self.scale_arr = np.where(rng != 0, (self.max - self.min) / np.where(rng != 0, rng, 1.0), 0.0)
        self.constant = (self.max + self.min) / 2
        self._plan = list(zip(lo.tolist(), self.scale_arr.tolist()))

    def plan(self, schema: Schema) -> None:
        self.plan_size(schema, len(self.orig_min))

    def row(self, r: dict[str, Any]) -> bool:
        v = r[self.input_cols[0]]
        if v is None:
            r[self.output_cols[0]] = None
            return True
        lo_v, c = self.min, self.constant
        r[self.output_cols[0]] = [
            x if x != x else ((x - m) * s + lo_v if s != 0 else c) for x, (m, s) in zip(v, self._plan)
        ]
        return True

    def batch(self, b: Batch) -> np.ndarray:
        x = b.cols[self.input_cols[0]]
        out = np.where(self.scale_arr != 0, (x - self.orig_min) * self.scale_arr + self.min, self.constant)
        out = np.where(np.isnan(x), x, out)
        b.set(self.output_cols[0], out, "vector", b.null_mask(self.input_cols[0]))
        return _EMPTY


# --- predictors ------------------------------------------------------------------------------------------------

_PREDICTOR_PARAMS = frozenset({"featuresCol", "labelCol", "predictionCol", "weightCol"})
_CLASSIFIER_PARAMS = _PREDICTOR_PARAMS | {"rawPredictionCol", "probabilityCol", "thresholds"}
_TREE_PARAMS = frozenset({"checkpointInterval", "maxDepth", "maxBins", "minInstancesPerNode", "minInfoGain",
                          "maxMemoryInMB", "cacheNodeIds", "seed", "impurity", "minWeightFractionPerNode",
                          "leafCol"})
_ENSEMBLE_PARAMS = frozenset({"featureSubsetStrategy", "numTrees", "subsamplingRate", "bootstrap", "lossType",
                              "maxIter", "stepSize", "validationTol", "validationIndicatorCol"})


def spark_argmax(m: np.ndarray) -> np.ndarray:
    """Row-wise ``DenseVector.argmax``: the first index whose value beats every earlier one (NaN never does)."""
    arg = np.zeros(m.shape[0], dtype=np.int64)
    best = m[:, 0].copy()
    for i in range(1, m.shape[1]):
        upd = m[:, i] > best
        arg[upd] = i
        best[upd] = m[upd, i]
    return arg


def _row_argmax(v: list[float]) -> int:
    arg, best = 0, v[0]
    for i in range(1, len(v)):
        if v[i] > best:
            arg, best = i, v[i]
    return arg


def _seq_sum(m: np.ndarray) -> np.ndarray:
    """Row sums added left to right, as Scala's ``Array.sum`` does (numpy's pairwise sum may differ)."""
    s = m[:, 0].copy()
    for i in range(1, m.shape[1]):
        s += m[:, i]
    return s


class Model(Stage):
    """A predictor reading ``featuresCol``; subclasses set ``num_features`` and compute the outputs."""

    num_features: int | None = None

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.features_col = self.p("featuresCol", "features")
        self.input_cols = [self.features_col]
        self.prediction_col = self.p("predictionCol", "prediction") or ""
        if self.p("leafCol"):
            raise self.refuse(f"leafCol={self.p('leafCol')!r}")
        if self.p("varianceCol"):
            raise self.refuse(f"varianceCol={self.p('varianceCol')!r}")

    def input_type(self, col: str) -> str:
        return "vector"

    def _plan_features(self, schema: Schema) -> None:
        _, size = self._need(schema, self.features_col, ("vector",))
        if size is not None and self.num_features is not None and size != self.num_features:
            raise self.refuse(f"features column '{self.features_col}' of size {size} "
                              f"(the model expects {self.num_features})")

    def _features(self, b: Batch) -> np.ndarray:
        nm = b.null_mask(self.features_col)
        if nm is not None:
            b.fail(nm, self.features_col, "features vector is null")
        return b.cols[self.features_col]

    def _features_row(self, r: dict[str, Any]) -> list[float]:
        v = r[self.features_col]
        if v is None:
            raise InvalidRecordError(self.features_col, "features vector is null")
        return v


class RegressionModel(Model):
    """Outputs ``prediction`` only."""

    def plan(self, schema: Schema) -> None:
        self._plan_features(schema)
        self.output_cols = [self.prediction_col] if self.prediction_col else []
        for o in self.output_cols:
            schema[o] = ("double", None)

    def predict_row(self, x: list[float]) -> float:
        raise NotImplementedError

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def row(self, r: dict[str, Any]) -> bool:
        if self.prediction_col:
            r[self.prediction_col] = self.predict_row(self._features_row(r))
        return True

    def batch(self, b: Batch) -> np.ndarray:
        if self.prediction_col:
            b.set(self.prediction_col, self.predict_batch(self._features(b)), "double")
        return _EMPTY


class ClassificationModel(Model):
    """Outputs rawPrediction, probability, prediction as ``ProbabilisticClassificationModel.transform``:
    probability from rawPrediction, prediction from rawPrediction (or from probability when thresholds are set
    or rawPrediction is not wanted)."""

    num_classes: int = 2

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.raw_col = self.p("rawPredictionCol", "rawPrediction") or ""
        self.prob_col = self.p("probabilityCol", "probability") or ""
        self.thresholds = [to_double(t) for t in self.p("thresholds")] if self.meta.params.get("thresholds") else None

    def plan(self, schema: Schema) -> None:
        self._plan_features(schema)
        if self.thresholds is not None and len(self.thresholds) != self.num_classes:
            raise self.refuse(f"{len(self.thresholds)} thresholds for {self.num_classes} classes")
        self.output_cols = [c for c in (self.raw_col, self.prob_col, self.prediction_col) if c]
        for c in (self.raw_col, self.prob_col):
            if c:
                schema[c] = ("vector", self.num_classes)
        if self.prediction_col:
            schema[self.prediction_col] = ("double", None)

    # subclasses: raw scores and their conversion to probabilities
    def raw_row(self, x: list[float]) -> list[float]:
        raise NotImplementedError

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def raw2prob_row(self, raw: list[float]) -> list[float]:
        total = 0.0
        for v in raw:
            total += v
        return [v / total for v in raw]

    def raw2prob_batch(self, raw: np.ndarray) -> np.ndarray:
        return raw / _seq_sum(raw)[:, None]

    def raw2pred_row(self, raw: list[float]) -> float:
        if self.thresholds is None:
            return float(_row_argmax(raw))
        return self.prob2pred_row(self.raw2prob_row(list(raw)))

    def raw2pred_batch(self, raw: np.ndarray) -> np.ndarray:
        if self.thresholds is None:
            return spark_argmax(raw).astype(np.float64)
        return self.prob2pred_batch(self.raw2prob_batch(raw))

    def prob2pred_row(self, prob: list[float]) -> float:
        if self.thresholds is None:
            return float(_row_argmax(prob))
        scaled = [(p / t if t != 0 else (math.inf if p > 0 else math.nan)) for p, t in zip(prob, self.thresholds)]
        arg, best = 0, -math.inf
        for i, s in enumerate(scaled):
            if s > best:
                arg, best = i, s
        return float(arg)

    def prob2pred_batch(self, prob: np.ndarray) -> np.ndarray:
        if self.thresholds is None:
            return spark_argmax(prob).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = prob / np.asarray(self.thresholds)
        full = np.concatenate([np.full((len(prob), 1), -np.inf), scaled], axis=1)
        return (spark_argmax(full) - 1).clip(0).astype(np.float64)

    def row(self, r: dict[str, Any]) -> bool:
        raw = self.raw_row(self._features_row(r))
        prob = self.raw2prob_row(raw) if self.prob_col or (not self.raw_col and self.prediction_col) else None
        if self.raw_col:
            r[self.raw_col] = raw
        if self.prob_col:
            r[self.prob_col] = prob
        if self.prediction_col:
            r[self.prediction_col] = self.raw2pred_row(raw) if self.raw_col else self.prob2pred_row(prob)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            raw = self.raw_batch(self._features(b))
            prob = self.raw2prob_batch(raw) if self.prob_col or (not self.raw_col and self.prediction_col) else None
        if self.raw_col:
            b.set(self.raw_col, raw, "vector")
        if self.prob_col:
            b.set(self.prob_col, prob, "vector")
        if self.prediction_col:
            b.set(self.prediction_col,
                  self.raw2pred_batch(raw) if self.raw_col else self.prob2pred_batch(prob), "double")
        return _EMPTY


class LogisticRegressionModel(ClassificationModel):
    """Binomial (sigmoid of [-m, m], ``threshold``) or multinomial (softmax) logistic regression."""

    spark_class = "org.apache.spark.ml.classification.LogisticRegressionModel"
    known_params = _CLASSIFIER_PARAMS | {
        "threshold", "regParam", "elasticNetParam", "maxIter", "tol", "fitIntercept", "standardization",
        "aggregationDepth", "family", "lowerBoundsOnCoefficients", "upperBoundsOnCoefficients",
        "lowerBoundsOnIntercepts", "upperBoundsOnIntercepts", "maxBlockSizeInMB"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        if "coefficientMatrix" in data:
            self.coef = reader.matrix(data["coefficientMatrix"])
            sparse = reader.is_sparse(data["coefficientMatrix"])
            self.intercept = reader.vector(data["interceptVector"])
            self.multinomial = bool(data["isMultinomial"])
            self.num_classes = int(data["numClasses"])
        else:  # Spark 1.x/2.0 layout: binomial only
            self.coef = reader.vector(data["coefficients"]).reshape(1, -1)
            sparse = reader.is_sparse(data["coefficients"])
            self.intercept = np.array([float(data["intercept"])])
            self.multinomial, self.num_classes = False, 2
        self.num_features = self.coef.shape[1]
        if self.thresholds is not None and not self.multinomial:
            t0, t1 = self.thresholds
            self.threshold = 1.0 / (1.0 + t0 / t1)
        else:
            self.threshold = to_double(self.p("threshold", 0.5))
        t = self.threshold
        self.raw_threshold = -math.inf if t == 0.0 else math.inf if t == 1.0 else math.log(t / (1.0 - t))
        # Stored sparse (L1), Spark's dot products visit only the stored coefficients: a NaN feature whose
        # coefficient is 0 does not reach the margin. Stored dense, every term counts (NaN x 0 = NaN).
        self._terms = [_dot_terms(c, sparse) for c in self.coef]
        self._coef_rows = [list(zip(idx.tolist(), c[idx].tolist())) for idx, c in zip(self._terms, self.coef)]
        self._intercepts = self.intercept.tolist()

    def raw_row(self, x: list[float]) -> list[float]:
        margins = []
        for nz, b in zip(self._coef_rows, self._intercepts):
            s = 0.0
            for i, c in nz:
                s += x[i] * c
            margins.append(s + b)
        if self.multinomial:
            return margins
        m = margins[0]
        return [-m, m]

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        margins = np.stack([_dot_batch(X, c, idx) + b for c, idx, b in zip(self.coef, self._terms, self.intercept)],
                           axis=1)
        if self.multinomial:
            return margins
        return np.concatenate([-margins, margins], axis=1)

    def raw2prob_row(self, raw: list[float]) -> list[float]:
        if not self.multinomial:
            return [_sigmoid(v) for v in raw]
        k = _row_argmax(raw)
        mx = raw[k]
        if mx == math.inf:
            return [1.0 if i == k else 0.0 for i in range(len(raw))]
        e = [math.exp(v - mx) if mx > 0 else _exp(v) for v in raw]
        total = 0.0
        for v in e:
            total += v
        inv = 1 / total
        return [v * inv for v in e]

    def raw2prob_batch(self, raw: np.ndarray) -> np.ndarray:
        if not self.multinomial:
            return 1.0 / (1.0 + np.exp(-raw))
        k = spark_argmax(raw)
        mx = raw[np.arange(len(raw)), k]
        e = np.exp(np.where((mx > 0)[:, None], raw - mx[:, None], raw))
        prob = e * (1 / _seq_sum(e))[:, None]
        inf = mx == np.inf
        if inf.any():
            prob[inf] = 0.0
            prob[np.flatnonzero(inf), k[inf]] = 1.0
        return prob

    def raw2pred_row(self, raw: list[float]) -> float:
        if self.multinomial:
            return super().raw2pred_row(raw)
        return 1.0 if raw[1] > self.raw_threshold else 0.0

    def raw2pred_batch(self, raw: np.ndarray) -> np.ndarray:
        if self.multinomial:
            return super().raw2pred_batch(raw)
        return (raw[:, 1] > self.raw_threshold).astype(np.float64)

    def prob2pred_row(self, prob: list[float]) -> float:
        if self.multinomial:
            return super().prob2pred_row(prob)
        return 1.0 if prob[1] > self.threshold else 0.0

    def prob2pred_batch(self, prob: np.ndarray) -> np.ndarray:
        if self.multinomial:
            return super().prob2pred_batch(prob)
        return (prob[:, 1] > self.threshold).astype(np.float64)


def _dot_terms(coef: np.ndarray, sparse: bool) -> np.ndarray:
    """Indices of the terms Spark's dot product visits: the stored non-zeros of a sparse vector, else all."""
    return np.flatnonzero(coef) if sparse else np.arange(len(coef))


def _dot_batch(X: np.ndarray, coef: np.ndarray, idx: np.ndarray) -> np.ndarray:
    if len(idx) == len(coef):
        return X @ coef
    return X[:, idx] @ coef[idx]


def _exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def _sigmoid(v: float) -> float:
    try:
        return 1.0 / (1.0 + math.exp(-v))
    except OverflowError:  # exp(-v) overflows for v < -709: Java gives 1/(1+inf) = 0
        return 0.0


class LinearRegressionModel(RegressionModel):
    """prediction = coefficients . x + intercept."""

    spark_class = "org.apache.spark.ml.regression.LinearRegressionModel"
    known_params = _PREDICTOR_PARAMS | {"regParam", "elasticNetParam", "maxIter", "tol", "fitIntercept",
                                        "standardization", "solver", "aggregationDepth", "loss", "epsilon",
                                        "maxBlockSizeInMB"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        self.coef = reader.vector(data["coefficients"])
        self.intercept = float(data["intercept"])
        self.num_features = len(self.coef)
        self._idx = _dot_terms(self.coef, reader.is_sparse(data["coefficients"]))
        self._nz = list(zip(self._idx.tolist(), self.coef[self._idx].tolist()))

    def predict_row(self, x: list[float]) -> float:
        s = 0.0
        for i, c in self._nz:
            s += x[i] * c
        return s + self.intercept

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return _dot_batch(X, self.coef, self._idx) + self.intercept


class _TreeMixin:
    """Loads a single tree or an ensemble into a :class:`Forest`."""

    meta: StageMetadata
    ensemble: ClassVar[bool] = False

    def _load_trees(self) -> tuple[Forest, list[float]]:
        if self.ensemble:
            trees, weights = reader.read_ensemble(self.meta.path)
        else:
            trees, weights = [reader.read_tree(self.meta.path)], [1.0]
        return Forest(trees), weights


class DecisionTreeClassificationModel(_TreeMixin, ClassificationModel):
    """rawPrediction = the leaf's class counts; probability = counts / total."""

    spark_class = "org.apache.spark.ml.classification.DecisionTreeClassificationModel"
    known_params = _CLASSIFIER_PARAMS | _TREE_PARAMS

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.forest, _ = self._load_trees()
        self.num_classes = int(meta.extra.get("numClasses", self.forest.stats.shape[1]))
        self.num_features = meta.extra.get("numFeatures")
        self._stats = self.forest.stats[:, : self.num_classes]
        self._stats_l = self._stats.tolist()

    def raw_row(self, x: list[float]) -> list[float]:
        return list(self._stats_l[self.forest.leaves_row(x)[0]])

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        return self._stats[self.forest.leaves_batch(X)[:, 0]]


class RandomForestClassificationModel(DecisionTreeClassificationModel):
    """rawPrediction = sum over trees of each leaf's normalised class counts, added in tree order."""

    spark_class = "org.apache.spark.ml.classification.RandomForestClassificationModel"
    known_params = _CLASSIFIER_PARAMS | _TREE_PARAMS | _ENSEMBLE_PARAMS
    ensemble = True

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        totals = _seq_sum(self._stats) if self._stats.shape[1] else np.zeros(len(self._stats))
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = self._stats / totals[:, None]
        self._norm = np.where(totals[:, None] != 0, norm, 0.0)  # Spark skips trees whose leaf has no weight
        self._norm_l = self._norm.tolist()

    def raw_row(self, x: list[float]) -> list[float]:
        votes = [0.0] * self.num_classes
        norm = self._norm_l
        for leaf in self.forest.leaves_row(x):
            votes = [v + n for v, n in zip(votes, norm[leaf])]
        return votes

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        leaves = self.forest.leaves_batch(X)
        votes = np.zeros((len(X), self.num_classes))
        for t in range(leaves.shape[1]):
            votes += self._norm[leaves[:, t]]
        return votes


class GBTClassificationModel(_TreeMixin, ClassificationModel):
    """margin = sum of weight x leaf value; rawPrediction [-m, m]; p0 = 1 / (1 + e^(2m))."""

    spark_class = "org.apache.spark.ml.classification.GBTClassificationModel"
    known_params = _CLASSIFIER_PARAMS | _TREE_PARAMS | _ENSEMBLE_PARAMS
    ensemble = True

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        if self.p("lossType", "logistic") != "logistic":
            raise self.refuse(f"lossType={self.p('lossType')!r}")
        self.forest, self.weights = self._load_trees()
        self.num_classes = 2
        self.num_features = meta.extra.get("numFeatures")
        self._weighted = _tree_values(self.forest, self.weights)

    def raw_row(self, x: list[float]) -> list[float]:
        m = _margin_row(self.forest, self._weighted, x)
        return [-m, m]

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        m = _margin_batch(self.forest, self._weighted, X)
        return np.stack([-m, m], axis=1)

    def raw2prob_row(self, raw: list[float]) -> list[float]:
        p0 = 1.0 / (1.0 + _exp(-2.0 * raw[0]))
        return [p0, 1.0 - p0]

    def raw2prob_batch(self, raw: np.ndarray) -> np.ndarray:
        p0 = 1.0 / (1.0 + np.exp(-2.0 * raw[:, 0]))
        return np.stack([p0, 1.0 - p0], axis=1)


def _tree_values(forest: Forest, weights: list[float]) -> list[tuple[float, list[float]]]:
    return list(zip(weights, [forest.prediction.tolist()] * len(weights)))


def _margin_row(forest: Forest, weighted: list[tuple[float, list[float]]], x: list[float]) -> float:
    m = 0.0
    for leaf, (w, pred) in zip(forest.leaves_row(x), weighted):
        m += pred[leaf] * w
    return m


def _margin_batch(forest: Forest, weighted: list[tuple[float, list[float]]], X: np.ndarray) -> np.ndarray:
    leaves = forest.leaves_batch(X)
    m = np.zeros(len(X))
    for t, (w, _) in enumerate(weighted):
        m += forest.prediction[leaves[:, t]] * w
    return m


class DecisionTreeRegressionModel(_TreeMixin, RegressionModel):
    """prediction = the leaf's prediction."""

    spark_class = "org.apache.spark.ml.regression.DecisionTreeRegressionModel"
    known_params = _PREDICTOR_PARAMS | _TREE_PARAMS | {"varianceCol"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.forest, self.weights = self._load_trees()
        self.num_features = meta.extra.get("numFeatures")
        self._pred = self.forest.prediction.tolist()

    def predict_row(self, x: list[float]) -> float:
        return self._pred[self.forest.leaves_row(x)[0]]

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return self.forest.prediction[self.forest.leaves_batch(X)[:, 0]]


class RandomForestRegressionModel(DecisionTreeRegressionModel):
    """prediction = mean of the trees' predictions (summed in tree order)."""

    spark_class = "org.apache.spark.ml.regression.RandomForestRegressionModel"
    known_params = _PREDICTOR_PARAMS | _TREE_PARAMS | _ENSEMBLE_PARAMS
    ensemble = True

    def predict_row(self, x: list[float]) -> float:
        s = 0.0
        pred = self._pred
        for leaf in self.forest.leaves_row(x):
            s += pred[leaf]
        return s / self.forest.num_trees

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        leaves = self.forest.leaves_batch(X)
        s = np.zeros(len(X))
        for t in range(leaves.shape[1]):
            s += self.forest.prediction[leaves[:, t]]
        return s / self.forest.num_trees


class GBTRegressionModel(DecisionTreeRegressionModel):
    """prediction = sum of weight x tree prediction."""

    spark_class = "org.apache.spark.ml.regression.GBTRegressionModel"
    known_params = _PREDICTOR_PARAMS | _TREE_PARAMS | _ENSEMBLE_PARAMS
    ensemble = True

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self._weighted = _tree_values(self.forest, self.weights)

    def predict_row(self, x: list[float]) -> float:
        return _margin_row(self.forest, self._weighted, x)

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return _margin_batch(self.forest, self._weighted, X)


STAGES: dict[str, type[Stage]] = {
    cls.spark_class: cls
    for cls in (
        ImputerModel, StringIndexerModel, OneHotEncoderModel, Bucketizer, VectorAssembler, StandardScalerModel,
        MinMaxScalerModel, LogisticRegressionModel, LinearRegressionModel, DecisionTreeClassificationModel,
        RandomForestClassificationModel, GBTClassificationModel, DecisionTreeRegressionModel,
        RandomForestRegressionModel, GBTRegressionModel,
    )
}


def build_stage(meta: StageMetadata) -> Stage:
    """The scorer class for a saved stage; :class:`UnsupportedModelError` naming the class if there is none."""
    cls = STAGES.get(meta.class_name)
    if cls is None:
        supported = ", ".join(sorted(c.rsplit(".", 1)[-1] for c in STAGES))
        raise UnsupportedModelError(
            f"stage {meta.uid} is a {meta.class_name}, which the JVM-free scorer does not support "
            f"(supported: PipelineModel, {supported})"
        )
    return cls(meta)
