"""The factorization-machine margin shared by FMClassificationModel and FMRegressionModel."""
from __future__ import annotations

import numpy as np

from sparkship.serving import reader
from sparkship.serving.numeric import dot_row, seq_sum
from sparkship.serving.reader import StageMetadata

FM_PARAMS = frozenset({"factorSize", "fitIntercept", "fitLinear", "regParam", "miniBatchFraction", "initStd",
                        "maxIter", "stepSize", "tol", "solver", "seed"})


class FMMixin:
    """The factorization-machine margin: intercept + linear . x + sum over factors f of
    ((sum_i v_if x_i)^2 - sum_i (v_if x_i)^2) / 2 (features visited in index order, zeros skipped)."""

    meta: StageMetadata
    num_features: int | None

    def _load_fm(self) -> None:
        data = reader.read_data(self.meta.path)[0]
        self.fm_intercept = float(data["intercept"])
        self.fm_linear = reader.vector(data["linear"])
        self.fm_factors = reader.matrix(data["factors"])  # numFeatures x factorSize
        self.num_features = len(self.fm_linear)
        self._lin = self.fm_linear.tolist()
        self._fac_t = self.fm_factors.T.tolist()

    def fm_margin_row(self, x: list[float]) -> float:
        m = self.fm_intercept + dot_row(x, self._lin)
        nz = [(i, v) for i, v in enumerate(x) if v != 0.0]
        for col in self._fac_t:
            sum_sq, s = 0.0, 0.0
            for i, v in nz:
                vx = col[i] * v
                sum_sq += vx * vx
                s += vx
            m += 0.5 * (s * s - sum_sq)
        return m

    def fm_margin_batch(self, X: np.ndarray) -> np.ndarray:
        m: np.ndarray = self.fm_intercept + X @ self.fm_linear
        for f in range(self.fm_factors.shape[1]):
            vx = X * self.fm_factors[:, f]
            s = seq_sum(vx) if X.shape[1] else np.zeros(len(X))
            sum_sq = seq_sum(vx * vx) if X.shape[1] else np.zeros(len(X))
            m = m + 0.5 * (s * s - sum_sq)
        return m
