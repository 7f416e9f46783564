"""The general training spec: any Spark ML pipeline, as a list of stages or a factory function in the user's code.

A spec with a ``pipeline:`` key instead of ``features:`` + ``model:`` declares the pipeline itself. Each stage is a
class under ``pyspark.ml`` with its params, checked here without a JVM by the class's own Param type converters;
or ``pipeline: {factory: "package.module:function"}`` names a function that returns an unfitted ``Pipeline`` or
estimator. ``tuning:`` searches any param of any stage (``"<stage index or class name>.<param>"``) with
``CrossValidator`` or ``TrainValidationSplit``. :func:`parse_any_spec` / :func:`load_any_spec` read both forms.

    >>> spec = parse_any_spec({
    ...     "name": "reviews", "task": "classification", "table": "/data/reviews@2", "label": "stars",
    ...     "pipeline": [
    ...         {"class": "pyspark.ml.feature.Tokenizer", "params": {"inputCol": "text", "outputCol": "words"}},
    ...         {"class": "pyspark.ml.feature.HashingTF", "params": {"inputCol": "words", "outputCol": "features"}},
    ...         {"class": "pyspark.ml.classification.NaiveBayes"},
    ...     ],
    ...     "tuning": {"method": "train_validation_split", "grid": {"NaiveBayes.smoothing": [0.5, 1]}},
    ... })
    >>> [s.class_name for s in spec.stages], spec.tuning.axes[0].stage, spec.tuning.axes[0].values
    (['Tokenizer', 'HashingTF', 'NaiveBayes'], 2, [0.5, 1.0])
"""
from __future__ import annotations

import copy
import importlib
import inspect
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sparkship.errors import UsageError
from sparkship.names import validate_name
from sparkship.refs import parse_table
from sparkship.spec import (
    METRICS,
    SplitSpec,
    TrainingSpec,
    ValidationSpec,
    _expect,
    _key_error,
    _number,
    _parse_split,
    _parse_validation,
    _unknown_keys,
    class_params,
    convert_param,
    parse_spec,
    read_spec_file,
    table_fields,
    with_rules_and_description,
)

__all__ = ["PIPELINE_METRICS", "PIPELINE_TASKS", "GridAxis", "PipelineSpec", "PipelineTuning", "StageSpec",
           "load_any_spec", "parse_any_spec", "parse_pipeline_spec", "resolve_grid", "stage_params"]

PIPELINE_TASKS = ("classification", "regression", "clustering")
# Metrics a pipeline spec may tune on or set thresholds for, by task.
PIPELINE_METRICS: dict[str, tuple[str, ...]] = {
    "classification": (*METRICS["classification"], "weightedPrecision", "weightedRecall"),
    "regression": METRICS["regression"],
    "clustering": ("silhouette",),
}
TASK_MODULES = {"pyspark.ml.classification": "classification", "pyspark.ml.regression": "regression",
                "pyspark.ml.clustering": "clustering"}
TUNING_METHODS = ("cross_validation", "train_validation_split")
_TOP_KEYS = ("name", "task", "table", "label", "pipeline", "split", "tuning", "validation", "description")
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class StageSpec:
    """One stage: the class's full path (``pyspark.ml.feature.Tokenizer``) and its checked params."""

    class_path: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def class_name(self) -> str:
        return self.class_path.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class GridAxis:
    """One tuning axis: the grid key as written, the stage index it names, the param and its candidate values."""

    key: str
    stage: int
    param: str
    values: list[Any]


@dataclass(frozen=True)
class PipelineTuning:
    """``CrossValidator`` (``folds``) or ``TrainValidationSplit`` (``train_ratio``) over ``grid``.

    ``axes`` are the grid resolved to stages; empty for a factory pipeline until its stages exist (training
    resolves them with :func:`resolve_grid` before anything is fitted).
    """

    method: str
    grid: dict[str, list[Any]]
    axes: tuple[GridAxis, ...] = ()
    folds: int = 3
    train_ratio: float = 0.75
    metric: str | None = None  # default: areaUnderROC (binary), f1 (multiclass), rmse, silhouette
    seed: int = 42


