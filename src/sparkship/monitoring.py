"""Drift monitoring: compare scored batches with the reference profile recorded at training, per time window.

:func:`compute_metrics` buckets a scores table by the reference's bins (:mod:`sparkship.profiles`), per tumbling
window of ``scored_at``, in one grouped Spark pass, and gives per window and feature a profile row and a drift
row (the population stability index against the reference, null rates, ``flagged`` when ``psi > threshold``).
:func:`monitor` writes both to ``<scores>_profile_metrics`` and ``<scores>_drift_metrics``, replacing the rows of
the windows it recomputed, and records a ``monitored`` registry event. Bins and PSI: docs/DESIGN.md.

    >>> result = monitor(spark, Registry(settings), "churn@champion", "/data/churn_scores")   # doctest: +SKIP
    >>> result.flagged                                                                       # doctest: +SKIP
    [{'window_start': '2026-11-27T00:00:00+00:00', 'feature': 'age', 'psi': 0.41, ...}]
"""
from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sparkship import tables
from sparkship.errors import ConcurrentWriteError, NotFoundError, SchemaMismatchError, UsageError
from sparkship.profiles import OTHER, bin_index, is_missing
from sparkship.refs import ModelRef, TableRef, to_model_ref, to_table_ref
from sparkship.scoring import BATCH_COLUMN, OUTPUT_COLUMNS
from sparkship.tables.names import sibling

# pyspark is an optional dependency (the `local` extra; Databricks ships its own): functions import it where used.
if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession

    from sparkship.registry import Registry

log = logging.getLogger(__name__)

EPSILON = 1e-4
DEFAULT_THRESHOLD = 0.2
DEFAULT_WINDOW = "1d"
PREDICTION = "prediction"
EVENT = "monitored"
PROFILE_SUFFIX = "_profile_metrics"
DRIFT_SUFFIX = "_drift_metrics"
# Columns batch scoring writes besides the keys (and the features with --include-features).
SCORE_COLUMNS = (*OUTPUT_COLUMNS, BATCH_COLUMN)
REQUIRED_SCORE_COLUMNS = ("prediction", "model_name", "model_version", "scored_at")
# Rows of one window are replaced as a whole: these columns identify them.
WINDOW_KEYS = ("model_name", "model_version", "window_start")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_WRITE_ATTEMPTS = 5

PROFILE_SCHEMA = (
    "model_name string, model_version bigint, window_start timestamp, window_end timestamp, feature string, "
    "kind string, count bigint, null_count bigint, null_rate double, mean double, min double, max double, "
    "bins array<string>, fractions array<double>, computed_at timestamp, run_id string"
)
DRIFT_SCHEMA = (
    "model_name string, model_version bigint, window_start timestamp, window_end timestamp, feature string, "
    "kind string, count bigint, psi double, null_rate double, reference_null_rate double, threshold double, "
    "flagged boolean, computed_at timestamp, run_id string"
)


def parse_window(text: str) -> str:
    """A window like ``1h``, ``1d``, ``7d``, ``2w`` or ``30m`` as a Spark interval string.

    >>> parse_window("7d")
    '7 days'
    """
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text or "")
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"--window {text!r} is invalid: use a positive number with m, h, d or w (e.g. 1h, 1d, 7d)")
    return f"{int(match.group(1))} {_UNITS[match.group(2)]}"


