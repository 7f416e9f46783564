"""Checking a training spec's input before anything is fitted: the pinned table version, the columns and their
types, and the labelled rows (rows per split, values per numeric feature, classes).

Each check raises a :class:`~sparkship.errors.SparkshipError` whose one line names the spec key and the remedy.
Used by :mod:`sparkship.training` (and :func:`~sparkship.training.evaluate`, which reads another snapshot).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparkship import tables
from sparkship.errors import NotFoundError, SchemaMismatchError, UsageError
from sparkship.profiles import is_missing
from sparkship.spec import TrainingSpec

# pyspark is imported inside the functions that use it: `import sparkship` loads no pyspark (serving, bundle).
if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, Row, SparkSession
    from pyspark.sql.types import StructType

MAX_CLASSES = 1000
SPLIT = "__test"  # the held-out flag column, dropped before fitting
_NUMERIC_TYPES = ("tinyint", "smallint", "int", "bigint", "float", "double")


def label_column(spec: TrainingSpec, label_is_string: bool) -> str:
    """The column the estimator and evaluators read the label from."""
    return f"{spec.label}__idx" if label_is_string else spec.label


def pin_version(spark: SparkSession, spec: TrainingSpec) -> int:
    """The table version to train on: the spec's ``table_version`` (checked to exist), or the latest."""
    latest = tables.version(spark, spec.table)
    if latest is None:
        raise NotFoundError(f"spec key 'table': no Delta table at {spec.table}")
    if spec.table_version is None:
        return latest
    if spec.table_version > latest:
        raise NotFoundError(
            f"spec key 'table': {spec.table} has no version {spec.table_version} (latest is {latest})"
        )
    return spec.table_version


def _numeric(spark_type: str) -> bool:
    return spark_type in _NUMERIC_TYPES or spark_type.startswith("decimal")


def check_schema(schema: StructType, spec: TrainingSpec, where: str) -> bool:
    """Check columns and types; return whether the label is a string (classes to index)."""
    types = {f.name: f.dataType.simpleString() for f in schema.fields}
    wanted = [("features.numeric", c) for c in spec.features.numeric]
    wanted += [("features.categorical", c) for c in spec.features.categorical] + [("label", spec.label)]
    missing = [(key, c) for key, c in wanted if c not in types]
    if missing:
        named = ", ".join(f"'{c}' ({key})" for key, c in missing)
        raise SchemaMismatchError(f"{where} has no column {named}; its columns are {sorted(types)}")
    for c in spec.features.numeric:
        if not _numeric(types[c]):
            hint = "; list it under features.categorical" if types[c] in ("string", "boolean") else ""
            raise SchemaMismatchError(f"spec key 'features.numeric': column '{c}' is {types[c]}, not numeric{hint}")
    for c in spec.features.categorical:
        if not (_numeric(types[c]) or types[c] == "string"):
            raise SchemaMismatchError(
                f"spec key 'features.categorical': column '{c}' is {types[c]}; use a string or numeric column"
            )
    label_type = types[spec.label]
    if spec.task == "regression" and not _numeric(label_type):
        raise SchemaMismatchError(
            f"spec key 'label': column '{spec.label}' is {label_type}; regression needs a numeric label "
            "(use task: classification for classes)"
        )
    if spec.task == "classification" and not (_numeric(label_type) or label_type in ("string", "boolean")):
        raise SchemaMismatchError(
            f"spec key 'label': column '{spec.label}' is {label_type}; use a string, boolean or integer class label"
        )
    return label_type == "string"


def label_expr(spec: TrainingSpec, label_is_string: bool) -> Column:
    """The label as the estimator reads it: a string as is, anything else cast to double."""
    from pyspark.sql import functions as F

    label = F.col(f"`{spec.label}`")
    return label if label_is_string else label.cast("double")


def _has_label(label: Column, label_is_string: bool) -> Column:
    from pyspark.sql import functions as F

    return label.isNotNull() if label_is_string else label.isNotNull() & ~F.isnan(label)


def labelled(df: DataFrame, spec: TrainingSpec, label_is_string: bool) -> DataFrame:
    """Rows that have a label (not null, not NaN), the label cast to double unless it is a string."""
    label = label_expr(spec, label_is_string)
    return df.withColumn(spec.label, label).where(_has_label(label, label_is_string))


def index_labels(df: DataFrame, spec: TrainingSpec, labels: Sequence[str], handle_invalid: str) -> DataFrame:
    """``df`` with the string label indexed by ``labels`` (``labels[i]`` is class ``i``) into its label column."""
    from pyspark.ml.feature import StringIndexerModel

    indexer = StringIndexerModel.from_labels(
        list(labels), inputCol=spec.label, outputCol=label_column(spec, True), handleInvalid=handle_invalid
    )
    return indexer.transform(df)


@dataclass(frozen=True)
class DataFacts:
    """What :func:`check_data` found in the training rows."""

    labels: list[str] | None  # string class labels, alphabetical
    num_classes: int  # 0 for regression
    rows_train: int
    rows_test: int


