"""Kernels that walk a flattened tree ensemble and sum its leaves' values, for a batch of rows.

One contract, two implementations, chosen in one place (:func:`kernel`):

- ``numba`` (the ``fast`` extra, ``pip install 'sparkship[fast]'``): compiled loops, built on first use
  (``cache=True`` keeps the machine code on disk; :class:`~sparkship.serving.trees.LeafSum` triggers it when a
  model loads) and run without the GIL (``nogil=True``), so the row blocks that :mod:`sparkship.serving.threads`
  hands to a thread pool run on all cores.
- ``numpy``: the fallback when numba is missing: the same walk level by level over a block of (rows x trees)
  positions, one gather per array per level.

Both walk one of two layouts (:class:`Walk`): trees without categorical splits padded to perfect binary trees
(a step is ``slot = 2*slot + 2 - (x <= threshold)``: no child pointers, no branches; the compiled kernel walks
32 rows side by side through one tree), else node pointers, every leaf its own child, for a fixed number of
steps per tree.

The environment variable ``SPARKSHIP_TREE_KERNEL`` overrides the choice: ``numpy`` forces the numpy kernel,
``numba`` requires numba (a one-line error when it is missing); unset or ``auto`` picks numba when it imports.
It is read when a model is loaded.

Both compute, for each row, ``sum over trees t (in tree order) of weights[t] * values[leaf_t]``, the first tree's
term starting the sum, in float64 with the same operations in the same order: their results are identical.

    >>> kernel().name in ("numba", "numpy")
    True
"""
from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from sparkship.errors import UsageError

ENV = "SPARKSHIP_TREE_KERNEL"


# The perfect layout pads every tree to a complete binary tree of its depth: above this many padded slots in all
# (deep trees), the node-pointer layout is used instead.
PERFECT_MAX_SLOTS = 1 << 21
_BLOCK = 32  # rows the compiled kernel walks side by side through one tree (independent steps overlap)


@dataclass(frozen=True)
class Walk:
    """A forest laid out for a fixed number of steps per tree.

    Node-pointer layout (always present): every leaf is its own left and right child; ``cat_left`` (nodes, width)
    bool with ``num_categories``/``left_is_set`` per node for categorical splits. Perfect layout (``perfect``:
    no categorical split and at most :data:`PERFECT_MAX_SLOTS` slots): each tree padded to a complete binary tree
    of its depth in heap order (children of slot i: 2i+1 left, 2i+2 right; a leaf above the bottom repeats
    itself on both sides), ``heap_feature``/``heap_threshold`` per internal slot from ``heap_start[t]``, and
    ``leaf_node`` the node behind each bottom slot from ``leaf_start[t]``; ``heap_used`` is ``heap_feature`` as a
    position in ``used_features`` (the features any split reads, which the compiled kernel copies per block).
    """

    roots: np.ndarray  # int32 (trees,)
    depth: np.ndarray  # int32 (trees,): steps that reach every leaf of the tree
    feature: np.ndarray  # int32 (nodes,): 0 at leaves
    threshold: np.ndarray  # float64 (nodes,)
    left: np.ndarray  # int32 (nodes,)
    right: np.ndarray  # int32 (nodes,)
    num_categories: np.ndarray  # int32 (nodes,): -1 continuous
    left_is_set: np.ndarray  # bool (nodes,)
    cat_left: np.ndarray  # bool (nodes, width)
    categorical: bool
    perfect: bool = False
    heap_feature: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    heap_threshold: np.ndarray = field(default_factory=lambda: np.zeros(0))
    heap_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    leaf_node: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    leaf_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    used_features: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    heap_used: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def node_values(self, values: np.ndarray) -> np.ndarray:
        """What the kernels read for per-node ``values`` (nodes x k): one row per bottom slot (perfect layout),
        else ``values`` itself."""
        v = values[self.leaf_node] if self.perfect else values
        return np.ascontiguousarray(v, dtype=np.float64)


def with_perfect_layout(walk: Walk) -> Walk:
    """``walk`` with its perfect layout added, where it applies (see :class:`Walk`)."""
    depth = walk.depth.astype(np.int64)
    if walk.categorical or int((2 << depth).sum()) > PERFECT_MAX_SLOTS:
        return walk
    feats, thrs, leaves = [], [], []
    for root, d in zip(walk.roots.tolist(), depth.tolist()):
        nodes = np.array([root], dtype=np.int64)
        for _ in range(d):  # one heap level at a time; a leaf's slot repeats it on both sides below
            feats.append(walk.feature[nodes])
            thrs.append(walk.threshold[nodes])
            nodes = np.stack([walk.left[nodes], walk.right[nodes]], axis=1).ravel().astype(np.int64)
        leaves.append(nodes)
    internal = (1 << depth) - 1
    heap_feature = np.concatenate(feats).astype(np.int32) if feats else np.zeros(0, np.int32)
    used, heap_used = np.unique(heap_feature, return_inverse=True)
    return replace(
        walk, perfect=True, heap_feature=heap_feature, used_features=used.astype(np.int64),
        heap_used=heap_used.astype(np.int32).reshape(-1),
        heap_threshold=np.concatenate(thrs).astype(np.float64) if thrs else np.zeros(0),
        heap_start=np.concatenate([[0], np.cumsum(internal)[:-1]]).astype(np.int64),
        leaf_node=np.concatenate(leaves),
        leaf_start=np.concatenate([[0], np.cumsum(internal + 1)[:-1]]).astype(np.int64))


