"""Models saved by pyspark 3.5 (Databricks Runtime 13-16) load in the JVM-free scorer and score like Spark 3.5.

The fixtures under tests/fixtures/spark35/<name>/ were made by scripts/make_spark35_fixtures.py with pyspark 3.5:
the saved model, the rows scored and Spark 3.5's transform() output. No JVM is needed here: each fixture is
loaded with ``sparkship.serving.load`` and its outputs compared to Spark's (|diff| <= 1e-9, predictions equal),
on the batch path (Arrow and pandas) and the row path.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sparkship.serving import load
from tests.helpers.paths import FIXTURES

SPARK35_FIXTURES = str(FIXTURES / "spark35")
NAMES = sorted(d for d in os.listdir(SPARK35_FIXTURES)
               if os.path.isdir(os.path.join(SPARK35_FIXTURES, d))) if os.path.isdir(SPARK35_FIXTURES) else []
TOL = 1e-9


def _fixture(name: str):
    import pyarrow.parquet as pq

    folder = os.path.join(SPARK35_FIXTURES, name)
    with open(os.path.join(folder, "fixture.json")) as fh:
        meta = json.load(fh)
    return (os.path.join(folder, "model"), pq.read_table(os.path.join(folder, "input.parquet")),
            pq.read_table(os.path.join(folder, "expected.parquet")), meta)


def _as_matrix(values: list) -> np.ndarray:
    """A column of scalars or of vectors (lists; None where Spark gave null) as float64, NaN for null."""
    if values and any(isinstance(v, (list, tuple, np.ndarray)) for v in values):
        width = max(len(v) for v in values if v is not None)
        return np.array([[np.nan] * width if v is None else v for v in values], dtype=np.float64)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _assert_close(name: str, col: str, ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape, f"{name}.{col}: shape {ours.shape} vs Spark 3.5 {theirs.shape}"
    if col == "prediction" and np.array_equal(theirs, np.round(theirs)):  # class labels / cluster ids: identical
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{name}.{col}")
    else:
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL, equal_nan=True, err_msg=f"{name}.{col}")


def test_fixtures_are_present_and_small():
    assert len(NAMES) >= 20, NAMES
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(SPARK35_FIXTURES) for f in fs)
    assert total < 5 * 2**20, f"fixtures take {total / 2**20:.1f} MiB"
    for name in NAMES:
        assert _fixture(name)[3]["spark_version"].startswith("3.5")


@pytest.mark.parametrize("name", NAMES)
def test_spark35_model_scores_like_spark35(name):
    model_dir, table, expected, meta = _fixture(name)
    scorer = load(model_dir, signature=meta["signature"])
    ids = table.column("id").to_numpy()
    want_ids = expected.column("id").to_pylist()
    outputs = meta["outputs"]
    for data in (table, table.to_pandas()):
        result = scorer.score(data, columns=outputs)
        assert ids[result.rows].tolist() == want_ids, f"{name}: scored rows differ from Spark 3.5's"
        for col in outputs:
            _assert_close(name, col, _as_matrix(result.columns[col].tolist()),
                          _as_matrix(expected.column(col).to_pylist()))
    # the row path, one record at a time
    by_id = {r["id"]: r for r in expected.to_pylist()}
    for rec in table.to_pylist():
        one = scorer.score_one(rec, columns=outputs)
        if rec["id"] not in by_id:
            assert one is None, f"{name}: row {rec['id']} is dropped by Spark 3.5"
            continue
        for col in outputs:
            _assert_close(name, col, _as_matrix([one[col]]), _as_matrix([by_id[rec["id"]][col]]))
