"""More regressors of a saved pipeline, named as in Spark: generalized linear regression (every family and link,
``linkPredictionCol``, ``offsetCol``), isotonic regression, AFT survival regression (with quantiles) and
factorization machines.

Each reproduces Spark's ``transform()`` on the row path (plain Python floats) and the batch path (numpy), as
:class:`~sparkship.serving.predictors.RegressionModel` describes.

    >>> from sparkship.serving import load
    >>> load("/tmp/glm_pipeline").score_one({"a": 1.0, "exposure": 0.3})   # doctest: +SKIP
    {'prediction': 2.17}
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sparkship.serving import reader
from sparkship.serving.base import Schema, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.fm import FM_PARAMS, FMMixin
from sparkship.serving.numeric import EMPTY, dot_row, safe_exp
from sparkship.serving.predictors import PREDICTOR_PARAMS, RegressionModel
from sparkship.serving.reader import StageMetadata, to_double
from sparkship.serving.signature import InvalidRecordError


def _pow(x: float, y: float) -> float:
    """Java's ``Math.pow``: NaN (not an exception) for a negative base and a fractional exponent."""
    try:
        return math.pow(x, y)
    except (ValueError, ZeroDivisionError):
        return math.nan if x < 0 else math.inf
    except OverflowError:
        return math.inf


def _erf_batch(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)
    return out


def _probit_row(eta: float) -> float:
    return 0.5 * (1.0 + math.erf(eta / math.sqrt(2.0))) if eta == eta else math.nan


def _probit_batch(eta: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf_batch(eta / math.sqrt(2.0)))


