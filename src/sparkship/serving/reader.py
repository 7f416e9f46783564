"""Read a stage saved by Spark's ML writer into plain Python and numpy, without a JVM.

A saved stage is a folder with ``metadata/part-*`` (one JSON line: class, uid, sparkVersion, paramMap,
defaultParamMap) and, for fitted models, ``data/*.parquet``; tree ensembles add ``treesMetadata/``. Spark 3.5
names the metadata file ``part-00000``, Spark 4 ``part-00000-<uuid>-c000.txt``: both match ``part-*``.

    >>> meta = read_metadata("/tmp/model/stages/0_Imputer_ec0820bdcd6e")       # doctest: +SKIP
    >>> meta.class_name, meta.params["strategy"]                                 # doctest: +SKIP
    ('org.apache.spark.ml.feature.ImputerModel', 'median')
"""
from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sparkship.errors import IntegrityError, NotFoundError

# Spark writes non-finite doubles in param JSON as strings.
_SPECIAL_DOUBLES = {"NaN": math.nan, "Inf": math.inf, "-Inf": -math.inf, "Infinity": math.inf,
                    "-Infinity": -math.inf}


@dataclass(frozen=True)
class StageMetadata:
    """One stage's metadata: class, uid, Spark version, params (defaults overlaid with the set ones)."""

    path: str
    class_name: str
    uid: str
    spark_version: str
    params: dict[str, Any]
    set_params: frozenset[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def short_class(self) -> str:
        return self.class_name.rsplit(".", 1)[-1]

    def is_set(self, name: str) -> bool:
        """True when ``name`` was set explicitly (not only a default)."""
        return name in self.set_params


def _first_part(folder: str) -> str:
    parts = sorted(p for p in glob.glob(os.path.join(folder, "part-*")) if not p.endswith(".crc"))
    if not parts:
        raise NotFoundError(f"{folder} holds no part-* file: not a Spark ML saved stage")
    return parts[0]


def read_metadata(stage_dir: str) -> StageMetadata:
    """The metadata of the stage saved in ``stage_dir`` (params: defaultParamMap, then paramMap over it)."""
    meta_dir = os.path.join(stage_dir, "metadata")
    if not os.path.isdir(meta_dir):
        raise NotFoundError(f"{stage_dir} has no metadata/ folder: not a saved Spark ML stage or PipelineModel")
    with open(_first_part(meta_dir)) as fh:
        line = fh.readline()
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"{meta_dir}: metadata is not valid JSON ({exc})") from None
    params = dict(raw.get("defaultParamMap") or {})
    set_params = raw.get("paramMap") or {}
    params.update(set_params)
    known = {"class", "timestamp", "sparkVersion", "uid", "paramMap", "defaultParamMap"}
    return StageMetadata(
        path=stage_dir,
        class_name=raw["class"],
        uid=raw.get("uid", ""),
        spark_version=raw.get("sparkVersion", ""),
        params=params,
        set_params=frozenset(set_params),
        extra={k: v for k, v in raw.items() if k not in known},
    )


def to_double(value: Any) -> float:
    """A param value as a float; Spark writes NaN and infinities as the strings "NaN", "Inf", "-Inf"."""
    if isinstance(value, str):
        if value in _SPECIAL_DOUBLES:
            return _SPECIAL_DOUBLES[value]
        return float(value)
    return float(value)


def read_data(stage_dir: str, sub: str = "data") -> list[dict[str, Any]]:
    """Rows of ``<stage_dir>/<sub>/*.parquet`` as Python dicts (pyarrow skips ``_SUCCESS`` and ``.crc``)."""
    folder = os.path.join(stage_dir, sub)
    files = sorted(p for p in glob.glob(os.path.join(folder, "*.parquet")))
    if not files:
        raise NotFoundError(f"{folder} holds no parquet file: the saved stage is incomplete")
    rows: list[dict[str, Any]] = []
    for path in files:
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def vector(struct: dict[str, Any]) -> np.ndarray:
    """A saved ``Vector`` struct (type 0 sparse, 1 dense) as a dense float64 array."""
    values = np.asarray(struct["values"] or [], dtype=np.float64)
    if struct["type"] == 1:
        return values
    out = np.zeros(int(struct["size"]), dtype=np.float64)
    out[np.asarray(struct["indices"] or [], dtype=np.int64)] = values
    return out


def is_sparse(struct: dict[str, Any]) -> bool:
    """True for a Vector or Matrix struct stored sparse (Spark then skips its zero entries in dot products)."""
    return bool(struct["type"] == 0)


