"""The validation gate: a candidate version against its model's gate policy and against the current champion.

Both models are evaluated by :func:`sparkship.training.evaluate` over the labelled rows of ONE pinned snapshot of
the validation table (``PATH@V``, else the latest version when validation starts). On the table a model was
trained on, only the rows its training held out (:func:`sparkship.training.split_flag`) are judged, and both models
are judged on the same rows. The rules come from the model's policy in the registry (:mod:`sparkship.policy`),
which the candidate's ``spec.validation`` can only tighten; a model without a policy is refused. The outcome is
recorded as a ``validated`` event of the candidate version. The full rules: docs/DESIGN.md.

    >>> result = validate(spark, settings, "churn/run:1234", "/data/churn_holdout")     # doctest: +SKIP
    >>> result.passed, result.table_version, result.reasons                              # doctest: +SKIP
    (False, 7, ['areaUnderROC = 0.71 is below the minimum 0.8'])
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sparkship import artifacts, policy, tables
from sparkship.config import Settings
from sparkship.errors import NotFoundError, SchemaMismatchError, SparkshipError, UsageError
from sparkship.fitted import flat_stages, predictor
from sparkship.metrics import SILHOUETTE, clustering_metrics
from sparkship.refs import ModelRef, TableRef, to_model_ref, to_table_ref
from sparkship.registering import spec_of
from sparkship.registry import ModelVersion, Registry
from sparkship.spark import cached, uncached
from sparkship.spec import SMALLER_IS_BETTER, TrainingSpec, ValidationSpec
from sparkship.training import evaluate, split_flag

# pyspark is an optional dependency (the `local` extra; Databricks ships its own): functions import it where used.
if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

CHAMPION = "champion"
EVENT = "validated"
# Differences of two metrics carry float noise (0.9 - 0.875 > 0.025): a regression of exactly max_regression passes.
_ROUNDING = 1e-12

__all__ = ["CHAMPION", "Check", "ValidationResult", "check_rules", "effective_rules", "primary_metric", "validate"]


@dataclass(frozen=True)
class Check:
    """One rule applied: ``kind`` is ``min``, ``max`` or ``regression``; ``limit`` the bound it was held to."""

    metric: str
    kind: str
    limit: float
    value: float | None
    passed: bool
    champion_value: float | None = None
    reason: str | None = None


@dataclass
class ValidationResult:
    """The outcome of :func:`validate`, as recorded in the ``validated`` event."""

    name: str
    version: int
    passed: bool
    reasons: list[str]
    candidate_metrics: dict[str, float | None]
    champion_metrics: dict[str, float | None] | None
    champion_version: int | None
    table: str
    table_version: int
    rows: int
    checks: list[Check] = field(default_factory=list)
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    max_regression: float | None = None
    run_id: str | None = None
    rows_kind: str = "all"  # "held-out": only rows that the training of held_out_by left out
    held_out_by: list[str] = field(default_factory=list)
    policy: dict[str, Any] | None = None  # the model's gate policy applied (policy.Policy.to_dict())
    spec_rules: dict[str, Any] | None = None  # what the candidate's spec.validation added to it

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status
        return out


# --- metrics ---------------------------------------------------------------------------------------------


def _finite(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """NaN (e.g. an AUC over one class) becomes None: 'could not be computed', and valid JSON."""
    return {k: float(v) if v is not None and math.isfinite(v) else None for k, v in metrics.items()}


# --- rules -----------------------------------------------------------------------------------------------


def primary_metric(task: str, metrics: Mapping[str, Any]) -> str:
    """The metric ``max_regression`` guards when no thresholds are set (the tuning default, too): rmse, the
    silhouette, areaUnderROC for a binary classifier, else f1.

        >>> primary_metric("clustering", {"silhouette": 0.6}), primary_metric("classification", {"f1": 0.8})
        ('silhouette', 'f1')
    """
    if task == "regression":
        return "rmse"
    if task == "clustering":
        return SILHOUETTE
    return "areaUnderROC" if "areaUnderROC" in metrics else "f1"


def _worse_by(metric: str, candidate: float, champion: float) -> float:
    """How much worse ``candidate`` is than ``champion`` (negative: better)."""
    return candidate - champion if metric in SMALLER_IS_BETTER else champion - candidate


def check_rules(
    candidate: Mapping[str, float | None],
    thresholds: Mapping[str, Mapping[str, float]],
    champion: Mapping[str, float | None] | None = None,
    max_regression: float | None = None,
    primary: str | None = None,
) -> list[Check]:
    """Apply the thresholds and the regression limit (see the module docstring) and return every check.

        >>> [c.passed for c in check_rules({"rmse": 31.0}, {"rmse": {"max": 30}})]
        [False]
        >>> [c.passed for c in check_rules({"f1": 0.79}, {"f1": {"min": 0.7}}, {"f1": 0.80}, 0.02)]
        [True, True]
    """
    checks: list[Check] = []
    for metric, bounds in thresholds.items():
        value = candidate.get(metric)
        for kind in ("min", "max"):
            if kind not in bounds:
                continue
            limit = float(bounds[kind])
            if value is None:
                checks.append(Check(metric, kind, limit, None, False,
                                    reason=f"{metric} could not be computed for this model on the validation table"))
                continue
            ok = value >= limit if kind == "min" else value <= limit
            word = "below the minimum" if kind == "min" else "above the maximum"
            reason = None if ok else f"{metric} = {value:.6g} is {word} {limit:g}"
            checks.append(Check(metric, kind, limit, value, ok, reason=reason))
    if champion is not None and max_regression is not None:
        compared = list(thresholds) or ([primary] if primary else [])
        for metric in compared:
            value, best = candidate.get(metric), champion.get(metric)
            if value is None or best is None:
                checks.append(Check(metric, "regression", max_regression, value, False, best,
                                    reason=f"{metric} cannot be compared with the champion (missing or NaN)"))
                continue
            worse = _worse_by(metric, value, best)
            ok = worse <= max_regression + _ROUNDING
            direction = "lower" if metric not in SMALLER_IS_BETTER else "higher"
            checks.append(Check(
                metric, "regression", max_regression, value, ok, best,
                reason=None if ok else (
                    f"{metric} = {value:.6g} is {worse:.6g} {direction} (worse) than the champion's {best:.6g}; "
                    f"max_regression is {max_regression:g}"
                ),
            ))
    return checks


# --- the gate --------------------------------------------------------------------------------------------


@dataclass
class _Model:
    """One model to evaluate: its version, its spec (from the manifest) and its class labels."""

    mv: ModelVersion
    spec: TrainingSpec
    labels: list[str] | None
    who: str


def _model(mv: ModelVersion, manifest: Mapping[str, Any], who: str) -> _Model:
    return _Model(mv, spec_of(manifest, mv.ref), manifest.get("labels"), who)


def _champion(reg: Registry, candidate: _Model) -> tuple[_Model | None, int | None]:
    """The champion to compare with (None when there is none, or it is the candidate) and the version holding it."""
    mv, task = candidate.mv, candidate.spec.task
    holder = reg.alias_version(mv.name, CHAMPION)
    if holder is None or holder == mv.version:
        return None, holder
    champion_mv, champion_manifest = reg.manifest(ModelRef(mv.name, version=holder))
    champion = _model(champion_mv, champion_manifest, f"champion {champion_mv.ref}")
    if champion.spec.task != task:
        raise UsageError(
            f"champion {champion_mv.ref} is a {champion.spec.task} model and {mv.ref} a {task} model: "
            "their metrics cannot be compared"
        )
    return champion, holder


def _check_columns(df: DataFrame, model: _Model, where: str) -> None:
    """Refuse a table the model cannot be evaluated on, before any Spark job runs."""
    label = model.spec.label  # "" for a clustering model: it is judged on its inputs alone
    needed = [*model.spec.features.columns, *([label] if label else [])]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise SchemaMismatchError(f"validation table {where} lacks columns {missing} that {model.who} needs")
    if label and df.schema[model.spec.label].dataType.simpleString() == "string" and not model.labels:
        raise SchemaMismatchError(
            f"label column '{model.spec.label}' of {where} holds strings, but the manifest of {model.who} lists no "
            "class 'labels' to map them to the classes the model predicts"
        )


def _pin(spark: SparkSession, table: TableRef) -> tuple[str, int]:
    path, version = table.location, table.version
    latest = tables.version(spark, path)
    if latest is None:
        raise NotFoundError(f"no Delta table at {path}")
    if version is None:
        return path, latest
    if version > latest:
        raise NotFoundError(f"table {path} has no version {version} (latest is {latest})")
    return path, version


def _silhouette(pipeline: PipelineModel, df: DataFrame) -> dict[str, float]:
    """A clustering model's silhouette on ``df``, over the features its clustering stage reads."""
    found = predictor(flat_stages(pipeline))
    if found is None:
        raise UsageError("the clustering model has no clustering stage to read its features from")
    transformed = cached(pipeline.transform(df))
    try:
        return clustering_metrics(transformed, found.getFeaturesCol(), found.getPredictionCol())
    finally:
        uncached(transformed)


