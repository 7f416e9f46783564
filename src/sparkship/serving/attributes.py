"""Spark ML column attributes (the ``ml_attr`` metadata), re-derived from the stages that made a column.

A few Spark stages read their input column's ML attributes at ``transform()`` time rather than anything saved
with the stage: ``VectorSlicer`` resolves ``names`` through them, ``Interaction`` one-hot encodes nominal
inputs, ``IndexToString`` takes its labels from them when its ``labels`` param is unset. A saved model does not
hold them, but they are a function of the producing stage: StringIndexer marks its output nominal with its
labels, Bucketizer with one value per bucket, VectorAssembler concatenates and renames its inputs', and so on.
:func:`column_attrs` replays that for the stages it knows and says so (:class:`UnknownAttributes`) otherwise,
so a stage needing them can refuse the model at load instead of guessing.

    >>> column_attrs([], {"x": ("double", None)}, "x")   # a pipeline input carries no metadata
    (Attr(name=None, kind='numeric', values=None),)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from sparkship.serving.base import Schema, Stage
from sparkship.serving.javastr import java_double_str
from sparkship.serving.stages import Bucketizer, OneHotEncoderModel, StringIndexerModel, VectorAssembler

UNKNOWN_NAME = "\x00?"  # the attribute may carry a name, which the scorer cannot tell


@dataclass(frozen=True)
class Attr:
    """One feature's attribute: its name, kind (numeric, nominal, binary) and, if nominal, its values
    (None when Spark records a nominal feature without values)."""

    name: str | None
    kind: str = "numeric"
    values: tuple[str, ...] | None = None


class UnknownAttributes(Exception):
    """The column comes from a stage whose output attributes the scorer does not derive."""


def column_attrs(upstream: Sequence[Stage], schema: Schema, col: str) -> tuple[Attr, ...] | None:
    """The ML attributes Spark would attach to ``col`` after the ``upstream`` stages ran: one per vector
    entry (one for a scalar), None for a vector without attributes."""
    for i in range(len(upstream) - 1, -1, -1):
        st = upstream[i]
        if col in st.produced_cols():
            return _produced(st, upstream[:i], schema, col)
    t, _ = schema.get(col, ("double", None))
    return None if t == "vector" else (Attr(None),)


def _produced(st: Stage, before: Sequence[Stage], schema: Schema, col: str) -> tuple[Attr, ...] | None:
    kind = st.meta.short_class
    j = st.output_cols.index(col) if col in st.output_cols else -1
    if isinstance(st, StringIndexerModel):
        labels = list(st.labels[j]) + (["__unknown"] if st.handle == "keep" else [])
        return (Attr(col, "nominal", tuple(labels)),)
    if isinstance(st, Bucketizer):
        s = st.splits[j]
        return (Attr(None, "nominal", tuple(f"{java_double_str(a)}, {java_double_str(b)}" for a, b in zip(s, s[1:]))),)
    if kind == "ImputerModel":
        return (Attr(None),)
    if kind == "Binarizer" and schema[col][0] != "vector":
        return (Attr(col, "binary"),)
    if isinstance(st, VectorAssembler):
        return _assembled(st, before, schema)
    if isinstance(st, OneHotEncoderModel):
        return tuple(Attr(UNKNOWN_NAME, "binary") for _ in range(st.sizes[j]))
    if kind == "Interaction":
        return tuple(Attr(UNKNOWN_NAME) for _ in range(schema[col][1] or 0))
    subset = getattr(st, "attrs_from_input", None)
    if subset is not None:  # VectorSlicer, the selectors, VectorIndexer
        attrs: tuple[Attr, ...] = subset(column_attrs(before, schema, st.input_cols[0]))
        return attrs
    raise UnknownAttributes(f"column '{col}' comes from {kind} {st.uid}, whose ML attributes the scorer "
                            "does not derive")


def _assembled(st: Stage, before: Sequence[Stage], schema: Schema) -> tuple[Attr, ...]:
    """VectorAssembler's output attributes: scalar inputs named after their column (nominal ones stay
    nominal), vector inputs' attributes named ``<col>_<name>`` or ``<col>_<i>``."""
    out: list[Attr] = []
    for c in st.input_cols:
        t, size = schema[c]
        if t != "vector":
            scalar = column_attrs(before, schema, c) if t == "double" else None
            a = scalar[0] if scalar is not None else Attr(None)
            out.append(replace(a, name=c))
            continue
        inner = column_attrs(before, schema, c)
        if inner is None:
            out.extend(Attr(f"{c}_{i}") for i in range(size or 0))
            continue
        for i, a in enumerate(inner):
            name = UNKNOWN_NAME if a.name == UNKNOWN_NAME else (f"{c}_{a.name}" if a.name else f"{c}_{i}")
            out.append(replace(a, name=name))
    return tuple(out)


def assembled_source(upstream: Sequence[Stage], col: str) -> tuple[str, list[int]] | None:
    """The VectorAssembler output that vector ``col``'s entries come from (through VectorIndexer, VectorSlicer
    or a selector), and each entry's position in it; None if ``col`` does not come from one.

    Spark's stages walk a vector's *active* entries, which depend on whether it is stored sparse; the
    assembler decides that (``Vector.compressed``) and these stages keep it.
    """
    for i in range(len(upstream) - 1, -1, -1):
        st = upstream[i]
        if col not in st.output_cols:
            continue
        kind = st.meta.short_class
        if isinstance(st, VectorAssembler):
            if st.size is None:
                raise st.refuse(f"reading the entries of '{col}', a vector assembled from inputs of unknown size,")
            return col, list(range(st.size))
        picked = getattr(st, "picked", None)
        if kind != "VectorIndexerModel" and picked is None:
            return None
        inner = assembled_source(upstream[:i], st.input_cols[0])
        if inner is None or kind == "VectorIndexerModel" or picked is None:
            return inner
        return inner[0], [inner[1][k] for k in picked]
    return None


def active_entries(assembled: Sequence[float], positions: Sequence[int]) -> list[bool] | None:
    """Which entries Spark's ``foreachActive`` visits: all (None) if the assembled vector is dense, else the
    non-zero ones (``Vector.compressed`` stores it sparse when 1.5 * (nnz + 1) < size; NaN counts as non-zero).
    """
    nnz = sum(1 for x in assembled if x != 0.0)
    if not 1.5 * (nnz + 1.0) < len(assembled):
        return None
    return [assembled[p] != 0.0 for p in positions]


def inactive_mask(assembled: np.ndarray, positions: Sequence[int]) -> np.ndarray:
    """Batch form of :func:`active_entries`: True where an entry is not stored (a zero in a sparse row)."""
    nnz = (assembled != 0.0).sum(axis=1)
    sparse = 1.5 * (nnz + 1.0) < assembled.shape[1]
    mask: np.ndarray = sparse[:, None] & (assembled[:, list(positions)] == 0.0)
    return mask
