"""The predictors of a saved pipeline, named as in Spark: logistic and linear regression, decision trees,
random forests and gradient-boosted trees, for classification and regression.

Each reproduces Spark's ``transform()`` outputs (``prediction``, and ``rawPrediction`` and ``probability`` for
classifiers) on the row and batch paths described in :mod:`sparkship.serving.stages`.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from sparkship.serving import reader
from sparkship.serving.base import Schema, Stage, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.numeric import EMPTY, row_argmax, safe_exp, seq_sum, sigmoid, spark_argmax
from sparkship.serving.reader import StageMetadata, to_double
from sparkship.serving.signature import InvalidRecordError
from sparkship.serving.trees import Forest, LeafSum

PREDICTOR_PARAMS = frozenset({"featuresCol", "labelCol", "predictionCol", "weightCol"})
CLASSIFIER_PARAMS = PREDICTOR_PARAMS | {"rawPredictionCol", "probabilityCol", "thresholds"}
_TREE_PARAMS = frozenset({"checkpointInterval", "maxDepth", "maxBins", "minInstancesPerNode", "minInfoGain",
                          "maxMemoryInMB", "cacheNodeIds", "seed", "impurity", "minWeightFractionPerNode",
                          "leafCol"})
_ENSEMBLE_PARAMS = frozenset({"featureSubsetStrategy", "numTrees", "subsamplingRate", "bootstrap", "lossType",
                              "maxIter", "stepSize", "validationTol", "validationIndicatorCol"})


class Model(Stage):
    """A predictor reading ``featuresCol``; subclasses set ``num_features`` and compute the outputs."""

    num_features: int | None = None

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.features_col = self.p("featuresCol", "features")
        self.input_cols = [self.features_col]
        self.prediction_col = self.p("predictionCol", "prediction") or ""
        if self.p("leafCol"):
            raise self.refuse(f"leafCol={self.p('leafCol')!r}")
        if self.p("varianceCol"):
            raise self.refuse(f"varianceCol={self.p('varianceCol')!r}")

    def input_type(self, col: str) -> str:
        return "vector"

    def expected_size(self, col: str) -> int | None:
        return self.num_features if col == self.features_col else None

    def produced_cols(self) -> list[str]:
        """The columns transform() adds (known before ``plan``, for derived signatures and default outputs)."""
        return [self.prediction_col] if self.prediction_col else []

    def _plan_features(self, schema: Schema) -> None:
        _, size = self._need(schema, self.features_col, ("vector",))
        if size is not None and self.num_features is not None and size != self.num_features:
            raise self.refuse(f"features column '{self.features_col}' of size {size} "
                              f"(the model expects {self.num_features})")

    def _features(self, b: Batch) -> np.ndarray:
        nm = b.null_mask(self.features_col)
        if nm is not None:
            b.fail(nm, self.features_col, "features vector is null")
        return b.cols[self.features_col]

    def _features_row(self, r: dict[str, Any]) -> list[float]:
        v = r[self.features_col]
        if v is None:
            raise InvalidRecordError(self.features_col, "features vector is null")
        features: list[float] = v
        return features


class RegressionModel(Model):
    """Outputs ``prediction`` only."""

    def plan(self, schema: Schema) -> None:
        self._plan_features(schema)
        self.output_cols = [self.prediction_col] if self.prediction_col else []
        for o in self.output_cols:
            schema[o] = ("double", None)

    def predict_row(self, x: list[float]) -> float:
        raise NotImplementedError

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def row(self, r: dict[str, Any]) -> bool:
        if self.prediction_col:
            r[self.prediction_col] = self.predict_row(self._features_row(r))
        return True

    def batch(self, b: Batch) -> np.ndarray:
        if self.prediction_col:
            b.set(self.prediction_col, self.predict_batch(self._features(b)), "double")
        return EMPTY


class ClassificationModel(Model):
    """Outputs rawPrediction, probability, prediction as ``ProbabilisticClassificationModel.transform``:
    probability from rawPrediction, prediction from rawPrediction (or from probability when thresholds are set
    or rawPrediction is not wanted)."""

    num_classes: int = 2

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.raw_col = self.p("rawPredictionCol", "rawPrediction") or ""
        self.prob_col = self.p("probabilityCol", "probability") or ""
        self.thresholds = [to_double(t) for t in self.p("thresholds")] if self.meta.params.get("thresholds") else None

    def produced_cols(self) -> list[str]:
        return [c for c in (self.raw_col, self.prob_col, self.prediction_col) if c]

    def plan(self, schema: Schema) -> None:
        self._plan_features(schema)
        if self.thresholds is not None and len(self.thresholds) != self.num_classes:
            raise self.refuse(f"{len(self.thresholds)} thresholds for {self.num_classes} classes")
        self.output_cols = [c for c in (self.raw_col, self.prob_col, self.prediction_col) if c]
        for c in (self.raw_col, self.prob_col):
            if c:
                schema[c] = ("vector", self.num_classes)
        if self.prediction_col:
            schema[self.prediction_col] = ("double", None)

    # subclasses: raw scores and their conversion to probabilities
    def raw_row(self, x: list[float]) -> list[float]:
        raise NotImplementedError

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def raw2prob_row(self, raw: list[float]) -> list[float]:
        total = 0.0
        for v in raw:
            total += v
        return [v / total for v in raw]

    def raw2prob_batch(self, raw: np.ndarray) -> np.ndarray:
        prob: np.ndarray = raw / seq_sum(raw)[:, None]
        return prob

    def raw2pred_row(self, raw: list[float]) -> float:
        if self.thresholds is None:
            return float(row_argmax(raw))
        return self.prob2pred_row(self.raw2prob_row(list(raw)))

    def raw2pred_batch(self, raw: np.ndarray) -> np.ndarray:
        if self.thresholds is None:
            return spark_argmax(raw).astype(np.float64)
        return self.prob2pred_batch(self.raw2prob_batch(raw))

    def prob2pred_row(self, prob: list[float]) -> float:
        if self.thresholds is None:
            return float(row_argmax(prob))
        scaled = [(p / t if t != 0 else (math.inf if p > 0 else math.nan)) for p, t in zip(prob, self.thresholds)]
        arg, best = 0, -math.inf
        for i, s in enumerate(scaled):
            if s > best:
                arg, best = i, s
        return float(arg)

    def prob2pred_batch(self, prob: np.ndarray) -> np.ndarray:
        if self.thresholds is None:
            return spark_argmax(prob).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = prob / np.asarray(self.thresholds)
        full = np.concatenate([np.full((len(prob), 1), -np.inf), scaled], axis=1)
        return (spark_argmax(full) - 1).clip(0).astype(np.float64)

    def row(self, r: dict[str, Any]) -> bool:
        raw = self.raw_row(self._features_row(r))
        # probability only where it is output or decides the prediction (else never read)
        prob = self.raw2prob_row(raw) if self.prob_col or (not self.raw_col and self.prediction_col) else []
        if self.raw_col:
            r[self.raw_col] = raw
        if self.prob_col:
            r[self.prob_col] = prob
        if self.prediction_col:
            r[self.prediction_col] = self.raw2pred_row(raw) if self.raw_col else self.prob2pred_row(prob)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            raw = self.raw_batch(self._features(b))
        self.set_outputs(b, raw)
        return EMPTY

    def set_outputs(self, b: Batch, raw: np.ndarray) -> None:
        """rawPrediction, probability and prediction of ``b`` from its raw scores."""
        with np.errstate(over="ignore", invalid="ignore"):
            prob = self.raw2prob_batch(raw) if self.prob_col or (not self.raw_col and self.prediction_col) else raw[:0]
        if self.raw_col:
            b.set(self.raw_col, raw, "vector")
        if self.prob_col:
            b.set(self.prob_col, prob, "vector")
        if self.prediction_col:
            b.set(self.prediction_col,
                  self.raw2pred_batch(raw) if self.raw_col else self.prob2pred_batch(prob), "double")


@register_stage
class LogisticRegressionModel(ClassificationModel):
    """Binomial (sigmoid of [-m, m], ``threshold``) or multinomial (softmax) logistic regression."""

    spark_class = "org.apache.spark.ml.classification.LogisticRegressionModel"
    known_params = CLASSIFIER_PARAMS | {
        "threshold", "regParam", "elasticNetParam", "maxIter", "tol", "fitIntercept", "standardization",
        "aggregationDepth", "family", "lowerBoundsOnCoefficients", "upperBoundsOnCoefficients",
        "lowerBoundsOnIntercepts", "upperBoundsOnIntercepts", "maxBlockSizeInMB"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        if "coefficientMatrix" in data:
            self.coef = reader.matrix(data["coefficientMatrix"])
            sparse = reader.is_sparse(data["coefficientMatrix"])
            self.intercept = reader.vector(data["interceptVector"])
            self.multinomial = bool(data["isMultinomial"])
            self.num_classes = int(data["numClasses"])
        else:  # Spark 1.x/2.0 layout: binomial only
            self.coef = reader.vector(data["coefficients"]).reshape(1, -1)
            sparse = reader.is_sparse(data["coefficients"])
            self.intercept = np.array([float(data["intercept"])])
            self.multinomial, self.num_classes = False, 2
        self.num_features = self.coef.shape[1]
        if self.thresholds is not None and not self.multinomial:
            t0, t1 = self.thresholds
            self.threshold = 1.0 / (1.0 + t0 / t1)
        else:
            self.threshold = to_double(self.p("threshold", 0.5))
        t = self.threshold
        self.raw_threshold = -math.inf if t == 0.0 else math.inf if t == 1.0 else math.log(t / (1.0 - t))
        # Stored sparse (L1), Spark's dot products visit only the stored coefficients: a NaN feature whose
        # coefficient is 0 does not reach the margin. Stored dense, every term counts (NaN x 0 = NaN).
        self._terms = [_dot_terms(c, sparse) for c in self.coef]
        self._coef_rows = [list(zip(idx.tolist(), c[idx].tolist())) for idx, c in zip(self._terms, self.coef)]
        self._intercepts = self.intercept.tolist()

    def raw_row(self, x: list[float]) -> list[float]:
        margins = []
        for nz, b in zip(self._coef_rows, self._intercepts):
            s = 0.0
            for i, c in nz:
                s += x[i] * c
            margins.append(s + b)
        if self.multinomial:
            return margins
        m = margins[0]
        return [-m, m]

    @property
    def dense_terms(self) -> bool:
        """True when every coefficient counts in the margins (stored dense): a plain matrix product."""
        return all(len(t) == self.coef.shape[1] for t in self._terms)

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        margins = np.stack([_dot_batch(X, c, idx) + b for c, idx, b in zip(self.coef, self._terms, self.intercept)],
                           axis=1)
        return self.raw_from_margins(margins)

    def raw_from_margins(self, margins: np.ndarray) -> np.ndarray:
        """rawPrediction from the (n, k) margins: themselves (multinomial) or [-m, m] (binomial)."""
        if self.multinomial:
            return margins
        raw = np.empty((len(margins), 2))
        np.negative(margins[:, 0], out=raw[:, 0])
        raw[:, 1] = margins[:, 0]
        return raw

    def raw2prob_row(self, raw: list[float]) -> list[float]:
        if not self.multinomial:  # Spark: p0 = sigmoid(raw0), p1 = 1 - p0
            p0 = sigmoid(raw[0])
            return [p0, 1.0 - p0]
        k = row_argmax(raw)
        mx = raw[k]
        if mx == math.inf:
            return [1.0 if i == k else 0.0 for i in range(len(raw))]
        e = [math.exp(v - mx) if mx > 0 else safe_exp(v) for v in raw]
        total = 0.0
        for v in e:
            total += v
        inv = 1 / total
        return [v * inv for v in e]

    def raw2prob_batch(self, raw: np.ndarray) -> np.ndarray:
        if not self.multinomial:
            prob = np.empty_like(raw)
            p0 = prob[:, 0]  # 1 / (1 + exp(-raw0)), computed in place
            np.negative(raw[:, 0], out=p0)
            np.exp(p0, out=p0)
            p0 += 1.0
            np.divide(1.0, p0, out=p0)
            np.subtract(1.0, p0, out=prob[:, 1])
            return prob
        k = spark_argmax(raw)
        mx = raw[np.arange(len(raw)), k]
        e = np.exp(np.where((mx > 0)[:, None], raw - mx[:, None], raw))
        prob = e * (1 / seq_sum(e))[:, None]
        inf = mx == np.inf
        if inf.any():
            prob[inf] = 0.0
            prob[np.flatnonzero(inf), k[inf]] = 1.0
        return prob

    def raw2pred_row(self, raw: list[float]) -> float:
        if self.multinomial:
            return super().raw2pred_row(raw)
        return 1.0 if raw[1] > self.raw_threshold else 0.0

    def raw2pred_batch(self, raw: np.ndarray) -> np.ndarray:
        if self.multinomial:
            return super().raw2pred_batch(raw)
        return (raw[:, 1] > self.raw_threshold).astype(np.float64)

    def prob2pred_row(self, prob: list[float]) -> float:
        if self.multinomial:
            return super().prob2pred_row(prob)
        return 1.0 if prob[1] > self.threshold else 0.0

    def prob2pred_batch(self, prob: np.ndarray) -> np.ndarray:
        if self.multinomial:
            return super().prob2pred_batch(prob)
        return (prob[:, 1] > self.threshold).astype(np.float64)


def _dot_terms(coef: np.ndarray, sparse: bool) -> np.ndarray:
    """Indices of the terms Spark's dot product visits: the stored non-zeros of a sparse vector, else all."""
    return np.flatnonzero(coef) if sparse else np.arange(len(coef))


