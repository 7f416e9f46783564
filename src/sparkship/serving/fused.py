"""One weighted sum for the common linear tail of a pipeline: VectorAssembler (numbers only) -> StandardScaler ->
LogisticRegression or LinearRegression, on the batch path.

The three stages would build an (n, d) features matrix, scale it into a second one, then multiply. When neither
intermediate vector is wanted as an output nor read by a later stage, the margins are computed straight from the
input columns in cache-sized row blocks: ``margin = (x - mean) @ (scale * coefficients) + intercept``. The
terms are the ones Spark's stages multiply (NaN and infinities propagate alike); only the rounding order differs
(relative 1e-16). Any null input or NaN margin sends the batch through the three stages instead, which raise or
compute exactly as Spark does.

    >>> fused = FusedLinear.find(scorer.stages, wanted=["probability"])      # doctest: +SKIP
    >>> fused.start, fused.stop                                              # doctest: +SKIP
    (0, 3)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparkship.serving.base import Stage
from sparkship.serving.batch import Batch
from sparkship.serving.predictors import LinearRegressionModel, LogisticRegressionModel
from sparkship.serving.scalers import StandardScalerModel
from sparkship.serving.stages import VectorAssembler

_BLOCK = 4096  # rows per block: a (4096, d) float64 buffer stays in L2 for d up to ~60


@dataclass
class FusedLinear:
    """Stages ``start:stop`` of a pipeline replaced by one blocked matrix product on the batch path."""

    start: int
    stop: int
    assembler: VectorAssembler
    model: LogisticRegressionModel | LinearRegressionModel
    shift: np.ndarray  # (d,)
    weights: np.ndarray  # (d, k)
    intercepts: np.ndarray  # (k,)

    @classmethod
    def find(cls, stages: Sequence[Stage], wanted: Sequence[str]) -> FusedLinear | None:
        """The first fusable VectorAssembler -> StandardScaler -> linear model run in planned ``stages``."""
        for i in range(len(stages) - 2):
            va, sc, model = stages[i], stages[i + 1], stages[i + 2]
            if not (isinstance(va, VectorAssembler) and isinstance(sc, StandardScalerModel)
                    and isinstance(model, (LogisticRegressionModel, LinearRegressionModel))):
                continue
            if not (va.handle == "error" and va.scalar_only and sc.input_cols[0] == va.output_cols[0]
                    and model.features_col == sc.output_cols[0] and _dense(model)):
                continue
            hidden = {va.output_cols[0], sc.output_cols[0]}
            read_later = {c for st in stages[i + 3:] for c in st.input_cols}
            if hidden & (set(wanted) | read_later):
                continue
            return cls._build(i, va, sc, model)
        return None

    @classmethod
    def _build(cls, i: int, va: VectorAssembler, sc: StandardScalerModel,
               model: LogisticRegressionModel | LinearRegressionModel) -> FusedLinear:
        if isinstance(model, LogisticRegressionModel):
            coef, intercepts = model.coef.T, np.asarray(model.intercept, dtype=np.float64)
        else:
            coef, intercepts = model.coef.reshape(-1, 1), np.array([model.intercept])
        scale = sc.scale if sc.scale is not None else np.ones(len(sc.shift))
        weights = np.ascontiguousarray(scale[:, None] * coef)
        return cls(i, i + 3, va, model, np.asarray(sc.shift, dtype=np.float64), weights, intercepts)

    def margins(self, b: Batch) -> np.ndarray | None:
        """(n, k) margins from the assembler's input columns, or None when the stages must run one by one."""
        cols = [b.cols[c] for c in self.assembler.input_cols]
        if any(c in b.nulls for c in self.assembler.input_cols):
            return None
        n, d = b.n, len(cols)
        out = np.empty((n, self.weights.shape[1]), dtype=np.float64)
        buf = np.empty((min(n, _BLOCK), d), dtype=np.float64)
        for lo in range(0, n, _BLOCK):
            hi = min(n, lo + _BLOCK)
            block = buf[: hi - lo]
            for j, x in enumerate(cols):
                block[:, j] = x[lo:hi]
            block -= self.shift
            np.matmul(block, self.weights, out=out[lo:hi])
        out += self.intercepts
        if np.isnan(out).any():  # a NaN input (or inf - inf): let the stages raise or compute it exactly
            return None
        return out

    def batch(self, b: Batch) -> bool:
        """Score ``b`` through the fused stages; False (nothing done) when it must take the stage-by-stage path."""
        m = self.margins(b)
        if m is None:
            return False
        if isinstance(self.model, LogisticRegressionModel):
            self.model.set_outputs(b, self.model.raw_from_margins(m))
        elif self.model.prediction_col:
            b.set(self.model.prediction_col, m[:, 0], "double")
        return True


def _dense(model: LogisticRegressionModel | LinearRegressionModel) -> bool:
    """Sparse-stored (L1) coefficients skip their zero terms in Spark (a NaN there never counts): not fused."""
    if isinstance(model, LogisticRegressionModel):
        return model.dense_terms
    return len(model._idx) == len(model.coef)
