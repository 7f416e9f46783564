"""Clustering models of a saved pipeline, named as in Spark: k-means (euclidean and cosine distance), bisecting
k-means (its tree of cluster centers) and Gaussian mixtures (``prediction`` and ``probability``).

``prediction`` is an int column, as in Spark. Each class reproduces Spark's ``transform()`` on the row path (plain
Python) and the batch path (numpy).

    >>> from sparkship.serving import load
    >>> load("/tmp/kmeans_pipeline").score_one({"a": 1.0, "b": 2.0})   # doctest: +SKIP
    {'prediction': 2}
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from sparkship.errors import IntegrityError
from sparkship.serving import reader
from sparkship.serving.base import Schema, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.numeric import EMPTY, dot_row, row_argmax, seq_sum, spark_argmax
from sparkship.serving.predictors import Model
from sparkship.serving.reader import StageMetadata
from sparkship.serving.signature import InvalidRecordError

EPSILON = float(np.finfo(np.float64).eps)  # MLUtils.EPSILON
_KMEANS_PARAMS = frozenset({"featuresCol", "predictionCol", "k", "maxIter", "tol", "seed", "distanceMeasure",
                            "weightCol"})


def _norm_row(x: list[float]) -> float:
    s = 0.0
    for v in x:
        s += v * v
    return math.sqrt(s)


def _norm_batch(X: np.ndarray) -> np.ndarray:
    return np.sqrt(seq_sum(X * X)) if X.shape[1] else np.zeros(len(X))


def _fast_sq_dist_row(c: list[float], c_norm: float, x: list[float], x_norm: float) -> float:
    """mllib's ``MLUtils.fastSquaredDistance`` for dense vectors: |c|^2 + |x|^2 - 2 c.x when that is precise
    enough, else the plain sum of squared differences."""
    sum_sq = c_norm * c_norm + x_norm * x_norm
    diff = c_norm - x_norm
    bound = 2.0 * EPSILON * sum_sq / (diff * diff + EPSILON)
    if bound < 1e-6:
        return sum_sq - 2.0 * dot_row(c, x)
    s = 0.0
    for a, b in zip(c, x):
        d = a - b
        s += d * d
    return s


def _fast_sq_dist_batch(c: np.ndarray, c_norm: float, X: np.ndarray, x_norm: np.ndarray) -> np.ndarray:
    sum_sq = c_norm * c_norm + x_norm * x_norm
    diff = c_norm - x_norm
    with np.errstate(invalid="ignore"):
        bound = 2.0 * EPSILON * sum_sq / (diff * diff + EPSILON)
        d = X - c
        exact = seq_sum(d * d) if X.shape[1] else np.zeros(len(X))
        return np.where(bound < 1e-6, sum_sq - 2.0 * (X @ c), exact)


def _cosine_row(c: list[float], c_norm: float, x: list[float], x_norm: float) -> float:
    return 1 - dot_row(c, x) / c_norm / x_norm


def _cosine_batch(c: np.ndarray, c_norm: float, X: np.ndarray, x_norm: np.ndarray) -> np.ndarray:
    dist: np.ndarray = 1 - (X @ c) / c_norm / x_norm
    return dist


class _ClusteringModel(Model):
    """Reads ``featuresCol``; writes an int ``prediction`` (plus whatever a subclass adds)."""

    cosine = False

    def _check_norm_row(self, norm: float) -> None:
        if self.cosine:
            self._check_cosine_row(norm)
        elif norm != norm:  # fastSquaredDistance requires both norms >= 0
            raise InvalidRecordError(self.features_col, "a NaN feature has no euclidean distance to a center")

    def _check_norm_batch(self, b: Batch, norms: np.ndarray) -> None:
        if self.cosine:
            self._check_cosine_batch(b, norms)
        elif np.isnan(norms).any():
            b.fail(np.isnan(norms), self.features_col, "a NaN feature has no euclidean distance to a center")

    def _check_cosine_row(self, norm: float) -> None:
        if not norm > 0:  # Spark asserts: "Cosine distance is not defined for zero-length vectors."
            raise InvalidRecordError(self.features_col,
                                     "cosine distance is not defined for zero-length (or NaN) vectors")

    def _check_cosine_batch(self, b: Batch, norms: np.ndarray) -> None:
        bad = ~(norms > 0)
        if bad.any():
            b.fail(bad, self.features_col, "cosine distance is not defined for zero-length (or NaN) vectors")

    def plan(self, schema: Schema) -> None:
        self._plan_features(schema)
        self.output_cols = self.produced_cols()
        if self.prediction_col:
            schema[self.prediction_col] = ("int", None)

    def predict_row(self, x: list[float]) -> int:
        raise NotImplementedError

    def predict_batch(self, b: Batch, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def row(self, r: dict[str, Any]) -> bool:
        x = self._features_row(r)  # Spark fails on a null vector even when no output is wanted
        if self.prediction_col:
            r[self.prediction_col] = self.predict_row(x)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        X = self._features(b)
        if self.prediction_col:
            b.set(self.prediction_col, self.predict_batch(b, X), "int")
        return EMPTY


@register_stage
class KMeansModel(_ClusteringModel):
    """prediction = index of the closest center (the first on ties): squared euclidean distance (a NaN feature
    fails), or cosine distance 1 - c.x / |c| / |x| (a zero or NaN vector fails), as in Spark."""

    spark_class = "org.apache.spark.ml.clustering.KMeansModel"
    known_params = _KMEANS_PARAMS | {"initMode", "initSteps", "solver", "maxBlockSizeInMB"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        rows = reader.read_data(meta.path)
        key = "clusterIdx" if rows and "clusterIdx" in rows[0] else None
        if key is None:  # Spark 1.x/2.0: one "clusterCenters" row per center, in order
            centers = [reader.vector(r["clusterCenter"] if "clusterCenter" in r else r["clusterCenters"])
                       for r in rows]
        else:
            centers = [reader.vector(r["clusterCenter"]) for r in sorted(rows, key=lambda r: r[key])]
        if not centers:
            raise IntegrityError(f"{meta.path}: the k-means model has no cluster centers")
        self.centers = np.stack(centers)
        self.norms = _norm_batch(self.centers)
        self.num_features = self.centers.shape[1]
        self.cosine = self.p("distanceMeasure", "euclidean") == "cosine"
        if self.p("distanceMeasure", "euclidean") not in ("euclidean", "cosine"):
            raise self.refuse(f"distanceMeasure={self.p('distanceMeasure')!r}")
        self._centers = list(zip(self.centers.tolist(), self.norms.tolist()))

    def predict_row(self, x: list[float]) -> int:
        norm = _norm_row(x)
        self._check_norm_row(norm)
        best, best_i = math.inf, 0
        for i, (c, cn) in enumerate(self._centers):
            if self.cosine:
                d = _cosine_row(c, cn, x, norm)
            else:
                lower = (cn - norm) * (cn - norm)
                if not lower < best:  # |c - x| >= ||c| - |x||: Spark skips centers that cannot be closer
                    continue
                d = _fast_sq_dist_row(c, cn, x, norm)
            if d < best:
                best, best_i = d, i
        return best_i

    def predict_batch(self, b: Batch, X: np.ndarray) -> np.ndarray:
        norms = _norm_batch(X)
        self._check_norm_batch(b, norms)
        best = np.full(len(X), np.inf)
        best_i = np.zeros(len(X), dtype=np.int64)
        for i, (c, cn) in enumerate(zip(self.centers, self.norms)):
            if self.cosine:
                d = _cosine_batch(c, cn, X, norms)
                upd = d < best
            else:
                lower = (cn - norms) * (cn - norms)
                d = _fast_sq_dist_batch(c, cn, X, norms)
                upd = (lower < best) & (d < best)
            best = np.where(upd, d, best)
            best_i[upd] = i
        return best_i


@register_stage
class BisectingKMeansModel(_ClusteringModel):
    """prediction = the leaf reached from the root by stepping, at each node, to the child whose center is
    closest (mllib's ``ClusteringTreeNode.predict``; ties and NaN costs go to the earlier child)."""

    spark_class = "org.apache.spark.ml.clustering.BisectingKMeansModel"
    known_params = _KMEANS_PARAMS | {"minDivisibleClusterSize"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data_dir = os.path.join(meta.path, "data")
        with open(reader._first_part(os.path.join(data_dir, "metadata"))) as fh:
            tree_meta = json.loads(fh.readline())
        measure = tree_meta.get("distanceMeasure", self.p("distanceMeasure", "euclidean"))
        if measure not in ("euclidean", "cosine"):
            raise self.refuse(f"distanceMeasure={measure!r}")
        self.cosine = measure == "cosine"
        nodes = {int(r["index"]): r for r in reader.read_data(data_dir, "data")}
        self.root = int(tree_meta.get("rootId", -1))
        if self.root not in nodes:
            raise IntegrityError(f"{meta.path}: the bisecting k-means tree has no root node {self.root}")
        # node index -> (leaf?, [(child index, center, saved norm)])
        self.children: dict[int, list[tuple[int, np.ndarray, float]]] = {}
        for idx, r in nodes.items():
            kids = [int(c) for c in (r["children"] or [])]
            missing = [c for c in kids if c not in nodes]
            if missing:
                raise IntegrityError(f"{meta.path}: tree node {idx} names missing children {missing}")
            self.children[idx] = [(c, reader.vector(nodes[c]["center"]), float(nodes[c]["norm"])) for c in kids]
        self.num_features = len(reader.vector(nodes[self.root]["center"]))
        self._children_l = {i: [(c, v.tolist(), n) for c, v, n in kids] for i, kids in self.children.items()}

    def _cost_row(self, c: list[float], cn: float, x: list[float], norm: float) -> float:
        return _cosine_row(c, cn, x, norm) if self.cosine else _fast_sq_dist_row(c, cn, x, norm)

    def predict_row(self, x: list[float]) -> int:
        norm = _norm_row(x)
        self._check_norm_row(norm)
        node = self.root
        while self._children_l[node]:
            best_node, best = -1, math.nan
            for child, c, cn in self._children_l[node]:
                cost = self._cost_row(c, cn, x, norm)
                # Scala's minBy with Ordering.Double (a total order: NaN above everything), first minimum wins.
                if best_node == -1 or (cost < best or (best != best and cost == cost)):
                    best_node, best = child, cost
            node = best_node
        return node

    def predict_batch(self, b: Batch, X: np.ndarray) -> np.ndarray:
        norms = _norm_batch(X)
        self._check_norm_batch(b, norms)
        node = np.full(len(X), self.root, dtype=np.int64)
        for _ in range(len(self.children)):  # a path is never longer than the node count
            inner = [i for i in np.unique(node).tolist() if self.children[i]]
            if not inner:
                break
            for i in inner:
                at = node == i
                Xi, ni = X[at], norms[at]
                best = np.full(len(Xi), np.nan)
                choice = np.full(len(Xi), -1, dtype=np.int64)
                for child, c, cn in self.children[i]:
                    cost = (_cosine_batch(c, cn, Xi, ni) if self.cosine else _fast_sq_dist_batch(c, cn, Xi, ni))
                    upd = (choice == -1) | (cost < best) | (np.isnan(best) & ~np.isnan(cost))
                    best = np.where(upd, cost, best)
                    choice[upd] = child
                node[at] = choice
        return node


@register_stage
class GaussianMixtureModel(_ClusteringModel):
    """probability[i] proportional to EPSILON + weight_i x pdf_i(x) (multivariate normal pdf through the
    pseudo-inverse of each covariance from its eigendecomposition, as Spark's ``MultivariateGaussian``);
    prediction = argmax of probability."""

    spark_class = "org.apache.spark.ml.clustering.GaussianMixtureModel"
    known_params = frozenset({"featuresCol", "predictionCol", "probabilityCol", "k", "maxIter", "tol", "seed",
                              "aggregationDepth", "weightCol"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        self.weights = np.asarray(data["weights"], dtype=np.float64)
        self.means = [reader.vector(m) for m in data["mus"]]
        covs = [reader.matrix(s) for s in data["sigmas"]]
        if not (len(self.weights) == len(self.means) == len(covs)) or not len(covs):
            raise IntegrityError(f"{meta.path}: weights, means and covariances of different counts")
        self.num_features = len(self.means[0])
        self.num_classes = len(self.weights)
        self.prob_col = self.p("probabilityCol", "probability") or ""
        self.gaussians = [self._constants(m, s) for m, s in zip(self.means, covs)]

    def _constants(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean, root of the pseudo-inverse (D^-1/2 U^T), log normaliser u) of one Gaussian."""
        d, u = np.linalg.eigh(cov)
        tol = EPSILON * d.max() * len(d)
        kept = d > tol
        if not kept.any():
            raise self.refuse("a covariance matrix with no non-zero singular values")
        log_pdet = 0.0
        for v in d[kept].tolist():
            log_pdet += math.log(v)
        pinv_s = np.where(kept, np.sqrt(1.0 / np.where(kept, d, 1.0)), 0.0)
        root = pinv_s[:, None] * u.T
        return mean, root, -0.5 * (len(mean) * math.log(2.0 * math.pi) + log_pdet)

    def produced_cols(self) -> list[str]:
        return [c for c in (self.prob_col, self.prediction_col) if c]

    def plan(self, schema: Schema) -> None:
        super().plan(schema)
        if self.prob_col:
            schema[self.prob_col] = ("vector", self.num_classes)

    def probability_batch(self, X: np.ndarray) -> np.ndarray:
        p = np.empty((len(X), self.num_classes))
        for i, ((mean, root, u), w) in enumerate(zip(self.gaussians, self.weights)):
            v = (X - mean) @ root.T
            with np.errstate(over="ignore", invalid="ignore"):
                p[:, i] = EPSILON + w * np.exp(u + seq_sum(v * v) * -0.5)
        with np.errstate(invalid="ignore"):
            prob: np.ndarray = p / seq_sum(p)[:, None]
        return prob

    def probability_row(self, x: list[float]) -> list[float]:
        prob: list[float] = self.probability_batch(np.asarray([x], dtype=np.float64))[0].tolist()
        return prob

    def predict_row(self, x: list[float]) -> int:
        return row_argmax(self.probability_row(x))

    def predict_batch(self, b: Batch, X: np.ndarray) -> np.ndarray:
        return spark_argmax(self.probability_batch(X))

    def row(self, r: dict[str, Any]) -> bool:
        prob = self.probability_row(self._features_row(r))
        if self.prob_col:
            r[self.prob_col] = prob
        if self.prediction_col:
            r[self.prediction_col] = row_argmax(prob)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        prob = self.probability_batch(self._features(b))
        if self.prob_col:
            b.set(self.prob_col, prob, "vector")
        if self.prediction_col:
            b.set(self.prediction_col, spark_argmax(prob), "int")
        return EMPTY
