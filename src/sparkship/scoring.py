"""Batch scoring: a registered model over a Delta input table, incremental, idempotent, with a quarantine.

``score()`` resolves the model reference once (an alias moving mid-run changes nothing in this run), checks the
input's schema against the model's signature before anything is written, scores the input rows not scored yet,
and writes them to the output table in ONE commit. Output columns (a Databricks Lakehouse Monitoring
inference table): the key columns, optionally the features (``include_features``), ``prediction`` (double),
``probability`` (array<double>, classification only), ``model_name``, ``model_version`` (string),
``scored_at`` (timestamp, one per run), ``run_id``, ``input_version`` (the input version the run scored up to)
and ``scoring_batch``, the partition column: the first input version the run's range covers.

Schema rules: every signature input and every key column must exist; a column's type must equal the
signature's, except numeric widening (tinyint/smallint/int/bigint/float -> double, smaller ints -> bigint...),
which is cast. Anything else (a string where a double is expected) fails with
:class:`~sparkship.errors.SchemaMismatchError` naming every column at fault.

Incremental runs. A state table ``<output>_state`` (:mod:`sparkship.scoring_state`) records per (model name,
input, output) the last input version scored. A run scores the rows appended after it
(:func:`sparkship.tables.added_rows`); if the input was rewritten (overwrite, delete, update) in between the run
fails and asks for ``full=True``. The first run for a (model, input, output), and every ``full=True`` run,
scores the whole input snapshot and replaces the whole output (and quarantine) table.

Exactly-once. Each run appends a ``pending`` state row, writes the output with
``replace_partitions={"scoring_batch": from_version + 1}`` (one commit, atomic), writes the quarantine table the
same way, then appends a ``committed`` state row. The start of the range only moves when a ``committed`` row lands, so a run killed at any point is
redone by the next run with the same start, into the same partition, replacing whatever the dead run may have
committed: no duplicates and no gaps. A dead full run (a ``pending`` full row) makes the next run full too.
One output table belongs to one model and takes one scoring run at a time (a Databricks job with
``max_concurrent_runs: 1``); the ``pending`` row is a compare-and-set, so a second concurrent run fails.

A new model version between runs: the new rows are scored by the new version (each row says which version
scored it in ``model_version``); the result has ``model_version_changed=True`` and a warning suggests
``full=True`` to rescore the older rows with the new version. Nothing is skipped or scored twice.

Quarantine (``<output>_quarantine``, same partitioning): rows that cannot be scored, with the key columns,
the signature's columns as strings (the raw values), ``reason`` (every rule the row broke, ``; ``-separated),
``model_name``, ``model_version``, ``run_id``, ``input_version``, ``scoring_batch``. The rules:

* a null in any key column;
* an infinite value in a numeric feature (the model would turn it into a meaningless probability);
* a null (or NaN) in a numeric feature that no ``Imputer`` of the model fills and that a ``VectorAssembler``
  with ``handleInvalid`` "error" or "skip" reads (the job would fail, or the row would vanish);
* a null or an unseen category in a string feature whose ``StringIndexer`` has ``handleInvalid`` "error" or
  "skip" (sparkship's own training uses "keep": unseen categories and nulls are scored).

``rows_in == scored + quarantined`` always holds and is logged.

    >>> from sparkship.config import Settings
    >>> result = score(spark, Settings.resolve(), "churn@champion", "/data/events",
    ...                "/data/scores", ["customer_id"])                       # doctest: +SKIP
    >>> result.rows_in == result.scored + result.quarantined                 # doctest: +SKIP
    True
"""
from __future__ import annotations

import logging
import math
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from sparkship import artifacts, tables
from sparkship.config import Settings
from sparkship.errors import (
    ConcurrentWriteError,
    IntegrityError,
    NotFoundError,
    SchemaMismatchError,
    SparkshipError,
    UsageError,
)
from sparkship.registry import Registry
from sparkship.scoring_state import COMMITTED, PENDING, ScoringState, StateRow

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel, Transformer
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

