"""Distribution profiles of DataFrame columns, for drift monitoring.

A profile describes each column so that a later batch can be compared with it bin for bin: numeric columns by
approximate quantile ``edges`` and ``fractions``, categorical ones by ``categories`` shares, both with a
``null_rate`` (the bin rules: docs/DESIGN.md). Pass ``reference=`` to profile new data with a reference profile's
edges and categories, so both are directly comparable (e.g. by a population stability index).

    >>> ref = compute_profile(train_df, numeric=["age"], categorical=["plan"])           # doctest: +SKIP
    >>> now = compute_profile(scored_df, numeric=["age"], categorical=["plan"], reference=ref)  # doctest: +SKIP
    >>> ref["features"]["age"]["edges"] == now["features"]["age"]["edges"]              # doctest: +SKIP
    True
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame

FORMAT = "sparkship-profile/1"
OTHER = "__other__"
DEFAULT_BINS = 10
DEFAULT_TOP_K = 50
RELATIVE_ERROR = 0.001
CLASS_TOP_K = 1000  # a prediction profile keeps every class (training allows up to 1,000)


def is_missing(name: str) -> Column:
    from pyspark.sql import functions as F

    c = F.col(f"`{name}`")
    return c.isNull() | F.isnan(c.cast("double"))


def bin_index(name: str, edges: Sequence[float]) -> Column:
    """0-based bin of a value: the number of inner edges strictly below it (null when the value is missing)."""
    from pyspark.sql import functions as F

    c = F.col(f"`{name}`").cast("double")
    inner = edges[1:-1]
    index = sum(((c > float(e)).cast("int") for e in inner), F.lit(0)) if inner else F.lit(0)
    return F.when(is_missing(name), None).otherwise(index)


def numeric_edges(df: DataFrame, columns: Sequence[str], bins: int = DEFAULT_BINS,
                  relative_error: float = RELATIVE_ERROR) -> dict[str, list[float]]:
    """``bins + 1`` approximate quantiles (0, 1/bins, ..., 1) per column, ignoring nulls and NaN, in one job.

    A column with no values gets ``[]``.
    """
    from pyspark.sql import functions as F

    if not columns:
        return {}
    # approxQuantile skips nulls but sorts NaN above everything: turn NaN into null first.
    clean = df.select([F.when(is_missing(c), None).otherwise(F.col(f"`{c}`").cast("double")).alias(c) for c in columns])
    probabilities = [i / bins for i in range(bins + 1)]
    quantiles = clean.approxQuantile(list(columns), probabilities, relative_error)
    return {c: [float(v) for v in q] for c, q in zip(columns, quantiles)}


def compute_profile(
    df: DataFrame,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    *,
    reference: Mapping[str, Any] | None = None,
    bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """Profile ``numeric`` and ``categorical`` columns of ``df`` (two Spark jobs: quantiles, then counts).

    With ``reference`` (a profile from this function), numeric columns reuse its edges and categorical
    columns its categories; anything else then counts under ``"__other__"``.

    Returns ``{"format", "rows", "features": {column: {...}}}``.
    """

    numeric, categorical = list(numeric), list(categorical)
    ref_features: Mapping[str, Any] = (reference or {}).get("features", {})
    edges = {c: ref_features[c]["edges"] for c in numeric if c in ref_features}
    edges.update(numeric_edges(df, [c for c in numeric if c not in edges], bins))

    counts = _grouped_counts(df, {c: bin_index(c, edges[c]) for c in numeric if edges[c]}, categorical, numeric)
    rows = sum(counts[numeric[0] if numeric else categorical[0]].values()) if numeric or categorical else df.count()

    features: dict[str, Any] = {}
    for c in numeric:
        missing = counts[c].get(None, 0)
        n_bins = len(edges[c]) - 1
        per_bin = [counts[c].get(str(j), 0) for j in range(n_bins)] if n_bins > 0 else []
        present = sum(per_bin)
        features[c] = {
            "kind": "numeric",
            "null_rate": _ratio(missing, rows),
            "edges": edges[c],
            "fractions": [_ratio(n, present) for n in per_bin],
            "count": rows - missing,
        }
    for c in categorical:
        values = {k: n for k, n in counts[c].items() if k is not None}
        features[c] = _categorical_feature(values, rows, ref_features.get(c), top_k)
    return {"format": FORMAT, "rows": rows, "features": features}


def _categorical_feature(
    values: Mapping[str, int], rows: int, reference: Mapping[str, Any] | None, top_k: int
) -> dict[str, Any]:
    """A categorical column's profile from its row counts per non-null value (``rows``: all rows, nulls too)."""
    present = sum(values.values())
    if reference is not None:
        keep = [k for k in reference["categories"] if k != OTHER]
    else:
        keep = [k for k, _ in sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
    categories = {k: _ratio(values.get(k, 0), present) for k in keep}
    other = present - sum(values.get(k, 0) for k in keep)
    if other or reference is not None:
        categories[OTHER] = _ratio(other, present)
    return {"kind": "categorical", "null_rate": _ratio(rows - present, rows), "categories": categories,
            "count": present}


def _grouped_counts(
    df: DataFrame, bins: Mapping[str, Column], categorical: Sequence[str], numeric: Sequence[str]
) -> dict[str, dict[str | None, int]]:
    """Per column, row counts by key (a numeric column's bin index or a category, as text; None = missing).

    One grouped Spark job for all columns: every row becomes one (column, key) pair per column.
    """
    from pyspark.sql import functions as F

    def pair(name: str, key: Column) -> Column:
        return F.struct(F.lit(name).alias("column"), key.cast("string").alias("key"))

    pairs = [pair(c, bins[c] if c in bins else F.lit(None)) for c in numeric]
    pairs += [pair(c, F.col(f"`{c}`")) for c in categorical]
    grouped = (
        df.select(F.explode(F.array(*pairs)).alias("p")).groupBy("p.column", "p.key").count().collect()
    )
    out: dict[str, dict[str | None, int]] = {c: {} for c in [*numeric, *categorical]}
    for row in grouped:
        out[row["column"]][row["key"]] = int(row["count"])
    return out


def prediction_profile(
    predictions: DataFrame, task: str, *, reference: Mapping[str, Any] | None = None, column: str = "prediction"
) -> dict[str, Any]:
    """The distribution of a model's predictions: class shares (classification) or quantile bins (regression).

    Class keys are the predicted index as text (``"0"``, ``"1"``, ...).

        >>> prediction_profile(model.transform(test_df), "classification")["categories"]   # doctest: +SKIP
        {'0': 0.62, '1': 0.38}
    """
    from pyspark.sql import functions as F

    ref = {"features": {column: reference}} if reference else None
    if task == "classification":
        as_class = predictions.select(F.col(f"`{column}`").cast("long").alias(column))
        profile = compute_profile(as_class, categorical=[column], reference=ref, top_k=CLASS_TOP_K)
    else:
        profile = compute_profile(predictions.select(column), numeric=[column], reference=ref)
    return {**profile["features"][column], "rows": profile["rows"], "column": column}


def class_profile(predicted: Mapping[float, int], column: str = "prediction") -> dict[str, Any]:
    """:func:`prediction_profile` of a classifier from its row count per predicted class: no Spark job.

        >>> class_profile({0.0: 3, 1.0: 1})["categories"]
        {'0': 0.75, '1': 0.25}
    """
    values = {str(int(cls)): int(n) for cls, n in predicted.items()}
    rows = sum(values.values())
    return {**_categorical_feature(values, rows, None, CLASS_TOP_K), "rows": rows, "column": column}


def _ratio(n: int, d: int) -> float:
    return float(n) / d if d else 0.0
