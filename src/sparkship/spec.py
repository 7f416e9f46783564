"""The training spec: a YAML file parsed into typed dataclasses, every error naming the spec key at fault.

    >>> spec = parse_spec({
    ...     "name": "churn", "task": "classification", "table": "/data/churn@3", "label": "churned",
    ...     "features": {"numeric": ["age"], "categorical": ["plan"]},
    ...     "model": {"algorithm": "random_forest", "params": {"numTrees": 20}},
    ... })
    >>> (spec.table, spec.table_version, spec.model.estimator_class)
    ('/data/churn', 3, 'RandomForestClassifier')
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from sparkship.errors import UsageError
from sparkship.names import validate_name
from sparkship.refs import parse_table

__all__ = [
    "ALGORITHMS",
    "METRICS",
    "TrainingSpec",
    "FeatureSpec",
    "ModelSpec",
    "SplitSpec",
    "TuningSpec",
    "ValidationSpec",
    "load_spec",
    "parse_spec",
    "read_spec_file",
    "validate_name",
    "estimator_class",
    "estimator_params",
    "class_params",
    "convert_param",
    "table_fields",
    "with_rules_and_description",
]

TASKS = ("classification", "regression")
# algorithm -> Spark estimator class name per task (None: not offered for that task)
ALGORITHMS: dict[str, dict[str, str | None]] = {
    "logistic_regression": {"classification": "LogisticRegression", "regression": None},
    "decision_tree": {"classification": "DecisionTreeClassifier", "regression": "DecisionTreeRegressor"},
    "random_forest": {"classification": "RandomForestClassifier", "regression": "RandomForestRegressor"},
    "gbt": {"classification": "GBTClassifier", "regression": "GBTRegressor"},
    "linear_regression": {"classification": None, "regression": "LinearRegression"},
}
METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("areaUnderROC", "areaUnderPR", "accuracy", "f1", "logLoss"),
    "regression": ("rmse", "mae", "r2"),
}
# Metrics where smaller is better (thresholds and regressions read them the other way round).
SMALLER_IS_BETTER = frozenset({"logLoss", "rmse", "mae"})
IMPUTE_STRATEGIES = ("mean", "median", "mode")
# Column params the pipeline sets itself; a spec may not move them.
_PIPELINE_PARAMS = frozenset(
    {"featuresCol", "labelCol", "predictionCol", "probabilityCol", "rawPredictionCol", "weightCol", "leafCol",
     "varianceCol", "validationIndicatorCol"}
)
# Output columns of the pipeline's final stage, and suffixes of its feature stages' outputs.
RESERVED_COLUMNS = frozenset({"features", "features__raw", "prediction", "probability", "rawPrediction", "__test"})
RESERVED_SUFFIXES = ("__imputed", "__idx", "__ohe")
_TOP_KEYS = ("name", "task", "table", "label", "features", "model", "split", "tuning", "validation", "description")


def _key_error(key: str, problem: str) -> UsageError:
    return UsageError(f"spec key '{key}': {problem}")


def _expect(value: Any, kind: type | tuple[type, ...], key: str, what: str) -> Any:
    # bool is an int subclass; a YAML `yes` must not pass for a number.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise _key_error(key, f"expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise _key_error(key, f"expected {what}, got {type(value).__name__} {value!r}")
    return value


def _unknown_keys(given: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    unknown = [k for k in given if k not in allowed]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise _key_error(where, f"unknown key; allowed here: {', '.join(allowed)}")


def estimator_class(class_name: str) -> type:
    """The pyspark.ml estimator class called ``class_name`` (e.g. ``GBTRegressor``)."""
    from pyspark.ml import classification, regression  # pyspark: optional (the `local` extra)

    module = classification if hasattr(classification, class_name) else regression
    return getattr(module, class_name)


def class_params(cls: type) -> dict[str, Any]:
    """The Spark ``Param`` objects a pyspark.ml class declares, by name (no JVM needed)."""
    from pyspark.ml.param import Param  # pyspark: optional (the `local` extra)

    return {n: getattr(cls, n) for n in dir(cls) if isinstance(getattr(cls, n, None), Param)}


def estimator_params(class_name: str) -> dict[str, Any]:
    """The Spark ``Param`` objects an estimator class declares, by name (no JVM needed).

    >>> "numTrees" in estimator_params("RandomForestClassifier")
    True
    """
    return class_params(estimator_class(class_name))


def convert_param(owner: str, known: Mapping[str, Any], key: str, name: Any, value: Any) -> Any:
    """``value`` converted by the converter of ``owner``'s param ``name`` (one of ``known``); a one-line
    refusal naming spec key ``key`` otherwise."""
    if name not in known:
        raise _key_error(key, f"unknown parameter of {owner}; known: {', '.join(sorted(known))}")
    try:
        # Spark's own converter: the same check the estimator would make, without starting a JVM.
        return known[name].typeConverter(value)
    except (TypeError, ValueError) as exc:
        raise _key_error(key, f"bad value {value!r} for {owner}.{name}: {exc}") from None


def _check_param(class_name: str, key: str, name: Any, value: Any) -> Any:
    known = {n: p for n, p in estimator_params(class_name).items() if n not in _PIPELINE_PARAMS}
    return convert_param(class_name, known, key, name, value)


@dataclass(frozen=True)
class FeatureSpec:
    """Feature columns: numeric ones are imputed, categorical ones indexed and one-hot encoded."""

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    impute: str = "mean"

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


@dataclass(frozen=True)
class ModelSpec:
    algorithm: str
    estimator_class: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitSpec:
    test_fraction: float = 0.2
    seed: int = 42


@dataclass(frozen=True)
class TuningSpec:
    """A CrossValidator over ``grid`` (estimator param -> candidate values)."""

    grid: dict[str, list[Any]]
    folds: int = 3
    metric: str | None = None  # default: areaUnderROC (binary), f1 (multiclass), rmse (regression)
    seed: int = 42


@dataclass(frozen=True)
class ValidationSpec:
    """Used by ``validate``: per-metric bounds and the largest allowed drop against the champion."""

    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    max_regression: float | None = None


@dataclass(frozen=True)
class TrainingSpec:
    """A parsed training spec. ``table`` is absolute (or a URI); ``table_version`` None means 'latest'."""

    name: str
    task: str
    table: str
    label: str
    features: FeatureSpec
    model: ModelSpec
    table_version: int | None = None
    split: SplitSpec = field(default_factory=SplitSpec)
    tuning: TuningSpec | None = None
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    description: str | None = None
    source: str | None = None  # the spec file it came from, if any

    def to_dict(self) -> dict[str, Any]:
        """The spec as the YAML would say it (table pinned as ``path@V`` when pinned); for the manifest."""
        out: dict[str, Any] = {
            "name": self.name,
            "task": self.task,
            "table": self.table if self.table_version is None else f"{self.table}@{self.table_version}",
            "label": self.label,
            "features": {
                "numeric": list(self.features.numeric),
                "categorical": list(self.features.categorical),
                "impute": self.features.impute,
            },
            "model": {"algorithm": self.model.algorithm, "params": copy.deepcopy(self.model.params)},
            "split": {"test_fraction": self.split.test_fraction, "seed": self.split.seed},
        }
        if self.tuning is not None:
            out["tuning"] = {"grid": copy.deepcopy(self.tuning.grid), "folds": self.tuning.folds,
                             "metric": self.tuning.metric, "seed": self.tuning.seed}
        return with_rules_and_description(out, self.validation, self.description)

    def with_table(self, table: str, base_dir: str | None = None) -> TrainingSpec:
        """A copy reading another table (``PATH[@V]``; relative paths resolve against ``base_dir`` or the cwd)."""
        return replace(self, **table_fields(table, base_dir))


def with_rules_and_description(out: dict[str, Any], validation: ValidationSpec,
                               description: str | None) -> dict[str, Any]:
    """``out`` (a spec as the YAML says it) with its ``validation`` and ``description`` keys, where set."""
    if validation.thresholds or validation.max_regression is not None:
        out["validation"] = {"thresholds": copy.deepcopy(validation.thresholds),
                             "max_regression": validation.max_regression}
    if description:
        out["description"] = description
    return out


def table_fields(table: str, base_dir: str | None = None) -> dict[str, Any]:
    """The ``table`` and ``table_version`` fields of a spec reading ``table`` (``PATH[@V]``, as ``--table``)."""
    ref = parse_table(table, what="--table", base_dir=base_dir)
    return {"table": ref.location, "table_version": ref.version}


def _columns(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    _expect(value, list, key, "a list of column names")
    for i, c in enumerate(value):
        if not isinstance(c, str) or not c:
            raise _key_error(f"{key}[{i}]", f"expected a column name, got {c!r}")
    dupes = sorted({c for c in value if value.count(c) > 1})
    if dupes:
        raise _key_error(key, f"columns listed twice: {dupes}")
    return tuple(value)


def _parse_features(raw: Any) -> FeatureSpec:
    _expect(raw, dict, "features", "a mapping with 'numeric' and/or 'categorical' lists")
    _unknown_keys(raw, ("numeric", "categorical", "impute"), "features")
    numeric = _columns(raw.get("numeric"), "features.numeric")
    categorical = _columns(raw.get("categorical"), "features.categorical")
    if not numeric and not categorical:
        raise _key_error("features", "list at least one numeric or categorical column")
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise _key_error("features.categorical", f"columns also listed as numeric: {both}")
    for key, cols in (("features.numeric", numeric), ("features.categorical", categorical)):
        for c in cols:
            if c in RESERVED_COLUMNS or c.endswith(RESERVED_SUFFIXES):
                raise _key_error(key, f"column name {c!r} clashes with the pipeline's own output columns; rename it")
    impute = raw.get("impute", "mean")
    if impute not in IMPUTE_STRATEGIES:
        raise _key_error("features.impute", f"expected one of {', '.join(IMPUTE_STRATEGIES)}, got {impute!r}")
    return FeatureSpec(numeric, categorical, impute)


def _parse_model(raw: Any, task: str) -> ModelSpec:
    _expect(raw, dict, "model", "a mapping with 'algorithm' and optional 'params'")
    _unknown_keys(raw, ("algorithm", "params"), "model")
    algorithm = raw.get("algorithm")
    if algorithm not in ALGORITHMS:
        raise _key_error("model.algorithm", f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    class_name = ALGORITHMS[algorithm][task]
    if class_name is None:
        other = [a for a, by_task in ALGORITHMS.items() if by_task[task]]
        raise _key_error("model.algorithm",
                         f"{algorithm!r} cannot be used for task '{task}'; use one of {', '.join(other)}")
    params = raw.get("params") or {}
    _expect(params, dict, "model.params", "a mapping of estimator parameters")
    checked = {str(k): _check_param(class_name, f"model.params.{k}", k, v) for k, v in params.items()}
    return ModelSpec(algorithm, class_name, checked)


def _number(raw: Mapping[str, Any], name: str, key: str, default: Any, kind: type) -> Any:
    value = raw.get(name, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return _expect(value, kind, key, "an integer" if kind is int else "a number")


def _parse_split(raw: Any) -> SplitSpec:
    if raw is None:
        return SplitSpec()
    _expect(raw, dict, "split", "a mapping with 'test_fraction' and 'seed'")
    _unknown_keys(raw, ("test_fraction", "seed"), "split")
    fraction = _number(raw, "test_fraction", "split.test_fraction", 0.2, float)
    if not 0.0 < fraction < 1.0:
        raise _key_error("split.test_fraction", f"must be between 0 and 1 (exclusive), got {fraction}")
    return SplitSpec(fraction, _number(raw, "seed", "split.seed", 42, int))


def _parse_tuning(raw: Any, model: ModelSpec, task: str) -> TuningSpec | None:
    if raw is None:
        return None
    _expect(raw, dict, "tuning", "a mapping with 'grid' and optional 'folds', 'metric', 'seed'")
    _unknown_keys(raw, ("grid", "folds", "metric", "seed"), "tuning")
    grid_raw = raw.get("grid")
    _expect(grid_raw, dict, "tuning.grid", "a mapping of estimator parameter -> list of values")
    if not grid_raw:
        raise _key_error("tuning.grid", "list at least one parameter to search over")
    grid: dict[str, list[Any]] = {}
    for name, values in grid_raw.items():
        key = f"tuning.grid.{name}"
        if not isinstance(values, list) or not values:
            raise _key_error(key, f"expected a non-empty list of values, got {values!r}")
        grid[str(name)] = [_check_param(model.estimator_class, key, name, v) for v in values]
    folds = _number(raw, "folds", "tuning.folds", 3, int)
    if folds < 2:
        raise _key_error("tuning.folds", f"must be at least 2, got {folds}")
    metric = raw.get("metric")
    if metric is not None and metric not in METRICS[task]:
        raise _key_error("tuning.metric", f"unknown metric {metric!r} for {task}; known: {', '.join(METRICS[task])}")
    return TuningSpec(grid, folds, metric, _number(raw, "seed", "tuning.seed", 42, int))


def _parse_validation(raw: Any, task: str, known: tuple[str, ...] | None = None) -> ValidationSpec:
    """``known``: the metrics a threshold may name (default: :data:`METRICS` of ``task``)."""
    known = known if known is not None else METRICS[task]
    if raw is None:
        return ValidationSpec()
    _expect(raw, dict, "validation", "a mapping with 'thresholds' and/or 'max_regression'")
    _unknown_keys(raw, ("thresholds", "max_regression"), "validation")
    thresholds: dict[str, dict[str, float]] = {}
    raw_thresholds = raw.get("thresholds") or {}
    _expect(raw_thresholds, dict, "validation.thresholds", "a mapping of metric -> {min: x} / {max: x}")
    for metric, bounds in raw_thresholds.items():
        key = f"validation.thresholds.{metric}"
        if metric not in known:
            raise _key_error(key, f"unknown metric for {task}; known: {', '.join(known)}")
        _expect(bounds, dict, key, "a mapping with 'min' and/or 'max'")
        if not bounds:
            raise _key_error(key, "give 'min' and/or 'max'")
        _unknown_keys(bounds, ("min", "max"), key)
        thresholds[metric] = {b: _number(bounds, b, f"{key}.{b}", None, float) for b in bounds}
    max_regression = raw.get("max_regression")
    if max_regression is not None:
        max_regression = _number(raw, "max_regression", "validation.max_regression", None, float)
        if max_regression < 0:
            raise _key_error("validation.max_regression", f"must be >= 0, got {max_regression}")
    return ValidationSpec(thresholds, max_regression)


def parse_spec(raw: Mapping[str, Any], base_dir: str | None = None, source: str | None = None) -> TrainingSpec:
    """Check ``raw`` (a parsed YAML mapping) and return a :class:`TrainingSpec`.

    A relative ``table`` resolves against ``base_dir`` (the spec file's folder), else the cwd. Raises
    :class:`~sparkship.errors.UsageError` naming the offending key.
    """
    _expect(raw, dict, "(top level)", "a mapping")
    if "pipeline" in raw:  # the general form: sparkship.spec_pipeline.parse_any_spec reads both
        raise _key_error("pipeline", "a spec with 'pipeline' is read by sparkship.spec_pipeline.parse_any_spec")
    _unknown_keys(raw, _TOP_KEYS, "")
    for required in ("name", "task", "table", "label", "features", "model"):
        if raw.get(required) in (None, ""):
            raise _key_error(required, "is required")
    try:
        name = validate_name(raw["name"])
    except UsageError as exc:
        raise _key_error("name", str(exc)) from None
    task = raw["task"]
    if task not in TASKS:
        raise _key_error("task", f"expected one of {', '.join(TASKS)}, got {task!r}")
    table = parse_table(raw["table"], what="spec key 'table'", base_dir=base_dir)
    label = _expect(raw["label"], str, "label", "a column name")
    features = _parse_features(raw["features"])
    if label in features.columns:
        raise _key_error("label", f"column {label!r} is also listed as a feature")
    if label in RESERVED_COLUMNS or label.endswith(RESERVED_SUFFIXES):
        raise _key_error("label", f"column name {label!r} clashes with the pipeline's own output columns; rename it")
    model = _parse_model(raw["model"], task)
    description = raw.get("description")
    if description is not None:
        _expect(description, str, "description", "text")
    return TrainingSpec(
        name=name,
        task=task,
        table=table.location,
        table_version=table.version,
        label=label,
        features=features,
        model=model,
        split=_parse_split(raw.get("split")),
        tuning=_parse_tuning(raw.get("tuning"), model, task),
        validation=_parse_validation(raw.get("validation"), task),
        description=description,
        source=source,
    )


def load_spec(path: str) -> TrainingSpec:
    """Read and check a YAML spec file; a relative ``table`` resolves against the file's folder.

    >>> spec = load_spec("specs/churn.yml")                                      # doctest: +SKIP
    """
    raw, base = read_spec_file(path)
    try:
        return parse_spec(raw, base_dir=base, source=os.path.abspath(path))
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def read_spec_file(path: str) -> tuple[Any, str]:
    """The parsed YAML of the spec file ``path`` (not yet checked) and the folder relative tables resolve in."""
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise UsageError(f"spec file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"spec file {path} is a folder") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"spec file {path} is not valid YAML: {exc}") from None
    if raw is None:
        raise UsageError(f"spec file {path} is empty")
    return raw, os.path.dirname(os.path.abspath(path))
