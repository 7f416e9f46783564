"""The validation gate: a candidate version against its thresholds and against the current champion.

Both models are evaluated in Spark by :func:`sparkship.training.evaluate` (with the spec and class ``labels``
stored in each one's manifest), over every labelled row of ONE pinned snapshot of the validation table (the
version given as ``PATH@V``, else the latest version when validation starts), so a concurrent append cannot
make the two sets of metrics disagree about the data they saw.

The rules, read from the candidate's manifest (``spec.validation``):

* ``thresholds``: ``{metric: {min: x, max: y}}``; both bounds are inclusive (``value >= min``,
  ``value <= max``). A thresholded metric that cannot be computed (areaUnderROC of a multiclass model, a NaN)
  fails.
* ``max_regression``: an absolute amount, in the metric's own units. The candidate fails when, on any
  thresholded metric (or on the primary metric when there are no thresholds: areaUnderROC for binary
  classification, f1 for multiclass, rmse for regression), it is worse than the champion by MORE than
  ``max_regression``. Worse means lower for areaUnderROC, areaUnderPR, accuracy, f1 and r2, and higher for
  rmse, mae and logLoss (a difference within 1e-12 of the limit counts as equal). It is checked only when
  there is a champion (``NAME@champion``) that is not the candidate itself.
* No thresholds and no ``max_regression``: the candidate passes once its metrics are computed (a warning is
  logged: nothing was gated).

The outcome (PASS/FAIL, every metric of both models, the snapshot version, the reasons) is recorded as a
``validated`` event of the candidate version.

    >>> result = validate(spark, settings, "churn/run:1234", "/data/churn_holdout")     # doctest: +SKIP
    >>> result.passed, result.table_version, result.reasons                              # doctest: +SKIP
    (False, 7, ['areaUnderROC = 0.71 is below the minimum 0.8'])
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from sparkship import artifacts, tables
from sparkship.config import Settings
from sparkship.errors import NotFoundError, SchemaMismatchError, UsageError
from sparkship.registry import ModelVersion, Registry
from sparkship.spec import SMALLER_IS_BETTER, TrainingSpec, parse_spec, parse_table_ref
from sparkship.spark import cached, uncached

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

CHAMPION = "champion"
EVENT = "validated"
# Differences of two metrics carry float noise (0.9 - 0.875 > 0.025): a regression of exactly max_regression passes.
_ROUNDING = 1e-12

__all__ = ["CHAMPION", "Check", "ValidationResult", "check_rules", "primary_metric", "validate"]


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
    """The metric ``max_regression`` guards when no thresholds are set (the tuning default, too)."""
    if task == "regression":
        return "rmse"
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
    raw = manifest.get("spec")
    if not isinstance(raw, Mapping):
        raise UsageError(f"{mv.ref}: its manifest has no 'spec' to evaluate it with")
    try:
        spec = parse_spec(raw)
    except UsageError as exc:
        raise UsageError(f"{mv.ref}: the spec in its manifest is invalid: {exc}") from None
    return _Model(mv, spec, manifest.get("labels"), who)


def _check_columns(df: "DataFrame", model: _Model, where: str) -> None:
    """Refuse a table the model cannot be evaluated on, before any Spark job runs."""
    needed = [*model.spec.features.columns, model.spec.label]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise SchemaMismatchError(f"validation table {where} lacks columns {missing} that {model.who} needs")
    if df.schema[model.spec.label].dataType.simpleString() == "string" and not model.labels:
        raise SchemaMismatchError(
            f"label column '{model.spec.label}' of {where} holds strings, but the manifest of {model.who} lists no "
            "class 'labels' to map them to the classes the model predicts"
        )


def _pin(spark: "SparkSession", table: str) -> tuple[str, int]:
    path, version = parse_table_ref(table, key="--table")
    latest = tables.version(spark, path)
    if latest is None:
        raise NotFoundError(f"no Delta table at {path}")
    if version is None:
        return path, latest
    if version > latest:
        raise NotFoundError(f"table {path} has no version {version} (latest is {latest})")
    return path, version


def _evaluate(model: _Model, df: "DataFrame", where: str) -> dict[str, float | None]:
    from sparkship.training import evaluate

    log.info("evaluating %s on %s", model.who, where)
    metrics = _finite(evaluate(artifacts.load(model.mv.artifact), df, model.spec, labels=model.labels))
    log.info("%s: %s", model.who, metrics)
    return metrics


def validate(
    spark: "SparkSession", settings: Settings, ref: str, table: str, run_id: str | None = None
) -> ValidationResult:
    """Evaluate ``ref`` (and the champion) on one snapshot of ``table`` (``PATH[@V]``); record the outcome.

        >>> result = validate(spark, settings, "churn/3", "/data/holdout@2")            # doctest: +SKIP
        >>> result.status, result.candidate_metrics["areaUnderROC"]                      # doctest: +SKIP
        ('PASS', 0.93)
    """
    from pyspark.sql import functions as F

    reg = Registry(settings)
    mv, manifest = reg.manifest(ref)
    candidate = _model(mv, manifest, mv.ref)
    task = candidate.spec.task
    # parse_spec checked them: known metrics for the task, min/max only, max_regression >= 0.
    thresholds = {m: dict(b) for m, b in candidate.spec.validation.thresholds.items()}
    max_regression = candidate.spec.validation.max_regression

    champion: _Model | None = None
    holder = reg.alias_version(mv.name, CHAMPION)
    if holder is not None and holder != mv.version:
        champion_mv, champion_manifest = reg.manifest(f"{mv.name}/{holder}")
        champion = _model(champion_mv, champion_manifest, f"champion {champion_mv.ref}")
        if champion.spec.task != task:
            raise UsageError(
                f"champion {champion_mv.ref} is a {champion.spec.task} model and {mv.ref} a {task} model: "
                "their metrics cannot be compared"
            )

    path, version = _pin(spark, table)
    where = f"{path}@{version}"
    df = tables.read(spark, path, version=version)
    for model in (candidate, champion):
        if model is not None:
            _check_columns(df, model, where)

    # Both models read the same snapshot: cache it once instead of reading the Delta table twice.
    df = cached(df)
    try:
        rows = df.where(F.col(f"`{candidate.spec.label}`").isNotNull()).count()
        candidate_metrics = _evaluate(candidate, df, where)
        champion_metrics = _evaluate(champion, df, where) if champion is not None else None
    finally:
        uncached(df)

    if not thresholds and max_regression is None:
        log.warning("%s: its spec sets no validation thresholds and no max_regression: nothing is gated", mv.ref)
    checks = check_rules(candidate_metrics, thresholds, champion_metrics, max_regression,
                         primary_metric(task, candidate_metrics))
    reasons = [c.reason for c in checks if not c.passed and c.reason]
    result = ValidationResult(
        name=mv.name, version=mv.version, passed=not reasons, reasons=reasons,
        candidate_metrics=candidate_metrics, champion_metrics=champion_metrics, champion_version=holder,
        table=path, table_version=version, rows=rows, checks=checks, thresholds=thresholds,
        max_regression=max_regression, run_id=run_id,
    )
    reg.record_event(mv.name, mv.version, EVENT, result.to_dict(), run_id)
    log.info("%s: %s%s", mv.ref, result.status, f" ({'; '.join(reasons)})" if reasons else "")
    return result
