"""Streaming scoring: Structured Streaming from the Delta input, each micro-batch upserted into the output.

The stream reads the input's Change Data Feed where it is on (inserts, updates and deletes), else its appends
(Delta's source then stops at a commit that changed rows, and the run says how to go on). Each micro-batch goes
through the same quarantine rules, upserts and state rows as a batch run's change range, under the output's
lease. Exactly once across restarts: the checkpoint replays at most the last micro-batch, and replaying one is
harmless because its upserts set each key to the batch's last word for it (rows with a null key, which match no
key, are replaced by micro-batch: a micro-batch's rows carry its id as their ``scoring_batch``).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sparkship import killpoints, tables
from sparkship.config import Settings
from sparkship.errors import SparkshipError, UsageError
from sparkship.refs import ModelRef, TableRef, to_model_ref, to_table_ref
from sparkship.scoring.frames import build_frames
from sparkship.scoring.job import (
    Written,
    check_counts,
    check_targets,
    pending_row,
    record_committed,
    resolve_input,
    write_changed,
)
from sparkship.scoring.plan import CHANGES, ENABLE_CDF, ScoringPlan, check_owner
from sparkship.scoring.request import ScoringModel, ScoringRequest, load_scoring_model, log, make_request
from sparkship.scoring_lease import RunLease
from sparkship.scoring_state import ScoringState
from sparkship.tables.changes import COMMIT_VERSION, DELETED, TIES, net_changes
from sparkship.tables.native import resolve

# pyspark is an optional dependency (the `local` extra; Databricks ships its own): functions import it where used.
if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

STREAM = "stream"
_INTERVAL = re.compile(r"processing-time=(\d+(?:\.\d+)?\s*(?:ms|milliseconds?|s|seconds?|minutes?|hours?))")


@dataclass(kw_only=True)
class StreamResult:
    """What one streaming run did, summed over its micro-batches."""

    model: str
    model_version: int
    run_id: str
    input: str
    output: str
    checkpoint: str
    trigger: str
    change_feed: bool
    batches: int = 0
    rows_in: int = 0
    scored: int = 0
    quarantined: int = 0
    deleted: int = 0
    input_version: int | None = None
    output_version: int | None = None
    quarantine_version: int | None = None
    batch_ids: list[int] = field(default_factory=list)
    scorer: str = "spark"  # what scored the rows: "spark" (PipelineModel.transform) or "jvm-free" (mapInArrow)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_trigger(text: str) -> dict[str, Any]:
    """``available-now`` or ``processing-time=INTERVAL`` as ``DataStreamWriter.trigger`` keywords.

    >>> parse_trigger("available-now"), parse_trigger("processing-time=30 seconds")
    ({'availableNow': True}, {'processingTime': '30 seconds'})
    """
    if text.strip() == "available-now":
        return {"availableNow": True}
    match = _INTERVAL.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"--trigger {text!r}: expected available-now or processing-time=INTERVAL (e.g. "
                         "processing-time=1 minute)")
    return {"processingTime": match.group(1)}


class _BatchWriter:
    """The ``foreachBatch`` function: one micro-batch -> upserts, quarantine and state rows."""

    def __init__(self, request: ScoringRequest, model: ScoringModel, state: ScoringState, result: StreamResult,
                 input_id: str, casts: dict[str, str]) -> None:
        self.request, self.model, self.state, self.result = request, model, state, result
        self.input_id, self.casts = input_id, casts
        self.failure: BaseException | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        try:
            self._write(batch, batch_id)
        except BaseException as exc:  # kept to re-raise as it is once the query stops (Spark wraps it otherwise)
            self.failure = exc
            raise

    def _net(self, batch: DataFrame) -> DataFrame:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        if self.result.change_feed:
            return net_changes(batch, self.request.keys)
        keys = [F.col(f"`{k}`") for k in self.request.keys]
        return batch.withColumn(DELETED, F.lit(False)).withColumn(TIES, F.count("*").over(Window.partitionBy(*keys)))

    def _write(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        spark, request = batch.sparkSession, self.request
        net = self._net(batch)
        versions = batch.select(COMMIT_VERSION) if self.result.change_feed else batch.select(F.lit(-1).alias(
            COMMIT_VERSION))
        found = net.agg(F.count(F.when(~F.col(DELETED), 1)).alias("upserts"),
                        F.count(F.when(F.col(DELETED), 1)).alias("deletes"),
                        F.count(F.when(~F.col(DELETED) & (F.col(TIES) > 1), 1)).alias("dupes")).first()
        low, high = versions.agg(F.min(COMMIT_VERSION), F.max(COMMIT_VERSION)).first()
        if found["dupes"]:
            raise UsageError(f"--keys {','.join(request.keys)} do not identify a row of {request.input_path}: "
                             f"{found['dupes']} rows of micro-batch {batch_id} share their key with another row. "
                             "Upserts need unique keys: choose key columns that identify a row")
        if not found["upserts"] and not found["deletes"]:
            return
        plan = replace(self._plan(spark, net, int(found["upserts"]), int(found["deletes"]), low, high),
                       stream_batch=batch_id)
        frames = build_frames(spark, request, self.model, plan)
        check_targets(spark, request, plan, frames)
        pending = pending_row(request, self.model, plan, plan.next_seq)
        pending_version = self.state.append(pending, expected_version=plan.state_version)
        killpoints.reached("score:pending")
        written = write_changed(spark, request, plan, frames)
        check_counts(pending, written)
        record_committed(self.state, pending, pending_version, written)
        self._add(batch_id, plan, written)

    def _plan(self, spark: SparkSession, net: DataFrame, upserts: int, deletes: int, low: Any,
              high: Any) -> ScoringPlan:
        request = self.request
        latest = self.state.latest(self.model.version.name, request.input_path, request.output_path)
        output_start = tables.version(spark, request.output_path)
        quarantine_start = tables.version(spark, request.quarantine_path)
        return ScoringPlan(
            mode=CHANGES, input_version=-1 if high is None else int(high), input_id=self.input_id,
            from_version=-1 if low is None or low < 0 else int(low) - 1, casts=self.casts, healed=False,
            dead_run=None, previous_model_version=None,
            output_start=-1 if output_start is None else output_start,
            quarantine_start=-1 if quarantine_start is None else quarantine_start,
            state_version=latest.table_version, next_seq=latest.next_seq, source=net, rows_in=upserts,
            deleted=deletes,
        )

    def _add(self, batch_id: int, plan: ScoringPlan, written: Written) -> None:
        r = self.result
        r.batches += 1
        r.batch_ids.append(batch_id)
        r.rows_in += written.rows_in
        r.scored += written.scored
        r.quarantined += written.quarantined
        r.deleted += plan.deleted
        r.output_version, r.quarantine_version = written.output_version, written.quarantine_version
        if plan.input_version >= 0:
            r.input_version = plan.input_version
        log.info("micro-batch %d: %d rows in, %d scored, %d quarantined, %d keys deleted; %s at version %s",
                 batch_id, written.rows_in, written.scored, written.quarantined, plan.deleted, self.request.output_path,
                 written.output_version)


def _reader(spark: SparkSession, request: ScoringRequest, change_feed: bool, starting: int | None) -> DataFrame:
    reader = spark.readStream.format("delta")
    if change_feed:
        reader = reader.option("readChangeFeed", "true")
    if starting is not None:
        reader = reader.option("startingVersion", starting)
    if tables.is_table_name(request.input_path):
        return reader.table(resolve(spark, request.input_path))
    return reader.load(request.input_path)


def _starting_version(request: ScoringRequest, model: ScoringModel, state: ScoringState, input_id: str) -> int | None:
    """Where a new checkpoint starts: after what the output's batch runs (or an earlier stream) scored."""
    latest = state.latest(model.version.name, request.input_path, request.output_path)
    check_owner(request, model.version.name, latest.owner, latest.owner is not None)
    last = latest.committed
    if last is None or last.input_version < 0 or (last.input_table_id and last.input_table_id != input_id):
        return None
    return last.input_version + 1