@dataclass(frozen=True)
class PipelineSpec:
    """A parsed pipeline spec: ``stages`` or ``factory`` (exactly one is set); ``label`` None for clustering."""

    name: str
    task: str
    table: str
    label: str | None
    stages: tuple[StageSpec, ...] | None = None
    factory: str | None = None
    table_version: int | None = None
    split: SplitSpec = field(default_factory=SplitSpec)
    tuning: PipelineTuning | None = None
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    description: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The spec as the YAML would say it (table pinned as ``path@V`` when pinned); for the manifest."""
        pipeline: Any = {"factory": self.factory} if self.factory else [
            {"class": s.class_path, "params": copy.deepcopy(s.params)} for s in self.stages or ()]
        out: dict[str, Any] = {
            "name": self.name, "task": self.task,
            "table": self.table if self.table_version is None else f"{self.table}@{self.table_version}",
            "pipeline": pipeline, "split": {"test_fraction": self.split.test_fraction, "seed": self.split.seed},
        }
        if self.label is not None:
            out["label"] = self.label
        if self.tuning is not None:
            t = self.tuning
            held_out = {"folds": t.folds} if t.method == "cross_validation" else {"train_ratio": t.train_ratio}
            out["tuning"] = {"method": t.method, "grid": copy.deepcopy(t.grid), "metric": t.metric, "seed": t.seed,
                             **held_out}
        return with_rules_and_description(out, self.validation, self.description)

    def with_table(self, table: str, base_dir: str | None = None) -> PipelineSpec:
        """A copy reading another table (``PATH[@V]``; relative paths resolve against ``base_dir`` or the cwd)."""
        return replace(self, **table_fields(table, base_dir))


# --- stages ------------------------------------------------------------------------------------------------------


def stage_params(cls: type) -> dict[str, Any]:
    """The Spark ``Param`` objects a pyspark.ml class declares, by name (no JVM needed).

    >>> sorted(stage_params(importlib.import_module("pyspark.ml.feature").Tokenizer))
    ['inputCol', 'outputCol']
    """
    return class_params(cls)


def _stage_class(path: Any, key: str) -> type:
    """The estimator or transformer class at ``path`` (under ``pyspark.ml``); a one-line refusal otherwise."""
    from pyspark.ml import Estimator, Model, Pipeline, Transformer  # pyspark: optional (the `local` extra)

    if not isinstance(path, str) or not path.startswith("pyspark.ml."):
        raise _key_error(key, f"expected a class under pyspark.ml (e.g. pyspark.ml.feature.Tokenizer), got {path!r};"
                         " use pipeline: {factory: 'package.module:function'} for other code")
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        cls = None
    if not isinstance(cls, type):
        raise _key_error(key, f"pyspark has no class {path}")
    if issubclass(cls, Pipeline) or module == "pyspark.ml.tuning":
        raise _key_error(key, f"{name} cannot be a stage: list its stages here, and search params with 'tuning'")
    if issubclass(cls, Model):
        raise _key_error(key, f"{name} is a fitted model class: name the estimator that fits it")
    if not issubclass(cls, (Estimator, Transformer)):
        raise _key_error(key, f"{path} is not a Spark ML estimator or transformer")
    return cls


def _check_value(cls: type, key: str, name: Any, value: Any) -> Any:
    return convert_param(cls.__name__, stage_params(cls), key, name, value)


def _parse_stage(raw: Any, key: str) -> StageSpec:
    _expect(raw, dict, key, "a mapping with 'class' and optional 'params'")
    _unknown_keys(raw, ("class", "params"), key)
    cls = _stage_class(raw.get("class"), f"{key}.class")
    params = raw.get("params") or {}
    _expect(params, dict, f"{key}.params", f"a mapping of {cls.__name__} parameters")
    checked = {str(n): _check_value(cls, f"{key}.params.{n}", n, v) for n, v in params.items()}
    return StageSpec(str(raw["class"]), checked)


def _stage_task(classes: Sequence[type]) -> tuple[str | None, int | None]:
    """The task the last classification, regression or clustering stage gives, and that stage's index."""
    for i in range(len(classes) - 1, -1, -1):
        if classes[i].__module__ in TASK_MODULES:
            return TASK_MODULES[classes[i].__module__], i
    return None, None


