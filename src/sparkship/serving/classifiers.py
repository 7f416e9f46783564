"""More classifiers of a saved pipeline, named as in Spark: naive Bayes (multinomial, complement, Bernoulli,
Gaussian), linear SVM, multilayer perceptron, factorization machines and one-vs-rest.

Each reproduces Spark's ``transform()`` (``rawPrediction``, ``probability`` where Spark has one, ``prediction``)
on the row path (plain Python floats, summed in Spark's order) and the batch path (numpy), as
:class:`~sparkship.serving.predictors.ClassificationModel` describes.

    >>> from sparkship.serving import load
    >>> scorer = load("/tmp/nb_pipeline")                        # doctest: +SKIP
    >>> scorer.score_one({"a": 1.0, "b": 0.0})["probability"]     # doctest: +SKIP
    [0.31, 0.69]
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from sparkship.errors import NotFoundError
from sparkship.serving import reader
from sparkship.serving.base import Stage, StageBuilder, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.fm import FM_PARAMS, FMMixin
from sparkship.serving.numeric import dot_row, row_argmax, safe_exp, seq_sum, sigmoid, spark_argmax
from sparkship.serving.predictors import CLASSIFIER_PARAMS, PREDICTOR_PARAMS, ClassificationModel
from sparkship.serving.reader import StageMetadata, to_double
from sparkship.serving.signature import InvalidRecordError

_MIN_DOUBLE = -np.finfo(np.float64).max  # Scala's Double.MinValue


def softmax_row(raw: list[float], pos_inf_wins: bool = True) -> list[float]:
    """Spark's ``ml.impl.Utils.softmax``: subtract the max (NaN never is one); +Inf makes a one-hot vector.

    >>> softmax_row([0.0, 0.0])
    [0.5, 0.5]
    """
    mx = float(_MIN_DOUBLE)
    for i, v in enumerate(raw):
        if pos_inf_wins and v == math.inf:
            return [1.0 if j == i else 0.0 for j in range(len(raw))]
        if v > mx:
            mx = v
    e = [safe_exp(v - mx) for v in raw]
    total = 0.0
    for v in e:
        total += v
    return [v / total if total != 0 else math.nan for v in e]


def softmax_batch(raw: np.ndarray, pos_inf_wins: bool = True) -> np.ndarray:
    """Row-wise :func:`softmax_row`."""
    mx = np.maximum(np.where(np.isnan(raw), _MIN_DOUBLE, raw).max(axis=1, initial=_MIN_DOUBLE), _MIN_DOUBLE)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(raw - mx[:, None])
        out: np.ndarray = e / seq_sum(e)[:, None]
    if pos_inf_wins:
        inf = np.isposinf(raw)
        hit = inf.any(axis=1)
        if hit.any():
            out[hit] = 0.0
            out[np.flatnonzero(hit), np.argmax(inf[hit], axis=1)] = 1.0
    return out


# --- naive Bayes -----------------------------------------------------------------------------------------------

@register_stage
class NaiveBayesModel(ClassificationModel):
    """rawPrediction = log joint likelihoods per ``modelType``; probability = their softmax.

    multinomial: pi + theta.x; complement: theta.x less its log-sum-exp; bernoulli: pi + sum(log(1 - e^theta))
    + (theta - log(1 - e^theta)).x; gaussian: pi - (sum((x - theta)^2 / sigma) + sum(log sigma)) / 2.
    Multinomial and complement refuse negative (and NaN) features, Bernoulli anything but 0 and 1, as Spark does.
    """

    spark_class = "org.apache.spark.ml.classification.NaiveBayesModel"
    known_params = CLASSIFIER_PARAMS | {"smoothing", "modelType"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.model_type = self.p("modelType", "multinomial")
        if self.model_type not in ("multinomial", "complement", "bernoulli", "gaussian"):
            raise self.refuse(f"modelType={self.model_type!r}")
        data = reader.read_data(meta.path)[0]
        self.pi = reader.vector(data["pi"])
        self.theta = reader.matrix(data["theta"])
        self.num_classes, self.num_features = self.theta.shape
        if self.model_type == "gaussian":
            self.sigma = reader.matrix(data["sigma"])
            log_var = np.log(self.sigma)
            self.log_var_sum = [seq_sum(log_var[i:i + 1])[0] if log_var.shape[1] else 0.0
                                for i in range(self.num_classes)]
        if self.model_type == "bernoulli":
            neg = np.log1p(-np.exp(self.theta))
            self.weights = self.theta - neg
            self.bias = self.pi + (seq_sum(neg) if neg.shape[1] else 0.0)
        elif self.model_type == "multinomial":
            self.weights, self.bias = self.theta, self.pi
        else:
            self.weights, self.bias = self.theta, np.zeros(self.num_classes)
        self._w = self.weights.tolist()
        self._b = self.bias.tolist()

    # Spark's requireNonnegativeValues / requireZeroOneBernoulliValues look at the non-zero entries.
    def _check_row(self, x: list[float]) -> None:
        if self.model_type == "gaussian":
            return
        for v in x:
            if v != 0.0 and not (v == 1.0 if self.model_type == "bernoulli" else v > 0.0):
                raise InvalidRecordError(self.features_col, self._bad_value(v))

    def _bad_value(self, v: Any) -> str:
        if self.model_type == "bernoulli":
            return f"Bernoulli naive Bayes requires 0 or 1 feature values but found {v!r}"
        return f"Naive Bayes requires nonnegative feature values but found {v!r}"

    def _check_batch(self, b: Batch, X: np.ndarray) -> None:
        if self.model_type == "gaussian":
            return
        ok = (X == 0.0) | ((X == 1.0) if self.model_type == "bernoulli" else (X > 0.0))
        bad = ~ok.all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            b.fail(bad, self.features_col, self._bad_value(float(X[i][~ok[i]][0])))

    def raw_row(self, x: list[float]) -> list[float]:
        self._check_row(x)
        if self.model_type == "gaussian":
            return self._gaussian_row(x)
        raw = [b + dot_row(x, w) for w, b in zip(self._w, self._b)]
        if self.model_type == "complement":
            mx = max(raw)
            total = 0.0
            for v in raw:
                total += math.exp(v - mx)
            lse = math.log(total) + mx
            raw = [v - lse for v in raw]
        return raw

    def _gaussian_row(self, x: list[float]) -> list[float]:
        out = []
        for mu, var, pi, lvs in zip(self.theta.tolist(), self.sigma.tolist(), self.pi.tolist(), self.log_var_sum):
            s = 0.0
            for xj, m, v in zip(x, mu, var):
                d = xj - m
                s += d * d / v
            out.append(pi - (s + lvs) / 2)
        return out

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        if self.model_type == "gaussian":
            out = np.empty((len(X), self.num_classes))
            for i in range(self.num_classes):
                d = X - self.theta[i]
                s = seq_sum(d * d / self.sigma[i]) if X.shape[1] else np.zeros(len(X))
                out[:, i] = self.pi[i] - (s + self.log_var_sum[i]) / 2
            return out
        raw = X @ self.weights.T + self.bias
        if self.model_type == "complement":
            mx = raw.max(axis=1)
            lse = np.log(seq_sum(np.exp(raw - mx[:, None]))) + mx
            raw = raw - lse[:, None]
        scores: np.ndarray = raw
        return scores

    def batch(self, b: Batch) -> np.ndarray:
        self._check_batch(b, self._features(b))
        return super().batch(b)

    def raw2prob_row(self, raw: list[float]) -> list[float]:
        return softmax_row(raw)

    def raw2prob_batch(self, raw: np.ndarray) -> np.ndarray:
        return softmax_batch(raw)


# --- linear SVM ------------------------------------------------------------------------------------------------

@register_stage
class LinearSVCModel(ClassificationModel):
    """rawPrediction = [-m, m] with m = coefficients . x + intercept; prediction = 1 where m > ``threshold``.
    No probability column (Spark's LinearSVCModel has none)."""

    spark_class = "org.apache.spark.ml.classification.LinearSVCModel"
    known_params = (PREDICTOR_PARAMS | {"rawPredictionCol", "threshold", "regParam", "maxIter", "fitIntercept",
                                         "tol", "standardization", "aggregationDepth", "maxBlockSizeInMB"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.prob_col = ""
        data = reader.read_data(meta.path)[0]
        self.coef = reader.vector(data["coefficients"])
        self.intercept = float(data["intercept"])
        self.num_features = len(self.coef)
        self.threshold = to_double(self.p("threshold", 0.0))
        self._coef = self.coef.tolist()

    def raw_row(self, x: list[float]) -> list[float]:
        m = dot_row(x, self._coef) + self.intercept
        return [-m, m]

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        m = X @ self.coef + self.intercept
        return np.stack([-m, m], axis=1)

    # Without rawPredictionCol Spark predicts from the margin too: "probability" here is the raw vector.
    def raw2prob_row(self, raw: list[float]) -> list[float]:
        return raw

    def raw2prob_batch(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def raw2pred_row(self, raw: list[float]) -> float:
        return 1.0 if raw[1] > self.threshold else 0.0

    def raw2pred_batch(self, raw: np.ndarray) -> np.ndarray:
        return (raw[:, 1] > self.threshold).astype(np.float64)

    def prob2pred_row(self, prob: list[float]) -> float:
        return self.raw2pred_row(prob)

    def prob2pred_batch(self, prob: np.ndarray) -> np.ndarray:
        return self.raw2pred_batch(prob)


# --- multilayer perceptron -------------------------------------------------------------------------------------

@register_stage
class MultilayerPerceptronClassificationModel(ClassificationModel):
    """Affine layers (weights: per layer a column-major numOut x numIn matrix, then numOut biases), sigmoid
    between them; rawPrediction = the last affine layer's output, probability = its softmax."""

    spark_class = "org.apache.spark.ml.classification.MultilayerPerceptronClassificationModel"
    known_params = CLASSIFIER_PARAMS | {"layers", "blockSize", "solver", "maxIter", "tol", "seed", "stepSize",
                                        "initialWeights"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        layers = [int(n) for n in (self.p("layers") or data.get("layers") or [])]
        weights = reader.vector(data["weights"])
        expected = sum(a * b + b for a, b in zip(layers, layers[1:]))
        if len(layers) < 2 or len(weights) != expected:
            raise self.refuse(f"layers {layers} with {len(weights)} weights")
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        offset = 0
        for n_in, n_out in zip(layers, layers[1:]):
            w = weights[offset: offset + n_in * n_out].reshape(n_in, n_out).T.copy()  # column-major
            offset += n_in * n_out
            self.layers.append((w, weights[offset: offset + n_out].copy()))
            offset += n_out
        self.num_features, self.num_classes = layers[0], layers[-1]
        self._layers_l = [(w.tolist(), b.tolist()) for w, b in self.layers]

    def raw_row(self, x: list[float]) -> list[float]:
        a = list(x)
        last = len(self._layers_l) - 1
        for k, (w, b) in enumerate(self._layers_l):
            z = [dot_row(a, row) + bias for row, bias in zip(w, b)]
            a = z if k == last else [1.0 / (1.0 + safe_exp(-v)) for v in z]
        return a

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        a = X
        last = len(self.layers) - 1
        for k, (w, b) in enumerate(self.layers):
            z = a @ w.T + b
            a = z if k == last else 1.0 / (1.0 + np.exp(-z))
        return a

    # SoftmaxLayerWithCrossEntropyLoss: the max-subtracting softmax, without Utils.softmax's +Inf shortcut.
    def raw2prob_row(self, raw: list[float]) -> list[float]:
        return softmax_row(raw, pos_inf_wins=False)

    def raw2prob_batch(self, raw: np.ndarray) -> np.ndarray:
        return softmax_batch(raw, pos_inf_wins=False)


# --- factorization machines ------------------------------------------------------------------------------------


@register_stage
class FMClassificationModel(FMMixin, ClassificationModel):
    """rawPrediction = [-m, m] (m the FM margin); probability = [1 - sigmoid(m), sigmoid(m)]."""

    spark_class = "org.apache.spark.ml.classification.FMClassificationModel"
    known_params = CLASSIFIER_PARAMS | FM_PARAMS

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self._load_fm()
        self.num_classes = 2

    def raw_row(self, x: list[float]) -> list[float]:
        m = self.fm_margin_row(x)
        return [-m, m]

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        m = self.fm_margin_batch(X)
        return np.stack([-m, m], axis=1)

    def raw2prob_row(self, raw: list[float]) -> list[float]:
        p1 = sigmoid(raw[1])
        return [1.0 - p1, p1]

    def raw2prob_batch(self, raw: np.ndarray) -> np.ndarray:
        p1 = 1.0 / (1.0 + np.exp(-raw[:, 1]))
        return np.stack([1.0 - p1, p1], axis=1)


# --- one-vs-rest -----------------------------------------------------------------------------------------------

@register_stage
class OneVsRestModel(ClassificationModel):
    """rawPrediction[k] = rawPrediction[1] of binary model k (saved under ``model_<k>/``); prediction = argmax."""

    spark_class = "org.apache.spark.ml.classification.OneVsRestModel"
    known_params = PREDICTOR_PARAMS | {"rawPredictionCol", "classifier", "parallelism"}

    def __init__(self, meta: StageMetadata, build: StageBuilder) -> None:
        super().__init__(meta)
        self.prob_col = ""
        if not self.raw_col:
            # Spark then takes the max over a Scala Map, whose iteration order decides ties: not reproduced.
            raise self.refuse("rawPredictionCol=''")
        self.num_classes = int(meta.extra.get("numClasses", 0))
        self.models: list[ClassificationModel] = []
        for k in range(self.num_classes):
            sub = os.path.join(meta.path, f"model_{k}")
            if not os.path.isdir(sub):
                raise NotFoundError(f"{meta.path}: the one-vs-rest model has no folder model_{k}")
            model = build(reader.read_metadata(sub))
            if not isinstance(model, ClassificationModel):
                raise self.refuse(f"a {model.meta.short_class} as binary model {k}")
            model.features_col = self.features_col  # Spark sets each model's featuresCol to its own
            self.models.append(model)
        sizes = {m.num_features for m in self.models if m.num_features is not None}
        self.num_features = sizes.pop() if len(sizes) == 1 else None

    @classmethod
    def load(cls, meta: StageMetadata, build: StageBuilder) -> Stage:
        return cls(meta, build)

    def raw_row(self, x: list[float]) -> list[float]:
        return [m.raw_row(x)[1] for m in self.models]

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        if not self.models:
            return np.zeros((len(X), 0))
        return np.stack([m.raw_batch(X)[:, 1] for m in self.models], axis=1)

    def batch(self, b: Batch) -> np.ndarray:
        for m in self.models:  # a binary model that refuses some input (naive Bayes) refuses it here too
            check = getattr(m, "_check_batch", None)
            if check is not None:
                check(b, self._features(b))
        return super().batch(b)

    def raw2pred_row(self, raw: list[float]) -> float:
        return float(row_argmax(raw))

    def raw2pred_batch(self, raw: np.ndarray) -> np.ndarray:
        return spark_argmax(raw).astype(np.float64)
