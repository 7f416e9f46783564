"""Vector and threshold feature stages: Binarizer, MaxAbsScaler, RobustScaler, Normalizer, PCA,
PolynomialExpansion, ElementwiseProduct and DCT, each reproducing its Spark counterpart's ``transform()``.

Spark fails the job on a null vector in all of these (its UDFs dereference it); so do they, with an
:class:`InvalidRecordError` naming the column. Vectors are dense here: Spark's sparse outputs equal them after
``vector_to_array``.

    >>> stage = catalog.build_stage(read_metadata("/tmp/model/stages/2_Normalizer_5a1e"))   # doctest: +SKIP
    >>> stage.plan({"f": ("vector", 2)}); r = {"f": [3.0, 4.0]}; stage.row(r); r["f_n"]       # doctest: +SKIP
    [0.6, 0.8]
"""
from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import numpy as np

from sparkship.serving import reader
from sparkship.serving.attributes import active_entries, assembled_source, inactive_mask
from sparkship.serving.base import Schema, Stage, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.numeric import EMPTY
from sparkship.serving.reader import StageMetadata, to_double
from sparkship.serving.signature import InvalidRecordError


def _null_vector(stage: Stage, col: str) -> InvalidRecordError:
    return InvalidRecordError(col, f"{stage.meta.short_class} got a null vector (Spark's transform fails on it)")