def _dot_batch(X: np.ndarray, coef: np.ndarray, idx: np.ndarray) -> np.ndarray:
    dots: np.ndarray = X @ coef if len(idx) == len(coef) else X[:, idx] @ coef[idx]
    return dots


@register_stage
class LinearRegressionModel(RegressionModel):
    """prediction = coefficients . x + intercept."""

    spark_class = "org.apache.spark.ml.regression.LinearRegressionModel"
    known_params = PREDICTOR_PARAMS | {"regParam", "elasticNetParam", "maxIter", "tol", "fitIntercept",
                                        "standardization", "solver", "aggregationDepth", "loss", "epsilon",
                                        "maxBlockSizeInMB"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        self.coef = reader.vector(data["coefficients"])
        self.intercept = float(data["intercept"])
        self.num_features = len(self.coef)
        self._idx = _dot_terms(self.coef, reader.is_sparse(data["coefficients"]))
        self._nz = list(zip(self._idx.tolist(), self.coef[self._idx].tolist()))

    def predict_row(self, x: list[float]) -> float:
        s = 0.0
        for i, c in self._nz:
            s += x[i] * c
        return s + self.intercept

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return _dot_batch(X, self.coef, self._idx) + self.intercept


class _TreeMixin:
    """Loads a single tree or an ensemble into a :class:`Forest`; ``leaf_sum`` sums the leaves' values."""

    meta: StageMetadata
    ensemble: ClassVar[bool] = False

    def _load_trees(self) -> tuple[Forest, list[float]]:
        if self.ensemble:
            trees, weights = reader.read_ensemble(self.meta.path)
        else:
            trees, weights = [reader.read_tree(self.meta.path)], [1.0]
        return Forest(trees), weights


@register_stage
class DecisionTreeClassificationModel(_TreeMixin, ClassificationModel):
    """rawPrediction = the leaf's class counts; probability = counts / total."""

    spark_class = "org.apache.spark.ml.classification.DecisionTreeClassificationModel"
    known_params = CLASSIFIER_PARAMS | _TREE_PARAMS

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.forest, _ = self._load_trees()
        saved_classes = meta.extra.get("numClasses")
        self.num_classes = int(saved_classes) if saved_classes is not None else int(self.forest.stats.shape[1])
        self.num_features = meta.extra.get("numFeatures")
        self.leaf_sum = LeafSum(self.forest, self._leaf_values(self.forest.stats[:, : self.num_classes]),
                                np.ones(self.forest.num_trees).tolist())

    def _leaf_values(self, stats: np.ndarray) -> np.ndarray:
        return stats

    def raw_row(self, x: list[float]) -> list[float]:
        return self.leaf_sum.row(x)

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        return self.leaf_sum.batch(X)


@register_stage
class RandomForestClassificationModel(DecisionTreeClassificationModel):
    """rawPrediction = sum over trees of each leaf's normalised class counts, added in tree order."""

    spark_class = "org.apache.spark.ml.classification.RandomForestClassificationModel"
    known_params = CLASSIFIER_PARAMS | _TREE_PARAMS | _ENSEMBLE_PARAMS
    ensemble = True

    def _leaf_values(self, stats: np.ndarray) -> np.ndarray:
        totals = seq_sum(stats) if stats.shape[1] else np.zeros(len(stats))
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = stats / totals[:, None]
        return np.where(totals[:, None] != 0, norm, 0.0)  # Spark skips trees whose leaf has no weight


@register_stage
class GBTClassificationModel(_TreeMixin, ClassificationModel):
    """margin = sum of weight x leaf value; rawPrediction [-m, m]; p0 = 1 / (1 + e^(2m))."""

    spark_class = "org.apache.spark.ml.classification.GBTClassificationModel"
    known_params = CLASSIFIER_PARAMS | _TREE_PARAMS | _ENSEMBLE_PARAMS
    ensemble = True

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        if self.p("lossType", "logistic") != "logistic":
            raise self.refuse(f"lossType={self.p('lossType')!r}")
        self.forest, self.weights = self._load_trees()
        self.num_classes = 2
        self.num_features = meta.extra.get("numFeatures")
        self.leaf_sum = LeafSum(self.forest, self.forest.prediction[:, None], self.weights)

    def raw_row(self, x: list[float]) -> list[float]:
        m = self.leaf_sum.row(x)[0]
        return [-m, m]

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        m = self.leaf_sum.batch(X)[:, 0]
        return np.stack([-m, m], axis=1)

    def raw2prob_row(self, raw: list[float]) -> list[float]:
        p0 = 1.0 / (1.0 + safe_exp(-2.0 * raw[0]))
        return [p0, 1.0 - p0]

    def raw2prob_batch(self, raw: np.ndarray) -> np.ndarray:
        p0 = 1.0 / (1.0 + np.exp(-2.0 * raw[:, 0]))
        return np.stack([p0, 1.0 - p0], axis=1)


@register_stage
class DecisionTreeRegressionModel(_TreeMixin, RegressionModel):
    """prediction = the leaf's prediction."""

    spark_class = "org.apache.spark.ml.regression.DecisionTreeRegressionModel"
    known_params = PREDICTOR_PARAMS | _TREE_PARAMS | {"varianceCol"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.forest, self.weights = self._load_trees()
        self.num_features = meta.extra.get("numFeatures")
        self.leaf_sum = LeafSum(self.forest, self.forest.prediction[:, None], self._tree_weights())

    def _tree_weights(self) -> list[float]:
        return [1.0] * self.forest.num_trees

    def predict_row(self, x: list[float]) -> float:
        return self.leaf_sum.row(x)[0]

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return self.leaf_sum.batch(X)[:, 0]


@register_stage
class RandomForestRegressionModel(DecisionTreeRegressionModel):
    """prediction = mean of the trees' predictions (summed in tree order)."""

    spark_class = "org.apache.spark.ml.regression.RandomForestRegressionModel"
    known_params = PREDICTOR_PARAMS | _TREE_PARAMS | _ENSEMBLE_PARAMS
    ensemble = True

    def predict_row(self, x: list[float]) -> float:
        return self.leaf_sum.row(x)[0] / self.forest.num_trees

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return self.leaf_sum.batch(X)[:, 0] / self.forest.num_trees


@register_stage
class GBTRegressionModel(DecisionTreeRegressionModel):
    """prediction = sum of weight x tree prediction."""

    spark_class = "org.apache.spark.ml.regression.GBTRegressionModel"
    known_params = PREDICTOR_PARAMS | _TREE_PARAMS | _ENSEMBLE_PARAMS
    ensemble = True

    def _tree_weights(self) -> list[float]:
        return self.weights
