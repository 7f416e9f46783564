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

One run at a time per output. A run holds the output's lease (``<output>_lease``, see
:mod:`sparkship.scoring_state`) from before it reads the state until its ``committed`` row, which ends it: a
second run (a manual run during the scheduled one) waits up to ``wait_s`` (``--wait``) and then refuses, naming
the run that holds it; it never takes a live run's ``pending`` row for a dead one. A killed run's lease is free at once on
the same host (its process is gone) and after ``LEASE_S`` elsewhere, and the next run heals it as above.

One output, one model. An output holds the scores of one model from one input: scoring another model (or the
same model from another input) into an existing output is refused, naming the model whose scores it holds, and
so is a run whose columns differ from the output's (``include_features`` toggled, a regression model into a
classifier's output...); an existing table that no scoring run wrote is refused too. ``replace_output=True``
(``--replace-output``) scores the whole input and replaces the output anyway. (Several models side by side would
need per-model partitions and state; one table per model keeps each output's history and schema its own.)

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

Counts. ``rows_in`` comes from the input's file statistics, ``scored`` from the output commit's metrics and
``quarantined`` from the quarantine commit's (0 when the run had nothing to quarantine and left it alone);
``rows_in == scored + quarantined`` is checked before the state is committed (an :class:`IntegrityError`
otherwise, and the next run redoes the range) and logged.

    >>> from sparkship.config import Settings
    >>> result = score(spark, Settings.resolve(), "churn@champion", "/data/events",
    ...                "/data/scores", ["customer_id"])                       # doctest: +SKIP
    >>> result.rows_in == result.scored + result.quarantined                 # doctest: +SKIP
    True
"""
from __future__ import annotations

import logging
import math
import os
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from sparkship import artifacts, killpoints, tables
from sparkship.config import Settings
from sparkship.errors import (
    ConcurrentWriteError,
    IntegrityError,
    NotFoundError,
    SchemaMismatchError,
    SparkshipError,
    UsageError,
)
from sparkship.registry import ModelVersion, Registry
from sparkship.scoring_state import COMMITTED, PENDING, RunLease, ScoringState, StateRow
from sparkship.tables.names import sibling

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


@dataclass(frozen=True, kw_only=True)
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


# --- the job: plan -> execute -> commit ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ScoringRequest:
    """What the caller asked for, parsed and checked; no table is read yet."""

    input_path: str
    pinned_version: int | None
    output_path: str
    keys: list[str]
    run_id: str
    full: bool
    include_features: bool
    replace_output: bool

    @property
    def quarantine_path(self) -> str:
        return sibling(self.output_path, "_quarantine")

    @property
    def state_path(self) -> str:
        return sibling(self.output_path, "_state")

    @property
    def lease_path(self) -> str:
        # A sibling of the output, like the state: every writer of the output resolves the same table (a path
        # next to it, or a name in its schema: with Unity Catalog, in the catalog and schema that govern it).
        return sibling(self.output_path, "_lease")


@dataclass(frozen=True, kw_only=True)
class ScoringModel:
    """The model version a run scores with, resolved once, and what its manifest says."""

    version: ModelVersion
    pipeline: "PipelineModel"
    inputs: list[dict[str, str]]
    classification: bool


@dataclass(frozen=True, kw_only=True)
class ScoringPlan:
    """Which input versions this run scores and how it writes them (read from the state and the tables)."""

    input_version: int
    from_version: int  # exclusive; -1: the whole snapshot
    whole: bool  # replaces the whole output (and quarantine) instead of one scoring_batch partition
    casts: dict[str, str]
    healed: bool  # redoes the range of a run that died
    dead_run: str | None
    previous_model_version: int | None
    output_start: int  # the output's version when planned, -1: no output yet
    quarantine_start: int
    state_version: int
    next_seq: int  # of the state table: the pending row's, appended compare-and-set against state_version

    @property
    def batch(self) -> int:
        return self.from_version + 1

    @property
    def nothing_new(self) -> bool:
        return not self.whole and not self.healed and self.from_version == self.input_version

    @property
    def output_exists(self) -> bool:
        return self.output_start >= 0

    @property
    def quarantine_exists(self) -> bool:
        return self.quarantine_start >= 0

    def same_range(self, other: "ScoringPlan") -> bool:
        return (self.whole, self.from_version, self.input_version) == (other.whole, other.from_version,
                                                                        other.input_version)


@dataclass(frozen=True, kw_only=True)
class Frames:
    """The two DataFrames a run writes: scored rows, and rows that cannot be scored."""

    scored: "DataFrame"
    quarantined: "DataFrame"


@dataclass(frozen=True, kw_only=True)
class Written:
    """What the writes committed; every count is read from its own table's commit."""

    output_version: int | None
    quarantine_version: int | None
    rows_in: int
    scored: int
    quarantined: int


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


def make_request(input: str, output: str, keys: Sequence[str] | str, *, run_id: str | None, full: bool,
                 include_features: bool, replace_output: bool) -> ScoringRequest:
    """Parse the table references and keys; raise :class:`UsageError` on anything malformed."""
    input_path, pinned = _table_path(input, "--input")
    output_path, output_pin = _table_path(output, "--output")
    if output_pin is not None:
        raise UsageError(f"--output {output!r}: an output table cannot be pinned to a version")
    if output_path == input_path:
        raise UsageError("--output must be another table than --input")
    return ScoringRequest(
        input_path=input_path, pinned_version=pinned, output_path=output_path, keys=_parse_keys(keys),
        run_id=run_id or uuid.uuid4().hex[:16], full=full, include_features=include_features,
        replace_output=replace_output,
    )


def load_scoring_model(settings: Settings, model_ref: str) -> ScoringModel:
    """Resolve ``model_ref`` once (an alias moving later changes nothing in this run) and load it, verified."""
    from pyspark.ml import PipelineModel

    mv = Registry(settings).get(model_ref)
    manifest = artifacts.verify(mv.artifact)  # once: the checksums are the largest cost outside Spark
    pipeline = PipelineModel.load(os.path.join(mv.artifact, artifacts.MODEL_DIR))
    inputs = (manifest.get("signature") or {}).get("inputs")
    if not inputs:
        raise IntegrityError(f"model {mv.ref}: its manifest has no signature inputs")
    log.info("scoring with %s (from %s)", mv.ref, model_ref)
    return ScoringModel(version=mv, pipeline=pipeline, inputs=list(inputs),
                        classification=manifest.get("task") == "classification")


def _check_owner(request: ScoringRequest, model_name: str, owner: StateRow | None, output_exists: bool) -> None:
    """Refuse to replace an output that another model (or another input) wrote, or that no scoring run wrote."""
    if not output_exists:
        return
    if owner is None:
        raise UsageError(
            f"{request.output_path} exists but has no scoring state in {request.state_path}, so it was not "
            "written by `sparkship score`: choose another --output, or pass --replace-output to replace it"
        )
    if (owner.model_name, owner.input_path) != (model_name, request.input_path):
        raise UsageError(
            f"{request.output_path} holds the scores of model '{owner.model_name}' (input {owner.input_path}, "
            f"run {owner.run_id}); scoring '{model_name}' from {request.input_path} into it would replace them: "
            "choose another --output, or pass --replace-output to replace them"
        )


def plan_run(spark: "SparkSession", request: ScoringRequest, model: ScoringModel, state: ScoringState,
             input_version: int, casts: dict[str, str]) -> ScoringPlan:
    """Decide the range to score from the state table and the tables' versions; write nothing.

    Refuses (before anything is written) an output owned by another model or input, an input already scored
    past ``input_version``, and a state that outlived its output.
    """
    name = model.version.name
    latest = state.latest(name, request.input_path, request.output_path)
    output_start = tables.version(spark, request.output_path)
    quarantine_start = tables.version(spark, request.quarantine_path)
    if not request.replace_output:
        _check_owner(request, name, latest.owner, output_start is not None)
    last, unfinished = latest.committed, latest.unfinished
    whole = request.full or request.replace_output or last is None or (unfinished is not None and unfinished.full)
    from_version = -1 if whole else last.input_version  # type: ignore[union-attr]
    if not whole and from_version > input_version:
        raise UsageError(
            f"{request.input_path} was already scored up to version {from_version}; version {input_version} is "
            "older: pass --full to rescore the output from that version"
        )
    if not whole and output_start is None:
        raise SparkshipError(
            f"the scoring state says {request.input_path} was scored up to version {from_version}, but the output "
            f"{request.output_path} is gone: pass --full to rescore the whole input"
        )
    return ScoringPlan(
        input_version=input_version, from_version=from_version, whole=whole, casts=casts,
        healed=unfinished is not None, dead_run=unfinished.run_id if unfinished is not None else None,
        previous_model_version=last.model_version if last is not None else None,
        output_start=-1 if output_start is None else output_start,
        quarantine_start=-1 if quarantine_start is None else quarantine_start,
        state_version=latest.table_version, next_seq=latest.next_seq,
    )


def _log_plan(request: ScoringRequest, model: ScoringModel, plan: ScoringPlan) -> None:
    mv = model.version
    if plan.healed:
        log.warning("the previous run %s did not finish: scoring its range again", plan.dead_run)
    if request.replace_output and plan.output_exists:
        log.warning("--replace-output: %s is replaced by the scores of %s", request.output_path, mv.ref)
    changed = plan.previous_model_version not in (None, mv.version)
    if changed and not plan.whole:
        log.warning(
            "%s: the previous run scored with version %d, this one with %d: the new rows get version %d and "
            "older rows keep theirs; pass --full to rescore them all",
            mv.name, plan.previous_model_version, mv.version, mv.version,
        )


def _input_rows(spark: "SparkSession", request: ScoringRequest, plan: ScoringPlan) -> "DataFrame":
    if plan.whole:
        return tables.read(spark, request.input_path, version=plan.input_version)
    try:
        return tables.added_rows(spark, request.input_path, plan.from_version, plan.input_version)
    except tables.NotAppendOnlyError as exc:
        raise SparkshipError(
            f"cannot score {request.input_path} incrementally: {exc}. Pass --full to rescore the whole input "
            "and replace the output"
        ) from None


def build_frames(spark: "SparkSession", request: ScoringRequest, model: ScoringModel, plan: ScoringPlan) -> Frames:
    """The scored and quarantined DataFrames of the plan's rows (lazy: nothing runs yet)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    mv = model.version
    # What the model sees: keys + signature columns, cast where the signature is wider.
    features = [i["name"] for i in model.inputs]
    seen = {c: F.col(c).cast(plan.casts[c]) if c in plan.casts else F.col(c) for c in features}
    needed = list(dict.fromkeys(request.keys + features))
    prepared = _input_rows(spark, request, plan).select(*[seen[c].alias(c) if c in seen else F.col(c) for c in needed])
    rules = quarantine_rules(model.pipeline, model.inputs, request.keys)
    bad = F.lit(False)
    for condition, _ in rules:
        bad = bad | condition

    stamp = [F.lit(mv.name).alias("model_name"), F.lit(str(mv.version)).alias("model_version")]
    tail = [F.lit(request.run_id).alias("run_id"), F.lit(plan.input_version).cast("bigint").alias("input_version"),
            F.lit(plan.batch).cast("bigint").alias(BATCH_COLUMN)]
    prediction_col, probability_col = _prediction_cols(model.pipeline)
    out_cols: list[Any] = [F.col(k) for k in request.keys]
    if request.include_features:
        out_cols += [F.col(c) for c in features if c not in request.keys]
    out_cols.append(F.col(prediction_col).cast("double").alias("prediction"))
    if model.classification:
        out_cols.append(vector_to_array(F.col(probability_col)).alias("probability"))
    out_cols += stamp + [F.lit(datetime.now(timezone.utc)).cast("timestamp").alias("scored_at")] + tail

    reason = F.concat_ws("; ", *[F.when(cond, F.lit(text)) for cond, text in rules])
    return Frames(
        scored=model.pipeline.transform(prepared.where(~bad)).select(*out_cols),
        quarantined=prepared.where(bad).select(
            *[F.col(k) for k in request.keys],
            *[F.col(c).cast("string").alias(c) for c in features if c not in request.keys],
            reason.alias(REASON_COLUMN),
            *stamp, *tail,
        ),
    )


def check_targets(spark: "SparkSession", request: ScoringRequest, plan: ScoringPlan, frames: Frames) -> None:
    """The output and quarantine must keep their columns, unless ``replace_output``: checked before any write."""
    if request.replace_output:
        return
    targets = [(frames.scored, request.output_path, plan.output_exists),
               (frames.quarantined, request.quarantine_path, plan.quarantine_exists)]
    for df, path, exists in targets:
        if not exists:
            continue
        try:
            tables.check_schema(df.schema, tables.schema(spark, path), path)
        except SchemaMismatchError as exc:
            raise SchemaMismatchError(f"{exc}. Pass --replace-output to replace {path} with these columns") from None


def _pending_row(request: ScoringRequest, model: ScoringModel, plan: ScoringPlan, seq: int) -> StateRow:
    return StateRow(
        seq=seq, model_name=model.version.name, input_path=request.input_path, output_path=request.output_path,
        status=PENDING, full=plan.whole, from_version=plan.from_version, input_version=plan.input_version,
        scoring_batch=plan.batch, model_version=model.version.version, run_id=request.run_id,
    )


def _write_quarantine(spark: "SparkSession", request: ScoringRequest, plan: ScoringPlan, frames: Frames,
                      rows_in: int, scored: int, write_args: dict[str, Any]) -> tuple[int | None, int]:
    """(quarantine version, rows this run put there), counted from the quarantine's own commit.

    The quarantine is written when the input has rows the output did not take, or when an existing quarantine
    may hold stale rows (a whole run, or a redone range); otherwise it is left alone and this run put 0 rows
    there (a pass over the input would cost as much as the scoring itself).
    """
    path = request.quarantine_path
    stale = plan.quarantine_exists and (plan.whole or plan.healed)
    if rows_in == scored and not stale:
        return (plan.quarantine_start if plan.quarantine_exists else None), 0
    version = tables.write(frames.quarantined, path, **write_args, expected_version=plan.quarantine_start)
    written = _committed(spark, path, version, frames.quarantined)
    log.info("wrote %d rows to %s (version %d)", written, path, version)
    return version, written


def execute(spark: "SparkSession", request: ScoringRequest, model: ScoringModel, plan: ScoringPlan,
            frames: Frames, state: ScoringState, lease: RunLease) -> tuple[StateRow, Written]:
    """Append the ``pending`` row, then write the output and the quarantine (one commit each)."""
    pending = _pending_row(request, model, plan, plan.next_seq)
    try:
        state.append(pending, expected_version=plan.state_version)
    except ConcurrentWriteError:
        raise ConcurrentWriteError(
            f"another scoring run changed {state.path} while this one started: one run at a time per output"
        ) from None
    killpoints.reached("score:pending")
    # Counts come from Delta's statistics and commit metrics, not from extra passes over the data.
    rows_in = tables.count_rows(spark, request.input_path, plan.input_version,
                                after_version=None if plan.whole else plan.from_version)
    log.info(
        "scoring %s versions %d..%d into %s (batch %d%s): %d rows", request.input_path, plan.from_version + 1,
        plan.input_version, request.output_path, plan.batch, ", replacing the whole output" if plan.whole else "",
        rows_in,
    )
    write_args: dict[str, Any] = {"mode": "overwrite", "partition_by": [BATCH_COLUMN]}
    write_args.update({"overwrite_schema": True} if plan.whole else {"replace_partitions": {BATCH_COLUMN: plan.batch}})
    # Both commits are compare-and-set against the versions the plan read: a commit that a killed run's
    # orphaned worker lands late makes this run fail (re-run it) instead of being overwritten or overwriting.
    lease.check()
    output_version = tables.write(frames.scored, request.output_path, **write_args,
                                  expected_version=plan.output_start)
    scored = _committed(spark, request.output_path, output_version, frames.scored)
    log.info("wrote %d scored rows to %s (version %d)", scored, request.output_path, output_version)
    killpoints.reached("score:output")
    # The quarantine commit comes after the output's: a crash in between leaves the state uncommitted, and
    # the next run replaces both.
    quarantine_version, quarantined = _write_quarantine(spark, request, plan, frames, rows_in, scored, write_args)
    return pending, Written(output_version=output_version, quarantine_version=quarantine_version,
                            rows_in=rows_in, scored=scored, quarantined=quarantined)


def commit(state: ScoringState, pending: StateRow, written: Written, lease: RunLease) -> None:
    """Check that every input row landed exactly once, then append the ``committed`` state row."""
    if written.rows_in != written.scored + written.quarantined:
        raise IntegrityError(
            f"{pending.input_path}: {written.rows_in} rows in, but {written.scored} scored and "
            f"{written.quarantined} quarantined; the state was not committed, so the next run scores this range "
            "again"
        )
    # The committed row also ends the lease (no release commit follows it).
    lease.end_with(lambda: state.append(replace(
        pending, seq=pending.seq + 1, status=COMMITTED, output_version=written.output_version,
        rows_in=written.rows_in, scored=written.scored, quarantined=written.quarantined)))


def _result(request: ScoringRequest, model: ScoringModel, plan: ScoringPlan, written: Written) -> ScoreResult:
    mv = model.version
    ran = not plan.nothing_new
    return ScoreResult(
        model=mv.name, model_version=mv.version, run_id=request.run_id, input=request.input_path,
        input_version=plan.input_version, from_version=plan.from_version, output=request.output_path,
        output_version=written.output_version, quarantine=request.quarantine_path,
        quarantine_version=written.quarantine_version, rows_in=written.rows_in, scored=written.scored,
        quarantined=written.quarantined, full=plan.whole, scoring_batch=plan.batch if ran else None,
        model_version_changed=plan.previous_model_version not in (None, mv.version),
        previous_model_version=plan.previous_model_version, healed=plan.healed,
    )


def _nothing_written(plan: ScoringPlan) -> Written:
    return Written(output_version=plan.output_start if plan.output_exists else None,
                   quarantine_version=plan.quarantine_start if plan.quarantine_exists else None,
                   rows_in=0, scored=0, quarantined=0)


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
    replace_output: bool = False,
    wait_s: float = 0.0,
) -> ScoreResult:
    """Score the rows of ``input`` (``PATH[@VERSION]``) not scored yet by ``model_ref`` into ``output``.

    Plan (what to score, every check), execute (pending row, output and quarantine commits), commit (the
    ``committed`` row), all under the output's lease; ``wait_s``: how long to wait for another run's lease.
    ``replace_output`` scores the whole input and replaces the output whatever model wrote it and whatever its
    columns. See the module docstring for the output, the state, the quarantine and what happens after a crash.

    >>> r = score(spark, settings, "churn@champion", "/data/events@7", "/data/scores", "customer_id")  # doctest: +SKIP
    >>> (r.model_version, r.input_version, r.rows_in)                                                # doctest: +SKIP
    (3, 7, 1200)
    """
    request = make_request(input, output, keys, run_id=run_id, full=full, include_features=include_features,
                           replace_output=replace_output)
    model = load_scoring_model(settings, model_ref)
    input_version = request.pinned_version
    if input_version is None:
        input_version = tables.version(spark, request.input_path)
    if input_version is None:
        raise NotFoundError(f"no Delta table at {request.input_path}")
    casts = check_input(tables.schema(spark, request.input_path, input_version), model.inputs, request.keys)
    state = ScoringState(request.state_path)

    # A first plan before the lease, so that bad input fails before anything (the lease included) is written;
    # the plan that counts is made again under the lease.
    first = plan_run(spark, request, model, state, input_version, casts)
    frames = None if first.nothing_new else build_frames(spark, request, model, first)
    if frames is not None:
        check_targets(spark, request, first, frames)
    lease = RunLease(request.lease_path, request.run_id,
                     ended=lambda holder: state.committed_since(holder.run_id, holder.at))  # type: ignore[arg-type]
    with lease.hold(wait_s):
        plan = plan_run(spark, request, model, state, input_version, casts)
        if plan.nothing_new:
            log.info("%s has no versions after %d: nothing to score", request.input_path, plan.from_version)
            return _result(request, model, plan, _nothing_written(plan))
        _log_plan(request, model, plan)
        if frames is None or not plan.same_range(first):
            frames = build_frames(spark, request, model, plan)
        check_targets(spark, request, plan, frames)
        pending, written = execute(spark, request, model, plan, frames, state, lease)
        commit(state, pending, written, lease)
    log.info(
        "%s: rows_in %d = scored %d + quarantined %d; %s is at version %d (input version %d)", model.version.ref,
        written.rows_in, written.scored, written.quarantined, request.output_path, written.output_version,
        plan.input_version,
    )
    return _result(request, model, plan, written)
