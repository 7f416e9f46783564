"""Models fitted by xgboost's Spark estimators (``SparkXGBClassifier``, ``SparkXGBRegressor``), scored through
xgboost's own ``Booster`` without a JVM.

``model.write().save(path)`` writes the params to ``metadata/`` like any Spark ML stage and the booster, as
xgboost's JSON model split into lines of text, to ``model/part-*``. The booster is loaded from those lines and
predicts with ``Booster.inplace_predict``, called as ``transform()`` calls it (through the scikit-learn wrapper):
features as float32 (``features_cols`` scalar columns, or the ``featuresCol`` vector), ``missing`` from the
params, the early-stopping best iteration when the booster has one. A classifier's outputs follow
``xgboost.spark``: binary ``rawPrediction = [-m, m]`` and ``probability = [1 - expit(m), expit(m)]`` from the
margin ``m``, multiclass ``rawPrediction`` = the margins and ``probability`` = their softmax, computed in
float32 as xgboost does, ``prediction`` the argmax of ``probability``.

xgboost (the ``xgboost`` extra) is imported when such a model is loaded, not with this module.

    >>> from sparkship.serving import load
    >>> load("/models/xgb_churn/1").score_one({"x1": 0.3, "x2": -1.2})          # doctest: +SKIP
    {'rawPrediction': [-2.15, 2.15], 'probability': [0.104, 0.896], 'prediction': 1.0}
"""
from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from sparkship.serving.base import Schema, UnsupportedModelError, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.numeric import EMPTY
from sparkship.serving.predictors import Model
from sparkship.serving.reader import StageMetadata, to_double
from sparkship.serving.signature import InvalidRecordError

XGBOOST_EXTRA_HINT = "pip install 'sparkship[xgboost]'"
# Params that change what transform() writes and that the scorer reproduces (the refused ones are checked in
# _XGBModel); every other param of xgboost.spark only trains (what was learned is in the booster).
_TRANSFORM_PARAMS = frozenset({"featuresCol", "features_cols", "predictionCol", "probabilityCol",
                               "rawPredictionCol", "missing", "iteration_range", "booster", "device", "use_gpu"})
_REFUSED_COLUMNS = ("base_margin_col", "pred_contrib_col")
# Hadoop's text reader splits lines at \n, \r and \r\n: the writer's chunks of the JSON model are those lines.
_LINES = re.compile(r"\r\n|\n|\r")


def _xgboost(meta: StageMetadata) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
    """The ``xgboost`` module and scipy's ``expit`` and ``softmax`` (what xgboost.spark computes with)."""
    try:
        # Optional dependency (the `xgboost` extra); scipy comes with xgboost.
        import xgboost
        from scipy.special import expit, softmax
    except ImportError as exc:
        raise UnsupportedModelError(
            f"stage {meta.uid} ({meta.class_name}) needs the xgboost package (no module {exc.name}): "
            f"{XGBOOST_EXTRA_HINT}") from None
    return xgboost, expit, softmax


def read_booster_json(stage_dir: str) -> str:
    """The booster's JSON model as ``SparkXGBModelWriter`` saved it: the lines of ``model/part-*``, joined."""
    parts = sorted(p for p in glob.glob(os.path.join(stage_dir, "model", "part-*")) if not p.endswith(".crc"))
    if not parts:
        raise UnsupportedModelError(f"{stage_dir}/model holds no part-* file: the saved xgboost model is incomplete")
    chunks: list[str] = []
    for path in parts:
        with open(path, encoding="utf-8", newline="") as fh:
            chunks.extend(line for line in _LINES.split(fh.read()) if line)
    return "".join(chunks)


