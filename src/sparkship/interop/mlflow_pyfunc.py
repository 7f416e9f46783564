"""MLflow ``python_function`` loader for a sparkship artifact: scores a saved Spark pipeline without a JVM.

An exported MLmodel names this module as its pyfunc ``loader_module``; MLflow calls :func:`_load_pyfunc` with
the artifact folder (``data/sparkship`` = ``manifest.json`` + ``model/``). Every Spark file is checked against
the manifest's sha256 before anything is read, so a changed file is refused, by name.

This module imports neither pyspark nor mlflow: a serving container needs numpy, pandas and pyarrow only.

    >>> import mlflow                                                      # doctest: +SKIP
    >>> model = mlflow.pyfunc.load_model("/tmp/churn-mlflow")              # doctest: +SKIP
    >>> model.predict(pandas_df)                                           # doctest: +SKIP
       prediction                                 probability
    0         1.0  [0.2113, 0.7887]
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sparkship.serving import PipelineScorer, load


class SparkshipPyfunc:
    """``predict`` for MLflow: one output row per input row, in input order, with the pipeline's outputs
    (``prediction``, ``probability``... vectors as lists). A row that Spark's transform would drop (a
    ``skip`` mode) gets nulls. ``params={"columns": [...]}`` picks other columns the pipeline computes."""

    def __init__(self, scorer: PipelineScorer) -> None:
        self.scorer = scorer

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        columns = list((params or {}).get("columns") or self.scorer.outputs)
        if isinstance(model_input, pd.DataFrame) and len(model_input) == 1:
            return self._predict_one(model_input, columns)
        result = self.scorer.score(model_input, columns=columns)
        n = result.num_input_rows
        out: dict[str, Any] = {}
        for name in columns:
            values = result.columns[name]
            if values.ndim == 2:
                full = np.full(n, None, dtype=object)
                full[result.rows] = list(values)
            else:
                full = np.full(n, np.nan) if values.dtype.kind == "f" else np.full(n, None, dtype=object)
                full[result.rows] = values
            out[name] = full
        return pd.DataFrame(out, index=_index_of(model_input))

    def _predict_one(self, frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        """One row through the row path (a dict, plain Python): what online serving sees most."""
        record = {c: _plain(v) for c, v in zip(frame.columns, frame.to_numpy(dtype=object)[0].tolist())}
        scored = self.scorer.score_one(record, columns=columns)
        row = {c: None for c in columns} if scored is None else scored
        # One-element arrays, not lists: pandas builds the frame without inferring each column (cheaper on this
        # per-request path), with the dtypes of the batch path (float64 scalars, object vectors).
        return pd.DataFrame({c: _one_element(row[c]) for c in columns}, index=frame.index, copy=False)


def _one_element(value: Any) -> np.ndarray:
    if isinstance(value, (float, int)):  # bool is an int: numpy keeps it bool
        return np.array([value])
    column = np.empty(1, dtype=object)
    column[0] = value
    return column


def _plain(value: Any) -> Any:
    """pandas holds a missing value as NaN (or NaT/NA); the pipeline wants None only where Spark has null."""
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _index_of(model_input: Any) -> Any:
    return model_input.index if isinstance(model_input, pd.DataFrame) else None


def _load_pyfunc(data_path: str) -> SparkshipPyfunc:
    """MLflow's hook: the verified artifact at ``data_path`` as a pyfunc model (raises ``IntegrityError``
    naming a changed, missing or extra file)."""
    return SparkshipPyfunc(load(data_path, verify=True))
