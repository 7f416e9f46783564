"""Stages that pick, index, cross or name features: VectorSlicer, ChiSqSelectorModel,
UnivariateFeatureSelectorModel, VarianceThresholdSelectorModel, VectorIndexerModel, Interaction, IndexToString.

VectorSlicer ``names``, Interaction and IndexToString without ``labels`` depend on the input column's ML
attributes, which Spark reads at transform time; they are re-derived from the upstream stages
(:mod:`sparkship.serving.attributes`), and a model whose attributes cannot be derived is refused at load.

    >>> stage = catalog.build_stage(read_metadata("/tmp/m/stages/3_VectorSlicer_1f2e"))   # doctest: +SKIP
    >>> stage.plan({"f": ("vector", 3)}); r = {"f": [1.0, 2.0, 3.0]}; stage.row(r); r["s"]   # doctest: +SKIP
    [3.0, 1.0]
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sparkship.serving import reader
from sparkship.serving.attributes import (
    UNKNOWN_NAME,
    Attr,
    UnknownAttributes,
    active_entries,
    assembled_source,
    column_attrs,
)
from sparkship.serving.base import Schema, Stage, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.features import VectorMap
from sparkship.serving.javastr import java_double_str
from sparkship.serving.numeric import EMPTY
from sparkship.serving.reader import StageMetadata
from sparkship.serving.signature import InvalidRecordError


class _AttrAware:
    """Mixin: the stages before this one (set by the scorer before ``plan``), to derive ML attributes."""

    upstream: Sequence[Stage] = ()

    def attrs(self, schema: Schema, col: str) -> tuple[Attr, ...] | None:
        try:
            return column_attrs(self.upstream, schema, col)
        except UnknownAttributes as exc:
            raise self.refuse(f"reading ML attributes of its input ({exc})") from None  # type: ignore[attr-defined]


# --- slicing and selectors --------------------------------------------------------------------------------------

class _Slice(_AttrAware, VectorMap):
    """Base class: the output holds the input entries at ``self.picked`` (in that order)."""

    picked: list[int]

    def out_size(self, size: int | None) -> int | None:
        return len(self.picked)

    def plan(self, schema: Schema) -> None:
        _, size = self._need(schema, self.input_cols[0], ("vector",))
        if size is not None and self.picked and max(self.picked) >= size:
            raise self.refuse(f"feature index {max(self.picked)} on input '{self.input_cols[0]}' of size {size}")
        super().plan(schema)
        self._idx = np.asarray(self.picked, dtype=np.int64)

    def _check_size(self, n: int, row: int | None = None) -> None:
        if self.picked and max(self.picked) >= n:
            raise InvalidRecordError(self.input_cols[0], f"vector of size {n} has no feature {max(self.picked)}",
                                     row)

    def map_row(self, v: list[float]) -> list[float]:
        return [v[i] for i in self.picked]

    def map_batch(self, x: np.ndarray) -> np.ndarray:
        return x[:, self._idx]

    def attrs_from_input(self, inner: tuple[Attr, ...] | None) -> tuple[Attr, ...] | None:
        return None if inner is None else tuple(inner[i] for i in self.picked)


@register_stage
class VectorSlicer(_Slice):
    """The entries at ``indices``, then those named in ``names`` (resolved through the input's ML attributes,
    as Spark does: e.g. a VectorAssembler names each entry after its input column)."""

    spark_class = "org.apache.spark.ml.feature.VectorSlicer"
    known_params = frozenset({"inputCol", "outputCol", "indices", "names"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.indices = [int(i) for i in self.p("indices", [])]
        self.names = [str(n) for n in self.p("names", [])]
        self.picked = list(self.indices)

    def plan(self, schema: Schema) -> None:
        self.picked = self.indices + self._name_indices(schema)
        if len(set(self.picked)) != len(self.picked):
            raise self.refuse(f"duplicate features in indices {self.indices} and names {self.names}")
        super().plan(schema)

    def _name_indices(self, schema: Schema) -> list[int]:
        if not self.names:
            return []
        attrs = self.attrs(schema, self.input_cols[0])
        if attrs is None:
            raise self.refuse(f"names {self.names}: input '{self.input_cols[0]}' has no ML attributes to "
                              "resolve names against (Spark fails the same way)")
        if any(a.name == UNKNOWN_NAME for a in attrs):
            raise self.refuse(f"names {self.names}: the scorer cannot tell all attribute names of input "
                              f"'{self.input_cols[0]}'")
        where = {a.name: i for i, a in enumerate(attrs) if a.name}
        missing = [n for n in self.names if n not in where]
        if missing:
            raise self.refuse(f"names {missing}, which input '{self.input_cols[0]}' does not have")
        return [where[n] for n in self.names]


class _SelectorModel(_Slice):
    """A fitted selector: the ``selectedFeatures`` saved with it, in ascending order."""

    in_col_param = "featuresCol"
    # With no input attributes Spark marks the selected features as this kind (ChiSq: nominal, no values).
    default_kind = "numeric"

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.picked = sorted(int(i) for i in reader.read_data(meta.path)[0]["selectedFeatures"])

    def attrs_from_input(self, inner: tuple[Attr, ...] | None) -> tuple[Attr, ...] | None:
        if inner is None:
            return tuple(Attr(None, self.default_kind) for _ in self.picked)
        return super().attrs_from_input(inner)


_SELECTOR_PARAMS = frozenset({"featuresCol", "outputCol", "labelCol"})


@register_stage
class ChiSqSelectorModel(_SelectorModel):
    """Keeps the features the chi-squared test selected at fit time."""

    spark_class = "org.apache.spark.ml.feature.ChiSqSelectorModel"
    known_params = _SELECTOR_PARAMS | {"numTopFeatures", "percentile", "fpr", "fdr", "fwe", "selectorType"}
    default_kind = "nominal"


@register_stage
class UnivariateFeatureSelectorModel(_SelectorModel):
    """Keeps the features the univariate test (chi², ANOVA F or F-regression) selected at fit time."""

    spark_class = "org.apache.spark.ml.feature.UnivariateFeatureSelectorModel"
    known_params = _SELECTOR_PARAMS | {"featureType", "labelType", "selectionMode", "selectionThreshold"}


@register_stage
class VarianceThresholdSelectorModel(_SelectorModel):
    """Keeps the features whose variance exceeded ``varianceThreshold`` at fit time."""

    spark_class = "org.apache.spark.ml.feature.VarianceThresholdSelectorModel"
    known_params = frozenset({"featuresCol", "outputCol", "varianceThreshold"})


# --- VectorIndexer ----------------------------------------------------------------------------------------------

@register_stage
class VectorIndexerModel(VectorMap):
    """Categorical features -> category index (``categoryMaps``), continuous ones unchanged; an unseen value
    per ``handleInvalid``: error, skip (drop the row) or keep (index = number of categories)."""

    spark_class = "org.apache.spark.ml.feature.VectorIndexerModel"
    known_params = frozenset({"inputCol", "outputCol", "handleInvalid", "maxCategories"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        self.in_size = int(data["numFeatures"])
        maps = data["categoryMaps"]
        items = maps.items() if isinstance(maps, dict) else maps
        self.maps: dict[int, dict[float, float]] = {
            int(f): {float(v): float(i) for v, i in (m.items() if isinstance(m, dict) else m)} for f, m in items
        }
        self.handle = self.p("handleInvalid", "error")
        if self.handle not in ("error", "skip", "keep"):
            raise self.refuse(f"handleInvalid={self.handle!r}")

    def _lookup(self, x: float, f: int, m: dict[float, float], row: int | None = None) -> float | None:
        i = m.get(x) if x == x else None  # NaN is never a key Spark's Map[Double, Int] finds
        if i is not None:
            return i
        if self.handle == "keep":
            return float(len(m))
        if self.handle == "skip":
            return None
        raise InvalidRecordError(self.input_cols[0], f"VectorIndexer encountered invalid value {x!r} on feature "
                                 f"index {f} (handleInvalid='error')", row)

    def row(self, r: dict[str, Any]) -> bool:
        v = r[self.input_cols[0]]
        if v is None:
            raise InvalidRecordError(self.input_cols[0], "VectorIndexer got a null vector (Spark's transform fails)")
        self._check_size(len(v))
        out = list(v)
        for f, m in self.maps.items():
            i = self._lookup(v[f], f, m)
            if i is None:
                return False
            out[f] = i
        r[self.output_cols[0]] = out
        return True

    def batch(self, b: Batch) -> np.ndarray:
        c = self.input_cols[0]
        nm = b.null_mask(c)
        if nm is not None:
            b.fail(nm, c, "VectorIndexer got a null vector (Spark's transform fails)")
        x = b.cols[c]
        if b.n:
            self._check_size(x.shape[1], int(b.rows[0]))
        out = x.copy()
        bad_rows = np.zeros(b.n, dtype=bool)
        for f, m in self.maps.items():
            keys = np.asarray(list(m), dtype=np.float64)
            vals = np.asarray(list(m.values()), dtype=np.float64)
            order = np.argsort(keys)
            pos = np.clip(np.searchsorted(keys[order], x[:, f]), 0, max(len(keys) - 1, 0))
            found = (keys[order][pos] == x[:, f]) if len(keys) else np.zeros(b.n, dtype=bool)
            if self.handle == "error" and not found.all():
                i = int(np.flatnonzero(~found)[0])
                self._lookup(float(x[i, f]), f, m, int(b.rows[i]))
            out[:, f] = np.where(found, vals[order][pos] if len(keys) else 0.0, float(len(m)))
            bad_rows |= ~found
        dropped = EMPTY
        if self.handle == "skip":
            dropped = b.filter(~bad_rows)
            out = out[~bad_rows]
        b.set(self.output_cols[0], out, "vector")
        return dropped

    def attrs_from_input(self, inner: tuple[Attr, ...] | None) -> tuple[Attr, ...]:
        out = []
        for f in range(self.in_size or 0):
            base = inner[f] if inner is not None else Attr(None)
            if f in self.maps:
                by_index = sorted(self.maps[f], key=self.maps[f].__getitem__)
                base = Attr(base.name, "nominal", tuple(java_double_str(v) for v in by_index))
            out.append(base)
        return tuple(out)


# --- Interaction ------------------------------------------------------------------------------------------------

@register_stage
class Interaction(_AttrAware, Stage):
    """The products of one entry of each input (first input outermost); nominal inputs are one-hot encoded
    from their ML attributes, as Spark does. A nominal value must be a valid index (Spark asserts it).

    Spark walks a vector input's *active* entries: all of a dense vector, the stored ones of a sparse one. A
    nominal entry at 0 therefore gives a one-hot 1 in a dense vector and nothing in a sparse one. Vectors are
    dense here, so for a vector with nominal entries the scorer traces it back to the VectorAssembler that
    built it (through VectorIndexer, VectorSlicer, selectors) and applies the assembler's choice of sparse
    (``Vector.compressed``) to that row.
    """

    spark_class = "org.apache.spark.ml.feature.Interaction"
    known_params = frozenset({"inputCols", "outputCol"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = list(self.p("inputCols")), [self.p("outputCol")]

    def plan(self, schema: Schema) -> None:
        # (column, is_vector, output width per entry, assembled source: (column, position per entry) or None)
        self.encoders: list[tuple[str, bool, list[int], tuple[str, list[int]] | None]] = []
        size = 1
        for c in self.input_cols:
            t, _ = self._need(schema, c, ("numeric", "boolean", "vector"))
            attrs = self.attrs(schema, c)
            if attrs is None:
                raise self.refuse(f"input '{c}': a vector without ML attributes (Spark fails: 'Vector "
                                  "attributes must be defined for interaction')")
            widths = [self._width(c, a) for a in attrs]
            source = None
            if t == "vector" and any(w > 1 for w in widths):
                source = assembled_source(self.upstream, c)
                if source is None:
                    raise self.refuse(f"input '{c}': nominal vector entries from a vector whose sparse or dense "
                                      "layout the scorer cannot tell (it must come from a VectorAssembler)")
            self.encoders.append((c, t == "vector", widths, source))
            size *= sum(widths)
        self.size = size
        schema[self.output_cols[0]] = ("vector", size)

    def _width(self, c: str, a: Attr) -> int:
        if a.kind != "nominal":
            return 1
        if a.values is None:
            raise self.refuse(f"input '{c}': a nominal feature without values (Spark fails: 'Nominal features "
                              "must have attr numValues defined')")
        return max(1, len(a.values))

    @staticmethod
    def _index(c: str, x: float, width: int) -> int:
        if not (x >= 0.0 and x == int(x) and x < width):
            raise InvalidRecordError(c, f"Interaction: values from a nominal feature must be indices, but got {x!r}")
        return int(x)

    def _entries(self, enc: tuple[str, bool, list[int], Any], v: Any, r: dict[str, Any]) -> list[tuple[int, float]]:
        """The (index, value) pairs one input contributes, in Spark's FeatureEncoder order."""
        c, is_vec, widths, source = enc
        if v is None:
            raise InvalidRecordError(c, "Interaction cannot interact a null value")
        if not is_vec:
            x = float(v)
            return [(0, x)] if widths[0] == 1 else [(self._index(c, x, widths[0]), 1.0)]
        if len(v) != len(widths):
            raise InvalidRecordError(c, f"vector of size {len(v)}; Interaction expects {len(widths)}")
        active = active_entries(r[source[0]], source[1]) if source is not None else None
        out, offset = [], 0
        for k, (x, w) in enumerate(zip(v, widths)):
            if active is None or active[k]:
                out.append((offset, x) if w == 1 else (offset + self._index(c, x, w), 1.0))
            offset += w
        return out

    def interact(self, r: dict[str, Any]) -> list[float]:
        """One row: Spark's loop from the last input to the first."""
        indices, vals, prev_size = [0], [1.0], 1
        for enc in reversed(self.encoders):
            entries = self._entries(enc, r[enc[0]], r)
            indices = [p + i * prev_size for i, _ in entries for p in indices]
            vals = [pv * a for _, a in entries for pv in vals]
            prev_size *= sum(enc[2])
        out = [0.0] * self.size
        for i, a in zip(indices, vals):
            out[i] = a
        return out

    def row(self, r: dict[str, Any]) -> bool:
        r[self.output_cols[0]] = self.interact(r)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        names = list(dict.fromkeys([e[0] for e in self.encoders] + [e[3][0] for e in self.encoders if e[3]]))
        for c in names:
            nm = b.null_mask(c)
            if nm is not None:
                b.fail(nm, c, "Interaction cannot interact a null value")
        cols = [b.cols[c].tolist() for c in names]
        out = np.zeros((b.n, self.size), dtype=np.float64)
        for j, values in enumerate(zip(*cols)):
            try:
                out[j] = self.interact(dict(zip(names, values)))
            except InvalidRecordError as exc:
                raise InvalidRecordError(exc.field, exc.reason, int(b.rows[j])) from None
        b.set(self.output_cols[0], out, "vector")
        return EMPTY