BATCH_COLUMN = "scoring_batch"
REASON_COLUMN = "reason"
OUTPUT_COLUMNS = ("prediction", "probability", "model_name", "model_version", "scored_at", "run_id", "input_version")
# want -> the narrower input types that are cast to it
WIDENING: dict[str, frozenset[str]] = {
    "double": frozenset({"tinyint", "smallint", "int", "bigint", "float"}),
    "float": frozenset({"tinyint", "smallint", "int", "bigint"}),
    "bigint": frozenset({"tinyint", "smallint", "int"}),
    "int": frozenset({"tinyint", "smallint"}),
    "smallint": frozenset({"tinyint"}),
}
NUMERIC = frozenset({"tinyint", "smallint", "int", "bigint", "float", "double"})
FLOATING = frozenset({"float", "double"})


@dataclass(frozen=True)
class ScoreResult:
    """What one scoring run did. ``from_version`` is exclusive (-1: the whole snapshot)."""

    model: str
    model_version: int
    run_id: str
    input: str
    input_version: int
    from_version: int
    output: str
    output_version: int | None
    quarantine: str
    quarantine_version: int | None
    rows_in: int
    scored: int
    quarantined: int
    full: bool
    scoring_batch: int | None
    model_version_changed: bool
    previous_model_version: int | None
    healed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the schema check --------------------------------------------------------------------------------------


def check_input(schema: "StructType", inputs: Sequence[dict[str, str]], keys: Sequence[str]) -> dict[str, str]:
    """Check an input schema against a model signature; return ``{column: type}`` of the columns to cast.

    Raises :class:`SchemaMismatchError` naming every missing key or feature and every incompatible type.

    >>> from pyspark.sql.types import StructType, StructField, IntegerType, StringType
    >>> s = StructType([StructField("id", StringType()), StructField("age", IntegerType())])
    >>> check_input(s, [{"name": "age", "type": "double"}], ["id"])
    {'age': 'double'}
    """
    have = {f.name: f.dataType.simpleString() for f in schema.fields}
    problems: list[str] = []
    missing_keys = [k for k in keys if k not in have]
    if missing_keys:
        problems.append(f"key columns {missing_keys} are missing")
    missing = [i["name"] for i in inputs if i["name"] not in have]
    if missing:
        problems.append(f"columns {missing} that the model needs are missing")
    casts: dict[str, str] = {}
    for i in inputs:
        name, want = i["name"], i["type"]
        if name not in have or have[name] == want:
            continue
        if have[name] in WIDENING.get(want, ()):
            casts[name] = want
        else:
            problems.append(f"column '{name}' is {have[name]}, the model expects {want}")
    if problems:
        raise SchemaMismatchError("the input does not match the model's signature: " + "; ".join(problems))
    return casts


# --- the quarantine rules ------------------------------------------------------------------------------------


def _stages(model: "PipelineModel") -> Iterator["Transformer"]:
    from pyspark.ml import PipelineModel

    for stage in model.stages:
        if isinstance(stage, PipelineModel):
            yield from _stages(stage)
        else:
            yield stage


def _input_cols(stage: "Transformer") -> list[str]:
    if stage.hasParam("inputCols") and stage.isDefined("inputCols"):
        return list(stage.getOrDefault("inputCols"))
    if stage.hasParam("inputCol") and stage.isDefined("inputCol"):
        return [stage.getOrDefault("inputCol")]
    return []


def _handle_invalid(stage: "Transformer") -> str:
    return stage.getOrDefault("handleInvalid") if stage.hasParam("handleInvalid") else "error"