def _evaluate(model: _Model, df: DataFrame, where: str) -> dict[str, float | None]:
    log.info("evaluating %s on %s", model.who, where)
    pipeline = artifacts.load(model.mv.artifact)
    if model.spec.task == "clustering":
        return _finite(_silhouette(pipeline, df))
    metrics = _finite(evaluate(pipeline, df, model.spec, labels=model.labels))
    log.info("%s: %s", model.who, metrics)
    return metrics


# --- which rows are judged -------------------------------------------------------------------------------


def _same_table(spark: SparkSession, trained: str | None, path: str) -> bool:
    """Whether ``path`` is the table a model was trained on: the same path or name, or the same Delta table id.

    Erring towards 'same' only costs rows (the split is then applied to a table it did not come from); erring the
    other way would judge a model on rows it was fitted on, so any doubt that can be checked is checked.
    """
    if not trained:
        return False
    if trained == path or (os.path.isabs(trained) and os.path.isabs(path)
                           and os.path.realpath(trained) == os.path.realpath(path)):
        return True
    try:
        if not tables.exists(spark, trained):
            return False
        return tables.identity(spark, trained).id == tables.identity(spark, path).id
    except SparkshipError:
        return False


def _judged_rows(spark: SparkSession, df: DataFrame, path: str,
                 models: list[_Model]) -> tuple[DataFrame, list[str]]:
    """``df`` less the rows any of ``models`` was trained on (when ``path`` is its training table), and the refs
    whose held-out split was applied. The split is training's own :func:`~sparkship.training.split_flag`: a hash of
    each row's values, so it picks the same rows at any version of the table."""
    held_out_by = []
    for model in models:
        if not model.spec.label:
            continue  # a clustering model's split is not sparkship's: every row is judged
        if _same_table(spark, model.mv.table or model.spec.table, path):
            df = df.where(split_flag(model.spec))
            held_out_by.append(model.mv.ref)
    return df, held_out_by


