"""Rows and metric names for registering plain-pyspark models, and frames made comparable by chispa."""
from __future__ import annotations

import random

SCHEMA = "id long, x1 double, x2 double, c string, y int, k int, r double"


BINARY = ["accuracy", "areaUnderPR", "areaUnderROC", "f1", "logLoss"]


MULTICLASS = ["accuracy", "f1", "logLoss", "weightedPrecision", "weightedRecall"]


def make_rows(n: int, seed: int) -> list[tuple]:
    """Learnable rows: a binary label y, three classes k, a numeric target r; a few nulls in c."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        x1, x2, c = rnd.gauss(0, 1), rnd.gauss(0, 1), rnd.choice(["a", "b", "c"])
        y = int(x1 + (c == "a") - 0.5 * x2 + rnd.gauss(0, 0.3) > 0.3)
        k = 0 if x1 < -0.4 else (1 if x1 < 0.4 else 2)
        r = 2.0 * x1 - x2 + (c == "b") * 1.5 + rnd.gauss(0, 0.1)
        rows.append((i, x1, x2, None if i % 13 == 0 else c, y, k, r))
    return rows


def loose(df):
    """The same rows, collected once, an array column split into one column per element (chispa compares arrays
    exactly, single values within a tolerance), every field nullable: chispa then compares values only."""
    from pyspark.sql.types import StructField, StructType

    rows = df.collect()
    arrays = {f.name: f.dataType.elementType for f in df.schema.fields if f.dataType.typeName() == "array"}
    width = {c: max((len(r[c]) for r in rows if r[c] is not None), default=0) for c in arrays}
    kept = [f for f in df.schema.fields if f.name not in arrays]
    fields = [StructField(f.name, f.dataType, True) for f in kept]
    fields += [StructField(f"{c}_{i}", arrays[c], True) for c in arrays for i in range(width[c])]
    values = [[r[f.name] for f in kept] + [None if r[c] is None or i >= len(r[c]) else r[c][i]
                                           for c in arrays for i in range(width[c])] for r in rows]
    return df.sparkSession.createDataFrame(values, StructType(fields))