def quarantine_rules(
    model: "PipelineModel", inputs: Sequence[dict[str, str]], keys: Sequence[str]
) -> list[tuple["Column", str]]:
    """(condition, reason) pairs: a row that meets a condition is quarantined (see the module docstring).

    Conditions read the columns as the model sees them (after the signature's casts) and are never null.
    """
    from pyspark.ml.feature import ImputerModel, StringIndexerModel, VectorAssembler
    from pyspark.sql import functions as F

    stages = list(_stages(model))
    imputes_null: set[str] = set()
    imputes_nan: set[str] = set()
    for s in stages:
        if isinstance(s, ImputerModel):
            cols = _input_cols(s)
            imputes_null.update(cols)  # the Imputer always treats null as missing
            if math.isnan(s.getMissingValue()):
                imputes_nan.update(cols)
    strict_assembled = {
        c for s in stages if isinstance(s, VectorAssembler) and _handle_invalid(s) != "keep" for c in _input_cols(s)
    }
    strict_labels: dict[str, set[str]] = {}
    for s in stages:
        if isinstance(s, StringIndexerModel) and _handle_invalid(s) != "keep":
            for col, labels in zip(_input_cols(s), s.labelsArray):
                strict_labels.setdefault(col, set(labels)).intersection_update(labels)

    rules: list[tuple[Column, str]] = [(F.col(k).isNull(), f"null key '{k}'") for k in keys]
    for i in inputs:
        name, want = i["name"], i["type"]
        c = F.col(name)
        if want in FLOATING:
            rules.append((F.coalesce(F.abs(c) == float("inf"), F.lit(False)), f"infinite value in '{name}'"))
        if want in NUMERIC and name in strict_assembled:
            if name not in imputes_null:
                rules.append((c.isNull(), f"null in '{name}', which the model does not impute"))
            if want in FLOATING and name not in imputes_nan:
                rules.append((F.isnan(c), f"NaN in '{name}', which the model does not impute"))
        if name in strict_labels:
            rules.append((c.isNull(), f"null in '{name}', which the model's StringIndexer rejects"))
            labels = sorted(strict_labels[name])
            rules.append((F.coalesce(~c.isin(labels), F.lit(False)), f"unseen category in '{name}'"))
    return rules


# --- the job -------------------------------------------------------------------------------------------------


def _parse_keys(keys: Sequence[str] | str) -> list[str]:
    listed = [k.strip() for k in (keys.split(",") if isinstance(keys, str) else keys)]
    if not listed or any(not k for k in listed):
        raise UsageError(f"--keys: expected one or more comma-separated column names, got {keys!r}")
    dupes = sorted({k for k in listed if listed.count(k) > 1})
    if dupes:
        raise UsageError(f"--keys: columns listed twice: {dupes}")
    clash = [k for k in listed if k in OUTPUT_COLUMNS or k in (BATCH_COLUMN, REASON_COLUMN)]
    if clash:
        raise UsageError(f"--keys: {clash} clash with the output's own columns")
    return listed


def _table_path(value: str, what: str) -> tuple[str, int | None]:
    from sparkship.spec import parse_table_ref

    try:
        return parse_table_ref(value, key=what)
    except UsageError as exc:
        raise UsageError(str(exc).replace("spec key ", "")) from None


def _prediction_cols(model: "PipelineModel") -> tuple[str, str]:
    last = list(_stages(model))[-1]
    prediction = last.getOrDefault("predictionCol") if last.hasParam("predictionCol") else "prediction"
    probability = last.getOrDefault("probabilityCol") if last.hasParam("probabilityCol") else "probability"
    return prediction, probability


def _committed(spark: "SparkSession", path: str, version: int, written: "DataFrame") -> int:
    """Rows the commit of ``version`` added: from its metrics, else (no metrics in the log) counted."""
    rows = tables.rows_committed(spark, path, version)
    return rows if rows is not None else written.count()