class _XGBModel(Model):
    """The shared part: the booster, the feature columns, the call to ``inplace_predict``."""

    predict_type = "value"

    def __init__(self, meta: StageMetadata) -> None:
        # The base class refuses set params it does not know; only those that change transform() are checked.
        super().__init__(replace(meta, set_params=meta.set_params & _TRANSFORM_PARAMS))
        self.meta = meta
        xgboost, self._expit, self._softmax = _xgboost(meta)
        for name in _REFUSED_COLUMNS:
            if self.p(name):
                raise self.refuse(f"{name}={self.p(name)!r}")
        if self.p("enable_sparse_data_optim"):
            raise self.refuse("enable_sparse_data_optim=True (absent vector entries are missing values)")
        if self.p("booster") == "gblinear":
            raise self.refuse("booster='gblinear'")
        self.booster = xgboost.Booster()
        self.booster.load_model(bytearray(read_booster_json(meta.path).encode("utf-8")))
        if "c" in (self.booster.feature_types or []):
            raise self.refuse("categorical features")
        self.num_features = self.booster.num_features()
        self.features_cols = list(self.p("features_cols") or [])
        self.input_cols = self.features_cols or [self.features_col]
        self.missing = to_double("NaN" if self.p("missing") is None else self.p("missing"))
        self.iteration_range = self._iteration_range()

    def _iteration_range(self) -> tuple[int, int]:
        """As XGBModel.predict: the param when set, else up to the early-stopping best iteration, else all."""
        given = self.p("iteration_range")
        if given and int(given[1]) != 0:
            return int(given[0]), int(given[1])
        best = self.booster.attr("best_iteration")
        return (0, int(best) + 1) if best is not None else (0, 0)

    def input_type(self, col: str) -> str:
        return "double" if self.features_cols else "vector"

    def expected_size(self, col: str) -> int | None:
        return None if self.features_cols else super().expected_size(col)

    def _plan_features(self, schema: Schema) -> None:
        if not self.features_cols:
            super()._plan_features(schema)
            return
        for c in self.features_cols:
            self._need(schema, c, ("numeric",))
        if len(self.features_cols) != self.num_features:
            raise self.refuse(f"{len(self.features_cols)} features_cols for a booster of {self.num_features} "
                              "features")

    def _matrix(self, b: Batch) -> np.ndarray:
        """The features as float32 rows (xgboost.spark casts doubles to float; a null is a missing value)."""
        if not self.features_cols:
            return np.asarray(self._features(b), dtype=np.float32)
        X = np.empty((b.n, len(self.features_cols)), dtype=np.float32)
        for j, c in enumerate(self.features_cols):
            X[:, j] = b.cols[c]
            nulls = b.null_mask(c)
            if nulls is not None:
                X[nulls, j] = np.nan
        return X

    def _row_matrix(self, r: dict[str, Any]) -> np.ndarray:
        if not self.features_cols:
            return np.asarray([self._features_row(r)], dtype=np.float32)
        return np.asarray([[np.nan if r[c] is None else r[c] for c in self.features_cols]], dtype=np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The booster's float32 predictions (margins for a classifier), as transform() computes them."""
        if X.shape[0] == 0:
            return np.empty((0,), dtype=np.float32)
        if X.shape[1] != self.num_features:
            raise InvalidRecordError(self.input_cols[0], f"{X.shape[1]} features; the booster was trained on "
                                     f"{self.num_features}")
        return np.asarray(self.booster.inplace_predict(X, iteration_range=self.iteration_range,
                                                       predict_type=self.predict_type, missing=self.missing,
                                                       validate_features=False))


@register_stage
class SparkXGBRegressorModel(_XGBModel):
    """``prediction``: the booster's prediction (float32, widened to double as Spark stores it)."""

    spark_class = "xgboost.spark.estimator.SparkXGBRegressorModel"
    known_params = _TRANSFORM_PARAMS

    def plan(self, schema: Schema) -> None:
        self._plan_features(schema)
        self.output_cols = [self.prediction_col] if self.prediction_col else []
        for c in self.output_cols:
            schema[c] = ("double", None)

    def row(self, r: dict[str, Any]) -> bool:
        if self.prediction_col:
            r[self.prediction_col] = float(self.predict(self._row_matrix(r))[0])
        return True

    def batch(self, b: Batch) -> np.ndarray:
        if self.prediction_col:
            b.set(self.prediction_col, self.predict(self._matrix(b)).astype(np.float64), "double")
        return EMPTY


@register_stage
class SparkXGBClassifierModel(_XGBModel):
    """``rawPrediction``, ``probability`` and ``prediction`` from the booster's margins (see the module)."""

    spark_class = "xgboost.spark.estimator.SparkXGBClassifierModel"
    known_params = _TRANSFORM_PARAMS
    predict_type = "margin"

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.raw_col = self.p("rawPredictionCol", "rawPrediction") or ""
        self.prob_col = self.p("probabilityCol", "probability") or ""
        self.output_cols = self.produced_cols()
        # num_class is 0 for a binary objective (one margin), the number of classes otherwise
        config = json.loads(self.booster.save_config())
        self.num_classes = max(int(config["learner"]["learner_model_param"]["num_class"]), 2)

    def produced_cols(self) -> list[str]:
        return [c for c in (self.raw_col, self.prediction_col, self.prob_col) if c]

    def plan(self, schema: Schema) -> None:
        self._plan_features(schema)
        for c in (self.raw_col, self.prob_col):
            if c:
                schema[c] = ("vector", self.num_classes)
        if self.prediction_col:
            schema[self.prediction_col] = ("double", None)

    def outputs(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """rawPrediction, probability (float64 rows of float32 values) and prediction, as xgboost.spark."""
        margins = self.predict(X)
        if margins.ndim == 1:
            ones = self._expit(margins)
            raw, prob = np.vstack((-margins, margins)).T, np.vstack((1.0 - ones, ones)).T
        else:
            raw, prob = margins, self._softmax(margins, axis=1)
        if len(X) == 0:
            raw = prob = np.empty((0, self.num_classes), dtype=np.float32)
        return raw.astype(np.float64), prob.astype(np.float64), np.argmax(prob, axis=1).astype(np.float64)

    def _set(self, put: Callable[[str, Any, str], None], raw: Any, prob: Any, pred: Any) -> None:
        if self.raw_col:
            put(self.raw_col, raw, "vector")
        if self.prob_col:
            put(self.prob_col, prob, "vector")
        if self.prediction_col:
            put(self.prediction_col, pred, "double")

    def row(self, r: dict[str, Any]) -> bool:
        raw, prob, pred = self.outputs(self._row_matrix(r))
        self._set(lambda c, v, _t: r.__setitem__(c, v), raw[0].tolist(), prob[0].tolist(), float(pred[0]))
        return True

    def batch(self, b: Batch) -> np.ndarray:
        raw, prob, pred = self.outputs(self._matrix(b))
        self._set(b.set, raw, prob, pred)
        return EMPTY


__all__ = ["SparkXGBClassifierModel", "SparkXGBRegressorModel", "XGBOOST_EXTRA_HINT", "read_booster_json"]