def check_task(classes: Sequence[type], task: str, where: str) -> None:
    """Refuse a pipeline whose predictor stage contradicts ``task`` (pyspark stages only: others are trusted)."""
    found, index = _stage_task(classes)
    if found is None:
        if all(c.__module__.startswith("pyspark.") for c in classes):
            raise _key_error(where, f"no stage is a classification, regression or clustering estimator (task {task})")
        return
    if found != task:
        assert index is not None
        raise _key_error("task", f"{task} contradicts the pipeline: its {classes[index].__name__} stage "
                         f"({where}[{index}]) makes it a {found} model")


def _parse_stages(raw: list[Any], task: str) -> tuple[StageSpec, ...]:
    if not raw:
        raise _key_error("pipeline", "list at least one stage")
    stages = tuple(_parse_stage(s, f"pipeline[{i}]") for i, s in enumerate(raw))
    check_task([_stage_class(s.class_path, "pipeline") for s in stages], task, "pipeline")
    return stages


def _parse_factory(raw: Mapping[str, Any], import_factory: bool) -> str:
    _unknown_keys(raw, ("factory",), "pipeline")
    ref = raw.get("factory")
    if not isinstance(ref, str) or not _FACTORY.fullmatch(ref):
        raise _key_error("pipeline.factory", f"expected 'package.module:function', got {ref!r}")
    if import_factory:
        load_factory(ref)
    return ref


def load_factory(ref: str) -> Any:
    """The function ``ref`` (``package.module:function``) names; a one-line refusal when it cannot be imported."""
    module, _, name = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name, None)
    except ImportError as exc:
        raise _key_error("pipeline.factory", f"cannot import {module} ({exc}); install the package that holds it"
                         ) from None
    if fn is None:
        raise _key_error("pipeline.factory", f"module {module} has no {name}")
    if not callable(fn) or inspect.isclass(fn):
        raise _key_error("pipeline.factory", f"{ref} is not a function")
    return fn


# --- tuning ------------------------------------------------------------------------------------------------------


def resolve_grid(grid: Mapping[str, list[Any]], classes: Sequence[type]) -> tuple[GridAxis, ...]:
    """The grid's ``"<stage index or class name>.<param>"`` keys resolved to the stages of ``classes``, values
    converted by the param's type converter. A one-line refusal for a key that names no stage or param."""
    axes = []
    for raw_key, values in grid.items():
        key = f"tuning.grid.{raw_key}"
        ref, _, param = str(raw_key).rpartition(".")
        if not ref or not param:
            raise _key_error(key, "expected '<stage index or class name>.<param>', e.g. 'LogisticRegression.regParam'")
        if re.fullmatch(r"[0-9]+", ref):
            index = int(ref)
            if index >= len(classes):
                raise _key_error(key, f"stage {index} does not exist: the pipeline has {len(classes)} stages")
        else:
            matches = [i for i, c in enumerate(classes) if ref in (c.__name__, f"{c.__module__}.{c.__name__}")]
            if len(matches) != 1:
                names = ", ".join(c.__name__ for c in classes)
                problem = "names no stage" if not matches else f"names {len(matches)} stages: use the stage index"
                raise _key_error(key, f"{ref!r} {problem} (stages: {names})")
            index = matches[0]
        if not isinstance(values, list) or not values:
            raise _key_error(key, f"expected a non-empty list of values, got {values!r}")
        axes.append(GridAxis(str(raw_key), index, param,
                             [_check_value(classes[index], key, param, v) for v in values]))
    return tuple(axes)