@dataclass(frozen=True)
class _Scan:
    rows: int
    rows_train: int
    rows_test: int
    valid_counts: list[int]  # values (not null, not NaN) per numeric feature
    classes: list[Any]  # the distinct labels of a classifier; a regressor's smallest and largest label


def _scan(data: DataFrame, spec: TrainingSpec, label_is_string: bool) -> _Scan:
    """One Spark job over ``data`` (with its ``__test`` split flag): rows, values per numeric feature, classes."""
    from pyspark.sql import functions as F

    valid = [F.sum((~is_missing(c)).cast("long")).alias(f"v{i}") for i, c in enumerate(spec.features.numeric)]
    label = label_expr(spec, label_is_string)
    has_label = _has_label(label, label_is_string)
    split_counts = [
        F.sum((has_label & ~F.col(SPLIT)).cast("long")).alias("__train"),
        F.sum((has_label & F.col(SPLIT)).cast("long")).alias("__test"),
    ]
    groups: list[Row]
    if spec.task == "classification":
        # Classes come from the same pass: group by label (at most MAX_CLASSES + 2 groups come back).
        groups = (
            data.groupBy(F.when(has_label, label).alias("__label"))
            .agg(F.count(F.lit(1)).alias("__rows"), *split_counts, *valid)
            .limit(MAX_CLASSES + 2)
            .collect()
        )
        classes = [g["__label"] for g in groups if g["__label"] is not None]
    else:
        groups = data.agg(
            F.count(F.lit(1)).alias("__rows"),
            F.min(F.when(has_label, label)).alias("__min"),
            F.max(F.when(has_label, label)).alias("__max"),
            *split_counts,
            *valid,
        ).collect()
        classes = [] if groups[0]["__min"] is None else sorted({groups[0]["__min"], groups[0]["__max"]})

    def total(key: str) -> int:
        return sum(int(g[key] or 0) for g in groups)

    valid_counts = [total(f"v{i}") for i in range(len(spec.features.numeric))]
    return _Scan(total("__rows"), total("__train"), total("__test"), valid_counts, classes)


def check_data(data: DataFrame, spec: TrainingSpec, label_is_string: bool, where: str) -> DataFacts:
    """Check the rows of ``data`` (with its ``__test`` split flag) in one Spark job; refuse what cannot train."""
    scan = _scan(data, spec, label_is_string)
    classes = scan.classes
    if scan.rows == 0:
        raise UsageError(f"{where} is empty: nothing to train on")
    if not classes:
        raise UsageError(f"spec key 'label': column '{spec.label}' has no values in {where} (all null)")
    empty = [c for c, n in zip(spec.features.numeric, scan.valid_counts) if n == 0]
    if empty:
        raise UsageError(f"spec key 'features.numeric': columns {empty} have no values in {where} (all null/NaN)")
    if spec.task == "regression":
        if len(classes) < 2:
            raise UsageError(f"spec key 'label': column '{spec.label}' has a single value ({classes[0]}) in {where}")
        return _split_facts(None, 0, scan, spec, where)
    labels, num_classes = _check_classes(classes, spec, label_is_string, where)
    return _split_facts(labels, num_classes, scan, spec, where)


def _check_classes(classes: list[Any], spec: TrainingSpec, label_is_string: bool,
                   where: str) -> tuple[list[str] | None, int]:
    """A classifier's string labels (None for numeric ones) and number of classes, or a refusal."""
    if len(classes) > MAX_CLASSES:
        raise UsageError(
            f"spec key 'label': column '{spec.label}' has more than {MAX_CLASSES} classes; is this a regression?"
        )
    if len(classes) < 2:
        raise UsageError(
            f"spec key 'label': column '{spec.label}' has one class ({classes[0]!r}) in {where}; "
            "classification needs at least two"
        )
    labels: list[str] | None
    if label_is_string:
        labels = sorted(str(c) for c in classes)
        num_classes = len(labels)
    else:
        bad = [c for c in classes if c < 0 or c != int(c)]
        if bad:
            raise UsageError(
                f"spec key 'label': numeric class labels must be whole numbers 0, 1, 2...; "
                f"column '{spec.label}' has {sorted(bad)[:5]}"
            )
        labels, num_classes = None, int(max(classes)) + 1
    if spec.model.algorithm == "gbt" and num_classes > 2:
        raise UsageError(
            f"spec key 'model.algorithm': 'gbt' supports binary classification only; "
            f"label '{spec.label}' has {len(classes)} classes (use random_forest or logistic_regression)"
        )
    return labels, num_classes


def _split_facts(labels: list[str] | None, num_classes: int, scan: _Scan, spec: TrainingSpec,
                 where: str) -> DataFacts:
    if scan.rows_train == 0 or scan.rows_test == 0:
        raise UsageError(
            f"{where}: {scan.rows_train + scan.rows_test} labelled rows are too few to split with "
            f"split.test_fraction={spec.split.test_fraction} ({scan.rows_train} train, {scan.rows_test} test)"
        )
    return DataFacts(labels, num_classes, scan.rows_train, scan.rows_test)


__all__ = ["MAX_CLASSES", "SPLIT", "DataFacts", "check_data", "check_schema", "index_labels", "label_column",
           "label_expr", "labelled", "pin_version"]