class VectorMap(Stage):
    """Base class: one vector column in, one vector column out; a null vector fails as in Spark.

    Subclasses set ``in_size`` (None: any size) and implement ``out_size``, ``map_row`` and ``map_batch``.
    """

    in_col_param: ClassVar[str] = "inputCol"

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = [self.p(self.in_col_param)], [self.p("outputCol")]
        self.in_size: int | None = None

    def input_type(self, col: str) -> str:
        return "vector"

    def out_size(self, size: int | None) -> int | None:
        return size

    def plan(self, schema: Schema) -> None:
        _, size = self._need(schema, self.input_cols[0], ("vector",))
        if size is not None and self.in_size is not None and size != self.in_size:
            raise self.refuse(f"input '{self.input_cols[0]}' of size {size} (the stage expects {self.in_size})")
        schema[self.output_cols[0]] = ("vector", self.out_size(size if size is not None else self.in_size))

    def _check_size(self, n: int, row: int | None = None) -> None:
        if self.in_size is not None and n != self.in_size:
            raise InvalidRecordError(self.input_cols[0], f"vector of size {n}; {self.meta.short_class} "
                                     f"expects size {self.in_size}", row)

    def map_row(self, v: list[float]) -> list[float]:
        raise NotImplementedError

    def map_batch(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def row(self, r: dict[str, Any]) -> bool:
        v = r[self.input_cols[0]]
        if v is None:
            raise _null_vector(self, self.input_cols[0])
        self._check_size(len(v))
        r[self.output_cols[0]] = self.map_row(v)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        c = self.input_cols[0]
        nm = b.null_mask(c)
        if nm is not None:
            b.fail(nm, c, f"{self.meta.short_class} got a null vector (Spark's transform fails on it)")
        x = b.cols[c]
        if b.n:
            self._check_size(x.shape[1], int(b.rows[0]))
        b.set(self.output_cols[0], self.map_batch(x), "vector")
        return EMPTY


# --- Binarizer -------------------------------------------------------------------------------------------------

@register_stage
class Binarizer(Stage):
    """1.0 above ``threshold`` else 0.0, per column (``inputCols``/``thresholds`` too), double or vector input.

    Doubles: null and NaN give 0.0 (Spark guards with ``!isnan``). Vectors: with a threshold >= 0 an entry is
    1.0 when ``> threshold`` (NaN: 0.0); with a negative one Spark starts from all ones and zeroes the entries
    ``<= threshold`` (NaN: 1.0). A null vector fails.
    """

    spark_class = "org.apache.spark.ml.feature.Binarizer"
    known_params = frozenset({"inputCol", "outputCol", "inputCols", "outputCols", "threshold", "thresholds"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = self._in_out()
        if self.meta.is_set("inputCols") and self.meta.is_set("thresholds"):
            self.thresholds = [to_double(t) for t in self.p("thresholds")]
        elif self.meta.is_set("inputCols"):  # Spark applies the single threshold to every column
            self.thresholds = [to_double(self.p("threshold", 0.0))] * len(self.input_cols)
        else:
            self.thresholds = [to_double(self.p("threshold", 0.0))]
        if len(self.thresholds) != len(self.input_cols):
            raise self.refuse(f"{len(self.thresholds)} thresholds for {len(self.input_cols)} input columns")

    def plan(self, schema: Schema) -> None:
        self.kinds = []
        for c, o in zip(self.input_cols, self.output_cols):
            t, size = self._need(schema, c, ("double", "vector"))
            self.kinds.append(t)
            schema[o] = (t, size) if t == "vector" else ("double", None)

    def row(self, r: dict[str, Any]) -> bool:
        for c, o, td, t in zip(self.input_cols, self.output_cols, self.thresholds, self.kinds):
            v = r[c]
            if t != "vector":
                r[o] = 1.0 if v is not None and v == v and v > td else 0.0
            elif v is None:
                raise _null_vector(self, c)
            elif td >= 0:
                r[o] = [1.0 if x > td else 0.0 for x in v]
            else:
                r[o] = [0.0 if x <= td else 1.0 for x in v]
        return True

    def batch(self, b: Batch) -> np.ndarray:
        for c, o, td, t in zip(self.input_cols, self.output_cols, self.thresholds, self.kinds):
            x = b.cols[c]
            nm = b.null_mask(c)
            if t != "vector":
                hit = x > td  # NaN compares False; a null's slot holds NaN
                if nm is not None:
                    hit &= ~nm
                b.set(o, hit.astype(np.float64), "double")
                continue
            if nm is not None:
                b.fail(nm, c, "Binarizer got a null vector (Spark's transform fails on it)")
            out = (x > td) if td >= 0 else ~(x <= td)
            b.set(o, out.astype(np.float64), "vector")
        return EMPTY


# --- scalers ---------------------------------------------------------------------------------------------------

@register_stage
class MaxAbsScalerModel(VectorMap):
    """x / max|x| per feature (features whose max is 0 are left as they are)."""

    spark_class = "org.apache.spark.ml.feature.MaxAbsScalerModel"
    known_params = frozenset({"inputCol", "outputCol"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        max_abs = reader.vector(reader.read_data(meta.path)[0]["maxAbs"])
        self.scale = np.where(max_abs == 0, 1.0, 1.0 / np.where(max_abs == 0, 1.0, max_abs))
        self._scale_l = self.scale.tolist()
        self.in_size = len(self.scale)

    def map_row(self, v: list[float]) -> list[float]:
        return [x * s for x, s in zip(v, self._scale_l)]

    def map_batch(self, x: np.ndarray) -> np.ndarray:
        return x * self.scale


@register_stage
class RobustScalerModel(VectorMap):
    """(x - median) * (1/range) per ``withCentering``/``withScaling``; 0 where the quantile range is 0."""

    spark_class = "org.apache.spark.ml.feature.RobustScalerModel"
    known_params = frozenset({"inputCol", "outputCol", "withCentering", "withScaling", "lower", "upper",
                              "relativeError"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        rng, median = reader.vector(data["range"]), reader.vector(data["median"])
        self.center, self.scale_on = bool(self.p("withCentering", False)), bool(self.p("withScaling", True))
        self.median = median
        self.scale = np.where(rng == 0, 0.0, 1.0 / np.where(rng == 0, 1.0, rng))
        self._median_l, self._scale_l = median.tolist(), self.scale.tolist()
        self.in_size = len(self.scale)

    def map_row(self, v: list[float]) -> list[float]:
        if self.center and self.scale_on:
            return [(x - m) * s for x, m, s in zip(v, self._median_l, self._scale_l)]
        if self.center:
            return [x - m for x, m in zip(v, self._median_l)]
        if self.scale_on:
            return [x * s for x, s in zip(v, self._scale_l)]
        return list(v)

    def map_batch(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = x - self.median if self.center else x.copy()
        return out * self.scale if self.scale_on else out


@register_stage
class Normalizer(VectorMap):
    """x / ||x||_p (p >= 1, ``inf`` included); a zero norm leaves the vector as it is.

    As in Spark, the inf-norm skips NaN entries (``abs(v) > max`` is false for NaN); other norms turn NaN.
    """

    spark_class = "org.apache.spark.ml.feature.Normalizer"
    known_params = frozenset({"inputCol", "outputCol", "p"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.norm_p = to_double(self.p("p", 2.0))

    def _norm_row(self, v: list[float]) -> float:
        p = self.norm_p
        if p == 1:
            return sum(abs(x) for x in v)
        if p == 2:
            return math.sqrt(sum(x * x for x in v))
        if math.isinf(p):
            top = 0.0
            for x in v:
                if abs(x) > top:
                    top = abs(x)
            return top
        norm: float = sum(abs(x) ** p for x in v) ** (1.0 / p)
        return norm

    def map_row(self, v: list[float]) -> list[float]:
        norm = self._norm_row(v)
        return [x / norm for x in v] if norm != 0 else list(v)

    def map_batch(self, x: np.ndarray) -> np.ndarray:
        p, a = self.norm_p, np.abs(x)
        if p == 1:
            norm = a.sum(axis=1)
        elif p == 2:
            norm = np.sqrt((x * x).sum(axis=1))
        elif math.isinf(p):
            norm = np.fmax.reduce(a, axis=1, initial=0.0)  # fmax skips NaN, as Spark's max loop does
        else:
            norm = (a ** p).sum(axis=1) ** (1.0 / p)
        safe = np.where(norm != 0, norm, 1.0)[:, None]
        return np.where((norm != 0)[:, None], x / safe, x)


@register_stage
class PCAModel(VectorMap):
    """Projects onto the fitted principal components: ``pc^T x`` (k outputs)."""

    spark_class = "org.apache.spark.ml.feature.PCAModel"
    known_params = frozenset({"inputCol", "outputCol", "k"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.pc = reader.matrix(reader.read_data(meta.path)[0]["pc"])
        self.in_size = self.pc.shape[0]
        self._cols = self.pc.T.tolist()

    def out_size(self, size: int | None) -> int | None:
        return int(self.pc.shape[1])

    def map_row(self, v: list[float]) -> list[float]:
        return [sum(a * x for a, x in zip(col, v)) for col in self._cols]

    def map_batch(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = x @ self.pc
        return out


@register_stage
class ElementwiseProduct(VectorMap):
    """x * scalingVec, entry by entry (the vector sizes must agree)."""

    spark_class = "org.apache.spark.ml.feature.ElementwiseProduct"
    known_params = frozenset({"inputCol", "outputCol", "scalingVec"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        vec = self.p("scalingVec")
        if isinstance(vec, str):  # the param is saved as the vector's JSON text
            vec = json.loads(vec)
        if not isinstance(vec, dict):
            raise self.refuse("a scalingVec that is not a saved vector")
        self.scaling = _param_vector(vec)
        self._scaling_l = self.scaling.tolist()
        self.in_size = len(self.scaling)

    def map_row(self, v: list[float]) -> list[float]:
        return [x * s for x, s in zip(v, self._scaling_l)]

    def map_batch(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = x * self.scaling
        return out


def _param_vector(vec: dict[str, Any]) -> np.ndarray:
    """A vector param (``{"type": 1, "values": [...]}``, or sparse with size/indices) as a dense array."""
    values = np.asarray([to_double(v) for v in vec.get("values") or []], dtype=np.float64)
    if int(vec.get("type", 1)) == 1:
        return values
    out = np.zeros(int(vec["size"]), dtype=np.float64)
    out[np.asarray(vec.get("indices") or [], dtype=np.int64)] = values
    return out


@register_stage
class DCT(VectorMap):
    """Orthonormal (scaled) DCT-II of the vector, or its inverse (DCT-III) with ``inverse=True``, as Spark's
    JTransforms ``DoubleDCT_1D.forward/inverse(x, scale=true)``."""

    spark_class = "org.apache.spark.ml.feature.DCT"
    known_params = frozenset({"inputCol", "outputCol", "inverse"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.inverse = bool(self.p("inverse", False))
        self._bases: dict[int, np.ndarray] = {}

    def basis(self, n: int) -> np.ndarray:
        """(n, n) matrix M with out = M @ x: DCT-II rows for forward, its transpose for the inverse."""
        if n not in self._bases:
            k = np.arange(n)[:, None]
            j = np.arange(n)[None, :]
            # cos(pi (2j+1) k / 2n), the angle reduced mod 2pi first so large n keeps full precision.
            m = ((2 * j + 1) * k) % (4 * n)
            scale = np.where(k == 0, math.sqrt(1.0 / n), math.sqrt(2.0 / n))
            fwd = scale * np.cos(np.pi * m / (2 * n))
            self._bases[n] = fwd.T.copy() if self.inverse else fwd
        return self._bases[n]

    def map_row(self, v: list[float]) -> list[float]:
        return (self.basis(len(v)) @ np.asarray(v, dtype=np.float64)).tolist() if v else []

    def map_batch(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = x @ self.basis(x.shape[1]).T if x.shape[1] else x.copy()
        return out


@register_stage
class PolynomialExpansion(VectorMap):
    """All monomials of degree 1..``degree`` in Spark's order (``expandDense``'s recursion: for x = (a, b),
    degree 2: a, a², b, ab, b²).

    Spark stops a branch when its running product is exactly 0, so a term combining 0 with NaN or ±inf may
    be 0 rather than NaN; this follows it. For a sparse input Spark's ``expandSparse`` skips the zero entries
    altogether: when the input comes from a VectorAssembler (the scorer holds vectors dense), the assembler's
    sparse-or-dense choice for the row is replayed; any other input is taken as dense.
    """

    spark_class = "org.apache.spark.ml.feature.PolynomialExpansion"
    known_params = frozenset({"inputCol", "outputCol", "degree"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.degree = int(self.p("degree", 2))
        if self.degree < 1:
            raise self.refuse(f"degree={self.degree}")

    def plan(self, schema: Schema) -> None:
        super().plan(schema)
        self.source = assembled_source(self.upstream, self.input_cols[0])

    def out_size(self, size: int | None) -> int | None:
        return None if size is None else math.comb(size + self.degree, self.degree) - 1

    def row(self, r: dict[str, Any]) -> bool:
        v = r[self.input_cols[0]]
        if v is None:
            raise _null_vector(self, self.input_cols[0])
        active = active_entries(r[self.source[0]], self.source[1]) if self.source else None
        out = [0.0] * (math.comb(len(v) + self.degree, self.degree) - 1)
        _expand_row(v, active, len(v) - 1, self.degree, 1.0, out, -1)
        r[self.output_cols[0]] = out
        return True

    def map_batch(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # batch() below needs the row's assembled vector too

    def batch(self, b: Batch) -> np.ndarray:
        c = self.input_cols[0]
        nm = b.null_mask(c)
        if nm is not None:
            b.fail(nm, c, "PolynomialExpansion got a null vector (Spark's transform fails on it)")
        x = b.cols[c]
        n, d = x.shape
        inactive = inactive_mask(b.cols[self.source[0]], self.source[1]) if self.source else np.zeros((n, d), bool)
        out = np.zeros((n, math.comb(d + self.degree, self.degree) - 1), dtype=np.float64)
        _expand_batch(x, inactive, d - 1, self.degree, np.ones(n), out, -1)
        b.set(self.output_cols[0], out, "vector")
        return EMPTY


def _expand_row(values: list[float], active: list[bool] | None, last: int, degree: int, mult: float,
                out: list[float], cur: int) -> int:
    """Spark's ``expandDense`` (``expandSparse`` where ``active`` marks the stored entries): fills ``out`` from
    ``cur``; returns the next position."""
    if mult == 0.0:
        pass
    elif degree == 0 or last < 0:
        if cur >= 0:  # position -1 is the constant term 1, which Spark leaves out
            out[cur] = mult
    else:
        v, alpha, start, i = values[last], mult, cur, 0
        top = degree if active is None or active[last] else 0  # an unstored entry only takes power 0
        while i <= top and alpha != 0.0:
            start = _expand_row(values, active, last - 1, degree - i, alpha, out, start)
            i += 1
            alpha *= v
    return cur + math.comb(last + 1 + degree, degree)


def _expand_batch(x: np.ndarray, inactive: np.ndarray, last: int, degree: int, mult: np.ndarray,
                  out: np.ndarray, cur: int) -> int:
    """:func:`_expand_row` over all rows at once; a row whose multiplier is 0 keeps zeros, as Spark stops."""
    if degree == 0 or last < 0:
        if cur >= 0:
            out[:, cur] = mult
    else:
        v, alpha, start = x[:, last], mult, cur
        for i in range(degree + 1):
            start = _expand_batch(x, inactive, last - 1, degree - i, alpha, out, start)
            alpha = np.where((alpha == 0.0) | inactive[:, last], 0.0, alpha * v)
    return cur + math.comb(last + 1 + degree, degree)