def _count(df: DataFrame, model: _Model, where: str, held_out_by: list[str]) -> int:
    from pyspark.sql import functions as F

    label = model.spec.label
    rows = df.where(F.col(f"`{label}`").isNotNull()).count() if label else df.count()
    if rows == 0:
        if held_out_by:
            raise UsageError(f"{where} has no labelled rows that the training of {' and '.join(held_out_by)} held out: "
                             "validate on a separate table")
        raise UsageError(f"{where} has no labelled rows to validate on")
    return rows


# --- the rules -------------------------------------------------------------------------------------------


def _spec_rules(spec: ValidationSpec) -> dict[str, Any] | None:
    if not spec.thresholds and spec.max_regression is None:
        return None
    return {"thresholds": {m: dict(b) for m, b in spec.thresholds.items()}, "max_regression": spec.max_regression}


def effective_rules(rules: policy.Rules, spec: ValidationSpec) -> tuple[dict[str, dict[str, float]], float | None]:
    """The policy's rules, tightened by the candidate's own ``spec.validation`` (which can never loosen them).

        >>> effective_rules(policy.Rules({"f1": {"min": 0.7}}, 0.05), ValidationSpec({"f1": {"min": 0.8}}, 0.1))
        ({'f1': {'min': 0.8}}, 0.05)
    """
    thresholds = {m: dict(b) for m, b in rules.thresholds.items()}
    for metric, bounds in spec.thresholds.items():
        mine = thresholds.setdefault(metric, {})
        if "min" in bounds:
            mine["min"] = max(mine.get("min", -math.inf), float(bounds["min"]))
        if "max" in bounds:
            mine["max"] = min(mine.get("max", math.inf), float(bounds["max"]))
    limits = [x for x in (rules.max_regression, spec.max_regression) if x is not None]
    return thresholds, (min(limits) if limits else None)