def _parse_tuning(raw: Any, task: str, classes: Sequence[type] | None) -> PipelineTuning | None:
    if raw is None:
        return None
    _expect(raw, dict, "tuning", "a mapping with 'grid' and optional 'method', 'folds', 'train_ratio', 'metric'")
    _unknown_keys(raw, ("method", "grid", "folds", "train_ratio", "metric", "seed"), "tuning")
    method = raw.get("method", "cross_validation")
    if method not in TUNING_METHODS:
        raise _key_error("tuning.method", f"expected one of {', '.join(TUNING_METHODS)}, got {method!r}")
    other = "train_ratio" if method == "cross_validation" else "folds"
    if other in raw:
        raise _key_error(f"tuning.{other}", f"does not apply to method {method}")
    grid = raw.get("grid")
    _expect(grid, dict, "tuning.grid", "a mapping of '<stage>.<param>' -> list of values")
    if not grid:
        raise _key_error("tuning.grid", "list at least one parameter to search over")
    axes = resolve_grid(grid, classes) if classes is not None else ()
    folds = _number(raw, "folds", "tuning.folds", 3, int)
    if folds < 2:
        raise _key_error("tuning.folds", f"must be at least 2, got {folds}")
    ratio = _number(raw, "train_ratio", "tuning.train_ratio", 0.75, float)
    if not 0.0 < ratio < 1.0:
        raise _key_error("tuning.train_ratio", f"must be between 0 and 1 (exclusive), got {ratio}")
    metric = raw.get("metric")
    if metric is not None and metric not in PIPELINE_METRICS[task]:
        raise _key_error("tuning.metric", f"unknown metric {metric!r} for {task}; known: "
                         f"{', '.join(PIPELINE_METRICS[task])}")
    grid = {str(k): list(v) for k, v in grid.items()}
    if axes:
        grid = {a.key: a.values for a in axes}
    return PipelineTuning(method, grid, axes, folds, ratio, metric, _number(raw, "seed", "tuning.seed", 42, int))


# --- the spec ----------------------------------------------------------------------------------------------------


def parse_pipeline_spec(raw: Mapping[str, Any], base_dir: str | None = None, source: str | None = None, *,
                        import_factory: bool = True) -> PipelineSpec:
    """Check a spec with a ``pipeline:`` key and return a :class:`PipelineSpec` (see the module docstring).

    Raises :class:`~sparkship.errors.UsageError` naming the offending key. A factory is imported (not called)
    unless ``import_factory`` is False (checking a bundle where the user's wheel is not installed).
    """
    _expect(raw, dict, "(top level)", "a mapping")
    _unknown_keys(raw, _TOP_KEYS, "")
    for required in ("name", "task", "table", "pipeline"):
        if raw.get(required) in (None, ""):
            raise _key_error(required, "is required")
    try:
        name = validate_name(raw["name"])
    except UsageError as exc:
        raise _key_error("name", str(exc)) from None
    task = raw["task"]
    if task not in PIPELINE_TASKS:
        raise _key_error("task", f"expected one of {', '.join(PIPELINE_TASKS)}, got {task!r}")
    table = parse_table(raw["table"], what="spec key 'table'", base_dir=base_dir)
    label = raw.get("label")
    if label is None and task != "clustering":
        raise _key_error("label", f"is required for {task}")
    if label is not None:
        _expect(label, str, "label", "a column name")
    pipeline = raw["pipeline"]
    _expect(pipeline, (list, dict), "pipeline", "a list of stages or {factory: 'package.module:function'}")
    stages = _parse_stages(pipeline, task) if isinstance(pipeline, list) else None
    factory = _parse_factory(pipeline, import_factory) if isinstance(pipeline, dict) else None
    classes = [_stage_class(s.class_path, "pipeline") for s in stages] if stages is not None else None
    description = raw.get("description")
    if description is not None:
        _expect(description, str, "description", "text")
    return PipelineSpec(
        name=name, task=task, table=table.location, table_version=table.version, label=label, stages=stages,
        factory=factory,
        split=_parse_split(raw.get("split")), tuning=_parse_tuning(raw.get("tuning"), task, classes),
        validation=_parse_validation(raw.get("validation"), task, PIPELINE_METRICS[task]),
        description=description, source=source,
    )


def parse_any_spec(raw: Mapping[str, Any], base_dir: str | None = None, source: str | None = None, *,
                   import_factory: bool = True) -> TrainingSpec | PipelineSpec:
    """A :class:`PipelineSpec` for a spec with ``pipeline:``, else the short form's :class:`TrainingSpec`."""
    if isinstance(raw, Mapping) and "pipeline" in raw:
        return parse_pipeline_spec(raw, base_dir=base_dir, source=source, import_factory=import_factory)
    return parse_spec(raw, base_dir=base_dir, source=source)


def load_any_spec(path: str, *, import_factory: bool = True) -> TrainingSpec | PipelineSpec:
    """Read and check a YAML spec file of either form; a relative ``table`` resolves against the file's folder.

    >>> spec = load_any_spec("specs/reviews.yml")                                 # doctest: +SKIP
    """
    raw, base = read_spec_file(path)
    try:
        return parse_any_spec(raw, base_dir=base, source=os.path.abspath(path), import_factory=import_factory)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
