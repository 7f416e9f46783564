"""Numeric helpers that reproduce the JVM's arithmetic: sums in Scala's left-to-right order, ``argmax`` as
``DenseVector.argmax``, ``exp`` and the sigmoid without Python's overflow errors.

    >>> row_argmax([0.5, 2.0, 2.0])
    1
    >>> seq_sum(np.array([[1.0, 2.0, 3.0]])).tolist()
    [6.0]
"""
from __future__ import annotations

import math

import numpy as np

# The dropped-row positions of a stage that drops nothing.
EMPTY = np.empty(0, dtype=np.int64)


def spark_argmax(m: np.ndarray) -> np.ndarray:
    """Row-wise ``DenseVector.argmax``: the first index whose value beats every earlier one (NaN never does)."""
    arg = np.zeros(m.shape[0], dtype=np.int64)
    best = m[:, 0].copy()
    for i in range(1, m.shape[1]):
        upd = m[:, i] > best
        arg[upd] = i
        best[upd] = m[upd, i]
    return arg


def row_argmax(v: list[float]) -> int:
    """:func:`spark_argmax` of one row."""
    arg, best = 0, v[0]
    for i in range(1, len(v)):
        if v[i] > best:
            arg, best = i, v[i]
    return arg


def seq_sum(m: np.ndarray) -> np.ndarray:
    """Row sums added left to right, as Scala's ``Array.sum`` does (numpy's pairwise sum may differ)."""
    s: np.ndarray = m[:, 0].copy()
    for i in range(1, m.shape[1]):
        s += m[:, i]
    return s


def dot_row(x: list[float], coef: list[float]) -> float:
    """``x . coef`` summed in index order."""
    s = 0.0
    for a, c in zip(x, coef):
        s += a * c
    return s


def safe_exp(v: float) -> float:
    """``math.exp`` that overflows to +inf, as Java's ``Math.exp`` does."""
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def sigmoid(v: float) -> float:
    """``1 / (1 + exp(-v))``, 0 where ``exp(-v)`` overflows (Java gives 1/(1+inf) = 0)."""
    try:
        return 1.0 / (1.0 + math.exp(-v))
    except OverflowError:
        return 0.0