def score(
    spark: "SparkSession",
    settings: Settings,
    model_ref: str,
    input: str,
    output: str,
    keys: Sequence[str] | str,
    *,
    full: bool = False,
    include_features: bool = False,
    run_id: str | None = None,
) -> ScoreResult:
    """Score the rows of ``input`` (``PATH[@VERSION]``) not scored yet by ``model_ref`` into ``output``.

    See the module docstring for the output, the state, the quarantine and what happens after a crash.

    >>> r = score(spark, settings, "churn@champion", "/data/events@7", "/data/scores", "customer_id")  # doctest: +SKIP
    >>> (r.model_version, r.input_version, r.rows_in)                                                # doctest: +SKIP
    (3, 7, 1200)
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    input_path, pinned = _table_path(input, "--input")
    output_path, output_pin = _table_path(output, "--output")
    if output_pin is not None:
        raise UsageError(f"--output {output!r}: an output table cannot be pinned to a version")
    if output_path == input_path:
        raise UsageError("--output must be another table than --input")
    key_cols = _parse_keys(keys)
    run_id = run_id or uuid.uuid4().hex[:16]

    mv, model = Registry(settings).load_model(model_ref)  # resolved once: an alias moving later changes nothing
    manifest = artifacts.verify(mv.artifact)
    inputs = (manifest.get("signature") or {}).get("inputs")
    if not inputs:
        raise IntegrityError(f"model {mv.ref}: its manifest has no signature inputs")
    classification = manifest.get("task") == "classification"
    log.info("scoring with %s (from %s), run %s", mv.ref, model_ref, run_id)

    input_version = pinned if pinned is not None else tables.version(spark, input_path)
    if input_version is None:
        raise NotFoundError(f"no Delta table at {input_path}")
    snapshot = tables.read(spark, input_path, version=input_version)
    casts = check_input(snapshot.schema, inputs, key_cols)

    state = ScoringState(output_path + "_state")
    quarantine_path = output_path + "_quarantine"
    latest = state.latest(mv.name, input_path, output_path)
    last, unfinished = latest.committed, latest.unfinished
    output_exists = tables.exists(spark, output_path)
    whole = full or last is None or (unfinished is not None and unfinished.full)
    if whole and not full:
        if unfinished is not None and unfinished.full:
            log.warning("the previous full run %s did not finish: scoring the whole input again", unfinished.run_id)
        elif output_exists:
            log.warning("%s exists but has no scoring state for %s: it will be replaced", output_path, mv.name)
    previous_model_version = last.model_version if last is not None else None
    changed = previous_model_version is not None and previous_model_version != mv.version

    if whole:
        from_version, rows = -1, snapshot
    else:
        assert last is not None
        from_version = last.input_version
        if from_version > input_version:
            raise UsageError(
                f"{input_path} was already scored up to version {from_version}; version {input_version} is older: "
                "pass --full to rescore the output from that version"
            )
        if not output_exists:
            raise SparkshipError(
                f"the scoring state says {input_path} was scored up to version {from_version}, but the output "
                f"{output_path} is gone: pass --full to rescore the whole input"
            )
        if from_version == input_version and unfinished is None:
            log.info("%s has no versions after %d: nothing to score", input_path, from_version)
            return ScoreResult(
                mv.name, mv.version, run_id, input_path, input_version, from_version, output_path,
                tables.version(spark, output_path), quarantine_path,
                tables.version(spark, quarantine_path) if tables.exists(spark, quarantine_path) else None,
                0, 0, 0, False, None, changed, previous_model_version, False,
            )
        try:
            rows = tables.added_rows(spark, input_path, from_version, input_version)
        except tables.NotAppendOnlyError as exc:
            raise SparkshipError(
                f"cannot score {input_path} incrementally: {exc}. Pass --full to rescore the whole input "
                "and replace the output"
            ) from None
        if changed:
            log.warning(
                "%s: the previous run scored with version %d, this one with %d: the new rows get version %d and "
                "older rows keep theirs; pass --full to rescore them all",
                mv.name, previous_model_version, mv.version, mv.version,
            )
    batch = from_version + 1
    healed = unfinished is not None
    if healed and not whole:
        log.warning("the previous run %s did not finish: scoring its range again", unfinished.run_id)  # type: ignore[union-attr]

    # What the model sees: keys + signature columns, cast where the signature is wider.
    features = [i["name"] for i in inputs]
    seen = {c: F.col(c).cast(casts[c]) if c in casts else F.col(c) for c in features}
    needed = list(dict.fromkeys(key_cols + features))
    prepared = rows.select(*[seen[c].alias(c) if c in seen else F.col(c) for c in needed])
    rules = quarantine_rules(model, inputs, key_cols)
    bad = F.lit(False)
    for condition, _ in rules:
        bad = bad | condition

    scored_at = datetime.now(timezone.utc)
    stamp = [
        F.lit(mv.name).alias("model_name"),
        F.lit(str(mv.version)).alias("model_version"),
    ]
    tail = [F.lit(run_id).alias("run_id"), F.lit(input_version).cast("bigint").alias("input_version"),
            F.lit(batch).cast("bigint").alias(BATCH_COLUMN)]
    prediction_col, probability_col = _prediction_cols(model)

    out_cols: list[Any] = [F.col(k) for k in key_cols]
    if include_features:
        out_cols += [F.col(c) for c in features if c not in key_cols]
    out_cols.append(F.col(prediction_col).cast("double").alias("prediction"))
    if classification:
        out_cols.append(vector_to_array(F.col(probability_col)).alias("probability"))
    out_cols += stamp + [F.lit(scored_at).cast("timestamp").alias("scored_at")] + tail
    out_df = model.transform(prepared.where(~bad)).select(*out_cols)

    reason = F.concat_ws("; ", *[F.when(cond, F.lit(text)) for cond, text in rules])
    q_df = prepared.where(bad).select(
        *[F.col(k) for k in key_cols],
        *[F.col(c).cast("string").alias(c) for c in features if c not in key_cols],
        reason.alias(REASON_COLUMN),
        *stamp, *tail,
    )
    quarantine_exists = tables.exists(spark, quarantine_path)
    output_start = tables.version(spark, output_path) if output_exists else -1
    quarantine_start = tables.version(spark, quarantine_path) if quarantine_exists else -1
    if not whole:  # nothing is written yet: a schema change must fail here, not after the pending row
        tables.check_schema(out_df.schema, tables.schema(spark, output_path), output_path)
        if quarantine_exists:
            tables.check_schema(q_df.schema, tables.schema(spark, quarantine_path), quarantine_path)

    pending = StateRow(
        seq=0, model_name=mv.name, input_path=input_path, output_path=output_path, status=PENDING,
        full=whole, from_version=from_version, input_version=input_version, scoring_batch=batch,
        model_version=mv.version, run_id=run_id,
    )
    seq = state.next_seq()
    try:
        state.append(StateRow(**{**pending.__dict__, "seq": seq}), expected_version=latest.table_version)
    except ConcurrentWriteError:
        raise ConcurrentWriteError(
            f"another scoring run changed {state.path} while this one started: one run at a time per output"
        ) from None
    # Counts come from Delta's statistics, not from extra passes over the data: rows_in from the input files'
    # stats, scored from the output commit's. The quarantine costs a pass only when there is something to put
    # there (or stale rows to clear).
    rows_in = tables.count_rows(spark, input_path, input_version, after_version=None if whole else from_version)
    log.info(
        "scoring %s versions %d..%d into %s (batch %d%s): %d rows",
        input_path, from_version + 1, input_version, output_path, batch,
        ", replacing the whole output" if whole else "", rows_in,
    )
    write_args: dict[str, Any] = {"mode": "overwrite", "partition_by": [BATCH_COLUMN]}
    write_args.update({"overwrite_schema": True} if whole else {"replace_partitions": {BATCH_COLUMN: batch}})
    # Both commits are compare-and-set against the versions this run started from: a commit that a killed run's
    # orphaned worker lands late makes this run fail (re-run it) instead of being overwritten or overwriting.
    output_version = tables.write(out_df, output_path, **write_args, expected_version=output_start)
    scored = _committed(spark, output_path, output_version, out_df)
    quarantined = rows_in - scored
    log.info("wrote %d scored rows to %s (version %d)", scored, output_path, output_version)

    # The quarantine commit comes after the output's: a crash in between leaves the state uncommitted, and the
    # next run replaces both. An existing quarantine is rewritten (maybe emptied) when it may hold stale rows.
    quarantine_version = tables.version(spark, quarantine_path) if quarantine_exists else None
    if quarantined or (quarantine_exists and (whole or healed)):
        log.info("writing %d rows to %s", quarantined, quarantine_path)
        quarantine_version = tables.write(q_df, quarantine_path, **write_args, expected_version=quarantine_start)
        written = _committed(spark, quarantine_path, quarantine_version, q_df)
        if written != quarantined:
            raise IntegrityError(
                f"{input_path} changed while it was scored: {rows_in} rows in, {scored} scored, {written} "
                "quarantined; the state was not committed, so the next run scores this range again"
            )

    state.append(
        StateRow(
            **{**pending.__dict__, "seq": seq + 1, "status": COMMITTED, "output_version": output_version,
               "rows_in": rows_in, "scored": scored, "quarantined": quarantined}
        )
    )
    log.info(
        "%s: rows_in %d = scored %d + quarantined %d; %s is at version %d (input version %d)",
        mv.ref, rows_in, scored, quarantined, output_path, output_version, input_version,
    )
    return ScoreResult(
        mv.name, mv.version, run_id, input_path, input_version, from_version, output_path, output_version,
        quarantine_path, quarantine_version, rows_in, scored, quarantined, whole, batch, changed,
        previous_model_version, healed,
    )