def _java_int(x: float) -> int:
    """Scala's ``Double.toInt``: truncation, NaN -> 0, saturating at the int range."""
    if x != x:
        return 0
    if math.isinf(x):
        return 2**31 - 1 if x > 0 else -(2**31)
    return max(-(2**31), min(2**31 - 1, int(x)))


# --- IndexToString ----------------------------------------------------------------------------------------------

@register_stage
class IndexToString(_AttrAware, Stage):
    """Index -> label, from ``labels`` or, when unset, the input's nominal attribute values (e.g. a
    StringIndexer's labels). Spark truncates the index (NaN -> 0) and fails on one outside the labels."""

    spark_class = "org.apache.spark.ml.feature.IndexToString"
    known_params = frozenset({"inputCol", "outputCol", "labels"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = [self.p("inputCol")], [self.p("outputCol")]

    def plan(self, schema: Schema) -> None:
        c = self.input_cols[0]
        self.kind, _ = self._need(schema, c, ("numeric",))
        labels = list(self.p("labels") or [])
        if not labels:
            a = self.attrs(schema, c)
            if a is None or a[0].kind != "nominal" or not a[0].values:
                raise self.refuse(f"no labels param and no nominal attribute values on input '{c}' (Spark "
                                  "fails the same way)")
            labels = list(a[0].values)
        self.labels = labels
        self._labels_arr = np.asarray(labels + [None], dtype=object)
        schema[self.output_cols[0]] = ("string", None)

    def _label(self, x: float, row: int | None = None) -> str:
        i = _java_int(x)
        if 0 <= i < len(self.labels):
            label: str = self.labels[i]
            return label
        raise InvalidRecordError(self.input_cols[0], f"Unseen index: {java_double_str(x)}", row)

    def row(self, r: dict[str, Any]) -> bool:
        v = r[self.input_cols[0]]
        r[self.output_cols[0]] = None if v is None else self._label(float(v))
        return True

    def batch(self, b: Batch) -> np.ndarray:
        c = self.input_cols[0]
        x = b.cols[c].astype(np.float64)
        nm = b.null_mask(c)
        present = np.ones(b.n, dtype=bool) if nm is None else ~nm
        with np.errstate(invalid="ignore"):
            idx = np.trunc(np.nan_to_num(x, nan=0.0, posinf=2.0**31, neginf=-(2.0**31)))
        bad = present & ((idx < 0) | (idx >= len(self.labels)))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self._label(float(x[i]), int(b.rows[i]))
        pos = np.where(present & ~bad, idx, len(self.labels)).astype(np.int64)
        b.set(self.output_cols[0], self._labels_arr[pos], "string", nm)
        return EMPTY
