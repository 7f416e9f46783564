"""Decision trees flattened into one set of arrays: the leaves' values summed per row (Python lists) or per batch
(a kernel of :mod:`sparkship.serving.tree_kernels`, large batches split over the cores by
:mod:`sparkship.serving.threads`).

All trees of an ensemble share one node numbering (tree t's nodes follow tree t-1's).

    >>> forest = Forest([read_tree(path)])                                  # doctest: +SKIP
    >>> forest.leaves_row([0.3, 1.0])                                        # doctest: +SKIP
    [4]
    >>> forest.sum_leaves(X, forest.prediction[:, None], np.ones(1))         # doctest: +SKIP
    array([[1.], [0.]])
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sparkship.serving import threads
from sparkship.serving.reader import Tree
from sparkship.serving.signature import InvalidRecordError
from sparkship.serving.tree_kernels import TreeKernel, Walk, kernel, with_perfect_layout

# A 1-row request walks the trees in Python below this many node visits (trees x depth); above, the compiled
# kernel's call overhead (a few microseconds) is the smaller cost.
_ROW_KERNEL_MIN_STEPS = 64


class Forest:
    """Flattened trees: leaf lookup for one row (Python), and the fixed-step layout the batch kernels walk."""

    def __init__(self, trees: Sequence[Tree]) -> None:
        offsets = np.cumsum([0] + [len(t.feature) for t in trees])
        self.roots = offsets[:-1].astype(np.int64)
        self.num_trees = len(trees)
        self.feature = np.concatenate([t.feature for t in trees]).astype(np.int64)
        self.threshold = np.concatenate([t.threshold for t in trees])
        self.num_categories = np.concatenate([t.num_categories for t in trees]).astype(np.int64)
        self.left = np.concatenate([np.where(t.left >= 0, t.left + o, -1) for t, o in zip(trees, offsets)])
        self.right = np.concatenate([np.where(t.right >= 0, t.right + o, -1) for t, o in zip(trees, offsets)])
        self.prediction = np.concatenate([t.prediction for t in trees])
        width = max(t.stats.shape[1] for t in trees)
        self.stats = np.concatenate([np.pad(t.stats, ((0, 0), (0, width - t.stats.shape[1]))) for t in trees])
        cats = [c for t in trees for c in t.left_categories]
        depths = [t.depth for t in trees]
        self.max_depth = max(depths)
        self.categorical = bool((self.num_categories >= 0).any())
        self.num_features_used = int(self.feature.max()) + 1 if len(self.feature) else 0
        # Spark's CategoricalSplit keeps the smaller side: the left categories when they are at most half,
        # else the right ones (and then anything outside 0..n-1 goes left).
        nc_list = self.num_categories.tolist()
        self.left_is_set = np.array([n < 0 or len(c) <= n // 2 for c, n in zip(cats, nc_list)], dtype=bool)
        self._row_nodes = self._row_layout(cats, nc_list)
        self._roots_list = self.roots.tolist()
        self.walk = with_perfect_layout(self._walk(cats, depths))
        self.kernel: TreeKernel = kernel()

    def _row_layout(self, cats: list[frozenset[float]], nc_list: list[int]) -> list[tuple[Any, ...]]:
        """Per node (feature, threshold, cats, left, right) as plain Python values (fast scalar indexing); cats:
        None for a continuous split, else (categories, go_left_when_in_set)."""
        row_cats: list[tuple[frozenset[float], bool] | None] = []
        for c, n, is_left in zip(cats, nc_list, self.left_is_set.tolist()):
            if n < 0:
                row_cats.append(None)
            elif is_left:
                row_cats.append((c, True))
            else:
                row_cats.append((frozenset(float(k) for k in range(n)) - c, False))
        return list(zip(self.feature.tolist(), self.threshold.tolist(), row_cats, self.left.tolist(),
                        self.right.tolist()))

    def _walk(self, cats: list[frozenset[float]], depths: list[int]) -> Walk:
        """The layout the batch kernels walk a fixed number of steps: every leaf is its own left and right child."""
        n = len(self.feature)
        width = max(int(self.num_categories.max()), 1) if n else 1
        cat_left = np.zeros((n, width), dtype=bool)
        for i, c in enumerate(cats):
            for v in c:
                if 0 <= v < width and v == int(v):
                    cat_left[i, int(v)] = True
        idx = np.arange(n)
        leaf = self.feature < 0
        return Walk(
            roots=self.roots.astype(np.int32), depth=np.asarray(depths, dtype=np.int32),
            feature=np.where(leaf, 0, self.feature).astype(np.int32), threshold=self.threshold.astype(np.float64),
            left=np.where(leaf, idx, self.left).astype(np.int32),
            right=np.where(leaf, idx, self.right).astype(np.int32),
            num_categories=self.num_categories.astype(np.int32), left_is_set=self.left_is_set,
            cat_left=cat_left, categorical=self.categorical)

    def leaves_row(self, x: Sequence[float]) -> list[int]:
        """The leaf (global node index) each tree sends the feature vector ``x`` to."""
        nodes = self._row_nodes
        out = []
        for i in self._roots_list:
            f, thr, cats, left, right = nodes[i]
            while f >= 0:
                v = x[f]
                # NaN compares False (continuous: right) and is in no category set.
                i = left if (v <= thr if cats is None else (v in cats[0]) is cats[1]) else right
                f, thr, cats, left, right = nodes[i]
            out.append(i)
        return out


class LeafSum:
    """One model's leaf values over a :class:`Forest`: per row, ``weights[t] * values[leaf of tree t]`` summed
    over the trees in tree order (the first tree's term starting the sum).

    Args:
        forest: the trees.
        values: (nodes x k) float64, a value vector per node (class counts, a prediction...).
        weights: (trees,) float64.
    """

    def __init__(self, forest: Forest, values: np.ndarray, weights: Sequence[float]) -> None:
        self.forest = forest
        self.values = forest.walk.node_values(np.asarray(values, dtype=np.float64))  # as the kernels read them
        self.weights = np.ascontiguousarray(weights, dtype=np.float64)
        self._values_l = np.asarray(values, dtype=np.float64).tolist()
        self._weights_l = self.weights.tolist()
        compiled = forest.kernel.name == "numba"
        # The compiled kernel answers one row faster than a walk in Python once the forest is not tiny.
        self._row_kernel = compiled and forest.num_trees * forest.max_depth >= _ROW_KERNEL_MIN_STEPS
        if compiled:  # compile (or load numba's on-disk cache) at load time, not on the first request
            warm = np.zeros((1, max(forest.num_features_used, 1)))
            self.batch(warm)
            warm.flags.writeable = False  # zero-copy input (a read-only view) is a second compiled variant
            self.batch(warm)
            self.batch(np.zeros((max(forest.num_features_used, 1), 2)).T[:1])  # a column-major slice: a third

    def batch(self, X: np.ndarray) -> np.ndarray:
        """(rows x k) sums for the feature matrix ``X``. Batches of 2 x 8192 rows or more are split over the cores
        (see :mod:`sparkship.serving.threads`); the result does not depend on the split."""
        X = np.asarray(X, dtype=np.float64)  # any memory order: VectorAssembler's matrix is column-major
        if X.shape[1] < self.forest.num_features_used:
            raise InvalidRecordError("features", f"vectors of size {X.shape[1]}; the trees read feature "
                                                 f"{self.forest.num_features_used - 1}")
        out = np.empty((X.shape[0], self.values.shape[1]))
        if not len(X):
            return out
        run, walk, values, weights = self.forest.kernel.sum_leaves, self.forest.walk, self.values, self.weights
        threads.split_rows(len(X), lambda lo, hi: run(walk, X[lo:hi], values, weights, out[lo:hi]))
        return out

    def row(self, x: Sequence[float]) -> list[float]:
        """The sums for one feature vector, as a list."""
        if self._row_kernel and len(x) >= self.forest.num_features_used:
            out = np.empty((1, self.values.shape[1]))
            self.forest.kernel.sum_leaves(self.forest.walk, np.asarray(x, dtype=np.float64).reshape(1, -1),
                                          self.values, self.weights, out)
            sums: list[float] = out[0].tolist()
            return sums
        values = self._values_l
        acc: list[float] = []
        for t, (leaf, w) in enumerate(zip(self.forest.leaves_row(x), self._weights_l)):
            acc = [v * w for v in values[leaf]] if t == 0 else [a + v * w for a, v in zip(acc, values[leaf])]
        return acc