class TreeKernel(Protocol):
    """What a kernel does: ``out[r] = sum_t weights[t] * values[leaf of row r in tree t]``."""

    name: str

    def sum_leaves(self, walk: Walk, X: np.ndarray, values: np.ndarray, weights: np.ndarray,
                   out: np.ndarray) -> None:
        """Fill ``out`` (rows x k) for the rows ``X`` (rows x features, float64, C order); ``values`` as given
        by :meth:`Walk.node_values`."""


class NumpyKernel:
    """Level-wise walk over blocks of rows, all trees at once."""

    name = "numpy"
    block = 2048  # rows per block: the (rows x trees) temporaries stay in the CPU cache

    def sum_leaves(self, walk: Walk, X: np.ndarray, values: np.ndarray, weights: np.ndarray,
                   out: np.ndarray) -> None:
        weighted = [values * w for w in weights.tolist()]  # the same products the compiled kernel forms
        for start in range(0, X.shape[0], self.block):
            xs = X[start:start + self.block]
            pos = _walk_perfect(walk, xs) if walk.perfect else _walk_nodes(walk, xs)
            acc = out[start:start + len(xs)]
            np.take(weighted[0], pos[:, 0], axis=0, out=acc)
            for t in range(1, pos.shape[1]):
                acc += weighted[t][pos[:, t]]


def _walk_perfect(walk: Walk, xs: np.ndarray) -> np.ndarray:
    """(rows x trees) bottom-slot indices (into ``leaf_node``) of the rows ``xs``."""
    m, width = xs.shape
    flat = xs.ravel()
    base = (np.arange(m, dtype=np.intp) * width)[:, None]
    slot = np.zeros((m, len(walk.roots)), dtype=np.intp)
    for level in range(int(walk.depth.max(initial=0))):
        live = walk.depth > level  # trees not yet at their bottom
        if live.all():
            at = walk.heap_start + slot
            slot = 2 * slot + 2 - (flat[base + walk.heap_feature[at]] <= walk.heap_threshold[at])
            continue
        s, h = slot[:, live], walk.heap_start[live]
        at = h + s
        slot[:, live] = 2 * s + 2 - (flat[base + walk.heap_feature[at]] <= walk.heap_threshold[at])
    leaf: np.ndarray = slot - ((1 << walk.depth.astype(np.intp)) - 1) + walk.leaf_start
    return leaf


def _walk_nodes(walk: Walk, xs: np.ndarray) -> np.ndarray:
    """(rows x trees) leaf nodes of the rows ``xs`` in the node-pointer layout."""
    m, width = xs.shape
    flat = xs.ravel()
    base = (np.arange(m, dtype=np.intp) * width)[:, None]
    pos = np.broadcast_to(walk.roots.astype(np.intp), (m, len(walk.roots))).copy()
    for _ in range(int(walk.depth.max(initial=0))):
        x = flat[base + walk.feature[pos]]
        go_left = x <= walk.threshold[pos]
        if walk.categorical:
            go_left = _categorical_numpy(walk, pos, x, go_left)
        pos = np.where(go_left, walk.left[pos], walk.right[pos])
    leaves: np.ndarray = pos
    return leaves


def _categorical_numpy(walk: Walk, pos: np.ndarray, x: np.ndarray, go_left: np.ndarray) -> np.ndarray:
    nc = walk.num_categories[pos]
    is_cat = nc >= 0
    if not is_cat.any():
        return go_left
    with np.errstate(invalid="ignore"):
        ok = is_cat & (x >= 0) & (x < nc) & (x == np.floor(np.nan_to_num(x)))
    ci = np.where(ok, x, 0).astype(np.intp)
    in_left = ok & walk.cat_left[pos, ci]
    cat_go = np.where(walk.left_is_set[pos], in_left, in_left | ~ok)
    return np.where(is_cat, cat_go, go_left)


