"""The DataFrames a scoring run writes (lazy: nothing runs here).

Whole and append runs write the scored rows and the quarantined rows of their range. Change runs upsert by the
keys instead: each touched key ends up in exactly one place, the output (scored), the quarantine (its latest row
breaks a rule) or neither (deleted), so each side gets the rows it keeps plus a ``delete`` for every other touched
key (:data:`OP_COLUMN`).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sparkship import tables
from sparkship.scoring.arrow_scorer import JVM_FREE, score_frame
from sparkship.scoring.plan import CHANGES, WHOLE, ScoringPlan
from sparkship.scoring.request import BATCH_COLUMN, REASON_COLUMN, ScoringModel, ScoringRequest
from sparkship.scoring.rules import prediction_cols, quarantine_rules
from sparkship.tables.changes import DELETED

# pyspark is an optional dependency (the `local` extra; Databricks ships its own): functions import it where used.
if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession

OP_COLUMN = "_sparkship_op"
UPSERT, DELETE = "upsert", "delete"


@dataclass(frozen=True, kw_only=True)
class Frames:
    """What a run writes: scored rows and rows that cannot be scored (with :data:`OP_COLUMN` in change runs)."""

    scored: DataFrame
    quarantined: DataFrame


def _range_rows(spark: SparkSession, request: ScoringRequest, plan: ScoringPlan) -> DataFrame:
    if plan.mode == WHOLE:
        return tables.read(spark, request.input_path, version=plan.input_version)
    assert plan.source is not None, "an incremental plan carries its rows"
    return plan.source


def build_frames(spark: SparkSession, request: ScoringRequest, model: ScoringModel, plan: ScoringPlan,
                 *, scored_at: datetime | None = None) -> Frames:
    """The scored and quarantined DataFrames of the plan's rows."""
    from pyspark.sql import functions as F

    mv = model.version
    # What the model sees: keys + signature columns, cast where the signature is wider.
    features = [i["name"] for i in model.inputs]
    seen = {c: F.col(c).cast(plan.casts[c]) if c in plan.casts else F.col(c) for c in features}
    needed = list(dict.fromkeys(request.keys + features))
    rows = _range_rows(spark, request, plan)
    extra = [DELETED] if plan.mode == CHANGES else []
    prepared = rows.select(*[seen[c].alias(c) if c in seen else F.col(c) for c in needed], *extra)
    rules = quarantine_rules(model.pipeline, model.inputs, request.keys)
    bad: Column = F.lit(False)
    for condition, _ in rules:
        bad = bad | condition

    stamp = [F.lit(mv.name).alias("model_name"), F.lit(str(mv.version)).alias("model_version")]
    tail = [F.lit(request.run_id).alias("run_id"), F.lit(plan.input_version).cast("bigint").alias("input_version"),
            F.lit(plan.batch).cast("bigint").alias(BATCH_COLUMN)]
    out_cols = _score_cols(request, model, features)
    when = scored_at or datetime.now(timezone.utc)
    out_cols += stamp + [F.lit(when).cast("timestamp").alias("scored_at")] + tail
    quarantine_cols = [
        *[F.col(k) for k in request.keys],
        *[F.col(c).cast("string").alias(c) for c in features if c not in request.keys],
        F.concat_ws("; ", *[F.when(cond, F.lit(text)) for cond, text in rules]).alias(REASON_COLUMN),
        *stamp, *tail,
    ]
    if plan.mode != CHANGES:
        return Frames(scored=scored_rows(model, prepared.where(~bad)).select(*out_cols),
                      quarantined=prepared.where(bad).select(*quarantine_cols))
    live = prepared.where(~F.col(DELETED))
    scored = scored_rows(model, live.where(~bad)).select(*out_cols)
    quarantined = live.where(bad).select(*quarantine_cols)
    gone_from_output = prepared.where(F.col(DELETED) | bad).select(*request.keys)
    gone_from_quarantine = prepared.where(F.col(DELETED) | ~bad).select(*request.keys)
    return Frames(scored=_with_deletes(scored, gone_from_output, request.keys),
                  quarantined=_with_deletes(quarantined, gone_from_quarantine, request.keys))


def scored_rows(model: ScoringModel, rows: DataFrame) -> DataFrame:
    """``rows`` with the model's prediction (and probability) columns, by the run's scorer: Spark's transform, or
    the JVM-free scorer in ``mapInArrow`` (the probability then already an array)."""
    if model.scorer == JVM_FREE:
        return score_frame(rows, model.arrow_scoring())
    return model.pipeline.transform(rows)


def _score_cols(request: ScoringRequest, model: ScoringModel, features: list[str]) -> list[Any]:
    """Keys, the features with ``include_features``, the prediction (double) and the probability (array<double>)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    prediction_col, probability_col = prediction_cols(model.pipeline)
    out_cols: list[Any] = [F.col(k) for k in request.keys]
    if request.include_features:
        out_cols += [F.col(c) for c in features if c not in request.keys]
    out_cols.append(F.col(prediction_col).cast("double").alias("prediction"))
    if model.classification:
        probability = F.col(probability_col) if model.scorer == JVM_FREE else vector_to_array(F.col(probability_col))
        out_cols.append(probability.alias("probability"))
    return out_cols


def _with_deletes(kept: DataFrame, deleted_keys: DataFrame, keys: list[str]) -> DataFrame:
    """``kept`` marked as upserts, plus a ``delete`` row (nulls but the keys) for each of ``deleted_keys``."""
    from pyspark.sql import functions as F

    others = [F.lit(None).cast(f.dataType).alias(f.name) for f in kept.schema.fields if f.name not in keys]
    deletes = deleted_keys.select(*[F.col(k) for k in keys], *others).select(*kept.columns)
    return kept.withColumn(OP_COLUMN, F.lit(UPSERT)).unionByName(deletes.withColumn(OP_COLUMN, F.lit(DELETE)))


def without_ops(frame: DataFrame) -> DataFrame:
    """The rows a change run upserts, without the op column: what a table created from them holds."""
    from pyspark.sql import functions as F

    return frame.where(F.col(OP_COLUMN) == UPSERT).drop(OP_COLUMN)
