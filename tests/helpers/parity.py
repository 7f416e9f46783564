"""Comparing the JVM-free scorer's outputs with Spark's transform(): vectors flattened, within 1e-9."""
from __future__ import annotations

import numpy as np

TOL = 1e-9


def flatten_spark(df, vector_sizes: dict[str, int], scalars: list[str]):
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    def null_nan(c):  # the scorer's side goes through pandas, where NaN and null are one
        return F.when(F.isnan(c), None).otherwise(c)

    cols = [F.col("id")]
    for c in scalars:
        cols.append(null_nan(F.col(c).cast("double")).alias(c))
    for c, size in vector_sizes.items():
        arr = vector_to_array(c)
        cols += [null_nan(arr[i]).alias(f"{c}_{i}") for i in range(size)]
    return df.select(*cols).orderBy("id")


def flatten_scorer(spark, result, ids: np.ndarray, vector_sizes: dict[str, int], scalars: list[str]):
    import pandas as pd
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    frame = {"id": ids[result.rows].astype(np.int64)}
    for c in scalars:
        frame[c] = result.columns[c].astype(np.float64)
    for c, size in vector_sizes.items():
        for i in range(size):
            frame[f"{c}_{i}"] = result.columns[c][:, i].astype(np.float64)
    schema = StructType([StructField("id", LongType())] + [StructField(k, DoubleType()) for k in frame if k != "id"])
    return spark.createDataFrame(pd.DataFrame(frame), schema).orderBy("id")


def assert_close(ours, theirs) -> None:
    a, b = ours.toPandas(), theirs.toPandas()
    assert list(a["id"]) == list(b["id"]), "different rows"
    bad = []
    for c in a.columns:
        x, y = a[c].to_numpy(dtype=float), b[c].to_numpy(dtype=float)
        diff = np.abs(x - y)
        wrong = ~((diff <= TOL) | (np.isnan(x) & np.isnan(y)))
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            bad.append(f"{c}: {int(wrong.sum())} rows differ, e.g. id {a['id'][i]}: {x[i]!r} vs Spark {y[i]!r}")
    assert not bad, "\n".join(bad)


def vector_sizes(scorer, columns: list[str]) -> tuple[dict[str, int], list[str]]:
    vectors = {c: scorer.schema[c][1] for c in columns if scorer.schema[c][0] == "vector"}
    return vectors, [c for c in columns if c not in vectors]


def assert_row_path_matches(scorer, arrow_data, result, columns: list[str], sample: int = 400) -> None:
    """score_one (the single-record path) agrees with the batch path, dropped rows included."""
    records = arrow_data.slice(0, sample).to_pylist()
    scored = result.records()
    for i, rec in enumerate(records):
        one = scorer.score_one(rec, columns=columns)
        if scored[i] is None:
            assert one is None, f"row {i}: batch dropped it, score_one did not"
            continue
        assert one is not None, f"row {i}: score_one dropped it, the batch did not"
        for c in columns:
            a, b = np.asarray(one[c], dtype=float), np.asarray(scored[i][c], dtype=float)
            assert a.shape == b.shape
            assert np.allclose(a, b, rtol=0, atol=1e-12, equal_nan=True), (i, c, a, b)