class NumbaKernel:
    """The compiled walk (see the module docstring)."""

    name = "numba"

    def __init__(self) -> None:
        self._perfect, self._nodes = _compiled()

    def sum_leaves(self, walk: Walk, X: np.ndarray, values: np.ndarray, weights: np.ndarray,
                   out: np.ndarray) -> None:
        if walk.perfect:
            self._perfect(X, walk.depth, walk.heap_start, walk.leaf_start, walk.used_features, walk.heap_used,
                          walk.heap_threshold, values, weights, out)
        else:
            self._nodes(X, walk.roots, walk.depth, walk.feature, walk.threshold, walk.left, walk.right,
                        walk.num_categories, walk.left_is_set, walk.cat_left, values, weights, out)


_COMPILED: tuple[Callable[..., Any], Callable[..., Any]] | None = None
_COMPILE_LOCK = threading.Lock()


def _compiled() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The two numba kernels, built once per process (numba's own cache skips recompiling across runs)."""
    global _COMPILED
    with _COMPILE_LOCK:
        if _COMPILED is None:
            import numba  # optional dependency (the ``fast`` extra): imported only when the numba kernel is used

            jit = numba.njit(cache=True, nogil=True)
            _COMPILED = (jit(_perfect_py), jit(_nodes_py))
    return _COMPILED


# The two kernels below are plain Python that numba compiles (see _compiled); their arguments are numpy arrays.
def _perfect_py(X: np.ndarray, depth: np.ndarray, heap_start: np.ndarray, leaf_start: np.ndarray,
                used_features: np.ndarray, heap_used: np.ndarray, heap_threshold: np.ndarray, values: np.ndarray,
                weights: np.ndarray, out: np.ndarray) -> None:
    """Blocks of rows through one tree at a time, the block's used features copied feature-major; branch-free
    steps."""
    n, nf, k = X.shape[0], used_features.shape[0], values.shape[1]
    slot = np.zeros(_BLOCK, np.int64)
    xt = np.zeros((max(nf, 1), _BLOCK))
    for r0 in range(0, n, _BLOCK):
        nb = min(_BLOCK, n - r0)
        for b in range(nb):
            for c in range(nf):
                xt[c, b] = X[r0 + b, used_features[c]]
        for t in range(depth.shape[0]):
            h = heap_start[t]
            slot[:] = 0
            for _ in range(depth[t]):
                for b in range(_BLOCK):
                    i = slot[b]
                    slot[b] = 2 * i + 2 - (xt[heap_used[h + i], b] <= heap_threshold[h + i])
            lb = leaf_start[t] - (1 << depth[t]) + 1
            w = weights[t]
            for b in range(nb):
                i = lb + slot[b]
                if t == 0:  # the first tree's term starts the sum (0.0 + ... would turn -0.0 into 0.0)
                    for j in range(k):
                        out[r0 + b, j] = values[i, j] * w
                else:
                    for j in range(k):
                        out[r0 + b, j] += values[i, j] * w


def _nodes_py(X: np.ndarray, roots: np.ndarray, depth: np.ndarray, feature: np.ndarray, threshold: np.ndarray,
              left: np.ndarray, right: np.ndarray, num_categories: np.ndarray, left_is_set: np.ndarray,
              cat_left: np.ndarray, values: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:
    """Row by row through every tree in the node-pointer layout (categorical splits, deep trees)."""
    for r in range(X.shape[0]):
        for t in range(roots.shape[0]):
            i = roots[t]
            for _ in range(depth[t]):
                v = X[r, feature[i]]
                nc = num_categories[i]
                if nc < 0:
                    go = v <= threshold[i]
                else:
                    # Spark's CategoricalSplit: NaN and values outside 0..nc-1 are in no set.
                    ok = v >= 0.0 and v < nc and v == math.floor(v)
                    in_left = ok and cat_left[i, int(v)]
                    go = in_left if left_is_set[i] else (in_left or not ok)
                i = left[i] if go else right[i]
            w = weights[t]
            if t == 0:
                for j in range(values.shape[1]):
                    out[r, j] = values[i, j] * w
            else:
                for j in range(values.shape[1]):
                    out[r, j] += values[i, j] * w


def numba_available() -> bool:
    """True when numba imports (the ``fast`` extra is installed)."""
    try:
        import numba  # noqa: F401  optional dependency, probed only
    except ImportError:
        return False
    return True


def kernel() -> TreeKernel:
    """The kernel to use: ``SPARKSHIP_TREE_KERNEL`` (numpy, numba, auto), else numba when installed.

    Raises :class:`UsageError` for an unknown value, or ``numba`` asked for without numba installed.
    """
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "numba", "numpy"):
        raise UsageError(f"{ENV}={choice!r} is not one of auto, numba, numpy")
    if choice == "numpy" or (choice == "auto" and not numba_available()):
        return NumpyKernel()
    if not numba_available():
        raise UsageError(f"{ENV}=numba needs numba: pip install 'sparkship[fast]'")
    return NumbaKernel()