def matrix(struct: dict[str, Any]) -> np.ndarray:
    """A saved ``Matrix`` struct as a dense (numRows, numCols) float64 array.

    Dense values are column-major unless ``isTransposed`` (then row-major); sparse ones are CSC, or CSR when
    ``isTransposed``.
    """
    rows, cols = int(struct["numRows"]), int(struct["numCols"])
    values = np.asarray(struct["values"] or [], dtype=np.float64)
    transposed = bool(struct["isTransposed"])
    if struct["type"] == 1:
        dense: np.ndarray = values.reshape(rows, cols).copy() if transposed else values.reshape(cols, rows).T.copy()
        return dense
    out = np.zeros((rows, cols), dtype=np.float64)
    ptrs = struct["colPtrs"] or []
    idx = struct["rowIndices"] or []
    # colPtrs index the outer dimension: columns (CSC), or rows when transposed (CSR).
    for outer in range(len(ptrs) - 1):
        for k in range(ptrs[outer], ptrs[outer + 1]):
            if transposed:
                out[outer, idx[k]] = values[k]
            else:
                out[idx[k], outer] = values[k]
    return out


@dataclass(frozen=True)
class Tree:
    """One decision tree, nodes in preorder, as flat arrays (index = node id).

    ``feature[i] == -1`` marks a leaf. Continuous splits go left when ``x <= threshold[i]`` (NaN goes right).
    Categorical splits (``num_categories[i] >= 0``) follow Spark's ``CategoricalSplit``: when the left set is
    at most half of the categories, go left iff ``x`` is in it; otherwise go left iff ``x`` is not one of the
    right categories - so a value outside 0..numCategories-1 (an unseen index, NaN) goes left there.
    """

    feature: np.ndarray  # int32
    threshold: np.ndarray  # float64 (NaN for categorical splits and leaves)
    num_categories: np.ndarray  # int32 (-1: continuous)
    left_categories: tuple[frozenset[float], ...]
    left: np.ndarray  # int32
    right: np.ndarray  # int32
    prediction: np.ndarray  # float64
    stats: np.ndarray  # float64 (nodes, k): impurityStats

    @property
    def depth(self) -> int:
        depth = np.zeros(len(self.feature), dtype=np.int64)
        for i in range(len(self.feature)):  # preorder: parents come first
            if self.feature[i] >= 0:
                depth[self.left[i]] = depth[self.right[i]] = depth[i] + 1
        return int(depth.max()) if len(depth) else 0


def tree_from_nodes(nodes: list[dict[str, Any]]) -> Tree:
    """A :class:`Tree` from saved ``NodeData`` rows (any order; ids are 0..n-1 in preorder)."""
    nodes = sorted(nodes, key=lambda n: n["id"])
    if [n["id"] for n in nodes] != list(range(len(nodes))):
        raise IntegrityError("tree node ids are not 0..n-1: unsupported tree data")
    n = len(nodes)
    width = max((len(nd["impurityStats"] or []) for nd in nodes), default=0)
    feature = np.full(n, -1, dtype=np.int32)
    threshold = np.full(n, np.nan, dtype=np.float64)
    num_cats = np.full(n, -1, dtype=np.int32)
    left = np.full(n, -1, dtype=np.int32)
    right = np.full(n, -1, dtype=np.int32)
    prediction = np.zeros(n, dtype=np.float64)
    stats = np.zeros((n, width), dtype=np.float64)
    cats: list[frozenset[float]] = []
    for nd in nodes:
        i = nd["id"]
        prediction[i] = nd["prediction"]
        s = nd["impurityStats"] or []
        stats[i, : len(s)] = s
        split = nd["split"] or {}
        internal = nd["leftChild"] >= 0
        cats.append(frozenset())
        if internal:
            feature[i] = split["featureIndex"]
            left[i], right[i] = nd["leftChild"], nd["rightChild"]
            num_cats[i] = split["numCategories"]
            values = split["leftCategoriesOrThreshold"] or []
            if split["numCategories"] >= 0:
                cats[i] = frozenset(float(v) for v in values)
            else:
                threshold[i] = values[0]
    return Tree(feature, threshold, num_cats, tuple(cats), left, right, prediction, stats)


def read_tree(stage_dir: str) -> Tree:
    """The tree of a saved DecisionTree*Model."""
    return tree_from_nodes(read_data(stage_dir))


def read_ensemble(stage_dir: str) -> tuple[list[Tree], list[float]]:
    """Trees (in treeID order) and tree weights of a saved RandomForest*Model or GBT*Model."""
    by_tree: dict[int, list[dict[str, Any]]] = {}
    for row in read_data(stage_dir):
        by_tree.setdefault(int(row["treeID"]), []).append(row["nodeData"])
    weights = {int(r["treeID"]): float(r["weights"]) for r in read_data(stage_dir, "treesMetadata")}
    ids = sorted(by_tree)
    if ids != sorted(weights):
        raise IntegrityError(f"{stage_dir}: data/ and treesMetadata/ list different trees")
    return [tree_from_nodes(by_tree[i]) for i in ids], [weights[i] for i in ids]