def psi(actual: Sequence[float], expected: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index of two share vectors over the same bins (shares below ``epsilon`` are raised).

    >>> round(psi([0.5, 0.5], [0.5, 0.5]), 6)
    0.0
    >>> round(psi([0.9, 0.1], [0.5, 0.5]), 4)
    0.8789
    """
    if len(actual) != len(expected):
        raise ValueError(f"psi needs share vectors of the same length, got {len(actual)} and {len(expected)}")
    total = 0.0
    for a, e in zip(actual, expected):
        a, e = max(a, epsilon), max(e, epsilon)
        total += (a - e) * math.log(a / e)
    return total


def output_tables(scores: str) -> tuple[str, str]:
    """``(<scores>_profile_metrics, <scores>_drift_metrics)``: sibling names for a name, else paths."""
    return sibling(scores, PROFILE_SUFFIX), sibling(scores, DRIFT_SUFFIX)


# --- what is monitored -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Monitored:
    """One monitored column: its reference bins (labels in order, shares) and reference null rate."""

    feature: str
    kind: str  # numeric | categorical
    bins: tuple[str, ...]
    fractions: tuple[float, ...]
    null_rate: float
    edges: tuple[float, ...] = ()
    column: str | None = None  # the scores column; the prediction is read as the class index for classifiers
    as_class: bool = False


def _reference_entry(name: str, entry: Mapping[str, Any], column: str, as_class: bool = False) -> Monitored:
    kind = entry.get("kind")
    if kind == "numeric":
        edges = tuple(float(e) for e in entry.get("edges") or ())
        fractions = tuple(float(f) for f in entry.get("fractions") or ())
        return Monitored(name, kind, tuple(str(i) for i in range(len(fractions))), fractions,
                         float(entry.get("null_rate") or 0.0), edges, column, as_class)
    if kind == "categorical":
        categories = dict(entry.get("categories") or {})
        categories.setdefault(OTHER, 0.0)  # unseen values land here even if training had none
        return Monitored(name, kind, tuple(categories), tuple(float(v) for v in categories.values()),
                         float(entry.get("null_rate") or 0.0), (), column, as_class)
    raise UsageError(f"reference profile of '{name}' has unknown kind {kind!r} (expected numeric or categorical)")


def reference_columns(reference: Mapping[str, Any], task: str | None = None) -> list[Monitored]:
    """The features (then the prediction) a reference profile describes, in the profile's order."""
    if not isinstance(reference, Mapping) or not isinstance(reference.get("features"), Mapping):
        raise UsageError("the model's reference_profile has no 'features': was it trained by this sparkship version?")
    out = [_reference_entry(name, entry, name) for name, entry in reference["features"].items()]
    prediction = reference.get("prediction")
    if isinstance(prediction, Mapping):
        as_class = prediction.get("kind") == "categorical" and task != "regression"
        out.append(_reference_entry(PREDICTION, prediction, prediction.get("column") or PREDICTION, as_class))
    return out


def _bin_columns(m: Monitored, column: str) -> tuple[Column, Column, Column]:
    """(bin label or null when missing, value for mean/min/max, missing flag) of one monitored column."""
    from pyspark.sql import functions as F

    c = F.col(f"`{column}`")
    if m.kind == "numeric":
        missing = is_missing(column)
        value = F.when(missing, None).otherwise(c.cast("double"))
        # profiles.bin_index is the binning used for the reference: the same code buckets both sides.
        label = bin_index(column, m.edges).cast("string") if m.edges else F.lit(None).cast("string")
        return label, value, missing
    text = c.cast("long").cast("string") if m.as_class else c.cast("string")
    known = [b for b in m.bins if b != OTHER]
    label = F.when(text.isNull(), None).when(text.isin(known), text).otherwise(F.lit(OTHER))
    return label, F.lit(None).cast("double"), text.isNull()


# --- computing -------------------------------------------------------------------------------------------------


@dataclass
class Metrics:
    """Per window and feature: ``profile`` and ``drift`` rows (columns of :data:`PROFILE_SCHEMA`, ...)."""

    profile: list[dict[str, Any]]
    drift: list[dict[str, Any]]
    monitored: list[Monitored]

    def dataframes(self, spark: SparkSession) -> tuple[DataFrame, DataFrame]:
        """(profile, drift) as DataFrames with the declared schemas, ready to write."""
        return (spark.createDataFrame(self.profile, PROFILE_SCHEMA), spark.createDataFrame(self.drift, DRIFT_SCHEMA))


def bin_counts(scores: DataFrame, monitored: Sequence[Monitored], window: str = DEFAULT_WINDOW) -> DataFrame:
    """Rows per (model, version, window, feature, bin) with ``n``, and ``s``/``lo``/``hi`` of numeric values.

    The one pass over the scored rows: each row is exploded into one cell per monitored column and grouped;
    ``bin`` is null for missing values. The result has windows x features x bins rows at most.
    """
    from pyspark.sql import functions as F

    interval = parse_window(window)
    missing_cols = [c for c in ("scored_at", "model_name", "model_version") if c not in scores.columns]
    missing_cols += [m.column for m in monitored if m.column not in scores.columns]
    if missing_cols:
        raise SchemaMismatchError(f"the scores have no column(s) {missing_cols}")
    if not monitored:
        raise UsageError("nothing to monitor: the reference profile lists no features and no prediction")
    w = F.window(F.col("scored_at"), interval)
    cells = []
    for m in monitored:
        label, value, _ = _bin_columns(m, m.column or m.feature)
        cells.append(F.struct(F.lit(m.feature).alias("feature"), label.alias("bin"), value.alias("value")))
    long = scores.select(
        F.col("model_name").cast("string").alias("model_name"),
        F.col("model_version").cast("long").alias("model_version"),
        w.start.alias("window_start"), w.end.alias("window_end"),
        F.explode(F.array(*cells)).alias("cell"),
    ).select(*WINDOW_KEYS, "window_end", "cell.*")
    return long.groupBy(*WINDOW_KEYS, "window_end", "feature", "bin").agg(
        F.count(F.lit(1)).alias("n"), F.sum("value").alias("s"), F.min("value").alias("lo"),
        F.max("value").alias("hi"),
    )


def compute_metrics(
    scores: DataFrame,
    monitored: Sequence[Monitored],
    *,
    window: str = DEFAULT_WINDOW,
    threshold: float = DEFAULT_THRESHOLD,
    run_id: str | None = None,
    epsilon: float = EPSILON,
) -> Metrics:
    """Profile and drift rows of ``scores`` (needs ``scored_at``, ``model_name``, ``model_version``).

    Spark aggregates the rows into bin counts (:func:`bin_counts`, one job); shares, means and PSI are then
    computed from those few counts.

        >>> m = compute_metrics(scores_df, reference_columns(manifest["reference_profile"]))   # doctest: +SKIP
        >>> [(r["feature"], r["psi"]) for r in m.drift if r["flagged"]]                        # doctest: +SKIP
        [('age', 0.41)]
    """
    if not threshold > 0:
        raise UsageError(f"--threshold must be > 0, got {threshold}")
    counts = bin_counts(scores, monitored, window).collect()
    by_feature = {m.feature: m for m in monitored}
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in counts:
        groups.setdefault((*(row[k] for k in WINDOW_KEYS), row["window_end"], row["feature"]), []).append(row)
    computed_at = datetime.now(timezone.utc)
    profile: list[dict[str, Any]] = []
    drift: list[dict[str, Any]] = []
    order = {m.feature: i for i, m in enumerate(monitored)}
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], order[k[4]])):
        name, version, start, end, feature = key
        m, rows = by_feature[feature], groups[key]
        count = sum(r["n"] for r in rows)
        nulls = sum(r["n"] for r in rows if r["bin"] is None)
        present = count - nulls
        per_bin = {r["bin"]: r["n"] for r in rows if r["bin"] is not None}
        shares = [per_bin.get(b, 0) / present for b in m.bins] if present else []
        values = [r for r in rows if r["bin"] is not None and r["s"] is not None]
        numeric = m.kind == "numeric" and present > 0 and values
        common = {"model_name": name, "model_version": version, "window_start": start, "window_end": end,
                  "feature": feature, "kind": m.kind, "count": count, "null_rate": nulls / count,
                  "computed_at": computed_at, "run_id": run_id}
        profile.append({
            **common, "null_count": nulls,
            "mean": sum(r["s"] for r in values) / present if numeric else None,
            "min": min(r["lo"] for r in values) if numeric else None,
            "max": max(r["hi"] for r in values) if numeric else None,
            "bins": list(m.bins) if present else [], "fractions": shares,
        })
        # A window where a feature has no values has no PSI (and is not flagged: its null rate says it).
        value = psi(shares, m.fractions, epsilon) if present and m.bins else None
        drift.append({
            **common, "psi": value, "reference_null_rate": m.null_rate, "threshold": float(threshold),
            "flagged": value is not None and value > threshold,
        })
    return Metrics(profile, drift, list(monitored))


