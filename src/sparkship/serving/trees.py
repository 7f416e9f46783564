"""Decision trees flattened into one set of arrays, walked per row (Python lists) or per batch (numpy).

All trees of an ensemble share one node numbering (tree t's nodes follow tree t-1's), so a batch walks every
tree of every row at once: an (rows x trees) array of node positions advanced one level per step.

    >>> forest = Forest([read_tree(path)])                    # doctest: +SKIP
    >>> forest.leaves_row([0.3, 1.0])                          # doctest: +SKIP
    [4]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sparkship.serving.reader import Tree


class Forest:
    """Flattened trees: leaf lookup for one row or many."""

    def __init__(self, trees: Sequence[Tree]) -> None:
        offsets = np.cumsum([0] + [len(t.feature) for t in trees])
        self.roots = offsets[:-1].astype(np.int64)
        self.num_trees = len(trees)
        self.feature = np.concatenate([t.feature for t in trees]).astype(np.int64)
        self.threshold = np.concatenate([t.threshold for t in trees])
        self.num_categories = np.concatenate([t.num_categories for t in trees]).astype(np.int64)
        shift = [np.where(t.left >= 0, t.left + o, -1) for t, o in zip(trees, offsets)]
        self.left = np.concatenate(shift).astype(np.int64)
        self.right = np.concatenate([np.where(t.right >= 0, t.right + o, -1) for t, o in zip(trees, offsets)]).astype(
            np.int64
        )
        self.prediction = np.concatenate([t.prediction for t in trees])
        width = max(t.stats.shape[1] for t in trees)
        self.stats = np.concatenate([np.pad(t.stats, ((0, 0), (0, width - t.stats.shape[1]))) for t in trees])
        cats = [c for t in trees for c in t.left_categories]
        self.max_depth = max(t.depth for t in trees)
        self.categorical = bool((self.num_categories >= 0).any())
        self.num_features_used = int(self.feature.max()) + 1 if len(self.feature) else 0
        # Leaves point to themselves, so a batch walk can run a fixed number of steps.
        idx = np.arange(len(self.feature))
        leaf = self.feature < 0
        self._left = np.where(leaf, idx, self.left)
        self._right = np.where(leaf, idx, self.right)
        self._feat = np.where(leaf, 0, self.feature)
        if self.categorical:
            width = int(self.num_categories.max())
            self._cat_left = np.zeros((len(self.feature), max(width, 1)), dtype=bool)
            for i, c in enumerate(cats):
                for v in c:
                    if 0 <= v < width and v == int(v):
                        self._cat_left[i, int(v)] = True
        # Spark's CategoricalSplit keeps the smaller side: the left categories when they are at most half,
        # else the right ones (and then anything outside 0..n-1 goes left).
        nc_list = self.num_categories.tolist()
        self.left_is_set = np.array([n < 0 or len(c) <= n // 2 for c, n in zip(cats, nc_list)], dtype=bool)
        # Row path: plain lists (fast scalar indexing). cats: None for a continuous split, else
        # (categories, go_left_when_in_set).
        row_cats: list[tuple[frozenset[float], bool] | None] = []
        for c, n, is_left in zip(cats, nc_list, self.left_is_set.tolist()):
            if n < 0:
                row_cats.append(None)
            elif is_left:
                row_cats.append((c, True))
            else:
                row_cats.append((frozenset(float(k) for k in range(n)) - c, False))
        self._row_nodes = list(
            zip(self.feature.tolist(), self.threshold.tolist(), row_cats, self.left.tolist(), self.right.tolist())
        )
        self._roots_list = self.roots.tolist()

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

    def leaves_batch(self, X: np.ndarray, chunk: int = 16384) -> np.ndarray:
        """(rows x trees) leaf indices for the feature matrix ``X``."""
        n = X.shape[0]
        out = np.empty((n, self.num_trees), dtype=np.int64)
        for start in range(0, n, chunk):
            xs = X[start:start + chunk]
            m = xs.shape[0]
            pos = np.broadcast_to(self.roots, (m, self.num_trees)).copy()
            rows = np.arange(m)[:, None]
            for _ in range(self.max_depth):
                x = xs[rows, self._feat[pos]]
                go_left = x <= self.threshold[pos]
                if self.categorical:
                    nc = self.num_categories[pos]
                    is_cat = nc >= 0
                    if is_cat.any():
                        ok = is_cat & (x >= 0) & (x < nc) & (x == np.floor(np.nan_to_num(x)))
                        ci = np.where(ok, x, 0).astype(np.int64)
                        in_left = ok & self._cat_left[pos, ci]
                        cat_go = np.where(self.left_is_set[pos], in_left, in_left | ~ok)
                        go_left = np.where(is_cat, cat_go, go_left)
                pos = np.where(go_left, self._left[pos], self._right[pos])
            out[start:start + m] = pos
        return out