def _policy_in_force(settings: Settings, candidate: _Model, rules: policy.Rules | None) -> policy.Policy | None:
    """The model's policy, checked against its task before any Spark job: None when ``rules`` will replace it."""
    name, task = candidate.mv.name, candidate.spec.task
    if rules is not None:
        policy.check_task(rules, task, "--policy", "give rules for its metrics")
        return None
    in_force = policy.require(settings, name)
    policy.check_task(in_force.rules, task, f"the gate policy of {name} (version {in_force.version})",
                      f"set it again with `sparkship policy set {name}`")
    return in_force


def validate(
    spark: SparkSession, settings: Settings, ref: str | ModelRef, table: str | TableRef, run_id: str | None = None,
    rules: policy.Rules | None = None,
) -> ValidationResult:
    """Evaluate ``ref`` (and the champion) on one snapshot of ``table`` (``PATH[@V]``); record the outcome.

    The references may be strings (parsed here, a bad table named as ``--table``) or parsed ones.

    ``rules``: made the model's gate policy first (what a bundle's ``gate_policy`` passes); None judges by the
    policy in the registry, and a model without one is refused (:class:`sparkship.policy.NoPolicyError`).

        >>> result = validate(spark, settings, "churn/3", "/data/holdout@2")            # doctest: +SKIP
        >>> result.status, result.rows_kind, result.rows                                # doctest: +SKIP
        ('PASS', 'all', 2000)
    """
    evaluated = to_table_ref(table, what="--table")
    reg = Registry(settings)
    mv, manifest = reg.manifest(to_model_ref(ref))
    candidate = _model(mv, manifest, mv.ref)
    champion, holder = _champion(reg, candidate)
    in_force = _policy_in_force(settings, candidate, rules)

    path, version = _pin(spark, evaluated)
    where = f"{path}@{version}"
    df = tables.read(spark, path, version=version)
    models = [m for m in (candidate, champion) if m is not None]
    for model in models:
        _check_columns(df, model, where)
    df, held_out_by = _judged_rows(spark, df, path, models)

    # Both models read the same rows: cache them once instead of reading the Delta table twice.
    df = cached(df)
    try:
        rows = _count(df, candidate, where, held_out_by)
        if rules is not None:  # the table checked out: now the policy may be recorded
            in_force, _ = policy.set_policy(settings, mv.name, rules, source="validate --policy", run_id=run_id)
        candidate_metrics = _evaluate(candidate, df, where)
        champion_metrics = _evaluate(champion, df, where) if champion is not None else None
    finally:
        uncached(df)

    assert in_force is not None
    thresholds, max_regression = effective_rules(in_force.rules, candidate.spec.validation)
    if not thresholds and max_regression is None:
        log.warning("%s: the gate policy of %s is permissive: nothing is gated", mv.ref, mv.name)
    checks = check_rules(candidate_metrics, thresholds, champion_metrics, max_regression,
                         primary_metric(candidate.spec.task, candidate_metrics))
    reasons = [c.reason for c in checks if not c.passed and c.reason]
    result = ValidationResult(
        name=mv.name, version=mv.version, passed=not reasons, reasons=reasons,
        candidate_metrics=candidate_metrics, champion_metrics=champion_metrics, champion_version=holder,
        table=path, table_version=version, rows=rows, checks=checks, thresholds=thresholds,
        max_regression=max_regression, run_id=run_id, rows_kind="held-out" if held_out_by else "all",
        held_out_by=held_out_by, policy=in_force.to_dict(), spec_rules=_spec_rules(candidate.spec.validation),
    )
    reg.record_event(mv.name, mv.version, EVENT, result.to_dict(), run_id)
    log.info("%s: %s%s", mv.ref, result.status, f" ({'; '.join(reasons)})" if reasons else "")
    return result