# --- reading the scores ----------------------------------------------------------------------------------------


def prepare_scores(
    spark: SparkSession,
    path: str,
    version: int | None,
    model_name: str,
    model_version: int,
    reference: Mapping[str, Any],
    task: str | None = None,
    features_table: TableRef | None = None,
) -> tuple[DataFrame, list[Monitored], list[str]]:
    """The scores of one model version (joined with ``features_table`` if given), what to monitor, and notes."""
    from pyspark.sql import functions as F

    if not tables.exists(spark, path):
        raise NotFoundError(f"no scores table at {path}")
    scores = tables.read(spark, path, version=version)
    missing = [c for c in REQUIRED_SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise SchemaMismatchError(
            f"{path} is not a scores table: it has no column(s) {missing} (sparkship score writes them)"
        )
    monitored = reference_columns(reference, task)
    features = [m for m in monitored if m.feature != PREDICTION]
    notes: list[str] = []
    absent = [m.feature for m in features if m.feature not in scores.columns]
    if absent and features_table:
        keys = [c for c in scores.columns if c not in SCORE_COLUMNS and c not in {m.feature for m in features}]
        fpath, fversion = features_table.location, features_table.version
        if not tables.exists(spark, fpath):
            raise NotFoundError(f"no features table at {fpath}")
        extra = tables.read(spark, fpath, version=fversion)
        join_keys = [k for k in keys if k in extra.columns]
        if not join_keys:
            raise SchemaMismatchError(
                f"cannot join {fpath} to the scores: it has none of the scores' key columns {keys}"
            )
        wanted = [c for c in absent if c in extra.columns]
        scores = scores.join(
            extra.select(*join_keys, *wanted).dropDuplicates(join_keys), join_keys, "inner"
        )
        notes.append(f"features {wanted} joined from {fpath} on {join_keys}")
        absent = [c for c in absent if c not in wanted]
    if absent:
        if len(absent) == len(features):
            notes.append(
                "the scores hold no feature columns (score with --include-features or pass --features-table): "
                "monitoring predictions only"
            )
        else:
            notes.append(f"features {absent} are not in the scores: not monitored")
    monitored = [m for m in monitored if m.feature not in absent]
    # scoring writes model_version as text: compare as numbers.
    scores = scores.where((F.col("model_name") == model_name) & (F.col("model_version").cast("long") == model_version))
    return scores, monitored, notes


# --- writing ---------------------------------------------------------------------------------------------------


def replace_windows(df: DataFrame, path: str) -> int:
    """Write ``df`` into ``path`` in one commit, replacing the rows of the same (model, version, window).

    ``tables.write(replace_partitions=...)`` replaces one partition value per commit; a run covers many
    windows, and these tables are small aggregates, so the table is rewritten as kept rows + new rows in one
    compare-and-set overwrite (retried if another writer committed in between).
    """
    from pyspark.sql import functions as F

    spark = df.sparkSession
    for attempt in range(_WRITE_ATTEMPTS):
        try:
            if not tables.exists(spark, path):
                return tables.write(df, path, mode="overwrite", expected_version=-1)
            current = tables.version(spark, path)
            old = tables.read(spark, path, version=current)
            tables.check_schema(df.schema, old.schema, path)
            replaced = F.broadcast(df.select(*WINDOW_KEYS).distinct())
            kept = old.join(replaced, list(WINDOW_KEYS), "left_anti")
            return tables.write(kept.unionByName(df.select(*old.columns)), path, mode="overwrite",
                                expected_version=current)
        except ConcurrentWriteError:
            log.info("%s changed while writing (attempt %d); retrying", path, attempt + 1)
    raise ConcurrentWriteError(f"{path}: gave up after {_WRITE_ATTEMPTS} conflicting writes")


# --- the command -----------------------------------------------------------------------------------------------


@dataclass
class MonitorResult:
    """What :func:`monitor` found and wrote."""

    model: str
    model_version: int
    windows: list[str]
    features: list[str]
    flagged: list[dict[str, Any]]
    drift_table: str | None
    profile_table: str | None
    threshold: float
    window: str
    predictions_only: bool
    notes: list[str]
    drift: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(value: Any) -> Any:
    # pyspark hands timestamps back as naive local times; astimezone reads a naive value as local.
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    return value


def monitor(
    spark: SparkSession,
    registry: Registry,
    ref: str | ModelRef,
    scores: str | TableRef,
    *,
    window: str = DEFAULT_WINDOW,
    threshold: float = DEFAULT_THRESHOLD,
    features_table: str | TableRef | None = None,
    run_id: str | None = None,
    write: bool = True,
) -> MonitorResult:
    """Compute (and with ``write`` store) per-window profiles and drift of the scores of model ``ref``.

    ``scores`` is ``PATH[@VERSION]``; the metrics go to ``PATH_profile_metrics`` and ``PATH_drift_metrics``.
    References may be strings (parsed here, errors naming ``--scores`` and ``--features-table``) or parsed ones.

    Checks every input before anything is written; raises :class:`NotFoundError` when the scores hold no
    rows of that model version.
    """
    started = time.perf_counter()
    parse_window(window)
    if not threshold > 0:
        raise UsageError(f"--threshold must be > 0, got {threshold}")
    source = to_table_ref(scores, what="--scores")
    features = None if features_table is None else to_table_ref(features_table, what="--features-table")
    mv, manifest = registry.manifest(to_model_ref(ref))
    reference = manifest.get("reference_profile")
    if not reference:
        raise UsageError(f"model {mv.ref} has no reference_profile in its manifest: retrain it to monitor drift")
    df, monitored, notes = prepare_scores(
        spark, source.location, source.version, mv.name, mv.version, reference, manifest.get("task"), features
    )
    metrics = compute_metrics(df, monitored, window=window, threshold=threshold, run_id=run_id)
    if not metrics.drift:
        raise NotFoundError(f"the scores table {source} has no rows scored by {mv.ref}")
    log.info("computed %d drift rows for %s in %.1f s", len(metrics.drift), mv.ref, time.perf_counter() - started)
    profile_path, drift_path = output_tables(source.location)
    if write:
        profile_df, drift_df = metrics.dataframes(spark)
        replace_windows(profile_df, profile_path)
        replace_windows(drift_df, drift_path)
        log.info("wrote %s and %s (%.1f s)", profile_path, drift_path, time.perf_counter() - started)
    result = _result(mv.name, mv.version, metrics.drift, monitored, notes, window, threshold,
                     (profile_path, drift_path) if write else None)
    if write:
        registry.record_event(
            mv.name, mv.version, EVENT,
            {"scores": str(source), "window": window, "threshold": threshold, "windows": len(result.windows),
             "flagged": result.flagged, "drift_table": drift_path},
            run_id,
        )
    return result


def _result(name: str, version: int, drift_rows: list[dict[str, Any]], monitored: list[Monitored], notes: list[str],
            window: str, threshold: float, written: tuple[str, str] | None) -> MonitorResult:
    """The result of a run from its drift rows; ``written``: the (profile, drift) tables, where written."""
    rows = [{k: _iso(v) for k, v in r.items() if k not in ("computed_at",)} for r in drift_rows]
    flagged = [
        {k: r[k] for k in ("window_start", "feature", "psi", "null_rate", "reference_null_rate")}
        for r in rows if r["flagged"]
    ]
    return MonitorResult(
        model=name,
        model_version=version,
        windows=sorted({r["window_start"] for r in rows}),
        features=[m.feature for m in monitored],
        flagged=flagged,
        drift_table=written[1] if written else None,
        profile_table=written[0] if written else None,
        threshold=threshold,
        window=window,
        predictions_only=all(m.feature == PREDICTION for m in monitored),
        notes=notes,
        drift=rows,
    )
