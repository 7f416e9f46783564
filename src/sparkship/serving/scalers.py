"""Scalers of a saved pipeline that map one vector column to another of the same size, named as in Spark:
StandardScalerModel and MinMaxScalerModel (the other vector maps are in :mod:`sparkship.serving.features`).
"""
from __future__ import annotations

from operator import mul
from typing import Any

import numpy as np

from sparkship.serving import reader
from sparkship.serving.base import Schema, Stage, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.numeric import EMPTY
from sparkship.serving.reader import StageMetadata, to_double


class _VectorStage(Stage):
    """A stage mapping one vector column to another of the same size."""

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = [self.p("inputCol")], [self.p("outputCol")]

    def input_type(self, col: str) -> str:
        return "vector"

    def expected_size(self, col: str) -> int | None:
        return self.fitted_size

    fitted_size: int | None = None

    def plan_size(self, schema: Schema, size: int) -> None:
        _, got = self._need(schema, self.input_cols[0], ("vector",))
        if got is not None and got != size:
            raise self.refuse(f"input '{self.input_cols[0]}' of size {got} (the model was fitted on {size})")
        schema[self.output_cols[0]] = ("vector", size)


@register_stage
class StandardScalerModel(_VectorStage):
    """(x - mean) * (1/std) per ``withMean``/``withStd``; 0 where std is 0, as Spark does."""

    spark_class = "org.apache.spark.ml.feature.StandardScalerModel"
    known_params = frozenset({"inputCol", "outputCol", "withMean", "withStd"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        std, mean = reader.vector(data["std"]), reader.vector(data["mean"])
        self.with_mean, self.with_std = bool(self.p("withMean", False)), bool(self.p("withStd", True))
        self.shift = mean if self.with_mean else np.zeros_like(mean)
        with np.errstate(divide="ignore"):
            self.scale = np.where(std == 0, 0.0, 1.0 / np.where(std == 0, 1.0, std)) if self.with_std else None
        # plain lists for the row path; no scale (withStd off) is never read there
        self._shift_l: list[float] = self.shift.tolist()
        self._scale_l: list[float] = self.scale.tolist() if self.scale is not None else []
        self.fitted_size = len(self.shift)

    def plan(self, schema: Schema) -> None:
        self.plan_size(schema, len(self.shift))

    def row(self, r: dict[str, Any]) -> bool:
        v = r[self.input_cols[0]]
        if v is None:
            r[self.output_cols[0]] = None
        elif self.with_mean and self.with_std:
            r[self.output_cols[0]] = [(x - m) * s for x, m, s in zip(v, self._shift_l, self._scale_l)]
        elif self.with_std:
            r[self.output_cols[0]] = list(map(mul, v, self._scale_l))
        elif self.with_mean:
            r[self.output_cols[0]] = [x - m for x, m in zip(v, self._shift_l)]
        else:
            r[self.output_cols[0]] = list(v)
        return True

    def batch(self, b: Batch) -> np.ndarray:
        x = b.cols[self.input_cols[0]]
        if self.with_mean:
            x = x - self.shift
        out = x * self.scale if self.scale is not None else x.copy()
        b.set(self.output_cols[0], out, "vector", b.null_mask(self.input_cols[0]))
        return EMPTY


@register_stage
class MinMaxScalerModel(_VectorStage):
    """Rescales each feature to [min, max]; constant features map to (min + max) / 2; NaN stays NaN."""

    spark_class = "org.apache.spark.ml.feature.MinMaxScalerModel"
    known_params = frozenset({"inputCol", "outputCol", "min", "max"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        data = reader.read_data(meta.path)[0]
        lo, hi = reader.vector(data["originalMin"]), reader.vector(data["originalMax"])
        self.min, self.max = to_double(self.p("min", 0.0)), to_double(self.p("max", 1.0))
        rng = hi - lo
        self.orig_min = lo
        # Spark precomputes scale / range per feature; 0 marks a constant feature.
        self.scale_arr = np.where(rng != 0, (self.max - self.min) / np.where(rng != 0, rng, 1.0), 0.0)
        self.constant = (self.max + self.min) / 2
        self._plan = list(zip(lo.tolist(), self.scale_arr.tolist()))
        self.fitted_size = len(lo)

    def plan(self, schema: Schema) -> None:
        self.plan_size(schema, len(self.orig_min))

    def row(self, r: dict[str, Any]) -> bool:
        v = r[self.input_cols[0]]
        if v is None:
            r[self.output_cols[0]] = None
            return True
        lo_v, c = self.min, self.constant
        r[self.output_cols[0]] = [
            x if x != x else ((x - m) * s + lo_v if s != 0 else c) for x, (m, s) in zip(v, self._plan)
        ]
        return True

    def batch(self, b: Batch) -> np.ndarray:
        x = b.cols[self.input_cols[0]]
        out = np.where(self.scale_arr != 0, (x - self.orig_min) * self.scale_arr + self.min, self.constant)
        out = np.where(np.isnan(x), x, out)
        b.set(self.output_cols[0], out, "vector", b.null_mask(self.input_cols[0]))
        return EMPTY