# Inverse links (``Link.unlink``): name -> (row, batch).
def _power_unlink(power: float) -> tuple[Callable[[float], float], Callable[[np.ndarray], np.ndarray]]:
    """The inverse of the link ``mu ** power`` on the row and batch paths."""

    def row(e: float) -> float:
        return _pow(e, 1.0 / power)

    def batch(e: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.power(e, 1.0 / power)
        return out

    return row, batch


_UNLINK: dict[str, tuple[Callable[[float], float], Callable[[np.ndarray], np.ndarray]]] = {
    "identity": (lambda e: e, lambda e: e),
    "log": (safe_exp, np.exp),
    "logit": (lambda e: 1.0 / (1.0 + safe_exp(-1.0 * e)), lambda e: 1.0 / (1.0 + np.exp(-1.0 * e))),
    "inverse": (lambda e: 1.0 / e if e != 0 else math.copysign(math.inf, e), lambda e: 1.0 / e),
    "probit": (_probit_row, _probit_batch),
    "cloglog": (lambda e: 1.0 - safe_exp(-1.0 * safe_exp(e)), lambda e: 1.0 - np.exp(-1.0 * np.exp(e))),
    "sqrt": (lambda e: e * e, lambda e: e * e),
}
_FAMILY_LINK = {"gaussian": "identity", "binomial": "logit", "poisson": "log", "gamma": "inverse"}
_EPS = 1e-16  # GeneralizedLinearRegression.epsilon
_MAX = float(np.finfo(np.float64).max)


def _project_row(family: str, mu: float) -> float:
    """``Family.project``: Spark clamps the fitted mean into the family's range."""
    if family == "gaussian":
        return -_MAX if mu == -math.inf else (_MAX if mu == math.inf else mu)
    if mu < _EPS:
        return _EPS
    if family == "binomial":
        return 1.0 - _EPS if mu > 1.0 - _EPS else mu
    return _MAX if mu in (math.inf, -math.inf) else mu  # poisson, gamma, tweedie


def _project_batch(family: str, mu: np.ndarray) -> np.ndarray:
    if family == "gaussian":
        return np.where(np.isneginf(mu), -_MAX, np.where(np.isposinf(mu), _MAX, mu))
    out = np.where(mu < _EPS, _EPS, mu)
    if family == "binomial":
        return np.where(out > 1.0 - _EPS, 1.0 - _EPS, out)
    return np.where(np.isinf(out), _MAX, out)
_TWEEDIE_LINKS = {0.0: "log", 1.0: "identity", -1.0: "inverse", 0.5: "sqrt"}
_VARIANCE_FAMILY = {0.0: "gaussian", 1.0: "poisson", 2.0: "gamma"}


@register_stage
class GeneralizedLinearRegressionModel(RegressionModel):
    """eta = coefficients . x + intercept + offset; prediction = unlink(eta); ``linkPredictionCol`` = eta.

    The link is Spark's ``FamilyAndLink``: ``link`` when set (``linkPower`` for tweedie), else the family's
    default (tweedie: power 1 - variancePower); the prediction is clamped into the family's range as Spark's
    ``Family.project`` does. A null offset gives a null prediction, as Spark's UDF does.
    """

    spark_class = "org.apache.spark.ml.regression.GeneralizedLinearRegressionModel"
    known_params = PREDICTOR_PARAMS | {"family", "link", "linkPower", "variancePower", "linkPredictionCol",
                                        "offsetCol", "fitIntercept", "maxIter", "tol", "regParam", "solver",
                                        "aggregationDepth"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        self.coef = reader.vector(data["coefficients"])
        self.intercept = float(data["intercept"])
        self.num_features = len(self.coef)
        self._coef = self.coef.tolist()
        self.link_name, self.link_power = self._link()
        if self.link_name == "power":
            unlink_row, unlink_batch = _power_unlink(self.link_power)
        else:
            unlink_row, unlink_batch = _UNLINK[self.link_name]
        fam = self.family = self._family()
        # FamilyAndLink.fitted: the family projects the unlinked value into its range.
        self._unlink_row: Callable[[float], float] = lambda e: _project_row(fam, unlink_row(e))
        self._unlink_batch: Callable[[np.ndarray], np.ndarray] = lambda e: _project_batch(fam, unlink_batch(e))
        self.link_col = self.p("linkPredictionCol") or ""
        self.offset_col = (self.p("offsetCol") or "") if meta.is_set("offsetCol") else ""
        if self.offset_col:
            self.input_cols = [self.features_col, self.offset_col]

    def _family(self) -> str:
        family = str(self.p("family", "gaussian")).lower()
        if family == "tweedie":
            return _VARIANCE_FAMILY.get(to_double(self.p("variancePower", 0.0)), "tweedie")
        return family

    def _link(self) -> tuple[str, float]:
        family = str(self.p("family", "gaussian")).lower()
        if family == "tweedie":
            if self.meta.is_set("linkPower"):
                lp = to_double(self.p("linkPower"))
            else:
                vp = to_double(self.p("variancePower", 0.0))
                if vp in _VARIANCE_FAMILY:
                    return _FAMILY_LINK[_VARIANCE_FAMILY[vp]], math.nan
                lp = 1.0 - vp
            if lp in _TWEEDIE_LINKS:
                return _TWEEDIE_LINKS[lp], lp
            return "power", lp
        if family not in _FAMILY_LINK:
            raise self.refuse(f"family={family!r}")
        link = str(self.p("link")).lower() if self.meta.is_set("link") else _FAMILY_LINK[family]
        if link not in _UNLINK:
            raise self.refuse(f"link={link!r}")
        return link, math.nan

    def input_type(self, col: str) -> str:
        return "double" if col == self.offset_col else "vector"

    def produced_cols(self) -> list[str]:
        return [c for c in (self.link_col, self.prediction_col) if c]

    def plan(self, schema: Schema) -> None:
        self._plan_features(schema)
        if self.offset_col:
            self._need(schema, self.offset_col, ("numeric",))
        self.output_cols = self.produced_cols()
        for o in self.output_cols:
            schema[o] = ("double", None)

    def row(self, r: dict[str, Any]) -> bool:
        x = self._features_row(r)
        offset = float(r[self.offset_col]) if self.offset_col and r[self.offset_col] is not None else (
            None if self.offset_col else 0.0)
        eta = None if offset is None else dot_row(x, self._coef) + self.intercept + offset
        if self.link_col:
            r[self.link_col] = eta
        if self.prediction_col:
            r[self.prediction_col] = None if eta is None else self._unlink_row(eta)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        X = self._features(b)
        nulls = None
        offset: Any = 0.0
        if self.offset_col:
            offset = b.cols[self.offset_col].astype(np.float64)
            nulls = b.null_mask(self.offset_col)
        eta = X @ self.coef + self.intercept + offset
        if nulls is not None:
            eta = np.where(nulls, np.nan, eta)
        if self.link_col:
            b.set(self.link_col, eta, "double", nulls)
        if self.prediction_col:
            with np.errstate(all="ignore"):
                b.set(self.prediction_col, self._unlink_batch(eta), "double", nulls)
        return EMPTY


# --- isotonic regression ---------------------------------------------------------------------------------------

def _java_binary_search(a: list[float], key: float) -> int:
    """``java.util.Arrays.binarySearch(double[], double)``: index if found, else -(insertion point) - 1."""
    lo, hi = 0, len(a) - 1
    kb = _double_bits(key)
    while lo <= hi:
        mid = (lo + hi) >> 1
        v = a[mid]
        if v < key:
            lo = mid + 1
        elif v > key:
            hi = mid - 1
        else:
            vb = _double_bits(v)
            if vb == kb:
                return mid
            if vb < kb:  # (-0.0, 0.0) or (not NaN, NaN)
                lo = mid + 1
            else:
                hi = mid - 1
    return -(lo + 1)


def _double_bits(v: float) -> int:
    """``Double.doubleToLongBits`` as a signed 64-bit int (every NaN collapsed to the canonical one)."""
    if v != v:
        return 0x7FF8000000000000
    return int(np.array(v, dtype=np.float64).view(np.int64))


def _java_binary_search_batch(a: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """:func:`_java_binary_search` for many keys at once (the same steps, in lockstep)."""
    n = len(keys)
    lo = np.zeros(n, dtype=np.int64)
    hi = np.full(n, len(a) - 1, dtype=np.int64)
    found = np.full(n, -1, dtype=np.int64)
    kb = np.where(np.isnan(keys), 0x7FF8000000000000, keys.view(np.int64))
    bits = np.where(np.isnan(a), 0x7FF8000000000000, a.view(np.int64))
    active = lo <= hi
    while active.any():
        mid = (lo + hi) >> 1
        m = np.clip(mid, 0, max(len(a) - 1, 0))
        v = a[m]
        less, more = v < keys, v > keys
        vb = bits[m]
        go_right = active & (less | (~less & ~more & (vb < kb)))
        go_left = active & (more | (~less & ~more & (vb > kb)))
        hit = active & ~less & ~more & (vb == kb)
        found[hit] = mid[hit]
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(go_left, mid - 1, hi)
        active = active & ~hit & (lo <= hi)
    return np.where(found >= 0, found, -(lo + 1))


@register_stage
class IsotonicRegressionModel(RegressionModel):
    """Piecewise-linear interpolation between ``boundaries`` (clamped outside them), as mllib's
    ``IsotonicRegressionModel.predict``; a vector input is read at ``featureIndex``. A null double gives null."""

    spark_class = "org.apache.spark.ml.regression.IsotonicRegressionModel"
    known_params = PREDICTOR_PARAMS | {"isotonic", "featureIndex"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        self.boundaries = np.asarray(data["boundaries"], dtype=np.float64)
        self.predictions = np.asarray(data["predictions"], dtype=np.float64)
        if len(self.boundaries) == 0 or len(self.boundaries) != len(self.predictions):
            raise self.refuse(f"{len(self.boundaries)} boundaries with {len(self.predictions)} predictions")
        self.feature_index = int(self.p("featureIndex", 0))
        self._b: list[float] = self.boundaries.tolist()
        self._p: list[float] = self.predictions.tolist()
        self.vector_input = True

    def input_type(self, col: str) -> str:
        # A saved model does not say whether it read a double or a vector column: a set featureIndex means vector.
        return "vector" if self.meta.is_set("featureIndex") else "double"

    def plan(self, schema: Schema) -> None:
        t, size = self._need(schema, self.features_col, ("double", "vector"))
        self.vector_input = t == "vector"
        if self.vector_input and size is not None and self.feature_index >= size:
            raise self.refuse(f"featureIndex {self.feature_index} of a vector of size {size}")
        self.output_cols = [self.prediction_col] if self.prediction_col else []
        for o in self.output_cols:
            schema[o] = ("double", None)

    def predict_value(self, x: float) -> float:
        """The prediction for feature value ``x`` (the row path's predict_row, on a scalar)."""
        b, p = self._b, self._p
        found = _java_binary_search(b, x)
        ins = -found - 1
        if ins == 0:
            return p[0]
        if ins == len(b):
            return p[-1]
        if found < 0:
            x1, y1, x2, y2 = b[ins - 1], p[ins - 1], b[ins], p[ins]
            return y1 + (y2 - y1) * (x - x1) / (x2 - x1)
        return p[found]

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        b, p = self.boundaries, self.predictions
        found = _java_binary_search_batch(b, x)
        ins = -found - 1
        lo = np.clip(ins - 1, 0, len(b) - 1)
        hi = np.clip(ins, 0, len(b) - 1)
        with np.errstate(all="ignore"):
            interp = p[lo] + (p[hi] - p[lo]) * (x - b[lo]) / (b[hi] - b[lo])
        out = np.where(found >= 0, p[np.clip(found, 0, len(b) - 1)], interp)
        out = np.where(ins == 0, p[0], out)
        pred: np.ndarray = np.where(ins == len(b), p[-1], out)
        return pred

    def row(self, r: dict[str, Any]) -> bool:
        if not self.prediction_col:
            return True
        v = r[self.features_col]
        if v is None:
            if self.vector_input:
                raise InvalidRecordError(self.features_col, "features vector is null")
            r[self.prediction_col] = None
            return True
        x = v[self.feature_index] if self.vector_input else float(v)
        r[self.prediction_col] = self.predict_value(x)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        if not self.prediction_col:
            return EMPTY
        if self.vector_input:
            x = self._features(b)[:, self.feature_index]
            nulls = None
        else:
            x = b.cols[self.features_col].astype(np.float64)
            nulls = b.null_mask(self.features_col)
        pred = self.predict_batch(x)
        b.set(self.prediction_col, pred if nulls is None else np.where(nulls, np.nan, pred), "double", nulls)
        return EMPTY


# --- AFT survival regression -----------------------------------------------------------------------------------

@register_stage
class AFTSurvivalRegressionModel(RegressionModel):
    """prediction = exp(coefficients . x + intercept); quantiles = prediction x exp(log(-log(1 - q)) x scale)
    for each of ``quantileProbabilities`` when ``quantilesCol`` is set."""

    spark_class = "org.apache.spark.ml.regression.AFTSurvivalRegressionModel"
    known_params = PREDICTOR_PARAMS | {"censorCol", "quantileProbabilities", "quantilesCol", "fitIntercept",
                                        "maxIter", "tol", "aggregationDepth", "maxBlockSizeInMB"}

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        self.coef = reader.vector(data["coefficients"])
        self.intercept = float(data["intercept"])
        self.scale = float(data["scale"])
        self.num_features = len(self.coef)
        self._coef = self.coef.tolist()
        probs = [to_double(q) for q in self.p("quantileProbabilities", [])]
        self.quantile_factors = [math.exp(math.log(-math.log1p(-q)) * self.scale) for q in probs]
        self._qf = np.asarray(self.quantile_factors)
        self.quantiles_col = self.p("quantilesCol") or ""

    def produced_cols(self) -> list[str]:
        return [c for c in (self.prediction_col, self.quantiles_col) if c]

    def plan(self, schema: Schema) -> None:
        super().plan(schema)
        if self.quantiles_col:
            schema[self.quantiles_col] = ("vector", len(self.quantile_factors))
            self.output_cols = self.produced_cols()

    def predict_row(self, x: list[float]) -> float:
        return safe_exp(dot_row(x, self._coef) + self.intercept)

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            lam: np.ndarray = np.exp(X @ self.coef + self.intercept)
        return lam

    def row(self, r: dict[str, Any]) -> bool:
        lam = self.predict_row(self._features_row(r))
        if self.prediction_col:
            r[self.prediction_col] = lam
        if self.quantiles_col:
            r[self.quantiles_col] = [f * lam for f in self.quantile_factors]
        return True

    def batch(self, b: Batch) -> np.ndarray:
        lam = self.predict_batch(self._features(b))
        if self.prediction_col:
            b.set(self.prediction_col, lam, "double")
        if self.quantiles_col:
            b.set(self.quantiles_col, self._qf[None, :] * lam[:, None], "vector")
        return EMPTY


# --- factorization machines ------------------------------------------------------------------------------------

@register_stage
class FMRegressionModel(FMMixin, RegressionModel):
    """prediction = the factorization-machine margin (see :class:`~sparkship.serving.classifiers.FMMixin`)."""

    spark_class = "org.apache.spark.ml.regression.FMRegressionModel"
    known_params = PREDICTOR_PARAMS | FM_PARAMS

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self._load_fm()

    def predict_row(self, x: list[float]) -> float:
        return self.fm_margin_row(x)

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return self.fm_margin_batch(X)


__all__ = ["AFTSurvivalRegressionModel", "FMRegressionModel", "GeneralizedLinearRegressionModel",
           "IsotonicRegressionModel"]
