"""Hashing stages: HashingTF (token lists) and FeatureHasher (columns), with Spark's MurmurHash3.

Both use Spark's ``murmur3Hash``: MurmurHash3 x86 32-bit, seed 42, over a string's UTF-8 bytes (Spark's
``hashUnsafeBytes2``, the standard algorithm), and index ``nonNegativeMod(hash, numFeatures)``.

    >>> murmur3_32("hello".encode())
    -488910111
    >>> non_negative_mod(-7, 5)
    3

Outputs are dense vectors here (Spark's are sparse): keep ``numFeatures`` modest for batch scoring, since a batch
holds ``rows x numFeatures`` doubles.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sparkship.serving.base import Schema, Stage, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.javastr import CASTABLE, spark_string
from sparkship.serving.numeric import EMPTY
from sparkship.serving.reader import StageMetadata
from sparkship.serving.signature import ANY, FLOATING, INTEGRAL
from sparkship.serving.text import MapStage

SEED = 42
_M32 = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _mix_k1(k: int) -> int:
    k = (k * 0xCC9E2D51) & _M32
    k = _rotl(k, 15)
    return (k * 0x1B873593) & _M32


def murmur3_32(data: bytes, seed: int = SEED) -> int:
    """MurmurHash3 x86 32-bit of ``data`` as a signed 32-bit int (Java's ``int``)."""
    h = seed & _M32
    n = len(data)
    body = n - n % 4
    for i in range(0, body, 4):
        h ^= _mix_k1(int.from_bytes(data[i:i + 4], "little"))
        h = _rotl(h, 13)
        h = (h * 5 + 0xE6546B64) & _M32
    tail = data[body:]
    if tail:
        h ^= _mix_k1(int.from_bytes(tail, "little"))
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h - (1 << 32) if h & 0x80000000 else h


def non_negative_mod(x: int, mod: int) -> int:
    """Spark's ``Utils.nonNegativeMod`` (Python's ``%`` already takes the divisor's sign)."""
    return x % mod


def term_index(term: str | None, num_features: int) -> int:
    """The vector index Spark gives a term (a null term hashes to the seed itself)."""
    h = SEED if term is None else murmur3_32(term.encode("utf-8"))
    return non_negative_mod(h, num_features)


@register_stage
class HashingTF(MapStage):
    """Term frequencies of a token list at hashed indices (``binary``: 1 for any term present)."""

    spark_class = "org.apache.spark.ml.feature.HashingTF"
    known_params = frozenset({"inputCol", "outputCol", "numFeatures", "binary"})
    out_type = "vector"

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.num_features = int(self.p("numFeatures", 1 << 18))
        self.binary = bool(self.p("binary", False))
        self._cache: dict[str | None, int] = {}

    def out_size(self) -> int:
        return self.num_features

    def _index(self, term: str | None) -> int:
        i = self._cache.get(term)
        if i is None:
            i = term_index(term, self.num_features)
            if len(self._cache) < 100_000:
                self._cache[term] = i
        return i

    def fn(self, terms: list[str | None]) -> np.ndarray:
        out = np.zeros(self.num_features, dtype=np.float64)
        for t in terms:
            i = self._index(t)
            out[i] = 1.0 if self.binary else out[i] + 1.0
        return out


def _category_string(value: Any, spark_type: str) -> str:
    """``Row.get(i).toString`` for a categorical FeatureHasher input (never null: a null adds nothing).

    That is Spark's cast to string (:func:`~sparkship.serving.javastr.spark_string`) for the types it casts; any
    other type the stage takes (a decimal) is Python's ``str``, where ``spark_string`` would refuse it.
    """
    text = spark_string(value, spark_type) if spark_type in CASTABLE else None
    return str(value) if text is None else text


@register_stage
class FeatureHasher(Stage):
    """Hashes columns into one vector: a numeric column (not in ``categoricalCols``) adds its value at the
    index of hash(name); a string, boolean or categorical column adds 1.0 at hash("name=value"); nulls add
    nothing; colliding entries add up."""

    spark_class = "org.apache.spark.ml.feature.FeatureHasher"
    known_params = frozenset({"inputCols", "outputCol", "numFeatures", "categoricalCols"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = list(self.p("inputCols")), [self.p("outputCol")]
        self.num_features = int(self.p("numFeatures", 1 << 18))
        self.categorical = set(self.p("categoricalCols") or [])

    def input_type(self, col: str) -> str:
        return ANY  # numeric, boolean or string, hashed differently: only the data can say

    def plan(self, schema: Schema) -> None:
        self.plan_cols: list[tuple[str, str, bool, int]] = []
        for c in self.input_cols:
            t, _ = self._need(schema, c, ("numeric", "boolean", "string"))
            real = (t in FLOATING or t in INTEGRAL) and c not in self.categorical
            self.plan_cols.append((c, t, real, term_index(c, self.num_features)))
        schema[self.output_cols[0]] = ("vector", self.num_features)

    def _add(self, out: np.ndarray, c: str, t: str, real: bool, name_index: int, v: Any) -> None:
        if real:
            out[name_index] += float(v)
        else:
            out[term_index(f"{c}={_category_string(v, t)}", self.num_features)] += 1.0

    def row(self, r: dict[str, Any]) -> bool:
        out = np.zeros(self.num_features, dtype=np.float64)
        for c, t, real, idx in self.plan_cols:
            v = r[c]
            if v is not None:
                self._add(out, c, t, real, idx, v)
        r[self.output_cols[0]] = out.tolist()
        return True

    def batch(self, b: Batch) -> np.ndarray:
        out = np.zeros((b.n, self.num_features), dtype=np.float64)
        rows = np.arange(b.n)
        for c, t, real, idx in self.plan_cols:
            x = b.cols[c]
            nm = b.null_mask(c)
            present = np.ones(b.n, dtype=bool) if nm is None else ~nm
            if real:
                out[rows[present], idx] += x[present].astype(np.float64)
                continue
            uniq, inv = np.unique(x[present], return_inverse=True)
            idxs = np.array([term_index(f"{c}={_category_string(u.item() if hasattr(u, 'item') else u, t)}",
                                        self.num_features) for u in uniq], dtype=np.int64)
            if len(uniq):
                np.add.at(out, (rows[present], idxs[inv.reshape(-1)]), 1.0)
        b.set(self.output_cols[0], out, "vector")
        return EMPTY