def _translated(exc: BaseException, request: ScoringRequest, writer: _BatchWriter) -> BaseException:
    if writer.failure is not None and isinstance(writer.failure, SparkshipError):
        return writer.failure
    text = str(exc)[:4000]
    if "DELTA_SOURCE_TABLE_IGNORE_CHANGES" in text or "Detected a data update" in text:
        name = request.input_path if tables.is_table_name(request.input_path) else f"delta.`{request.input_path}`"
        return UsageError(f"{request.input_path} changed by more than appends and has no Change Data Feed, which a "
                          f"stream needs to follow updates and deletes: turn it on ({ENABLE_CDF.format(table=name)}) "
                          "and start a new --checkpoint, or score it with a batch run (--full)")
    return exc


def score_stream(spark: SparkSession, settings: Settings, model_ref: str | ModelRef, input: str | TableRef,
                 output: str | TableRef, keys: Sequence[str] | str, *, checkpoint: str, trigger: str = "available-now",
                 include_features: bool = False, run_id: str | None = None, wait_s: float = 0.0,
                 scorer: str = "auto") -> StreamResult:
    """Score ``input`` into ``output`` with Structured Streaming, checkpointed at ``checkpoint``.

    ``trigger``: ``available-now`` (score what is there, then stop: the serverless default) or
    ``processing-time=INTERVAL`` (runs until stopped). ``scorer``: as for a batch run (:func:`score`), for every
    micro-batch. Returns the totals of the micro-batches this run wrote.

    >>> r = score_stream(spark, settings, "churn@champion", "main.crm.customers", "main.crm.scores",
    ...                  "customer_id", checkpoint="/Volumes/main/crm/ckpt/scores")            # doctest: +SKIP
    >>> r.rows_in == r.scored + r.quarantined                                                    # doctest: +SKIP
    True
    """
    trigger_args = parse_trigger(trigger)
    source = to_table_ref(input, what="--input")
    request = make_request(source, to_table_ref(output, what="--output"), keys, run_id=run_id, full=False,
                           include_features=include_features, replace_output=False)
    if request.pinned_version is not None:
        raise UsageError(f"--input {str(source)!r}: a stream follows the table's new versions; it cannot be pinned")
    if tables.engine(spark).name != "native":
        raise UsageError("--stream needs the native engine (delta-spark: Databricks, or `make jars` locally)")
    model = load_scoring_model(settings, to_model_ref(model_ref), scorer)
    _, identity, casts = resolve_input(spark, request, model)
    input_id, change_feed = identity.id, identity.change_feed
    state = ScoringState(request.state_path)
    starting = _starting_version(request, model, state, input_id)
    mv = model.version
    result = StreamResult(model=mv.name, model_version=mv.version, run_id=request.run_id, input=request.input_path,
                          output=request.output_path, checkpoint=checkpoint, trigger=trigger, change_feed=change_feed,
                          scorer=model.scorer)
    writer = _BatchWriter(request, model, state, result, input_id, casts)
    log.info("streaming %s (%s) into %s with %s (scorer %s), checkpoint %s, trigger %s", request.input_path,
             "its Change Data Feed" if change_feed else "appends only", request.output_path, mv.ref, model.scorer,
             checkpoint, trigger)
    lease = RunLease(request.lease_path, request.run_id)
    with lease.hold(wait_s):
        query = (_reader(spark, request, change_feed, starting).writeStream.foreachBatch(writer)
                 .option("checkpointLocation", checkpoint).trigger(**trigger_args)
                 .queryName(f"sparkship-score-{request.run_id}").start())
        try:
            query.awaitTermination()
        except Exception as exc:  # noqa: BLE001 - a StreamingQueryException wraps the micro-batch's error
            raise _translated(exc, request, writer) from None
        finally:
            if query.isActive:
                query.stop()
    return result
